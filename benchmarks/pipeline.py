"""Cold and warm `dvc repro`, against the floor of three bare `import torch, mlflow` + the seed."""

import re
import sys
from pathlib import Path

from timing import (
    Row,
    Section,
    adopt_clone,
    fresh_clone,
    median,
    prepared_clone,
    scratch,
    spread,
    stages_run,
    timed,
    timed_lines,
    verdict,
)

HERE = Path(__file__).resolve().parent
IMPORT_FLOOR = [sys.executable, "-c", "import torch, mlflow"]
SEED = [sys.executable, str(HERE / "seed_loop.py")]
STAGES = ["generate", "train", "evaluate"]
TARGET_COLD_RATIO, TARGET_NOOP_SECONDS = 1.3, 1.0  # serial stages: 1.3x the bare imports + seed


def _seed_seconds() -> float:
    """The seed script's own time after `import torch`, as it reports it."""
    _, output = timed(SEED, scratch())
    return float(output.split("seed_seconds")[-1].split()[0])


def _segments(seconds: float, lines: list[tuple[float, str]]) -> dict[str, float]:
    """Split one streamed `dvc repro` into DVC's start-up and one segment per stage.

    A stage's segment runs from DVC's "Running stage" line to the next one (or to exit), so
    it holds the stage process and DVC's bookkeeping after it (hashing, caching, dvc.lock).
    """
    marks = [(at, line.split("'")[1]) for at, line in lines if line.startswith("Running stage '")]
    if [stage for _, stage in marks] != STAGES:
        raise RuntimeError(f"cold dvc repro ran {[s for _, s in marks]}, expected {STAGES}")
    ends = [at for at, _ in marks[1:]] + [seconds]
    segments = {"DVC start-up, before the first stage": marks[0][0]}
    for (at, stage), end in zip(marks, ends, strict=True):
        segments[f"stage {stage} + DVC after it"] = end - at
    return segments


def cold(repeats: int) -> Section:
    imports, seeds, colds, segments = [], [], [], []
    for index in range(repeats):  # interleaved, so floor and pipeline share the same load
        imports.append(sum(timed(IMPORT_FLOOR, scratch())[0] for _ in range(3)))
        seeds.append(_seed_seconds())
        clone = fresh_clone(f"cold-{index}")
        seconds, lines = timed_lines(["dvc", "repro"], clone)
        segments.append(_segments(seconds, lines))
        colds.append(seconds)
    adopt_clone(clone)
    floors = [i + s for i, s in zip(imports, seeds, strict=True)]
    ratios = [c / f for c, f in zip(colds, floors, strict=True)]
    section = Section("Cold pipeline (`dvc repro` on a fresh clone)")
    section.rows = [
        Row("floor: 3 x `python -c 'import torch, mlflow'`", spread(imports)),
        Row("floor: the seed script after `import torch`", spread(seeds)),
        Row("floor total", spread(floors)),
        Row("cold `dvc repro`", spread(colds)),
        Row(
            "cold / floor",
            f"{median(ratios):.2f}x",
            f"<= {TARGET_COLD_RATIO:g}x",
            verdict(median(ratios) <= TARGET_COLD_RATIO),
        ),
    ]
    for name in segments[0]:
        section.rows.append(Row(f"of which: {name}", spread([s[name] for s in segments])))
    section.notes += [
        f"{repeats} round(s), each: 3 import processes, the seed script, then `dvc repro` on "
        "a new `git clone` of HEAD (no DVC cache or outputs, no mlflow.db). The ratio is the "
        "median of the per-round ratios.",
        "Floor = 3 x the wall time of `python -c 'import torch, mlflow'` (interpreter start, "
        "the two imports, interpreter exit) + the seed script's own time after its "
        "`import torch` (data, model, RMSprop including its torch._dynamo import, 2000 steps, "
        "reported by the script itself). The floor's processes end with Python's own exit, "
        "teardown included; polyfit's stages skip the teardown (docs/pipeline.md; its cost is "
        "a row of the next section).",
        "'of which' rows split the same `dvc repro` runs by the time DVC printed each "
        '"Running stage" line (output unbuffered).',
        "The clone's stages run the working tree's polyfit package (installed editable in "
        ".venv), with the clone's dvc.yaml and params.yaml.",
    ]
    return section


def _set_lr(clone: Path, lr: float) -> None:
    params = clone / "params.yaml"
    line = re.compile(r"^(  lr: )\S+", flags=re.M)
    text, found = line.subn(rf"\g<1>{lr:.6e}", params.read_text(), count=1)
    if found != 1:
        raise RuntimeError("no train.lr line in params.yaml")
    params.write_text(text)


def warm(repeats: int) -> Section:
    clone = prepared_clone()
    timed(["dvc", "repro"], clone)  # whatever is stale is redone here, untimed
    noops = []
    for _ in range(repeats):
        seconds, output = timed(["dvc", "repro"], clone)
        if stages_run(output):
            raise RuntimeError(f"no-op dvc repro ran {stages_run(output)}")
        noops.append(seconds)
    changes = []
    for index in range(repeats):
        _set_lr(clone, 1e-3 * (1 + (index + 1) / 100))
        seconds, output = timed(["dvc", "repro"], clone)
        if stages_run(output) != ["train", "evaluate"]:
            raise RuntimeError(f"train.lr change ran {stages_run(output)}")
        changes.append(seconds)
    section = Section("Warm pipeline")
    section.rows = [
        Row(
            "no-op `dvc repro`",
            spread(noops),
            f"< {TARGET_NOOP_SECONDS:g} s",
            verdict(median(noops) < TARGET_NOOP_SECONDS),
        ),
        Row("`dvc repro` after a train.lr change (runs train + evaluate)", spread(changes)),
    ]
    section.notes += [
        f"{repeats} runs each on a clone that was reproduced once; every train.lr change "
        "writes a new value (1.01e-3, 1.02e-3, ...) and checks that exactly train and "
        "evaluate ran.",
        "Every DVC command here runs with DVC_NO_ANALYTICS=1; with analytics on (DVC's "
        "default) each command also spawns a reporting daemon, about 0.1 s more.",
    ]
    return section
