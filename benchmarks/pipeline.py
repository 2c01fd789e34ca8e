"""Sections "Cold pipeline" and "Warm pipeline": `dvc repro` on a fresh clone against the import
floor, by stage, with the price of Python's normal exit; then a no-op `dvc repro`."""

import itertools

import yaml
from common import (
    HERE,
    PYTHON,
    REPO,
    Row,
    Section,
    fresh_clone,
    interleave,
    last_number,
    median,
    ratio,
    reproduced_clone,
    run,
    spread,
    target_row,
)

TARGET = 1.3
STAGES = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
COMPUTING = {"generate", "train", "evaluate"}  # what a fresh clone must run
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true"}  # as in the stages (cli.py)
IMPORTS = [PYTHON, "-c", "import torch, mlflow"]
# What a stage process holds when it ends: torch, MLflow, MLflow's SQLite store code and the
# torch._dynamo that the first optimizer imports.
LOADED = (
    "import torch, mlflow, mlflow.store.tracking.sqlalchemy_store; "
    "torch.optim.RMSprop(torch.nn.Linear(1, 1).parameters())"
)
ENDED = f"{LOADED}; import os; os._exit(0)"
_clones = itertools.count()


def _cold_repro() -> dict[str, float]:
    """A streamed `dvc repro` on a new clone: its wall time, and DVC's start-up and each stage
    from the time DVC printed its "Running stage" line to the next one (or the end)."""
    clone = fresh_clone(f"cold-{next(_clones)}")
    done = run(["dvc", "repro"], clone, PYTHONUNBUFFERED="1")
    starts = [(at, line) for at, line in done.lines if line.startswith("Running stage '")]
    marks = [(at, line.split("'")[1]) for at, line in starts]
    ran = [stage for _, stage in marks]  # `check` only if dvc.lock lacks these params
    if ran != [stage for stage in STAGES if stage in ran] or not set(ran) >= COMPUTING:
        raise RuntimeError(f"cold dvc repro ran {ran}, not {STAGES}")
    ends = [at for at, _ in marks[1:]] + [done.seconds]
    segments = {"DVC's start-up, before the first stage": marks[0][0]}
    for (at, stage), end in zip(marks, ends, strict=True):
        segments[f"stage {stage} + DVC's work after it"] = end - at
    return {"total": done.seconds, **segments}


def _by_stage(repros: list[dict]) -> list[tuple[str, list[float]]]:
    return [(key, [r[key] for r in repros]) for key in repros[0] if key != "total"]


def cold(rounds: int) -> Section:
    times = interleave(
        rounds,
        {
            "imports": lambda: sum(run(IMPORTS, **NO_TELEMETRY).seconds for _ in range(3)),
            "seed": lambda: last_number(run([PYTHON, str(HERE / "seed.py")]), "seed_seconds"),
            "repro": _cold_repro,
            "normal exit": lambda: run([PYTHON, "-c", LOADED], **NO_TELEMETRY).seconds,
            "os._exit": lambda: run([PYTHON, "-c", ENDED], **NO_TELEMETRY).seconds,
        },
    )
    floors = [i + s for i, s in zip(times["imports"], times["seed"], strict=True)]
    repros = [r["total"] for r in times["repro"]]
    exits = [n - o for n, o in zip(times["normal exit"], times["os._exit"], strict=True)]
    section = Section("Cold pipeline (`dvc repro` on a fresh clone)")
    section.rows = [
        Row("floor: 3 x `python -c 'import torch, mlflow'`", spread(times["imports"])),
        Row("floor: the seed script after its `import torch`", spread(times["seed"])),
        Row("floor", spread(floors)),
        Row("cold `dvc repro`", spread(repros)),
        target_row("cold `dvc repro` / floor", ratio(repros, floors), TARGET),
        *[Row(f"of which: {key}", spread(values)) for key, values in _by_stage(times["repro"])],
        Row(
            "Python's normal exit after a stage's imports, against os._exit",
            f"+{spread(exits)} a process; 3 stage processes: "
            f"{300 * median(exits) / median(repros):.0f}% of a cold `dvc repro`",
        ),
    ]
    section.notes = [
        f"{rounds} round(s), each: 3 import processes, the seed script, `dvc repro` on a new `git "
        "clone` of HEAD (no DVC cache, outputs or mlflow.db) and the two exit processes, in "
        "rotated order. The ratio is the median of the per-round ratios.",
        "Floor: what any pipeline of these three stages pays at the least: 3 processes that "
        "import torch and MLflow (start, imports, Python's exit; MLflow's telemetry off, as in "
        "the stages) and the seed's own work. `check` imports neither.",
        'By stage: the same `dvc repro` runs, cut where DVC printed each "Running stage" line '
        "(output unbuffered); a stage's share holds DVC's hashing and caching after it. `check` "
        "runs only where params.yaml differs from what dvc.lock records: not on a fresh clone.",
        f'Exit: `python -c "{LOADED}"` ended normally, minus the same ended by `os._exit(0)`, '
        "per round: the interpreter's teardown that every `python -m polyfit` stage now pays.",
    ]
    return section


def warm(repeats: int) -> Section:
    project = reproduced_clone()
    run(["dvc", "repro"], project)  # anything stale is redone here, untimed
    noops = []
    for _ in range(repeats):
        done = run(["dvc", "repro"], project)
        if "Running stage" in done.output:
            raise RuntimeError(f"a no-op dvc repro ran stages:\n{done.output}")
        noops.append(done.seconds)
    section = Section("Warm pipeline")
    section.rows = [Row("no-op `dvc repro` (every stage up to date)", spread(noops))]
    section.notes = [f"{repeats} run(s) on a reproduced clone; none ran a stage."]
    return section
