"""Where a cold stage's time goes beyond the floor: the one-off costs a cold `dvc repro` pays,
each timed in a new process (`python benchmarks/cold_costs.py --child FOLDER`), in the order a
stage meets them."""

import importlib
import json
import sqlite3
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
# Not a cost the pipeline pays: whether the schema could be made without the migrations.
SHORTCUT = (
    "the same schema from MLflow's table definitions alone (SQLAlchemy create_all and the newest "
    "revision recorded, no migrations): what skipping the migrations would cost instead"
)


def child(folder: Path) -> dict[str, float | str]:
    """Wall seconds of each cost, in this process (the shortcut: or why it cannot be taken)."""
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
    seconds["schema_without_migrations"] = _schema_without_migrations(folder, uri)
    return seconds


def _schema_without_migrations(folder: Path, migrated: str) -> float | str:
    """Seconds to make a store's schema from MLflow's table definitions alone (create_all, then
    the newest revision recorded as alembic's stamp does), the shortcut that would skip the
    migrations; or why it cannot: MLflow itself only ever migrates."""
    from mlflow.store.db import utils
    from mlflow.store.db.base_sql_model import Base

    created = f"sqlite:///{folder / 'created.db'}"
    started = time.perf_counter()
    try:
        Base.metadata.create_all(utils.create_sqlalchemy_engine(created))
    except Exception as error:  # SQLAlchemy's, wrapping sqlite3's reason and the statement
        statement = getattr(error, "statement", None)
        where = f" in `{statement.strip()}`" if statement else ""
        return f"not possible: {str(getattr(error, 'orig', error)).strip()}{where}"
    with sqlite3.connect(folder / "created.db") as database:
        database.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        revision = utils._get_latest_schema_revision()
        database.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    seconds = time.perf_counter() - started
    differ = set(_schema(migrated)) ^ set(_schema(created))
    if differ:  # compared as SQL text: a table rebuilt by a migration may read differently
        names = sorted({name for _, name, _ in differ})
        return f"not the same schema: {len(names)} tables or indexes differ, e.g. {names[0]}"
    return seconds


def _schema(uri: str) -> list[tuple]:
    """Every table and index with its SQL, besides alembic's record of the revision."""
    query = "SELECT type, name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'"
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as database:
        return sorted(database.execute(query))


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
    shortcut = [s["schema_without_migrations"] for s in samples]
    if all(isinstance(value, float) for value in shortcut):
        relative = f"{median(shortcut) / torch_import:.2f}x `import torch`"
        section.rows.append(Row(SHORTCUT, f"{spread(shortcut)}, {relative}"))
    else:  # the same reason every time: it is MLflow's code, not the machine
        section.rows.append(Row(SHORTCUT, next(v for v in shortcut if isinstance(v, str))))
    section.notes += [
        f"{repeats} new process(es), each timing the costs in the order above (wall time); a "
        "stage process pays each at most once. The floor holds the imports and the torch._dynamo "
        "import; the store's code, its schema and the package scan are what the pipeline adds.",
        "The last row is not a cost the pipeline pays: it tries the shortcut past the migrations "
        "on a second new store and compares the result with the migrated store's tables and "
        "indexes (sqlite_master); MLflow's own stores are only ever migrated.",
        f"Teardown: {repeats} pair(s) of `python -c '{LOADED}'`, ended normally and by "
        "`os._exit(0)`; the row is the difference.",
    ]
    return section


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(child(Path(sys.argv[2]))))
