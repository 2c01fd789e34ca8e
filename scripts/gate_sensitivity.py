"""Measure which changes of train.steps and train.lr the gate catches: docs/determinism.md.

    python scripts/gate_sensitivity.py
    python scripts/gate_sensitivity.py --steps 1500 1900 --lrs 5e-4 8e-4

Trains the default params in this process (as tests/test_gate.py does) once as the baseline and
once per change, judges each against that baseline with gate.yaml's rules (polyfit.tools.gate),
and prints a markdown table: each gated metric's change, and whether the gate fails it.
"""

import argparse
import os
from datetime import date
from pathlib import Path

from polyfit import paths
from polyfit.core.runtime import REPRODUCIBLE_MKL
from polyfit.tools.gate import judge, load_rules, this_cpu

for _name, _value in REPRODUCIBLE_MKL.items():  # as the CLI sets them, before torch loads
    os.environ.setdefault(_name, _value)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STEPS = [1000, 1500, 1800, 1900, 1950, 2500]
DEFAULT_LRS = [5e-4, 7e-4, 8e-4, 9e-4, 1.1e-3, 1.25e-3, 1.5e-3, 2e-3]


def trained_metrics(steps: int | None = None, lr: float | None = None) -> dict:
    """{"metrics/train.json": {...}, "metrics/eval.json": {...}} of the default params with
    train.steps and train.lr replaced, as the train and evaluate stages compute them."""
    from polyfit.core.data import make_dataset, target_grid
    from polyfit.core.fit import build_optimizer, fit, make_loss
    from polyfit.core.loss_metrics import train_metrics
    from polyfit.core.model import build_model
    from polyfit.core.runtime import configure_torch
    from polyfit.core.scoring import score
    from polyfit.params import flatten, load_params

    params = load_params(paths.PARAMS)
    data, train = params.data, params.train
    x, y = make_dataset(**data.model_dump())
    configure_torch(train.threads, train.seed)
    model = build_model(params.model.model_dump())
    options = train.optimizer_options()
    steps, lr = steps or train.steps, lr or train.lr
    optimizer = build_optimizer(train.optimizer, model.parameters(), lr, options)
    objective = make_loss(train.gradient, model, x, y)
    history = fit(objective, optimizer, steps, train.log_every, train.divergence_factor)
    grid = target_grid(data.target, data.x_min, data.x_max, params.evaluate.grid_points)
    scores = flatten(score(model, x, y, grid=grid))
    return {str(paths.TRAIN_METRICS): train_metrics(history), str(paths.EVAL_METRICS): scores}


def verdicts(baseline: dict, current: dict, rules: dict) -> list:
    """One gate Verdict per gated metric, in gate.yaml's order."""
    return [
        judge(f"{file}: {metric}", baseline[file].get(metric), current[file].get(metric), rule)
        for file, per_metric in rules.items()
        for metric, rule in per_metric.items()
    ]


def header() -> str:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return f"Measured {date.today()} on {this_cpu()}, torch {torch.__version__} ({capability})."


def cell(verdict) -> str:
    """The change, relative where the rule's tolerance is, else absolute; bold if it fails."""
    change = verdict.current - verdict.baseline
    text = f"{change / abs(verdict.baseline):+.2%}" if verdict.rule.rel else f"{change:+.2g}"
    return text if verdict.passed else f"**{text} fail**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="*", default=DEFAULT_STEPS)
    parser.add_argument("--lrs", type=float, nargs="*", default=DEFAULT_LRS)
    args = parser.parse_args()
    os.chdir(ROOT)  # paths are relative to the project root
    rules = load_rules(paths.GATE_RULES)
    baseline = trained_metrics()
    changes = [("train.steps", s, {"steps": s}) for s in args.steps]
    changes += [("train.lr", f"{lr:g}", {"lr": lr}) for lr in args.lrs]
    names = [Path(f).stem + ": " + m for f, per in rules.items() for m in per]
    print(header())
    print("Each gated metric's change from the baseline (default params), and the verdict:\n")
    print("| change | " + " | ".join(names) + " | gate |")
    print("|---" * (len(names) + 2) + "|")
    values = [f"{v.baseline:.4g}" for v in verdicts(baseline, baseline, rules)]
    print("| none: the baseline | " + " | ".join(values) + " | passes |")
    for key, value, change in changes:
        judged = verdicts(baseline, trained_metrics(**change), rules)
        caught = "**fails**" if not all(v.passed for v in judged) else "passes"
        print(f"| {key} {value} | " + " | ".join(cell(v) for v in judged) + f" | {caught} |")


if __name__ == "__main__":
    main()
