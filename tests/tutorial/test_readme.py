"""README.md, walked as a newcomer walks it: on a fresh scratch copy of the repo (real git, DVC and
MLflow), every command of its ```bash blocks runs in the README's order, and nothing else, and does
what the README says. The commands are read from README.md itself, so the two cannot drift: a
command that changes in the README changes here, and a new one fails this test until a step below
walks it or SKIPPED says why not.

The copy's committed results are made to look like another CPU's (an Intel Xeon's metrics, other
output hashes in dvc.lock), so the walk is the one a newcomer on another machine takes: `make run`
must explain the modified files, and the way back must work without the committed outputs.

Walked elsewhere: the recovery steps of "When things go wrong" (docs/troubleshooting.md) in
tests/test_recovery.py; `polyfit sweep` in tests/test_sweep.py; the team and Dask sections in
tests/test_team.py and tests/test_scale_out.py.
"""

import contextlib
import dataclasses
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import requests
import yaml
from conftest import OUTPUTS, REPO, clean_env, make_project, mlflow_client, run, runs_of
from servers import free_port, stop_server
from test_tutorial_gate import INTEL_XEON

from polyfit import paths

SKIPPED = {  # README command -> why this test does not run it
    "make test": "runs every test, this one included",
    "make test-fast": "runs the unit tests",
    "make format": "rewrites the source files",
    "make sweep": "six optimizers take minutes; tests/test_sweep.py runs `polyfit sweep`",
    "make bench": "the benchmarks take many minutes",
    "source .venv/bin/activate": "the venv's bin is on PATH already (a scratch copy has no .venv)",
}


class Command(NamedTuple):
    section: str  # the ## heading it is under
    line: str  # what a user types, continuation lines joined
    comment: str  # its trailing comment, without the #


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the comment starts at a # outside quotes, after a space."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].strip(), line[index + 1 :].strip()
    return line.strip(), ""


def readme_commands(text: str) -> list[Command]:
    """Every command line of the markdown's ```bash blocks, in order."""
    commands, section, in_block, pending = [], "", False, ""
    for raw in text.splitlines():
        if not in_block:
            section = raw[3:].strip() if raw.startswith("## ") else section
            in_block = raw.strip() == "```bash"
        elif raw.strip() == "```":
            in_block = False
        elif raw.rstrip().endswith("\\"):  # a continuation: the command goes on below
            pending += raw.rstrip()[:-1].strip() + " "
        else:
            line, comment = split_comment(pending + raw.strip())
            pending = ""
            if line:
                commands.append(Command(section, line, comment))
    return commands


COMMANDS = readme_commands((REPO / "README.md").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
CHAMPION = f"models:/{PARAMS['mlflow']['registered_model']}@champion"


@dataclasses.dataclass
class Walk:
    """The scratch project and what earlier steps saw, for the steps after them."""

    project: Path
    logs: Path
    make_run_output: str = ""
    served: dict | None = None  # x -> y, the /invocations answer to the README's curl
    model_md5: str = ""  # of the models/model.pt `make run` trained
    experiment: dict | None = None  # the -S overrides of `dvc exp run`
    experiment_mse: float | None = None  # its held-out mse
    baseline_mse: float | None = None  # held-out mse of make run's model, this machine's
    predicted_with: list = dataclasses.field(default_factory=list)  # model URIs, as written
    done: list = dataclasses.field(default_factory=list)  # the steps walked, in order


def shell(command: str, project: Path):
    """A command line run as a user types it, by bash, with the venv first on PATH."""
    return run(["bash", "-c", command], project, clean_env())


def succeeded(done) -> str:
    assert done.returncode == 0, (
        f"{done.args[-1]} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done.stdout


def make(command: str, **variables: int) -> str:
    """`make <target>` as run here: `-o install` skips the venv step (a scratch copy has no
    .venv; the repo's venv, with polyfit installed editable from the working tree, is on PATH),
    then exactly the recipe `make <target>` runs. The variables pick free ports."""
    assert command.startswith("make ")
    overrides = "".join(f" {name}={value}" for name, value in variables.items())
    return command.replace("make ", "make -o install ", 1) + overrides


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def committed(project: Path, name: str) -> bytes:
    return subprocess.run(
        ["git", "show", f"HEAD:{name}"], cwd=project, capture_output=True, check=True
    ).stdout


def as_if_made_on_another_cpu(project: Path) -> Path:
    """Commit an Intel Xeon's metrics and other output hashes as the copy's results, as a clone
    of a repo whose results were made on another machine has them."""
    for file, metrics in INTEL_XEON.items():
        committed_metrics = json.loads((project / file).read_text())
        (project / file).write_text(json.dumps(committed_metrics | metrics, indent=2) + "\n")
    lock = (project / "dvc.lock").read_text()
    for stage in ("train", "evaluate"):
        for out in yaml.safe_load(lock)["stages"][stage]["outs"]:
            lock = lock.replace(out["md5"], hashlib.md5(out["md5"].encode()).hexdigest())
    (project / "dvc.lock").write_text(lock)
    succeeded(run(["git", "commit", "-qam", "results made on another CPU"], project))
    return project


def assert_back_at_the_baseline(walk: Walk) -> None:
    """The committed params, the model `make run` trained, every output as dvc.lock records it,
    and DVC with nothing to do."""
    project = walk.project
    assert (project / "params.yaml").read_bytes() == committed(project, "params.yaml")
    assert md5(project / paths.MODEL) == walk.model_md5
    for stage in yaml.safe_load((project / "dvc.lock").read_text())["stages"].values():
        for out in stage.get("outs", []):
            assert md5(project / out["path"]) == out["md5"], f"{out['path']} is not dvc.lock's"
    assert "Data and pipelines are up to date" in succeeded(run(["dvc", "status"], project))


@contextlib.contextmanager
def background(command: str, project: Path, log: Path):
    """A server command (`make ui`, `make serve`) in its own process group, output to `log`;
    stopped with everything it started when the block ends, whatever happened in it."""
    with open(log, "w") as output:
        server = subprocess.Popen(
            ["bash", "-c", command],
            cwd=project,
            env=clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make -> polyfit (exec mlflow) -> uvicorn workers
        )
    try:
        yield server
    finally:
        stop_server(server)


def wait_until_answers(url: str, server, log: Path, timeout: float = 180) -> requests.Response:
    """GET `url` until it answers 200; fail with the server's output if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(requests.RequestException):
            answer = requests.get(url, timeout=5)
            if answer.status_code == 200:
                return answer
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def printed_predictions(output: str) -> dict:
    """`polyfit predict` prints CSV: a header, then `x,prediction` per row."""
    lines = output.splitlines()
    assert lines[0] == "x,prediction", output
    return {float(x): float(y) for x, y in (line.split(",") for line in lines[1:])}


# The steps: one per kind of README command, each checking what the README says it does.


def make_run(walk: Walk, command: Command, _) -> None:
    output = succeeded(shell(make(command.line), walk.project))
    assert "Result: y = " in output  # train prints the seed's line
    for path in OUTPUTS:
        assert (walk.project / path).exists(), f"{path} not written by {command.line}"
    walk.make_run_output = output
    walk.model_md5 = md5(walk.project / paths.MODEL)
    # The committed results are another CPU's: the last thing said explains the modified files,
    # not DVC's hint to `git add dvc.lock`.
    explained = output.split("Running stage 'evaluate'")[1]
    assert "differ from the commit, though no code or params did" in explained, explained
    assert "`polyfit gate`: all 5 gated metrics hold." in explained
    assert explained.index("Nothing to commit") > explained.rindex("git add dvc.lock")
    assert "Traceback" not in output


def make_ui(walk: Walk, command: Command, _) -> None:
    if "make ui" in walk.done:
        return  # the same command again (after an experiment): its server is checked once
    port, log = free_port(), walk.logs / "ui.log"
    with background(make(command.line, PORT=port), walk.project, log) as server:
        base = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{base}/health", server, log)
        urls = [line for line in log.read_text().splitlines() if line.startswith("http")]
        assert len(urls) == 1 and urls[0].startswith(f"{base}/#/experiments/"), log.read_text()
        page = wait_until_answers(urls[0], server, log)  # the #fragment stays in the browser
        assert "<title>MLflow</title>" in page.text
        experiment_id = urls[0].split("/#/experiments/")[1].split("/")[0]
        found = requests.get(
            f"{base}/ajax-api/2.0/mlflow/experiments/get",
            params={"experiment_id": experiment_id},
            timeout=30,
        )
        assert found.status_code == 200, found.text
        assert found.json()["experiment"]["name"] == PARAMS["mlflow"]["experiment"]


def make_serve(walk: Walk, command: Command, curl: Command) -> None:
    """`make serve`, then the README's curl `in another terminal` while it serves."""
    assert curl is not None and curl.line.startswith("curl "), "README: make serve, then curl"
    readme_port = re.search(r"http://127\.0\.0\.1:(\d+)/invocations", curl.line).group(1)
    # The README's curl targets the port `make serve` binds, and is the one `make run` prints.
    assert f"--port {readme_port}" in succeeded(shell("make -n -o install serve", walk.project))
    assert " ".join(curl.line.split()) in " ".join(walk.make_run_output.split())
    port, log = free_port(), walk.logs / "serve.log"
    with background(make(command.line, SERVE_PORT=port), walk.project, log) as server:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", server, log)
        here = curl.line.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port}")
        answer = json.loads(succeeded(shell(here, walk.project)))
        assert f"serving {CHAMPION} at http://127.0.0.1:{port}/invocations" in log.read_text()
    rows = json.loads(re.search(r"-d '(.*)'", curl.line).group(1))["inputs"]
    walk.served = dict(zip((x for (x,) in rows), answer["predictions"], strict=True))


def curl(walk: Walk, command: Command, _) -> None:
    assert walk.done[-1:] == ["make serve"], f"{command.line}: walked with the make serve above it"


def experiment_run(walk: Walk, command: Command, _) -> None:
    succeeded(shell(command.line, walk.project))
    overrides = dict(re.findall(r"-S (\S+)=(\S+)", command.line))
    params = yaml.safe_load((walk.project / "params.yaml").read_text())
    for key, value in overrides.items():  # the results are applied to the workspace
        section, name = key.split(".")
        assert params[section][name] == yaml.safe_load(value), key
    assert md5(walk.project / paths.MODEL) != walk.model_md5
    walk.experiment = overrides
    eval_metrics = json.loads((walk.project / paths.EVAL_METRICS).read_text())
    walk.experiment_mse = eval_metrics["held_out.mse"]


def experiment_show(walk: Walk, command: Command, _) -> None:
    table = succeeded(shell(command.line, walk.project))
    for key, value in walk.experiment.items():  # each changed param: the experiment's value
        assert key in table and value in table, table  # and the baseline's
        assert str(PARAMS[key.split(".")[0]][key.split(".")[1]]) in table
    if "--only-changed" in command.line:  # params the experiment left alone are not shown
        assert "train.steps" not in table, table


def back_to_baseline(walk: Walk, command: Command, _) -> None:
    said = succeeded(shell(command.line, walk.project))
    assert "is cached - skipping run, checking out outputs" in said  # DVC's run cache, not training
    assert_back_at_the_baseline(walk)
    walk.baseline_mse = json.loads((walk.project / paths.EVAL_METRICS).read_text())["held_out.mse"]


def predict(walk: Walk, command: Command, _) -> None:
    """Every URI form the line and its comment show: the same numbers as the served champion
    (the baseline's model, registered first)."""
    lines = [(command.line, model_uri(command.line))]
    if other := re.search(r"\bor (\S+:/.*)$", command.comment):  # `# or runs:/<run id>/model`
        uri = other.group(1).replace("<run id>", baseline_train_run(walk.project))
        lines.append((re.sub(r"--model \S+", f"--model {uri}", command.line), other.group(1)))
    for line, written in lines:
        predicted = printed_predictions(succeeded(shell(line, walk.project)))
        assert predicted == walk.served, f"{line}: {predicted} != served {walk.served}"
        walk.predicted_with.append(written)


def model_uri(line: str) -> str:
    found = re.search(r"--model (\S+)", line)
    return found.group(1) if found else str(paths.MODEL)


def baseline_train_run(project: Path) -> str:
    """The id of the train run of the committed params (the UI's RMSprop row)."""
    trains = [
        run_
        for run_ in runs_of(store_uri(project), PARAMS["mlflow"]["experiment"], "train")
        if run_.data.params["train.optimizer"] == PARAMS["train"]["optimizer"]
    ]
    assert len(trains) == 1, trains
    return trains[0].info.run_id


def store_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"  # where stages log with no MLFLOW_TRACKING_URI


def promote(walk: Walk, command: Command, _) -> None:
    """The champion becomes the model with the lowest held-out mse of the two trained on this
    data: make run's (version 1, registered as the first) or the experiment's."""
    said = succeeded(shell(command.line, walk.project))
    client = mlflow_client(store_uri(walk.project))
    name = PARAMS["mlflow"]["registered_model"]
    champion = client.get_model_version_by_alias(name, "champion")
    optimizer = client.get_run(champion.run_id).data.params["train.optimizer"]
    if walk.experiment_mse < walk.baseline_mse:
        assert said.startswith(f"{name} version 2 is now champion"), said
        assert optimizer == walk.experiment["train.optimizer"]
    else:
        assert said.startswith(f"{name} version 1 stays champion"), said
        assert optimizer == PARAMS["train"]["optimizer"]
    assert "the best of 2 model(s) trained and scored on the current data" in said


def gate(walk: Walk, command: Command, _) -> None:
    said = succeeded(shell(command.line, walk.project))  # exit 0: every rule holds
    if report := re.search(r"--report (\S+)", command.line):
        assert (walk.project / report.group(1)).read_text().strip() in said
    assert "hold" in said, said


STEPS = {  # README command (exact, or its first words) -> the step that walks it
    "make run": make_run,
    "make ui": make_ui,
    "make serve": make_serve,
    "curl": curl,
    "dvc exp run": experiment_run,
    "dvc exp show": experiment_show,
    "git checkout --": back_to_baseline,
    "polyfit predict": predict,
    "polyfit promote": promote,
    "dvc repro && polyfit gate": gate,
    "polyfit gate": gate,
}


def step_of(line: str) -> str | None:
    """The STEPS key that walks this command line: the longest that starts it."""
    keys = [key for key in STEPS if line == key or line.startswith(key + " ")]
    return max(keys, key=len) if keys else None


def test_every_readme_command_is_walked_or_skipped_with_a_reason():
    """A command added to the README fails here until the walk runs it or SKIPPED says why."""
    assert len(COMMANDS) > 10, COMMANDS  # the parser found the blocks
    unknown = [c.line for c in COMMANDS if c.line not in SKIPPED and step_of(c.line) is None]
    assert unknown == [], f"README commands tests/test_readme.py neither walks nor skips: {unknown}"
    assert split_comment("polyfit x  # or runs:/<run id>/model") == (
        "polyfit x",
        "or runs:/<run id>/model",
    )


def walk_readme(project: Path, logs: Path) -> Walk:
    """Every README command in order, each walked by its step; skipped ones are passed by."""
    walk = Walk(project, logs)
    for index, command in enumerate(COMMANDS):
        key = step_of(command.line)
        if command.line in SKIPPED or key is None:
            continue  # the test above fails on a command that is neither
        following = COMMANDS[index + 1] if index + 1 < len(COMMANDS) else None
        STEPS[key](walk, command, following)
        walk.done.append(key)
    return walk


@pytest.mark.slow
def test_the_readme_top_to_bottom(tmp_path):
    """A fresh clone, then every README command in order; one `dvc repro` (make run), reused."""
    project = as_if_made_on_another_cpu(make_project(tmp_path / "project", store=False))
    walk = walk_readme(project, tmp_path)
    # The README still shows the whole newcomer's path, each URI form of predict included.
    assert set(walk.done) == set(STEPS), set(STEPS) - set(walk.done)
    assert walk.predicted_with == [str(paths.MODEL), CHAMPION, "runs:/<run id>/model"]
