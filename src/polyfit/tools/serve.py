"""`polyfit serve`: the champion (or any MLflow model) over HTTP, with MLflow's own server.

    curl -X POST http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": [0.5, 1.0]}'        ->  {"predictions": [0.416..., 0.763...]}
"""

import os

from polyfit import paths
from polyfit.params import load_params


def main(args) -> None:
    model = args.model or f"models:/{load_params(paths.PARAMS).mlflow.registered_model}@champion"
    from polyfit.tracking.store import tracking_uri

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()  # the store the stages log to
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # the model is code + tensors
    command = ["mlflow", "models", "serve", "-m", model, "--env-manager", "local"]
    command += ["--host", args.host, "--port", str(args.port)]
    print(f"serving {model} at http://{args.host}:{args.port}/invocations", flush=True)
    os.execvp(command[0], command)
