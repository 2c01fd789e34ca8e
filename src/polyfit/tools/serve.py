"""`polyfit serve`: the champion (or any MLflow model) over HTTP, with MLflow's own server.

    curl -X POST http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": [[0.5], [1.0]]}'    ->  {"predictions": [0.417..., 0.764...]}

Rows by position ({"inputs": [[...], ...]}), or named columns in any order
({"dataframe_split": {"columns": [...], "data": [...]}}): tracking/serving.py.
"""

import os
import sys

from polyfit import paths
from polyfit.params import load_params
from polyfit.tools.servers import check_port, quiet_server_env, serve
from polyfit.tracking import store
from polyfit.tracking.model import resolve
from polyfit.tracking.uri import tracking_uri


def main(args) -> None:
    check_port(args.host, args.port)
    model = args.model or f"models:/{load_params(paths.PARAMS).mlflow.registered_model}@champion"
    resolve(store.make_client(tracking_uri()), model)  # one line that says what to do
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()  # the store the stages log to
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # the model is code + tensors
    quiet_server_env(args.verbose)
    command = ["mlflow", "models", "serve", "-m", model, "--env-manager", "local"]
    command += ["--host", args.host, "--port", str(args.port)]
    print(f"serving {model} at http://{args.host}:{args.port}/invocations", flush=True)
    os.environ.update(paths.venv_first(os.environ))  # its scoring server starts `uvicorn` by name
    serve([sys.executable, "-m", *command])  # this venv's mlflow
