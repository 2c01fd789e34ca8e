"""Where a cold stage's time goes beyond the floor: the one-off costs a cold `dvc repro` pays,
each timed in a new process (`python benchmarks/cold_costs.py --child FOLDER`), in the order a
stage meets them."""

import importlib
import json
import sys
import time
from pathlib import Path

from timing import Row, Section, median, run, scratch, spread

HERE = Path(__file__).resolve().parent
COSTS = {
    "import_torch": "`import torch`",
    "import_mlflow": "`import mlflow` (after torch)",
    "store_code": "MLflow's SQLite store code (SQLAlchemy, alembic, the tracking and registry "
    "store modules): `import mlflow` leaves it out, every stage loads it",
    "fresh_store": "a new SQLite store: MLflow creates its schema by running every migration "
    "(generate pays this on a fresh clone)",
    "existing_store": "opening the existing store (train, evaluate)",
    "package_scan": "MLflow's check of the LoggedModel's pinned requirements: a scan of every "
    "installed distribution (importlib.metadata.packages_distributions), once per process",
    "dynamo_import": "the first torch.optim.RMSprop: its torch._dynamo import (in the floor too)",
}


def child(folder: Path) -> dict[str, float]:
    """Wall seconds of each cost, in this process."""
    seconds = {}

    def timed_step(name, action):
        started = time.perf_counter()
        action()
        seconds[name] = time.perf_counter() - started

    timed_step("import_torch", lambda: __import__("torch"))
    timed_step("import_mlflow", lambda: __import__("mlflow.tracking"))
    timed_step("store_code", _import_store_code)
    from importlib.metadata import packages_distributions

    import torch
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    timed_step("fresh_store", lambda: MlflowClient(uri).search_experiments())
    timed_step("existing_store", lambda: MlflowClient(uri).search_experiments())
    timed_step("package_scan", packages_distributions)
    model = torch.nn.Linear(3, 1)
    timed_step("dynamo_import", lambda: torch.optim.RMSprop(model.parameters(), lr=1e-3))
    return seconds


def _import_store_code() -> None:
    for module in (
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
    ):
        importlib.import_module(module)


def cold_costs(repeats: int) -> Section:
    samples = []
    for index in range(repeats):
        folder = scratch() / f"cold-costs-{index}"
        folder.mkdir()
        output = run([sys.executable, str(HERE / "cold_costs.py"), "--child", str(folder)]).stdout
        samples.append(json.loads(output.strip().splitlines()[-1]))
    section = Section("Where a cold stage's time goes")
    torch_import = median([s["import_torch"] for s in samples])
    for key, label in COSTS.items():
        values = [s[key] for s in samples]
        relative = f"{median(values) / torch_import:.2f}x `import torch`"
        section.rows.append(Row(label, f"{spread(values)}, {relative}"))
    section.notes += [
        f"{repeats} new process(es), each timing the costs in the order above (wall time); a "
        "stage process pays each at most once. The floor holds the imports and the torch._dynamo "
        "import; the store's code, its schema and the package scan are what the pipeline adds.",
    ]
    return section


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(child(Path(sys.argv[2]))))
