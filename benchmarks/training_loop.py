"""Section "Training loop": the train stage's own time per step against the seed's loop."""

from common import (
    HERE,
    PYTHON,
    Row,
    Section,
    interleave,
    last_number,
    ratio,
    reproduced_clone,
    run,
    set_param,
    spread,
    target_row,
    train_stage,
)

TARGET = 1.05


def _seed(*args: str) -> float:
    return last_number(run([PYTHON, str(HERE / "seed.py"), *args]), "us_per_step")


def training_loop(rounds: int) -> Section:
    project = reproduced_clone()
    every = set_param(project, "checkpoint_every", "null")  # the repo's value, put back as it was
    set_param(project, "checkpoint_every", every)
    us = interleave(
        rounds,
        {
            "seed": _seed,
            "stage": lambda: train_stage(project, every)[1],
            "telemetry": lambda: train_stage(project, every, MLFLOW_DISABLE_TELEMETRY="false")[1],
            "powers": lambda: _seed("--recompute-powers"),
        },
    )

    def rows(key: str, label: str, target: float | None = None) -> list[Row]:
        value, versus = spread(us[key], "us/step", 0), ratio(us[key], us["seed"])
        if target is None:
            return [Row(label, f"{value}; {versus:.3f}x the seed")]
        return [Row(label, value), target_row(f"{label} / the seed", versus, target)]

    section = Section("Training loop at the seed's speed (2000 points, 2000 steps)")
    section.rows = [
        Row("the seed's loop (benchmarks/seed.py)", spread(us["seed"], "us/step", 0)),
        *rows("stage", "the train stage (`python -m polyfit train`)", TARGET),
        *rows("telemetry", "alternative: the stage with MLflow's telemetry on"),
        *rows("powers", "alternative: the seed's loop computing its powers every step"),
    ]
    section.notes = [
        f"{rounds} round(s), each running the four processes once in rotated order; ratios are "
        "medians of the per-round ratios.",
        "Train stage: its own figure, the metric `us_per_step` of its MLflow run (the time of "
        "fit(), its first step to its last, / steps), in a clone reproduced once, with the "
        f"repo's params.yaml (train.checkpoint_every {every}; checkpoints would fall inside "
        "fit(): their cost is the Checkpoints section's). Seed: the tutorial script, timed the "
        "same way inside it, with torch's defaults (threads, MKL); both print the loss every 100 "
        "steps.",
        "Telemetry on: MLFLOW_DISABLE_TELEMETRY=false exported (cli.py turns it off by default). "
        "No child process sees CI or other CI markers, under which MLflow turns it off itself.",
        "Powers every step: the seed's loop with `xx = x.unsqueeze(-1).pow(p)` inside it, what a "
        "Polynomial costs that does not keep the powers of the last X (core/model.py keeps them).",
    ]
    return section
