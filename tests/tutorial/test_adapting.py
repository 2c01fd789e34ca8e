"""docs/adapting.md, performed: a scratch copy of the repo trains an MLP on a CSV table of two
feature columns with mini-batches, by editing only the files the page names, exactly as it shows
them, and deleting tests/tutorial/. Then `dvc repro`, the LoggedModel and predict work, and the
remaining fast tests pass there."""

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
from conftest import REPO, clean_env, dvc, make_project, polyfit, run, runs_of

DOCS = REPO / "docs" / "adapting.md"


def shown(language: str, after: str) -> str:
    """The first ```language block of the page after the line `after` (a heading)."""
    page = DOCS.read_text()
    start = page.index(after)
    block = re.search(rf"```{language}\n(.*?)```", page[start:], re.DOTALL)
    return block.group(1)


PARAMS_YAML = shown("diff", "## 2.")
DVC_YAML = shown("diff", "## 3.")
PARAMS_PY = shown("python", "## 4.")
MODEL_PY = shown("python", "## 5.")
DVC_ADD = shown("bash", "## 1.").split("#")[0].strip()
LAST_STEPS = [line.split("  #")[0].strip() for line in shown("bash", "## 6.").splitlines()]
EDITED = {
    "params.yaml",
    "dvc.yaml",
    "src/polyfit/params.py",
    "src/polyfit/core/model.py",
    "data/.gitignore",  # dvc add: git ignores the file DVC now keeps
    "data/points.csv.dvc",  # dvc add: the file's md5, for git
}
FEATURES = ["x1", "x2"]


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


def write_points(path: Path, count: int = 400) -> None:
    """Noisy values of a smooth surface of two features that no cubic follows, in random order."""
    rng = random.Random(0)
    lines = ["x1,x2,y"]
    for _ in range(count):
        x1, x2 = rng.uniform(-2, 2), rng.uniform(-2, 2)
        y = math.sin(1.5 * x1) * math.cos(x2) + 0.3 * x2 + rng.gauss(0, 0.05)
        lines.append(f"{x1!r},{x2!r},{y!r}")
    path.write_text("\n".join(lines) + "\n")


def adapt(project: Path, env: dict) -> None:
    """Steps 1 to 5 of docs/adapting.md, in order."""
    write_points(project / "data" / "points.csv")
    dvc(project, *DVC_ADD.split()[1:], env=env)
    apply_diff(project / "params.yaml", PARAMS_YAML)
    apply_diff(project / "dvc.yaml", DVC_YAML)
    replace_definitions(project / "src/polyfit/params.py", PARAMS_PY)
    replace_definitions(project / "src/polyfit/core/model.py", MODEL_PY)


def status(project: Path) -> tuple[set[str], set[str]]:
    """(changed or added files, deleted files), as git sees them."""
    lines = run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout
    deleted = {line[3:] for line in lines.splitlines() if "D" in line[:2]}
    return {line[3:] for line in lines.splitlines()} - deleted, deleted


def shell(command: str, project: Path, env: dict) -> str:
    done = run(["bash", "-c", command], project, env)
    assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_the_docs_show_every_edited_file():
    page = DOCS.read_text()
    for name in EDITED - {"data/.gitignore", "data/points.csv.dvc"}:
        assert f"| `{name}` |" in page, name
    assert "class MLP(torch.nn.Module)" in MODEL_PY and "class ModelParams" in PARAMS_PY
    assert LAST_STEPS[0] == "git rm -r -q tests/tutorial"


@pytest.mark.slow
def test_own_data_and_model_by_editing_only_the_named_files(tmp_path):
    project = make_project(tmp_path / "project")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    # The scratch copy's own src/, as `pip install -e .` in the user's clone would give it.
    env = clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(project / "src"))
    adapt(project, env)
    shell(LAST_STEPS[0], project, env)  # the tutorial's tests go
    edited, deleted = status(project)
    assert edited == EDITED
    assert deleted and all(name.startswith("tests/tutorial/") for name in deleted)

    assert "Running stage 'train'" in shell(LAST_STEPS[1], project, env)  # dvc repro
    check_outputs(project)
    check_runs(uri)
    check_the_logged_model(project, uri, env, tmp_path)
    shell(LAST_STEPS[3], project, env)  # the commit: the new baseline
    check_the_remaining_fast_tests(project, env)


def check_outputs(project: Path) -> None:
    """Train and held-out scores only (no polynomial's), far better than predicting the mean."""
    scores = json.loads((project / "metrics/eval.json").read_text())
    kinds = ("mse", "rmse", "max_abs_error")
    assert set(scores) == {f"{part}.{kind}" for part in ("train_set", "held_out") for kind in kinds}
    with open(project / "data/points.csv", newline="") as handle:
        ys = [float(row["y"]) for row in csv.DictReader(handle)]
    variance = sum((y - sum(ys) / len(ys)) ** 2 for y in ys) / len(ys)
    assert scores["held_out.mse"] < variance / 10
    with open(project / "plots/fit.csv", newline="") as handle:
        curve = list(csv.DictReader(handle))
    assert list(curve[0]) == [*FEATURES, "target", "prediction"]
    assert len(curve) == 80  # the held-out fifth of 400 rows


def check_runs(uri: str) -> None:
    stages = {run.data.tags["stage"]: run for run in runs_of(uri)}
    assert set(stages) == {"generate", "train", "evaluate"}
    train = stages["train"]
    assert train.data.params["model.hidden"] == "32"
    assert train.data.params["train.batch_size"] == "32"
    assert train.data.params["data.csv.features"] == str(FEATURES)
    assert "model.degree" not in train.data.params
    assert "eval.held_out.mse" in train.data.metrics


def check_the_logged_model(project: Path, uri: str, env: dict, elsewhere: Path) -> None:
    """The champion gives the DVC output's numbers, through polyfit and through MLflow alone
    in a process whose installed polyfit has no MLP: the model's own logged code builds it."""
    rows = elsewhere / "rows.csv"
    rows.write_text("x2,x1\n-1.0,0.5\n0.25,-1.5\n")  # named columns, in another order
    from_file = polyfit("predict", "--csv", str(rows), cwd=project, env=env)
    champion = "models:/points-mlp@champion"
    served = polyfit("predict", "--csv", str(rows), "--model", champion, cwd=project, env=env)
    assert from_file.returncode == 0 and served.returncode == 0, from_file.stderr + served.stderr
    assert from_file.stdout == served.stdout
    predictions = [float(line.split(",")[-1]) for line in from_file.stdout.splitlines()[1:]]
    script = (
        "import mlflow.pyfunc, pandas\n"
        f"rows = pandas.DataFrame({{'x1': [0.5, -1.5], 'x2': [-1.0, 0.25]}})\n"
        f"print(list(mlflow.pyfunc.load_model({champion!r}).predict(rows)))"
    )
    alone = clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=alone, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == predictions


def check_the_remaining_fast_tests(project: Path, env: dict) -> None:
    """What `make test-fast` runs, in the adapted copy, on its MLP: all pass."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "not slow",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
    ]
    done = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-500:]
