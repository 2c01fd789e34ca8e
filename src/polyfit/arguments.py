"""The `polyfit` command's arguments: every command, its options and its help text."""

import argparse

STAGES = {
    "generate": "make the training and held-out tables from params.data (DVC stage)",
    "train": "train the model with the optimizer from params.train (DVC stage)",
    "evaluate": "score the model on the training and held-out rows (DVC stage)",
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyfit",
        description="Train a model on a table of features, tracked by DVC and MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, help_text in STAGES.items():
        commands.add_parser(stage, help=help_text, description=help_text + "; reads params.yaml")
    commands.add_parser(
        "check",
        help="validate params.yaml (the pipeline's first DVC stage)",
        description="Validate params.yaml; exit 2 with one line naming the first problem. "
        "dvc repro runs it first, so bad params stop the pipeline before DVC deletes outputs.",
    )
    commands.add_parser(
        "status",
        help="say whether dvc repro changed the committed results (dvc.lock, metrics/), and why",
        description="Compare dvc.lock and metrics/ with HEAD: the same bytes, changes that "
        "follow your changes to code or params, or another CPU's rounding; with the gate's "
        "verdict. `make run` ends with it.",
    )
    _add_gate(commands)
    _add_models(commands)
    _add_servers(commands)
    _add_sweep(commands)
    return parser


def _add_gate(commands) -> None:
    gate = commands.add_parser(
        "gate",
        help="fail when metrics regress against a git revision (CI); `gate calibrate`",
        description="Compare workspace metrics with those committed at a revision, "
        "by the rules in gate.yaml. Exit 0: all rules hold; 1: regression; 2: usage error.",
    )
    gate.add_argument("--baseline", default="HEAD", help="git revision to compare with (HEAD)")
    gate.add_argument("--report", metavar="FILE", help="also write the markdown report here")
    actions = gate.add_subparsers(dest="gate_command", metavar="ACTION")
    calibrate = actions.add_parser(
        "calibrate",
        help="measure how far the gated metrics move when nothing that matters changes",
        description="Train and score params.yaml's pipeline several times, varying only what "
        "should not matter (train.threads and ATen's kernels, and with --seeds train.seed), "
        "record the runs in gate-calibration.json (by machine: calibrate on each kind you run "
        "CI on) and write each gated metric's tolerance into gate.yaml: MARGIN x its spread.",
    )
    calibrate.add_argument(
        "--seeds", type=int, default=1, help="train.seed values to vary over (default 1: as is)"
    )
    calibrate.add_argument(
        "--margin", type=float, default=2.0, help="tolerance = MARGIN x spread (default 2)"
    )


def _add_models(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="predict y for rows of features with the current (or a logged) model",
        description="Predict with models/model.pt (the DVC output), or with an MLflow model.",
    )
    rows = predict.add_mutually_exclusive_group(required=True)
    rows.add_argument(
        "--x",
        type=float,
        nargs="+",
        action="extend",  # --x 0.5 --x=-1e3: a negative exponent form alone reads as an option
        help="values of the one feature to predict at (repeatable; --x=-1e3 for a negative "
        "exponent form)",
    )
    rows.add_argument("--csv", metavar="FILE", help="a CSV file with a column per feature")
    predict.add_argument(
        "--model",
        metavar="URI",
        help="an MLflow model: models:/NAME@champion, models:/NAME/VERSION, "
        "runs:/RUN_ID/model or models:/MODEL_ID",
    )
    promote = commands.add_parser(
        "promote",
        help="register the best model as the new 'champion' if it beats the current one",
        description="Among the models trained on data/train.pt and scored on "
        "data/held_out.pt as they are now, take the one with the lowest held-out mse (or "
        "--model), and if it beats the champion, register it and point 'champion' at it.",
    )
    promote.add_argument("--model", metavar="MODEL_ID", help="a LoggedModel id (default: best)")
    runs = commands.add_parser("runs", help="maintain MLflow runs")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    runs_commands.add_parser(
        "cleanup", help="mark runs left RUNNING by processes that no longer exist as KILLED"
    )


def _add_servers(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the champion model over HTTP (mlflow models serve)",
        description="Serve an MLflow model (default: the registered model's @champion) with "
        '`mlflow models serve --env-manager local`. POST {"inputs": [[x, ...], ...]} or '
        '{"dataframe_split": ...} to /invocations.',
    )
    serve.add_argument("--model", metavar="URI", help="models:/... or runs:/... (default champion)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=5001, help="port (5001; make ui uses 5000)")
    serve.add_argument("--verbose", action="store_true", help="show MLflow's and uvicorn's logs")
    ui = commands.add_parser(
        "ui",
        help="open the MLflow UI on the comparison of train runs",
        description="Save the comparison view in the tracking store, print its URL and run "
        "`mlflow ui` on the store (with a tracking server: print the URL on it and exit).",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port to listen on (5000)")
    ui.add_argument("--verbose", action="store_true", help="show MLflow's and uvicorn's logs")


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
