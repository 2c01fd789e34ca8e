"""`polyfit <command>`: the pipeline stages and the tools around them.

Each command imports its module only when it runs, so `polyfit gate` or `--help` never pays
for torch or mlflow.
"""

import argparse
import gc
import importlib
import os
import sys

from polyfit.errors import PolyfitError
from polyfit.runtime import REPRODUCIBLE_MKL

TOOLS = {"gate": "gate", "predict": "predict", "promote": "registry", "runs": "runs"}
STAGES = {
    "generate": "make the dataset from params.data (DVC stage)",
    "train": "fit the polynomial with the optimizer from params.train (DVC stage)",
    "evaluate": "score the model against the least-squares optimum (DVC stage)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyfit", description="Fit a polynomial to a function, tracked by DVC and MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, help_text in STAGES.items():
        commands.add_parser(stage, help=help_text, description=help_text + "; reads params.yaml")

    gate = commands.add_parser(
        "gate",
        help="fail when metrics regress against a git revision (CI)",
        description="Compare workspace metrics with those committed at a revision, "
        "by the rules in gate.yaml. Exit 0: all rules hold; 1: regression; 2: usage error.",
    )
    gate.add_argument("--baseline", default="HEAD", help="git revision to compare with (HEAD)")
    gate.add_argument("--report", metavar="FILE", help="also write the markdown report here")

    predict = commands.add_parser(
        "predict",
        help="predict y at given x with the current (or a logged) model",
        description="Predict with models/model.pt, or with the state_dict of an MLflow run.",
    )
    predict.add_argument("--x", type=float, nargs="+", required=True, help="points to predict at")
    predict.add_argument("--run", metavar="RUN_ID", help="load the model logged by this MLflow run")

    promote = commands.add_parser(
        "promote",
        help="move the registry alias 'champion' to a better model version",
        description="Point 'champion' at VERSION (default: newest) only if its eval mse "
        "beats the current champion's.",
    )
    promote.add_argument("--version", help="registered model version (default: newest)")

    runs = commands.add_parser("runs", help="maintain MLflow runs")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    runs_commands.add_parser(
        "cleanup", help="mark runs left RUNNING by processes that no longer exist as KILLED"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    # Read when torch loads or first allocates, so set before any command imports torch;
    # setdefault, so a value the user exported wins.
    # Transparent huge pages for torch's CPU allocator: a 1e7-point step runs ~35% faster.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    # MKL's reproducible mode: the same bytes on every x86-64 CPU with AVX2 (see runtime.py).
    for name, value in REPRODUCIBLE_MKL.items():
        os.environ.setdefault(name, value)
    try:
        _run(_parser().parse_args(argv))
    finally:
        # Skip the collection of the ~300k objects torch and mlflow leave at exit: ~1 s each.
        gc.freeze()


def _run(args: argparse.Namespace) -> None:
    module = "stages." + args.command if args.command in STAGES else TOOLS[args.command]
    try:
        entry = importlib.import_module(f"polyfit.{module}")
        if args.command in STAGES:
            entry.main()
        else:
            entry.main(args)
    except PolyfitError as error:
        print(f"polyfit {args.command}: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt as interrupt:
        reason = str(interrupt) or "interrupted by SIGINT"
        print(f"polyfit {args.command}: {reason}", file=sys.stderr)
        sys.exit(getattr(interrupt, "exit_code", 130))  # 128 + SIGINT unless told otherwise
