"""Logging: what logging the 2000-point loss history adds to the train stage, batched or not."""

import sys
import time

from timing import Row, Section, median, prepared_clone, scratch, spread, timed, verdict

HISTORY_POINTS = 2000  # train.steps: one loss per step
TARGET_PERCENT = 5.0
PER_STEP_REPEATS = 3  # 2000 single-metric calls take seconds each time


def _history() -> list[float]:
    """A loss curve shaped like the real one (falls by orders of magnitude)."""
    return [1e3 * 0.997**step + 8.8 for step in range(HISTORY_POINTS)]


def _store():
    """(client, experiment_id) on a scratch SQLite store whose schema is already created, with
    the stages' MLflow settings (store.make_client: quiet logs, no progress bars)."""
    from polyfit.tracking.store import make_client

    folder = scratch() / "logging-store"
    folder.mkdir(exist_ok=True)
    client = make_client(f"sqlite:///{folder / 'mlflow.db'}")
    experiment_id = client.create_experiment("bench", (folder / "artifacts").as_uri())
    warm = client.create_run(experiment_id).info.run_id  # first-use costs out of the timings
    client.log_metric(warm, "loss", 1.0, step=0)
    return client, experiment_id


def _time_batched(client, experiment_id: str, values: list[float]) -> float:
    """TrackedRun.log_history: log_batch calls of BATCH_SIZE points, as the train stage does."""
    from polyfit.tracking.runs import TrackedRun

    run = TrackedRun(client, client.create_run(experiment_id).info.run_id, experiment_id)
    started = time.perf_counter()
    run.log_history("loss", values)
    return time.perf_counter() - started


def _time_per_step(client, experiment_id: str, values: list[float]) -> float:
    """One MlflowClient.log_metric call per step, as mlflow.log_metric in the loop would do."""
    run_id = client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for step, value in enumerate(values):
        client.log_metric(run_id, "loss", value, timestamp=now, step=step)
    return time.perf_counter() - started


def _time_logged_model(client, experiment_id: str, state_dict) -> float:
    """logged_model.log_model: the train stage's LoggedModel (pyfunc from code + state_dict)."""
    from polyfit.tracking.model import log_model
    from polyfit.tracking.runs import TrackedRun

    run = TrackedRun(client, client.create_run(experiment_id).info.run_id, experiment_id)
    started = time.perf_counter()
    log_model(run, state_dict, {"degree": 3}, {"train.lr": 1e-3}, {"model_sha256": "bench"})
    return time.perf_counter() - started


def logging_cost(repeats: int) -> Section:
    from polyfit.tracking.runs import BATCH_SIZE

    client, experiment_id = _store()
    values = _history()
    batched = [_time_batched(client, experiment_id, values) for _ in range(repeats)]
    per_step_repeats = min(repeats, PER_STEP_REPEATS)
    per_step = [_time_per_step(client, experiment_id, values) for _ in range(per_step_repeats)]
    clone = prepared_clone()
    state_dict = clone / "models" / "model.pt"
    first_model = _time_logged_model(client, experiment_id, state_dict)  # what train pays
    models = [_time_logged_model(client, experiment_id, state_dict) for _ in range(repeats)]
    train_cmd = [sys.executable, "-m", "polyfit", "train"]
    train_walls = [timed(train_cmd, clone)[0] for _ in range(repeats)]
    train_wall = median(train_walls)
    batched_percent = 100 * median(batched) / train_wall
    per_step_percent = 100 * median(per_step) / train_wall
    section = Section(f"Logging the loss history ({HISTORY_POINTS} points)")
    section.rows = [
        Row("train stage wall time (`python -m polyfit train`, full logging)", spread(train_walls)),
        Row("no history logging", "+0.000 s"),
        Row(
            f"log_batch, {BATCH_SIZE} points per call (TrackedRun.log_history)",
            f"+{median(batched):.3f} s = {batched_percent:.1f}% of the stage "
            f"({spread(batched, digits=3)})",
            f"< {TARGET_PERCENT:g}%",
            verdict(batched_percent < TARGET_PERCENT),
        ),
        Row(
            "the first LoggedModel in a process (what the train stage pays)",
            f"+{first_model:.3f} s = {100 * first_model / train_wall:.1f}% of the stage (n=1)",
        ),
        Row(
            "each further LoggedModel (pyfunc from code + state_dict, tracking.model.log_model)",
            f"+{median(models):.3f} s = {100 * median(models) / train_wall:.1f}% of the stage "
            f"({spread(models, digits=3)})",
        ),
        Row(
            f"{HISTORY_POINTS} x log_metric, one per step",
            f"+{median(per_step):.2f} s = {per_step_percent:.0f}% of the stage "
            f"({spread(per_step)}), {median(per_step) / median(batched):.0f}x batched",
        ),
    ]
    section.notes += [
        "Logging is timed in-process with MlflowClient on a scratch SQLite store (schema "
        "created and one metric logged before timing); every sample logs into a new run.",
        f"log_batch: {repeats} samples; per-step log_metric: {per_step_repeats} samples; "
        f"LoggedModel: the first call in this process (MLflow's pyfunc imports, its check of "
        "the pinned requirements, which scans every installed distribution once per process, "
        f"and loading the model from code to run its input example), then {repeats} more, "
        "each a new LoggedModel of the clone's models/model.pt, on the same store.",
        f"Train stage wall time: {repeats} runs of `python -m polyfit train` in a reproduced "
        "clone (process spawn to exit, SQLite store in the clone). 'No history logging' is "
        "this stage minus the history logging, which is timed separately above.",
    ]
    return section
