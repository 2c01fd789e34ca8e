"""Measure how far each gated metric moves across CPUs and code paths: gate.yaml's tolerances.

    python scripts/gate_spread.py                 # 16 code paths x train.seed 0-4: 80 trainings
                                                  # (12 paths where the CPU lacks AVX-512)
    python scripts/gate_spread.py --seeds 0 1

Each (code path, seed) trains and scores the default params in a child process with the code
path forced through the environment (MKL reads it once per process), as the train and evaluate
stages compute them. The figures kept from every CPU measured so far (scripts/observed_cpus.json:
an Intel Xeon's 16 paths, an AMD EPYC's default and scalar kernels) join the spread of their seed,
so the suggestion covers them all, whichever machine this runs on. Prints, per metric, the largest
spread (max - min over the code paths and CPUs of one seed), and the tolerance gate.yaml should
hold: 2x that spread, as `abs` or `rel` like the metric's current rule. docs/determinism.md.
"""

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # paths in polyfit.paths are relative to it
OBSERVED = Path(__file__).with_name("observed_cpus.json")

# Stand-ins for other CPUs: MKL's reproducible mode on/off, MKL's and ATen's kernel levels.
MKL_MODES = {
    "cnr": {"MKL_CBWR": "COMPATIBLE", "MKL_DYNAMIC": "FALSE"},
    "no-cnr": {"MKL_CBWR": "OFF", "MKL_DYNAMIC": "TRUE"},
}
MKL_LEVELS = {"mkl-native": {}, "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
ATEN_LEVELS = {
    "aten-native": {},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten-avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "aten-scalar": {"ATEN_CPU_CAPABILITY": "default"},  # as on CPUs without AVX2
}
X86_LEVELS = ["default", "avx2", "avx512"]  # ATen's kernel levels, weakest first
REPORTED = ["train.json:final_loss"]  # not gated: shown for comparison


def child(seed: int) -> dict:
    """The default params' train.json and eval.json metrics, with train.seed = seed."""
    from polyfit.core.data import make_dataset, target_grid
    from polyfit.core.fit import build_optimizer, fit, make_loss
    from polyfit.core.loss_metrics import train_metrics
    from polyfit.core.model import build_model
    from polyfit.core.runtime import configure_torch
    from polyfit.core.scoring import score
    from polyfit.params import flatten, load_params
    from polyfit.paths import PARAMS

    params = load_params(PARAMS)
    data, train = params.data, params.train
    x, y = make_dataset(**data.model_dump())
    configure_torch(train.threads, seed)
    model = build_model(params.model.model_dump())
    options = train.optimizer_options()
    optimizer = build_optimizer(train.optimizer, model.parameters(), train.lr, options)
    objective = make_loss(train.gradient, model, x, y)
    history = fit(objective, optimizer, train.steps, train.log_every, train.divergence_factor)
    grid = target_grid(data.target, data.x_min, data.x_max, params.evaluate.grid_points)
    scores = flatten(score(model, x, y, grid=grid))
    metrics = {f"train.json:{k}": v for k, v in train_metrics(history).items()}
    return metrics | {f"eval.json:{k}": v for k, v in scores.items()}


def runnable_aten_levels() -> dict:
    """ATEN_LEVELS up to ATen's own choice on this CPU: avx512 kernels die of SIGILL on a CPU
    without AVX-512."""
    import torch

    own = torch.backends.cpu.get_cpu_capability().lower()
    allowed = X86_LEVELS[: X86_LEVELS.index(own) + 1] if own in X86_LEVELS else ["default"]
    return {
        name: env
        for name, env in ATEN_LEVELS.items()
        if env.get("ATEN_CPU_CAPABILITY", "default") in allowed
    }


def measure(seed: int, env: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(seed)],
        env=os.environ | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def gated_rules() -> dict:
    """{"train.json:tail_mean_loss": Rule, ...} from gate.yaml."""
    from polyfit.paths import GATE_RULES
    from polyfit.tools.gate import load_rules

    rules = load_rules(ROOT / GATE_RULES)
    return {f"{Path(f).name}:{m}": rule for f, per in rules.items() for m, rule in per.items()}


def observed(seed: int) -> list[tuple[str, dict]]:
    """(label, metrics) kept from the CPUs measured so far, for this seed."""
    found = json.loads(OBSERVED.read_text())["observations"]
    return [(f"{o['cpu']}, {o['setting']}", o["metrics"]) for o in found if o["seed"] == seed]


def round_up(value: float) -> float:
    """Two significant digits, rounded up: a tolerance never below what was measured."""
    if value <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale - 1e-9) * scale


def suggest(rule, spread: float, low: float) -> str:
    """gate.yaml's tolerance for this spread, in the kind (abs or rel) the rule uses now."""
    if rule.rel > 0:
        return f"rel {round_up(2 * spread / abs(low)):g} (now {rule.rel:g})"
    return f"abs {round_up(2 * spread):g} (now {rule.abs:g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    rules = gated_rules()
    aten_levels = runnable_aten_levels().items()
    code_paths = list(itertools.product(MKL_MODES.items(), MKL_LEVELS.items(), aten_levels))
    spreads = {metric: [] for metric in [*rules, *REPORTED]}
    for seed in args.seeds:
        results = []
        for (mode, mode_env), (mkl, mkl_env), (aten, aten_env) in code_paths:
            results.append(measure(seed, mode_env | mkl_env | aten_env))
            print(f"seed {seed} {mode} {mkl} {aten}: {json.dumps(results[-1])}", flush=True)
        for label, metrics in observed(seed):
            print(f"seed {seed} observed on {label}: {json.dumps(metrics)}", flush=True)
            results.append(metrics)
        for metric, per_seed in spreads.items():
            values = [result[metric] for result in results if metric in result]
            per_seed.append((max(values) - min(values), min(values), max(values), seed))
    print("\nmetric: largest spread over the code paths and CPUs of one seed -> gate.yaml")
    for metric, per_seed in spreads.items():
        spread, low, high, seed = max(per_seed)
        verdict = suggest(rules[metric], spread, low) if metric in rules else "reported, not gated"
        print(f"{metric}: {spread:.3g} ({low:.6g} to {high:.6g}, seed {seed}) -> {verdict}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(int(sys.argv[2]))))
    else:
        main()
