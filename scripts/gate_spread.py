"""Measure how far each gated metric moves across CPU code paths and seeds: gate.yaml's input.

    python scripts/gate_spread.py                 # 16 code paths x train.seed 0-4, ~5-10 min
    python scripts/gate_spread.py --seeds 0 1

Each (code path, seed) trains and scores the default params in a child process with the code
path forced through the environment (MKL reads it once per process), as the train and evaluate
stages compute them. Prints, per metric, the largest spread (max - min over the code paths of
one seed) and 2x that spread: the tolerance gate.yaml uses.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys

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
GATED = [
    "train.json:tail_mean_loss",
    "train.json:final_loss",  # reported, not gated: shown for comparison
    "eval.json:train_set.mse",
    "eval.json:grid.mse",
    "eval.json:gap_to_optimum",
    "eval.json:coef_max_abs_diff",
]


def child(seed: int) -> dict:
    """The default params' train.json and eval.json metrics, with train.seed = seed."""
    import torch

    from polyfit.core.data import TARGET_FUNCTIONS, make_dataset
    from polyfit.core.fit import build_optimizer, fit, make_loss
    from polyfit.core.loss_metrics import train_metrics
    from polyfit.core.model import build_model
    from polyfit.core.runtime import configure_torch
    from polyfit.core.scoring import score
    from polyfit.params import flatten, load_params
    from polyfit.paths import PARAMS

    params = load_params(PARAMS)
    data, train, degree = params.data, params.train, params.model.degree
    x, y = make_dataset(**data.model_dump())
    configure_torch(train.threads, seed)
    model = build_model(degree)
    optimizer = build_optimizer(
        train.optimizer, model.parameters(), train.lr, train.optimizer_options()
    )
    objective = make_loss(train.gradient, model, x, y, degree)
    history = fit(objective, optimizer, train.steps, train.log_every, train.divergence_factor)
    grid_x = torch.linspace(data.x_min, data.x_max, params.evaluate.grid_points)
    grid_y = TARGET_FUNCTIONS[data.target](grid_x.double())
    scores = flatten(score(model, x, y, grid_x, grid_y, degree))
    metrics = {f"train.json:{k}": v for k, v in train_metrics(history.tolist()).items()}
    return metrics | {f"eval.json:{k}": v for k, v in scores.items()}


def measure(seed: int, env: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(seed)],
        env=os.environ | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    paths = list(itertools.product(MKL_MODES.items(), MKL_LEVELS.items(), ATEN_LEVELS.items()))
    spreads = {metric: [] for metric in GATED}
    for seed in args.seeds:
        results = []
        for (mode, mode_env), (mkl, mkl_env), (aten, aten_env) in paths:
            results.append(measure(seed, mode_env | mkl_env | aten_env))
            print(f"seed {seed} {mode} {mkl} {aten}: {json.dumps(results[-1])}", flush=True)
        for metric in GATED:
            values = [result[metric] for result in results]
            spreads[metric].append((max(values) - min(values), min(values), max(values), seed))
    print("\nmetric: largest spread over the code paths of one seed (range, seed) -> 2x spread")
    for metric, per_seed in spreads.items():
        spread, low, high, seed = max(per_seed)
        print(f"{metric}: {spread:.3g} ({low:.6g} to {high:.6g}, seed {seed}) -> {2 * spread:.3g}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(int(sys.argv[2]))))
    else:
        main()
