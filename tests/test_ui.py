"""`polyfit ui`: the URL it prints opens MLflow on the comparison, checked in headless Chromium.

The store holds what a few reproductions leave: per reproduction a generate run, a train run
and an evaluate run nested under the train run it scored.
"""

import json
import socket
import subprocess
import sys
import time

import pytest
from browser import Page, dump_dom
from conftest import (
    clean_env,
    copy_made_store,
    default_params,
    mlflow_client,
    polyfit,
    write_params,
)
from servers import closed_port, free_port, mlflow_server, stop_server, wait_until_healthy

from polyfit.tools.ui import COLUMNS, comparison_url, comparison_view, view_tag

# (optimizer, lr, train-set mse, gap to optimum), in the order the runs are created. Neither
# creation order (MLflow's default sort) nor run name order is the best-first order.
TRAINED = [
    ("RMSprop", 0.001, 4.47e-3, 1.5e-2),
    ("LBFGS", 1.0, 4.40e-3, 1e-8),
    ("SGD", 3e-6, 9.80e-3, 1.2),
    ("Adam", 0.01, 4.41e-3, 2e-3),
]
BEST_FIRST = ["LBFGS", "Adam", "RMSprop", "SGD"]
N_SAMPLES = 2000


def train_name(optimizer: str, lr: float) -> str:
    return f"train {optimizer} lr={lr} [{optimizer.lower()}]"  # as tracking.run_name writes it


def build_store(uri: str) -> str:
    """Runs as the stages log them, for each trained optimizer; returns the experiment id."""
    from mlflow.entities import Metric, Param

    client = mlflow_client(uri)
    experiment_id = client.create_experiment("polyfit")
    now = int(time.time() * 1000)
    for optimizer, lr, mse, gap in TRAINED:
        generate = client.create_run(
            experiment_id, run_name="generate sin", tags={"stage": "generate"}
        )
        client.log_batch(generate.info.run_id, metrics=[Metric("y_mean", 0.0, now, 0)])
        client.set_terminated(generate.info.run_id)
        train = client.create_run(
            experiment_id, run_name=train_name(optimizer, lr), tags={"stage": "train"}
        ).info.run_id
        params = {"data.n_samples": N_SAMPLES, "model.degree": 3}
        params |= {"train.optimizer": optimizer, "train.lr": lr, "train.steps": 2000}
        metrics = {"final_loss": mse * N_SAMPLES, "steps": 2000, "train_seconds": 1.5}
        metrics |= {"eval.train_set.mse": mse, "eval.grid.mse": mse, "eval.gap_to_optimum": gap}
        client.log_batch(
            train,
            params=[Param(key, str(value)) for key, value in params.items()],
            metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
        )
        evaluate = client.create_run(
            experiment_id,
            run_name=f"evaluate {optimizer} lr={lr}",
            tags={"stage": "evaluate", "mlflow.parentRunId": train},
        ).info.run_id
        client.log_batch(evaluate, metrics=[Metric("train_set.mse", mse, now, 0)])
        client.set_terminated(evaluate)
        client.set_terminated(train)
    return experiment_id


def assert_comparison(dom: str) -> None:
    """The rendered page is the Model training runs table: train runs best first, our columns."""
    page = Page(dom)
    rows = page.row_texts()
    names = {optimizer: train_name(optimizer, lr) for optimizer, lr, _, _ in TRAINED}
    shown = [next((o for o, name in names.items() if name in row), row) for row in rows]
    assert shown == BEST_FIRST, f"rows top to bottom: {rows}"
    for wanted in COLUMNS:
        assert wanted in page.column_ids, f"no {wanted} column header in {page.column_ids}"
    # The sidebar's links carry the workflow: Model training links to the model registry,
    # the GenAI view to traces, judges and the gateway instead.
    assert "#/models" in page.links, f"not the Model training view: links {page.links}"
    genai = [link for link in page.links if "workflowType=genai" in link or "/overview/" in link]
    assert not genai, f"GenAI view links: {genai}"
    assert "You're viewing a shared view" in dom  # the saved view was found and applied


def test_comparison_url_names_the_saved_view():
    url = comparison_url("http://127.0.0.1:5000/", "1")
    assert url == (
        "http://127.0.0.1:5000/#/experiments/1/runs"
        "?workflowType=machine_learning&viewStateShareKey=polyfit-comparison"
    )


def test_view_tag_is_a_saved_view_envelope():
    key, value = view_tag(1234)
    assert key == "mlflow.sharedViewState.polyfit-comparison"
    envelope = json.loads(value)
    assert envelope["createdAt"] == 1234 and isinstance(envelope["name"], str)
    assert json.loads(envelope["state"]) == comparison_view()
    assert comparison_view()["orderByKey"] == "metrics.`eval.train_set.mse`"


def test_unusable_store_is_one_line(tmp_path):
    write_params(tmp_path, default_params())
    with closed_port() as port:
        env = clean_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
        done = polyfit("ui", cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("polyfit ui: error: MLflow tracking store http://127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_a_port_in_use_is_one_line_before_any_url(tmp_path, command):
    """The server would print its bind error after the URL, which then names someone else's."""
    write_params(tmp_path, default_params())
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = polyfit(command, "--port", str(port), cwd=tmp_path, env=env, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"polyfit {command}: error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "choose --port\n"
    )
    assert not (tmp_path / "mlflow.db").exists()  # refused before touching the store


def test_deleted_experiment_is_one_line(tmp_path):
    """MLflow refuses tags on a deleted experiment: `polyfit ui` says so, without a traceback."""
    write_params(tmp_path, default_params())
    copy_made_store(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    client.delete_experiment(client.create_experiment("polyfit"))
    done = polyfit("ui", cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=uri), timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"polyfit ui: error: cannot save the comparison view in {uri}")
    assert "deleted" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not done.stdout  # no URL to a view that does not exist


@pytest.mark.slow
def test_make_ui_opens_on_the_comparison(tmp_path):
    """`polyfit ui` on a SQLite store: saves the view, prints its URL, serves it."""
    write_params(tmp_path, default_params())
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # the project root for tracking
    copy_made_store(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = build_store(uri)
    port, log = free_port(), tmp_path / "ui.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "polyfit", "ui", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(MLFLOW_TRACKING_URI=uri),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # polyfit execs mlflow ui, which starts uvicorn workers
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, server, log)
        url = log.read_text().splitlines()[0]
        assert url == comparison_url(base, experiment_id)
        assert_comparison(dump_dom(url, tmp_path))
        # Quiet by default: the URL and MLflow's one security note, no INFO or access log
        # lines and no library warnings (StarletteDeprecationWarning, four times).
        shown = log.read_text()
        assert "Warning" not in shown and "INFO" not in shown, shown
        assert [line for line in shown.splitlines()[1:] if not line.startswith("[MLflow]")] == []
    finally:
        stop_server(server)


@pytest.mark.slow
def test_ui_with_a_tracking_server_prints_its_url(tmp_path):
    """With MLFLOW_TRACKING_URI on a server, `polyfit ui` saves the view there and exits."""
    write_params(tmp_path, default_params())
    with mlflow_server(tmp_path) as (url, _):
        experiment_id = build_store(url)
        done = polyfit("ui", cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=url), timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == comparison_url(url, experiment_id)
        assert_comparison(dump_dom(done.stdout.strip(), tmp_path))
