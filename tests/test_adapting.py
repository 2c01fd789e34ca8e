"""docs/adapting.md, performed: a scratch copy of the repo fits (x, y) from a CSV file tracked
by DVC with a small MLP, by editing only the files the page names, exactly as it shows them.
Then `dvc repro`, MLflow, the LoggedModel and the gate work without any other change."""

import ast
import csv
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, clean_env, dvc, make_project, mlflow_client, polyfit, runs_of

DOCS = REPO / "docs" / "adapting.md"

# The edits, as docs/adapting.md shows them (test_the_docs_show_every_edit checks it).
PARAMS_YAML = """\
@@ data and model @@
 data:
-  target: sin                # one of: sin, cos, exp
-  x_min: -3.141592653589793  # -pi
-  x_max: 3.141592653589793   # pi
-  n_samples: 2000
-  noise_std: 0.0             # std of Gaussian noise added to y
-  seed: 0                    # seeds the noise
+  path: data/points.csv      # a header row, then one row per point
+  target: y                  # the column that holds y; the column x holds x
+  n_samples: 200             # rows in the file: train and evaluate check the dataset's size

 model:
-  degree: 3                  # y = a + b x + ... + w x^degree
+  hidden: 16                 # width of the MLP's hidden layer
@@ mlflow @@
-  registered_model: polyfit-cubic
+  registered_model: points-mlp
"""

PARAMS_PY = """\
class DataParams(Frozen):
    path: str  # a CSV file: a header row, then one row per point
    target: str  # the column that holds y
    n_samples: Count  # rows in the file


class ModelParams(Frozen):
    hidden: Annotated[int, Field(ge=1, le=4096)]
"""

DATA_PY = '''\
"""The dataset: (x, y) read from a CSV file with a header row, one row per point."""

import csv

import torch

from polyfit.errors import UsageError


def make_dataset(path: str, target: str, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y (n_samples,), float32: the file's columns x and `target`."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != n_samples:
        raise UsageError(f"{path}: {len(rows)} rows, but data.n_samples is {n_samples}")
    try:
        x = [float(row["x"]) for row in rows]
        y = [float(row[target]) for row in rows]
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"{path}: columns x and {target} must hold numbers ({error})") from None
    return torch.tensor(x), torch.tensor(y)


def evaluation_grid(data: dict, points: int) -> None:
    """No known function behind the points: evaluate scores the model on them alone."""
    return None
'''

MODEL_PY = '''\
class MLP(torch.nn.Module):
    """y = Linear(Tanh(Linear(x))): one hidden layer of `hidden` units."""

    def __init__(self, hidden: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N, 1): x as one input column; everything else is learned."""
        return x.unsqueeze(-1)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """(N, 1) -> (N,)."""
        return self.layers(features).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N,)."""
        return self.from_features(self.features(x))


def build_model(config: dict) -> torch.nn.Module:
    """The model params.model describes (its keys are the constructor's arguments)."""
    return MLP(**config)
'''

DVC_YAML = """\
@@ stages.generate @@
     cmd: python -m polyfit generate
     deps:
+      - data/points.csv
       - src/polyfit/stages/generate.py
@@ stages.evaluate @@
       - data.target
-      - data.x_min
-      - data.x_max
       - data.n_samples
"""

DVC_ADD = "dvc add data/points.csv"
EDITED = {
    "params.yaml",
    "dvc.yaml",
    "src/polyfit/params.py",
    "src/polyfit/core/data.py",
    "src/polyfit/core/model.py",
    "data/.gitignore",  # dvc add: git ignores the file DVC now keeps
    "data/points.csv.dvc",  # dvc add: the file's md5, for git
}
XS = [-2.5, -1.0, 0.0, 0.5, 2.0]
POLYNOMIAL_ONLY = ("grid.mse", "gap_to_optimum", "coef_max_abs_diff")  # gated in gate.yaml


def apply_diff(path: Path, diff: str) -> None:
    """Apply the page's diffs: '@@' starts a hunk; ' ' context, '-' removed, '+' added lines."""
    text = path.read_text()
    for hunk in re.split(r"^@@.*\n", diff, flags=re.MULTILINE)[1:]:
        lines = [line if line != "\n" else " \n" for line in hunk.splitlines(keepends=True)]
        old = "".join(line[1:] for line in lines if line[0] in " -")
        new = "".join(line[1:] for line in lines if line[0] in " +")
        assert text.count(old) == 1, f"{path}: the page's context is not in the file:\n{old}"
        text = text.replace(old, new)
    path.write_text(text)


def replace_definitions(path: Path, code: str) -> None:
    """Put `code` in place of the file's classes and functions that it defines again (adjacent
    in the file): definitions new to the file land where the first replaced one was."""
    lines = path.read_text().splitlines(keepends=True)
    names = {node.name for node in ast.parse(code).body if hasattr(node, "name")}
    nodes = ast.parse("".join(lines)).body
    replaced = [node for node in nodes if getattr(node, "name", None) in names]
    assert replaced, f"{path}: none of {sorted(names)} to replace"
    start, end = replaced[0].lineno - 1, replaced[-1].end_lineno
    assert all(node in replaced for node in nodes if start < node.lineno <= end), path
    lines[start:end] = [code]
    path.write_text("".join(lines))


def write_points(path: Path, count: int = 200) -> None:
    """Noisy points of a smooth curve that no cubic follows well, in random order."""
    rng = random.Random(0)
    rows = []
    for _ in range(count):
        x = rng.uniform(-3, 3)
        rows.append((x, math.sin(2 * x) * math.exp(-0.1 * x * x) + rng.gauss(0, 0.05)))
    path.write_text("x,y\n" + "".join(f"{x!r},{y!r}\n" for x, y in rows))


def adapt(project: Path, env: dict) -> None:
    """Every step of docs/adapting.md, in order."""
    write_points(project / "data" / "points.csv")
    dvc(project, *DVC_ADD.split()[1:], env=env)
    apply_diff(project / "params.yaml", PARAMS_YAML)
    replace_definitions(project / "src/polyfit/params.py", PARAMS_PY)
    (project / "src/polyfit/core/data.py").write_text(DATA_PY)
    replace_definitions(project / "src/polyfit/core/model.py", MODEL_PY)
    apply_diff(project / "dvc.yaml", DVC_YAML)


def changed_files(project: Path) -> set[str]:
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line[3:] for line in status.splitlines()}


def test_the_docs_show_every_edit():
    page = DOCS.read_text()
    for snippet in (PARAMS_YAML, PARAMS_PY, DATA_PY, MODEL_PY, DVC_YAML, DVC_ADD):
        assert snippet in page, f"docs/adapting.md does not show:\n{snippet}"
    for name in EDITED - {"data/.gitignore", "data/points.csv.dvc"}:
        assert f"| `{name}` |" in page, name


def printed(done) -> list[float]:
    assert done.returncode == 0, done.stdout + done.stderr
    return [float(line.split()[1]) for line in done.stdout.splitlines()]


def load_in_fresh_process(uri: str, model: str, cwd: Path) -> list[float]:
    """mlflow.pyfunc.load_model in a new interpreter, pickles refused, and no polyfit on the
    path that knows the MLP: the model's own shipped code must build it."""
    script = f"import mlflow.pyfunc\nprint(mlflow.pyfunc.load_model({model!r}).predict({XS!r}))"
    env = clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout.strip().splitlines()[-1])


def commit(project: Path, message: str) -> None:
    for args in (["add", "-A"], ["commit", "-qm", message]):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


@pytest.mark.slow
def test_own_data_and_model_by_editing_only_the_named_files(tmp_path):
    project = make_project(tmp_path / "project")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    # The scratch copy's own src/, as `pip install -e .` in the user's clone would give it.
    env = clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(project / "src"))
    adapt(project, env)
    assert changed_files(project) == EDITED

    dvc(project, "repro", env=env)
    check_tracked_runs(project, uri)
    check_outputs(project)
    check_logged_model(project, uri, env, tmp_path)
    check_gate(project, env)


def check_tracked_runs(project: Path, uri: str) -> None:
    """One run per stage, with the MLP's params and the whole loss history."""
    stages = {run.data.tags["stage"]: run for run in runs_of(uri)}
    assert set(stages) == {"generate", "train", "evaluate"}
    assert all(run.info.status == "FINISHED" for run in stages.values())
    train = stages["train"]
    assert train.data.params["model.hidden"] == "16"
    assert train.data.params["data.path"] == "data/points.csv"
    assert "model.degree" not in train.data.params
    history = mlflow_client(uri).get_metric_history(train.info.run_id, "loss")
    history = sorted(history, key=lambda point: point.step)
    train_metrics = json.loads((project / "metrics/train.json").read_text())
    assert train_metrics["steps"] == 2000
    assert [point.step for point in history] == list(range(2000))
    assert history[-1].value == train_metrics["final_loss"]
    assert history[-1].value < history[0].value / 10  # it learned


def check_outputs(project: Path) -> None:
    """Only the scores that apply to an MLP on data without a known function; the fit curve
    over the data, sorted by x."""
    scores = json.loads((project / "metrics/eval.json").read_text())
    assert set(scores) == {"train_set.mse", "train_set.rmse", "train_set.max_abs_error"}
    with open(project / "data/points.csv", newline="") as handle:
        points = list(csv.DictReader(handle))
    mean_square = sum(float(point["y"]) ** 2 for point in points) / len(points)
    assert scores["train_set.mse"] < mean_square / 10  # far better than predicting y = 0
    with open(project / "plots/fit.csv", newline="") as handle:
        curve = list(csv.DictReader(handle))
    xs = [float(row["x"]) for row in curve]
    assert len(curve) == len(points) and xs == sorted(xs)
    assert set(curve[0]) == {"x", "target", "prediction"}


def check_logged_model(project: Path, uri: str, env: dict, elsewhere: Path) -> None:
    """The champion, loaded three ways, predicts what the DVC output predicts."""
    assert polyfit("promote", cwd=project, env=env).returncode == 0
    champion = "models:/points-mlp@champion"
    xs = [str(x) for x in XS]
    from_file = printed(polyfit("predict", "--x", *xs, cwd=project, env=env))
    from_registry = printed(
        polyfit("predict", "--model", champion, "--x", *xs, cwd=project, env=env)
    )
    loaded = load_in_fresh_process(uri, champion, cwd=elsewhere)
    assert from_file == from_registry == loaded


def check_gate(project: Path, env: dict) -> None:
    """With the adapted run committed as the baseline, an unchanged re-run passes the gate and
    far fewer steps fail it; the polynomial-only metrics are not applicable."""
    commit(project, "fit points.csv with an MLP")
    dvc(project, "repro", "--force", "--single-item", "train", env=env)
    # Seeded: the same model bytes again, so nothing downstream is stale.
    assert "Data and pipelines are up to date" in dvc(project, "status", env=env)
    same = polyfit("gate", cwd=project, env=env)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "all 2 gated metrics hold (3 not applicable)." in same.stdout
    for metric in POLYNOMIAL_ONLY:
        assert f"metrics/eval.json: {metric} | — | — | — |" in same.stdout

    params = project / "params.yaml"
    params.write_text(params.read_text().replace("steps: 2000", "steps: 50"))
    dvc(project, "repro", env=env)
    worse = polyfit("gate", cwd=project, env=env)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    result = worse.stdout.split("Result:")[1].split("\n")[0]
    assert "metrics/eval.json: train_set.mse" in result
    assert "metrics/train.json: tail_mean_loss" in result
    assert "| train.steps | 2000 | 50 |" in worse.stdout
