"""MKL's reproducible mode (MKL_CBWR=COMPATIBLE): what the same bytes on every CPU cost.

MKL reads its mode once per process, so each measure runs in child processes, with and without
the mode in alternating order (which shares slow drifts in load between the two): the training
loop at n=2000 (training_loop.py's child) and one step at 1e7 points for both train.gradient
values (scale.py's child).
"""

import json
import sys
from pathlib import Path

from scale import STAGE_ENV, STEPS, THREADS
from timing import Row, Section, median, run, spread

from polyfit.core.runtime import REPRODUCIBLE_MKL

HERE = Path(__file__).parent
WITHOUT = {"MKL_CBWR": "OFF", "MKL_DYNAMIC": "TRUE"}  # MKL's own per-CPU dispatch and threads
LARGE = 10_000_000


def _alternating(args: list[str], key: str, rounds: int) -> dict[str, list[float]]:
    """{'with': [...], 'without': [...]}: `key` of the child's JSON line, one child each."""
    modes = {"with": STAGE_ENV | REPRODUCIBLE_MKL, "without": STAGE_ENV | WITHOUT}
    samples = {mode: [] for mode in modes}
    for round_index in range(rounds):
        order = list(modes)[round_index % 2 :] + list(modes)[: round_index % 2]
        for mode in order:
            output = run([sys.executable, *args], **modes[mode]).stdout
            samples[mode].append(json.loads(output.strip().splitlines()[-1])[key])
    return samples


def _row(label: str, samples: dict[str, list[float]], unit: str, scale: float) -> Row:
    ratios = [a / b for a, b in zip(samples["with"], samples["without"], strict=True)]
    with_mode = spread([scale * v for v in samples["with"]], unit, 1)
    without = spread([scale * v for v in samples["without"]], unit, 1)
    return Row(label, f"{median(ratios):.3f}x: {with_mode} with, {without} without")


def reproducible_mode(repeats: int) -> Section:
    section = Section("MKL's reproducible mode (MKL_CBWR=COMPATIBLE): its cost")
    loop = _alternating([str(HERE / "training_loop.py"), "--child", "3"], "us_per_step", repeats)
    section.rows.append(_row("training loop, n=2000, threads=1: step time", loop, "us", 1))
    for gradient in ("autograd", "gram"):
        args = [str(HERE / "scale.py"), "--child", str(LARGE), str(STEPS), str(THREADS), gradient]
        large = _alternating(args, "seconds_per_step", max(2, repeats // 2))
        label = f"n=1e7, {gradient}, threads={THREADS}: step time (one-off pass included)"
        section.rows.append(_row(label, large, "ms", 1e3))
    section.notes += [
        "Median of the per-round ratios with / without the mode, then the two medians with "
        "their range. 'With' is what `polyfit` sets (polyfit.core.runtime.REPRODUCIBLE_MKL: "
        "MKL_CBWR=COMPATIBLE, MKL_DYNAMIC=FALSE, OMP_DYNAMIC=FALSE); 'without' is MKL_CBWR=OFF, "
        "MKL_DYNAMIC=TRUE: MKL picks its kernels for this CPU.",
        "Loop: training_loop.py's child, the median of 3 runs of 2000 steps with the train "
        f"stage's settings, per child. 1e7: scale.py's child, {STEPS} steps, per child.",
    ]
    return section
