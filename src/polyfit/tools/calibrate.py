"""`polyfit gate calibrate`: gate.yaml's tolerances, measured for this pipeline's model and data.

It runs the real train and evaluate stages on the workspace's data several times, varying only
what should not change a verdict: train.threads (1 and 2), the vector kernels ATen may use on
this CPU (each level down to its scalar kernels, what a CPU without AVX2 would run), and with
--seeds, train.seed. Each run is a fresh process, in a scratch folder with a scratch MLflow
store: the workspace, its outputs and its store are not touched.

The runs are kept in gate-calibration.json, by machine: calibrating on another machine replaces
that machine's runs and keeps the others', so the tolerances cover every CPU it ran on. A gated
metric's spread is max - min over the runs of one seed, on every machine, the largest over the
seeds; its tolerance is MARGIN x that spread, written into gate.yaml in the kind (abs or rel) the
rule already has.
"""

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from polyfit import files, paths
from polyfit.cpu import this_cpu
from polyfit.errors import PolyfitError, UsageError
from polyfit.params import flatten, load_params
from polyfit.tools.gate import Rule, load_rules

THREADS = (1, 2)
KERNELS = ("avx512", "avx2", "default")  # ATEN_CPU_CAPABILITY, from the widest
FLOAT32_EPS = 2.0**-23  # the least a value can move: one float32 rounding
STAGES = "from polyfit.stages import evaluate, train; train.main(); evaluate.main()"


RECORD = Path("gate-calibration.json")


def main(args) -> None:
    if args.seeds < 1 or not args.margin > 0:
        raise UsageError("--seeds must be at least 1 and --margin above 0")
    params = load_params(paths.PARAMS)
    for table in (paths.TRAIN_DATA, paths.HELD_OUT_DATA):
        if not table.exists():
            raise UsageError(f"{table} does not exist: run `dvc repro` first")
    rules = load_rules(paths.GATE_RULES)
    seeds = range(params.train.seed, params.train.seed + args.seeds)
    variations = [
        (seed, threads, kernel) for seed in seeds for threads in THREADS for kernel in kernels()
    ]
    machine = f"{this_cpu()}, ATen {torch.backends.cpu.get_cpu_capability()}"
    of = trained(params)
    kept = [run for run in load_record() if run["machine"] != machine]  # this machine's anew
    runs = [run for run in kept if run.get("trained") == of]  # runs of another training go
    if len(runs) < len(kept):
        print(f"calibrate: {len(kept) - len(runs)} run(s) of other params or data dropped")
    runs += [run | {"machine": machine, "trained": of} for run in measure_all(variations)]
    RECORD.write_text(json.dumps({"about": ABOUT, "runs": runs}, indent=1) + "\n")
    machines = len({run["machine"] for run in runs})
    options = f"--seeds {args.seeds} --margin {args.margin:g}"
    how = f"{options}: {len(runs)} run(s) on {machines} machine(s)"
    text = rewrite(paths.GATE_RULES.read_text(), rules, spreads(rules, runs), args.margin, how)
    paths.GATE_RULES.write_text(text)
    print(text, end="")


ABOUT = (
    "The runs `polyfit gate calibrate` measured, by machine: the metrics of trainings that "
    "differ only in what should not matter. gate.yaml's tolerances cover their spread."
)


def trained(params) -> str:
    """What the runs are of: the model, the training (but for what calibrate varies and what
    decides no output) and the data, as params declare it (and a CSV file's content)."""
    train = params.train.model_dump(exclude={"seed", "threads", "log_every", "checkpoint_every"})
    data = params.data.model_dump(exclude_none=True)
    if params.data.source == "csv":
        data["md5"] = files.digests(files.read_bytes(Path(params.data.csv.path))).md5
    what = json.dumps([params.model.model_dump(), train, data], sort_keys=True)
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def load_record() -> list[dict]:
    """The runs gate-calibration.json holds (of every machine calibrated on), or none."""
    if not RECORD.exists():
        return []
    try:
        return json.loads(RECORD.read_text())["runs"]
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{RECORD}: not a calibration record ({error}): delete it") from None


def measure_all(variations: list[tuple]) -> list[dict]:
    """One run per (seed, threads, kernels), in order, tracked in one scratch MLflow store."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="polyfit-calibrate-store-") as store:
        for number, (seed, threads, kernel) in enumerate(variations, 1):
            what = f"train.seed {seed}, train.threads {threads}, ATen {kernel}"
            print(f"calibrate: run {number}/{len(variations)}: {what}", file=sys.stderr, flush=True)
            metrics = measure(seed, threads, kernel, f"sqlite:///{store}/mlflow.db")
            runs.append({"seed": seed, "threads": threads, "kernels": kernel, "metrics": metrics})
    return runs


def kernels() -> list[str]:
    """The ATen kernel levels this CPU runs, from its own down to the scalar ones."""
    native = torch.backends.cpu.get_cpu_capability().lower()
    return list(KERNELS[KERNELS.index(native) :]) if native in KERNELS else [native]


def measure(seed: int, threads: int, kernel: str, store: str) -> dict:
    """{metrics file: {metric: value}} of one train + evaluate in a scratch folder, tracked in
    the scratch MLflow store `store`."""
    with tempfile.TemporaryDirectory(prefix="polyfit-calibrate-") as scratch:
        folder = Path(scratch)
        raw = yaml.safe_load(paths.PARAMS.read_text())
        raw["train"] |= {"seed": seed, "threads": threads, "checkpoint_every": None}
        (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
        for table in (paths.TRAIN_DATA, paths.HELD_OUT_DATA):
            (folder / table).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(table, folder / table)
        env = os.environ | {"ATEN_CPU_CAPABILITY": kernel, "MLFLOW_TRACKING_URI": store}
        # The stages' own main(), one process a run (ATen reads its setting as torch loads).
        done = subprocess.run(
            [sys.executable, "-c", STAGES], cwd=folder, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PolyfitError(f"training failed under ATen {kernel}: {reason}")
        files = (paths.TRAIN_METRICS, paths.EVAL_METRICS)
        return {str(path): flatten(json.loads((folder / path).read_text())) for path in files}


def spreads(rules: dict, runs: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """{(file, metric): (largest spread within a seed, smallest |value|)} for each gated metric
    the runs hold."""
    found = {}
    for file, metrics in rules.items():
        for metric in metrics:
            by_seed: dict[int, list[float]] = {}
            for run in runs:
                if (value := run["metrics"].get(file, {}).get(metric)) is not None:
                    by_seed.setdefault(run["seed"], []).append(value)
            if by_seed:
                spread = max(max(values) - min(values) for values in by_seed.values())
                smallest = min(abs(value) for values in by_seed.values() for value in values)
                found[file, metric] = spread, smallest
    return found


def tolerance(rule: Rule, spread: float, smallest: float, margin: float) -> Rule:
    """The rule with MARGIN x spread as its tolerance, in its own kind: relative to the
    baseline where the rule is relative, absolute otherwise. A spread of zero still allows
    one float32 rounding."""
    spread = max(spread, FLOAT32_EPS * smallest)
    if rule.rel > 0 and rule.abs == 0 and smallest > 0:
        return Rule(better=rule.better, abs=0.0, rel=_round_up(margin * spread / smallest))
    return Rule(better=rule.better, abs=_round_up(margin * spread), rel=0.0)


def _round_up(value: float) -> float:
    """Up to two significant digits: 0.02316 -> 0.024."""
    if value <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return round(math.ceil(value / scale - 1e-9) * scale, 12)  # 0.04000000001 stays 0.04


def rewrite(text: str, rules: dict, measured: dict, margin: float, how: str) -> str:
    """gate.yaml with each measured rule's tolerance replaced, its comments above the rules
    kept, and a line that says how it was calibrated."""
    header = [line for line in text.splitlines() if line.startswith("#")]
    header = [line for line in header if not line.startswith("# Calibrated")]
    lines = [*header, f"# Calibrated by `polyfit gate calibrate {how}` ({RECORD})."]
    for file, metrics in rules.items():
        lines.append(f"{file}:")
        for metric, rule in metrics.items():
            if (file, metric) in measured:
                rule = tolerance(rule, *measured[file, metric], margin)
            lines.append(
                f"  {metric}: {{better: {rule.better}, abs: {rule.abs:g}, rel: {rule.rel:g}}}"
            )
    return "\n".join(lines) + "\n"
