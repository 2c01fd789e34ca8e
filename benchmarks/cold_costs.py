"""Where a cold stage's time goes beyond the floor: the one-off costs a cold `dvc repro` pays,
each timed in a new process (`python benchmarks/cold_costs.py --child FOLDER`), in the order a
stage meets them."""

import importlib
import json
import sys
import time
from pathlib import Path

from timing import Row, Section, median, run, scratch, spread, timed

HERE = Path(__file__).resolve().parent
# A stage's imports, ended by Python's own exit or, as `python -m polyfit` ends, without teardown.
LOADED = "import torch, mlflow, torch._dynamo"
ENDED_BY_OS_EXIT = LOADED + "; import os; os._exit(0)"
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


def _teardown_seconds() -> float:
    """Wall time of a process that loads what a stage loads, minus the same process ended by
    os._exit: what freeing the interpreter's objects at exit costs."""
    normal = timed([sys.executable, "-c", LOADED])[0]
    skipped = timed([sys.executable, "-c", ENDED_BY_OS_EXIT])[0]
    return normal - skipped


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
    teardowns = [_teardown_seconds() for _ in range(repeats)]
    section = Section("Where a cold stage's time goes")
    torch_import = median([s["import_torch"] for s in samples])
    for key, label in COSTS.items():
        values = [s[key] for s in samples]
        relative = f"{median(values) / torch_import:.2f}x `import torch`"
        section.rows.append(Row(label, f"{spread(values)}, {relative}"))
    section.rows.append(
        Row(
            "the interpreter's teardown after those imports: Python's own exit pays it (the "
            "floor's `python -c` processes too, for their two imports); `python -m polyfit` "
            "skips it",
            f"{spread(teardowns)}, {median(teardowns) / torch_import:.2f}x `import torch`",
        )
    )
    section.notes += [
        f"{repeats} new process(es), each timing the costs in the order above (wall time); a "
        "stage process pays each at most once. The floor holds the imports and the torch._dynamo "
        "import; the store's code, its schema and the package scan are what the pipeline adds.",
        f"Teardown: {repeats} pair(s) of `python -c '{LOADED}'`, ended normally and by "
        "`os._exit(0)`; the row is the difference.",
    ]
    return section


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(child(Path(sys.argv[2]))))
