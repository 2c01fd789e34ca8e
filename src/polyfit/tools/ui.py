"""`polyfit ui`: the MLflow UI, opened on the comparison of train runs.

MLflow 3.17's runs table reads its filter and sort from the URL, but its columns only from a
saved view: an experiment tag `mlflow.sharedViewState.<id>` that the URL names with
`viewStateShareKey`. So the command saves that view in the store, then prints its URL.
"""

import json
import os
import sys
import time
from urllib.parse import urlencode

from mlflow.exceptions import MlflowException

from polyfit import paths
from polyfit.errors import PolyfitError, one_line
from polyfit.params import load_params
from polyfit.tools.servers import check_port, quiet_server_env, serve
from polyfit.tracking import store
from polyfit.tracking.names import SCORE
from polyfit.tracking.uri import is_server, tracking_uri

VIEW_ID = "polyfit-comparison"
VIEW_NAME = "polyfit: train runs, best first"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's key prefix for saved and shared views


def column(kind: str, key: str) -> str:
    """MLflow's column and sort key: kind.`key` (the backticks allow dots in the key)."""
    return f"{kind}.`{key}`"


PARAMS = [column("params", key) for key in ("train.optimizer", "train.lr")]
METRICS = [column("metrics", key) for key in (SCORE, "eval.train_set.mse", "final_loss")]
COLUMNS = PARAMS + METRICS  # shown first, in this order
# Then the run's logged model and the data it was trained on.
ATTRIBUTES = [column("attributes", name) for name in ("Models", "Dataset")]


def comparison_view() -> dict:
    """The view's state: train runs only, best first, the params and metrics that matter."""
    return {
        "searchFilter": "tags.stage = 'train'",  # one row per trained model, no stage rows
        "orderByKey": column("metrics", SCORE),  # the registry's score: lower is better
        "orderByAsc": True,
        "selectedColumns": COLUMNS + ATTRIBUTES,
        "columnOrder": COLUMNS,
        # Wide enough for a float's 17 digits and exponent: truncated, 1.56e-08 reads as 1.56.
        "columnWidths": {key: 180 if key in METRICS else 110 for key in COLUMNS},
    }


def view_tag(created_ms: int) -> tuple[str, str]:
    """The experiment tag (key, value) that stores the view, in MLflow's saved-view envelope."""
    envelope = {
        "name": VIEW_NAME,
        "createdAt": created_ms,
        "updatedAt": created_ms,
        "state": json.dumps(comparison_view()),  # MLflow also reads it deflate-compressed
    }
    return VIEW_TAG_PREFIX + VIEW_ID, json.dumps(envelope)


def comparison_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs page in the Model training view, showing the saved comparison."""
    # No searchFilter etc. here: MLflow ignores the saved view when the URL sets any of them.
    query = urlencode({"workflowType": "machine_learning", "viewStateShareKey": VIEW_ID})
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def save_view(client, experiment_id: str) -> None:
    """Write (or refresh) the comparison view on the experiment."""
    client.set_experiment_tag(experiment_id, *view_tag(int(time.time() * 1000)))


def main(args) -> None:
    """`polyfit ui [--host H] [--port P]`: save the view, print its URL, run `mlflow ui`."""
    params = load_params(paths.PARAMS)
    uri = tracking_uri()
    on_a_server = is_server(uri)  # a tracking server serves its own UI
    if not on_a_server:
        check_port(args.host, args.port)
    client, experiment_id = store.connect(params.mlflow.experiment)
    try:  # e.g. a deleted experiment, or a server user without edit rights
        save_view(client, experiment_id)
    except MlflowException as error:
        reason = one_line(error)
        raise PolyfitError(f"cannot save the comparison view in {uri}: {reason}") from None
    if on_a_server:
        print(comparison_url(uri, experiment_id))
        return
    print(comparison_url(f"http://{args.host}:{args.port}", experiment_id))
    sys.stdout.flush()
    quiet_server_env(args.verbose)
    # MLflow's job runner (huey consumers, for GenAI features) is several more processes and
    # GiB of memory, slows the first page and is noisy to stop: off unless the user asked for it.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--registry-store-uri", uri]
    # One worker: one person's browser. MLflow's default of 4 starts 4 processes that each import
    # MLflow, so the URL answers seconds later and each holds its own memory.
    command += ["--host", args.host, "--port", str(args.port), "--workers", "1"]
    serve([sys.executable, "-m", *command])  # this venv's mlflow
