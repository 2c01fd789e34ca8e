"""The price of serial stages: the three stage processes of a cold `dvc repro`, serial (the
product) against the overlapped alternative (overlapped_stages.py, a forked torch worker)."""

import sys
from pathlib import Path

from timing import Row, Section, fresh_clone, median, spread, timed

HERE = Path(__file__).resolve().parent
STAGES = ["generate", "train", "evaluate"]
VARIANTS = {
    "serial": [sys.executable, "-m", "polyfit"],
    "overlapped": [sys.executable, str(HERE / "overlapped_stages.py")],
}
# Every file the stages write; the two variants must write the same bytes.
OUTPUTS = ["data/dataset.pt", "models/model.pt", "metrics/train.json", "metrics/eval.json"]
OUTPUTS += ["plots/loss.csv", "plots/fit.csv"]


def _run_stages(variant: str, clone: Path) -> dict[str, float]:
    """Wall seconds of each stage process, run in dvc.yaml's order on a fresh clone."""
    return {stage: timed([*VARIANTS[variant], stage], clone)[0] for stage in STAGES}


def overlap(repeats: int) -> Section:
    samples = {variant: [] for variant in VARIANTS}
    written = {}
    for index in range(repeats):
        order = list(VARIANTS)[index % 2 :] + list(VARIANTS)[: index % 2]  # share load drift
        for variant in order:
            clone = fresh_clone(f"overlap-{variant}-{index}")
            samples[variant].append(_run_stages(variant, clone))
            written[variant] = [(clone / name).read_bytes() for name in OUTPUTS]
    totals = {variant: [sum(s.values()) for s in samples[variant]] for variant in VARIANTS}
    pairs = list(zip(totals["serial"], totals["overlapped"], strict=True))
    section = Section("Serial stages against the overlapped alternative")
    section.rows = [
        Row("serial stages (the product): generate + train + evaluate", spread(totals["serial"])),
        Row(
            "overlapped alternative (benchmarks/overlapped_stages.py)", spread(totals["overlapped"])
        ),
        Row(
            "price of serial stages",
            f"+{median([s - o for s, o in pairs]):.2f} s, "
            f"{median([s / o for s, o in pairs]):.2f}x the overlapped time",
        ),
    ]
    for stage in STAGES:
        serial = [s[stage] for s in samples["serial"]]
        overlapped = [s[stage] for s in samples["overlapped"]]
        section.rows.append(
            Row(f"of which: {stage}", f"serial {spread(serial)}; overlapped {spread(overlapped)}")
        )
    same = written["serial"] == written["overlapped"]
    section.notes += [
        f"{repeats} round(s), each: both variants, in alternating order, on their own new `git "
        "clone` of HEAD (no outputs, no mlflow.db): `python -m polyfit STAGE` (serial) or "
        "`python benchmarks/overlapped_stages.py STAGE` for the three stages in order, without "
        "DVC (a cold `dvc repro` adds the same DVC start-up and bookkeeping to both). Price: "
        "medians of the per-round differences and ratios.",
        "Overlapped: each stage forks a one-worker pool (benchmarks/compute.py) before importing "
        "torch or MLflow; the worker imports torch and computes, while the stage process "
        "imports MLflow and opens the store, then logs the worker's results. train also imports "
        "torch while the worker trains (the LoggedModel runs the model on its input example). "
        "Both variants end their processes as `python -m polyfit` does, without the "
        "interpreter's teardown.",
        f"Same output files from both variants ({', '.join(OUTPUTS)}): {same}.",
    ]
    return section
