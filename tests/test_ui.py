"""`polyfit ui`: the URL it prints opens MLflow on the comparison of train runs, best held-out
score first, checked in headless Chromium; the UI starts in seconds without MLflow's job runner
and stops on Ctrl-C without a traceback.

The store holds what a few reproductions leave: per reproduction a generate run, a train run
with evaluate's scores copied onto it as eval.*, and an evaluate run nested under it.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests
from browser import Page, dump_dom
from conftest import (
    clean_env,
    copy_made_store,
    mlflow_client,
    polyfit,
    table_params,
    write_params,
)
from servers import closed_port, free_port, mlflow_server, stop_server

from polyfit.tools.ui import COLUMNS, comparison_url, comparison_view, view_tag

# (optimizer, lr, held-out mse, train-set mse), in the order the runs are created. Neither
# creation order (MLflow's default sort), run name order nor the train-set mse's order is the
# held-out order.
TRAINED = [
    ("RMSprop", 0.001, 4.47e-3, 4.0e-3),
    ("LBFGS", 1.0, 4.40e-3, 4.9e-3),
    ("SGD", 3e-6, 9.80e-3, 1.0e-3),
    ("Adam", 0.01, 4.41e-3, 4.2e-3),
]
BEST_FIRST = ["LBFGS", "Adam", "RMSprop", "SGD"]
STOPS_WITHIN = 5  # seconds from Ctrl-C to no process left


def train_name(optimizer: str, lr: float) -> str:
    return f"train {optimizer} lr={lr} [{optimizer.lower()}]"  # as tracking.run_name writes it


def build_store(uri: str) -> str:
    """Runs as the stages log them, for each trained optimizer; returns the experiment id."""
    from mlflow.entities import Metric, Param

    client = mlflow_client(uri)
    experiment_id = client.create_experiment("polyfit")
    now = int(time.time() * 1000)
    for optimizer, lr, held_out, train_set in TRAINED:
        generate = client.create_run(
            experiment_id, run_name="generate csv", tags={"stage": "generate"}
        )
        client.log_batch(generate.info.run_id, metrics=[Metric("y_mean", 0.0, now, 0)])
        client.set_terminated(generate.info.run_id)
        train = client.create_run(
            experiment_id, run_name=train_name(optimizer, lr), tags={"stage": "train"}
        ).info.run_id
        params = {"data.source": "csv", "train.optimizer": optimizer, "train.lr": lr}
        metrics = {"final_loss": train_set * 72, "steps": 200, "train_seconds": 1.5}
        metrics |= {"eval.held_out.mse": held_out, "eval.train_set.mse": train_set}
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
        client.log_batch(evaluate, metrics=[Metric("held_out.mse", held_out, now, 0)])
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
    view = comparison_view()
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`eval.held_out.mse`", True)
    assert view["searchFilter"] == "tags.stage = 'train'"


def test_unusable_store_is_one_line(tmp_path):
    write_params(tmp_path, table_params())
    with closed_port() as port:
        env = clean_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
        done = polyfit("ui", cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("polyfit ui: error: MLflow tracking store http://127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_a_port_in_use_is_one_line_before_any_url(tmp_path, command):
    """The server would print its bind error after the URL, which then names someone else's."""
    write_params(tmp_path, table_params())
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
    write_params(tmp_path, table_params())
    copy_made_store(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    client.delete_experiment(client.create_experiment("polyfit"))
    done = polyfit("ui", cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=uri), timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"polyfit ui: error: cannot save the comparison view in {uri}")
    assert "deleted" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not done.stdout  # no URL to a view that does not exist


def started_processes(leader: int) -> list[psutil.Process]:
    """`polyfit ui` and every process it started (the server runs in a session of its own)."""
    process = psutil.Process(leader)
    return [process, *process.children(recursive=True)]


def commands_of(processes: list[psutil.Process]) -> list[str]:
    found = []
    for process in processes:
        with contextlib.suppress(psutil.Error):  # ended meanwhile
            found.append(" ".join(process.cmdline()))
    return found


def environment_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as environ:
        pairs = [entry.decode().partition("=") for entry in environ.read().split(b"\0") if entry]
    return {name: value for name, _, value in pairs}


def wait_for_answer(url: str, server: subprocess.Popen, logs, timeout: float = 120) -> float:
    """Seconds from now until GET `url` answers 200; fails if the server dies or never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert server.poll() is None, f"polyfit ui exited {server.returncode}:\n{logs()}"
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"polyfit ui did not answer {url} within {timeout} s:\n{logs()}")


def wait_for_all_to_end(processes: list[psutil.Process], within: float) -> float | None:
    """Seconds until none of the processes is left, or None after `within`."""
    started = time.monotonic()
    _, alive = psutil.wait_procs(processes, timeout=within)
    return None if alive else time.monotonic() - started


@pytest.mark.slow
def test_make_ui_opens_on_the_comparison_and_stops_on_ctrl_c(tmp_path):
    """`polyfit ui` on a SQLite store: saves the view, prints its URL and serves it within
    time, without MLflow's job runner; Ctrl-C (SIGINT to the terminal's process
    group) leaves no process after STOPS_WITHIN s and no traceback."""
    write_params(tmp_path, table_params())
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # the project root for tracking
    copy_made_store(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = build_store(uri)
    port, out, err = free_port(), tmp_path / "ui.out", tmp_path / "ui.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "polyfit", "ui", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(MLFLOW_TRACKING_URI=uri),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # a terminal's process group
            # Ctrl-C must reach it even when pytest runs in the background, where SIGINT is ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def logs() -> str:
        return out.read_text() + err.read_text()

    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_answer(f"{base}/", server, logs)  # how fast: BENCHMARKS.md, "The UI"
        assert out.read_text() == comparison_url(base, experiment_id) + "\n"
        processes = started_processes(server.pid)
        commands = commands_of(processes)
        mlflow_ui = [p for p, c in zip(processes, commands, strict=True) if " mlflow ui " in c]
        assert mlflow_ui, commands
        assert environment_of(mlflow_ui[0].pid)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
        assert not [c for c in commands if "huey" in c or "job" in c], commands

        assert_comparison(dump_dom(out.read_text().strip(), tmp_path))

        os.killpg(server.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        stopped = wait_for_all_to_end(processes, STOPS_WITHIN)
        assert stopped is not None, f"processes left after Ctrl-C: {commands_of(processes)}"
        assert server.wait(timeout=5) == 0  # stopped as asked: not an error
    finally:
        stop_server(server)
    # Quiet, and no traceback: the URL on stdout, MLflow's one security note on stderr, no INFO
    # or access log lines and no library warnings (StarletteDeprecationWarning, four times).
    assert out.read_text() == comparison_url(base, experiment_id) + "\n"
    shown = err.read_text()
    assert [line for line in shown.splitlines() if not line.startswith("[MLflow]")] == [], shown


@pytest.mark.slow
def test_ui_with_a_tracking_server_prints_its_url(tmp_path):
    """With MLFLOW_TRACKING_URI on a server, `polyfit ui` saves the view there and exits."""
    write_params(tmp_path, table_params())
    with mlflow_server(tmp_path) as (url, _):
        experiment_id = build_store(url)
        done = polyfit("ui", cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=url), timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == comparison_url(url, experiment_id)
        assert_comparison(dump_dom(done.stdout.strip(), tmp_path))
