"""Section "Checkpoints": the train stage with train.checkpoint_every 100 against null."""

from common import (
    Row,
    Section,
    interleave,
    ratio,
    reproduced_clone,
    set_param,
    spread,
    target_row,
    train_stage,
)

TARGET = 1.05  # checkpoints may cost 5% of the stage's wall time
EVERY = 100


def checkpoints(rounds: int) -> Section:
    project = reproduced_clone()
    kept = set_param(project, "checkpoint_every", "null")
    try:
        runs = interleave(
            rounds,
            {
                "every": lambda: train_stage(project, str(EVERY)),
                "none": lambda: train_stage(project, "null"),
            },
        )
    finally:
        set_param(project, "checkpoint_every", kept)
    wall = {name: [w for w, _ in values] for name, values in runs.items()}
    step = {name: [s for _, s in values] for name, values in runs.items()}
    section = Section(f"Checkpoints (train.checkpoint_every {EVERY} against null, 2000 steps)")
    section.rows = [
        Row("train stage, checkpoint_every null", spread(wall["none"])),
        Row(f"train stage, checkpoint_every {EVERY}", spread(wall["every"])),
        target_row("with / without, wall time", ratio(wall["every"], wall["none"]), TARGET),
        Row(
            "with / without, the stage's us_per_step", f"{ratio(step['every'], step['none']):.3f}x"
        ),
    ]
    section.notes = [
        f"{rounds} round(s) of `python -m polyfit train` (spawn to exit) in a reproduced clone, "
        "once each way, alternating; ratios are medians of the per-round ratios.",
        f"Each of the {2000 // EVERY - 1} checkpoints (none at the last step) writes "
        "checkpoints/train-<fingerprint>.pt atomically (temp file, fsync, rename); the loss "
        "history goes to MLflow once, at the end, either way. With checkpoints on, the stage "
        "also hashes its deps once (the fingerprint) and deletes its checkpoint at the end.",
    ]
    return section
