"""Section "Logging the loss history": TrackedRun.log_history (log_batch) against one
log_metric call per point, on a SQLite store."""

import time

from common import Row, Section, interleave, ratio, scratch, spread

POINTS = 2000  # train.steps: one loss per step


def logging_cost(rounds: int) -> Section:
    from polyfit.tracking.runs import BATCH_SIZE, TrackedRun
    from polyfit.tracking.store import make_client

    folder = scratch("logging")
    client = make_client(f"sqlite:///{folder / 'mlflow.db'}")  # the stages' client settings
    experiment = client.create_experiment("bench", (folder / "artifacts").as_uri())
    client.log_metric(client.create_run(experiment).info.run_id, "loss", 1.0)  # first-use costs
    losses = [1e3 * 0.997**step + 8.8 for step in range(POINTS)]  # shaped like the real history

    def batched() -> float:
        run = TrackedRun(client, client.create_run(experiment).info.run_id, experiment)
        started = time.perf_counter()
        run.log_history("loss", losses)
        return time.perf_counter() - started

    def per_point() -> float:
        run_id = client.create_run(experiment).info.run_id
        started = time.perf_counter()
        for step, loss in enumerate(losses):
            client.log_metric(run_id, "loss", loss, step=step)
        return time.perf_counter() - started

    seconds = interleave(rounds, {"batched": batched, "per point": per_point})
    section = Section(f"Logging the loss history ({POINTS} points)")
    section.rows = [
        Row(
            f"TrackedRun.log_history: log_batch, {BATCH_SIZE} points a call",
            spread(seconds["batched"], digits=3),
        ),
        Row("one MlflowClient.log_metric call per point", spread(seconds["per point"])),
        Row("per point / batched", f"{ratio(seconds['per point'], seconds['batched']):.0f}x"),
    ]
    section.notes = [
        f"{rounds} round(s), in-process, each logging into a new run of a scratch SQLite store "
        "(its schema made and one metric logged before timing), with the stages' client "
        "(tracking.store.make_client).",
    ]
    return section
