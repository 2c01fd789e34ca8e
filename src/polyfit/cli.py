"""`polyfit <command>`: the pipeline stages and the tools around them.

Each command imports its module only when it runs, so `polyfit gate` or `--help` never pays
for torch or mlflow.
"""

import argparse
import importlib
import os
import sys

from polyfit.core.runtime import REPRODUCIBLE_MKL
from polyfit.errors import PolyfitError

TOOLS = {
    "gate": "tools.gate",
    "predict": "tools.predict",
    "promote": "tracking.registry",
    "runs": "tools.cleanup",
    "serve": "tools.serve",
    "ui": "tools.ui",
    "sweep": "sweep.command",
    "worker": "sweep.worker",
}
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
        description="Predict with models/model.pt (the DVC output), or with an MLflow model.",
    )
    predict.add_argument(
        "--x",
        type=float,
        nargs="+",
        action="extend",  # --x 0.5 --x=-1e3: a negative exponent form alone reads as an option
        required=True,
        help="points to predict at (repeatable; --x=-1e3 for a negative exponent form)",
    )
    predict.add_argument(
        "--model",
        metavar="URI",
        help="an MLflow model: models:/polyfit-cubic@champion, models:/NAME/VERSION, "
        "runs:/RUN_ID/model or models:/MODEL_ID",
    )

    promote = commands.add_parser(
        "promote",
        help="move the registry alias 'champion' to a better model version",
        description="Point 'champion' at the version with the lowest eval mse (versions not "
        "yet evaluated are skipped), or at VERSION only if its eval mse beats the champion's.",
    )
    promote.add_argument("--version", help="registered model version (default: the best)")

    serve = commands.add_parser(
        "serve",
        help="serve the champion model over HTTP (mlflow models serve)",
        description="Serve an MLflow model (default: the registered model's @champion) with "
        '`mlflow models serve --env-manager local`. POST {"inputs": [x, ...]} to /invocations.',
    )
    serve.add_argument("--model", metavar="URI", help="models:/... or runs:/... (default champion)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=5001, help="port (5001; make ui uses 5000)")
    serve.add_argument("--verbose", action="store_true", help="show MLflow's and uvicorn's logs")

    runs = commands.add_parser("runs", help="maintain MLflow runs")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    runs_commands.add_parser(
        "cleanup", help="mark runs left RUNNING by processes that no longer exist as KILLED"
    )

    ui = commands.add_parser(
        "ui",
        help="open the MLflow UI on the comparison of train runs",
        description="Save the comparison view in the tracking store, print its URL and run "
        "`mlflow ui` on the store (with a tracking server: print the URL on it and exit).",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port to listen on (5000)")
    ui.add_argument("--verbose", action="store_true", help="show MLflow's and uvicorn's logs")
    _add_sweep(commands)
    return parser


def _add_sweep(commands) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="one DVC experiment per configuration of a grid, locally or on a Dask cluster",
        description="Expand -S overrides as `dvc exp run -S` does (a,b lists, choice(), "
        "range()) and run one experiment per configuration: on the local DVC queue, or with "
        "--scheduler on `polyfit worker`s. Prints a table, best first. Exit 0: all succeeded; "
        "1: some failed; 2: usage error.",
    )
    sweep.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        metavar="KEY=VALUES",
        help="a param and its values, e.g. train.lr=1e-3,1e-2 (repeat for a grid)",
    )
    sweep.add_argument(
        "--also",
        dest="overrides",
        action="append_const",
        const=None,
        help="start another grid: the -S after it form their own configurations",
    )
    sweep.add_argument("--name", default="sweep", help="experiment name prefix (sweep)")
    sweep.add_argument(
        "-j", "--jobs", type=int, default=1, help="local queue workers (default 1, as DVC)"
    )
    sweep.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler tcp://HOST:PORT (default: DASK_SCHEDULER_ADDRESS, else local)",
    )

    worker = commands.add_parser(
        "worker",
        help="run sweep configurations from a Dask scheduler in this clone",
        description="Start a Dask worker bound to this clone: one configuration at a time, "
        "pushed to git remote origin and the DVC remote, tracked to MLFLOW_TRACKING_URI.",
    )
    worker.add_argument("address", nargs="?", help="tcp://HOST:PORT (DASK_SCHEDULER_ADDRESS)")
    worker.add_argument("--host", help="address to listen on (default: Dask picks)")


def main(argv: list[str] | None = None) -> None:
    # MKL reads these when torch loads, so set before any command imports torch; setdefault,
    # so a value the user exported wins (see core/runtime.py).
    for name, value in REPRODUCIBLE_MKL.items():
        os.environ.setdefault(name, value)
    _run(_parser().parse_args(argv))


def _preflight(stage: str) -> None:
    """Fail in seconds, before the stage imports torch and mlflow (~3 s): params whose data
    would not fit in memory, or a tracking server that does not answer."""
    from polyfit import paths
    from polyfit.memory import check_memory
    from polyfit.params import load_params
    from polyfit.tracking.store import probe_store

    check_memory(load_params(paths.PARAMS), stage, str(paths.PARAMS))
    probe_store()


def _run(args: argparse.Namespace) -> None:
    module = "stages." + args.command if args.command in STAGES else TOOLS[args.command]
    try:
        if args.command in STAGES:
            _preflight(args.command)
        entry = importlib.import_module(f"polyfit.{module}")
        if args.command in STAGES:
            entry.main()
        else:
            entry.main(args)
    except PolyfitError as error:
        _fail(args.command, str(error), error, error.exit_code)
    except OSError as error:  # the machine: a full disk, a read-only folder, a vanished file
        _fail(args.command, _describe_os_error(error), error, 1)
    except KeyboardInterrupt as interrupt:
        reason = str(interrupt) or "interrupted by SIGINT"
        print(f"polyfit {args.command}: {reason}", file=sys.stderr)
        sys.exit(getattr(interrupt, "exit_code", 130))  # 128 + SIGINT unless told otherwise


def _fail(command: str, message: str, error: BaseException, exit_code: int) -> None:
    """One line on stderr, with any note added on the way (a run the store could not end)."""
    notes = "".join(f" ({note})" for note in getattr(error, "__notes__", []))
    print(f"polyfit {command}: error: {message}{notes}", file=sys.stderr)
    sys.exit(exit_code)


def _describe_os_error(error: OSError) -> str:
    """'data/dataset.pt: No space left on device', without Python's [Errno 28] prefix."""
    reason = error.strerror or str(error) or type(error).__name__
    return f"{error.filename}: {reason}" if error.filename else reason
