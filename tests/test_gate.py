"""`polyfit gate`: regressions fail with a readable report; usage errors exit 2.

The rules and the verdicts on synthetic metrics in a scratch git repo of their own; then a real
regression: metrics of a training on the machinery tests' table, committed, against those of the
same pipeline with far fewer steps."""

import json
import math
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, polyfit, prepare_stage_dir, table_params, write_params

from polyfit.cpu import cpu_description, this_cpu
from polyfit.tools.gate import Rule, judge, render

LOWER = Rule(better="lower", abs=0.0, rel=0.25)


@pytest.mark.parametrize(
    ("baseline", "current", "passed"),
    [
        (1.0, 1.0, True),
        (1.0, 0.5, True),  # better
        (1.0, 1.25, True),  # exactly at the tolerance
        (1.0, 1.3, False),
        (1.0, None, False),
        (None, 1.0, False),
        (1.0, math.nan, False),
        (math.nan, 1.0, False),
        (1.0, "1.0", False),  # not a number
        (1.0, True, False),  # JSON true is no number either
        (-2.0, -1.5, True),  # the tolerance scales with |baseline|
        (-2.0, -1.4, False),
    ],
)
def test_judge_lower_is_better(baseline, current, passed):
    assert judge("m", baseline, current, LOWER).passed is passed


def test_judge_higher_is_better_with_absolute_tolerance():
    rule = Rule(better="higher", abs=0.1, rel=0.0)
    assert judge("m", 1.0, 0.95, rule).passed
    assert judge("m", 1.0, 7.0, rule).passed
    verdict = judge("m", 1.0, 0.8, rule)
    assert not verdict.passed and verdict.note == "worse by 0.2, allowed 0.1"


def test_judge_says_which_side_is_unusable():
    assert judge("m", None, 1.0, LOWER).note == "missing on the baseline side"
    assert judge("m", 1.0, math.nan, LOWER).note == "NaN on the current side"
    assert judge("m", "x", 1.0, LOWER).note == "not a number ('x') on the baseline side"


def test_render_counts_regressions_and_not_applicable_metrics():
    verdicts = [
        judge("a.json: x", 1.0, 1.1, LOWER),
        judge("a.json: y", None, None, LOWER),
        judge("b.json: z", 1.0, 2.0, LOWER),
    ]
    report = render(verdicts, [("train.lr", 0.1, 0.2)], "`HEAD` (abc)", "Some CPU (Vendor)")
    assert report.startswith("## polyfit gate: workspace vs `HEAD` (abc)\n")
    assert "Gate run on **Some CPU (Vendor)**" in report
    assert "| a.json: x | 1 | 1.1 | +0.1 (+10.00%) | lower is better" in report
    assert "| a.json: y | — | — | — |" in report
    assert "| not applicable: missing on both sides |" in report
    assert "**Result: 1 regression(s): b.json: z**" in report
    assert report.endswith(
        "| param | baseline | current |\n|---|---|---|\n| train.lr | 0.1 | 0.2 |\n"
    )
    passing = render(verdicts[:2], [], "HEAD", "cpu")
    assert "**Result: all 1 gated metrics hold (1 not applicable).**" in passing
    assert passing.endswith("### Params that differ\n\nNone.\n")


# --- the command, on a scratch repo of synthetic metrics ---

RULES = {
    "metrics/eval.json": {
        "held_out.mse": {"better": "lower", "abs": 0.0, "rel": 0.1},
        "accuracy": {"better": "higher", "abs": 0.02, "rel": 0.0},
    },
    "metrics/train.json": {"tail_mean_loss": {"better": "lower", "abs": 0.0, "rel": 0.1}},
}
METRICS = {
    "eval.json": {"held_out.mse": 0.5, "accuracy": 0.9, "reported.only": 3.0},
    "train.json": {"tail_mean_loss": 2.0, "steps": 100},
}
PARAMS = {"train": {"lr": 0.01, "steps": 100}, "model": {"width": 8}}


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True)
    return done.stdout


def commit_all(folder: Path, message: str = "baseline") -> None:
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", message)


def write_metrics(folder: Path, file: str, metrics: dict) -> None:
    path = folder / "metrics" / file
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(metrics))  # json writes NaN, as a broken run might


def edit_metrics(folder: Path, file: str, **changes) -> None:
    path = folder / "metrics" / file
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repo whose HEAD holds gate.yaml, params.yaml and the metrics of a baseline."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump(RULES))
    write_params(tmp_path, PARAMS)
    for file, metrics in METRICS.items():
        write_metrics(tmp_path, file, metrics)
    commit_all(tmp_path)
    return tmp_path


def test_unchanged_metrics_pass_and_the_report_is_written(repo):
    done = polyfit("gate", "--report", "report.md", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (repo / "report.md").read_text()
    assert report == done.stdout
    head = git(repo, "rev-parse", "HEAD")[:8]
    assert report.startswith(f"## polyfit gate: workspace vs `HEAD` ({head})\n")
    assert "| metric | baseline | current | change | rule | verdict |" in report
    assert "| metrics/eval.json: accuracy | 0.9 | 0.9 | +0 (+0.00%) |" in report
    assert "**Result: all 3 gated metrics hold.**" in report
    assert "reported.only" not in report  # only what gate.yaml names is judged
    assert report.endswith("### Params that differ\n\nNone.\n")


def test_the_report_names_the_cpu_the_gate_ran_on(repo):
    """In CI the gate runs where the metrics were reproduced: the report says which CPU."""
    done = polyfit("gate", cwd=repo)
    assert f"Gate run on **{this_cpu()}**" in done.stdout
    cpu = cpu_description()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "vendor_id" in cpuinfo.read_text():  # x86 Linux, as in CI
        vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo.read_text(), re.MULTILINE)
        assert cpu["vendor"] == vendor.group(1) and cpu["model"] in cpuinfo.read_text()


def test_changes_within_tolerance_pass(repo):
    edit_metrics(repo, "eval.json", **{"held_out.mse": 0.5 * 1.09, "accuracy": 0.89})
    edit_metrics(repo, "train.json", tail_mean_loss=1.0, steps=7)  # better; steps not gated
    done = polyfit("gate", cwd=repo)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    ("file", "change", "metric"),
    [
        ("eval.json", {"held_out.mse": 0.56}, "metrics/eval.json: held_out.mse"),
        ("eval.json", {"accuracy": 0.87}, "metrics/eval.json: accuracy"),  # higher is better
        ("train.json", {"tail_mean_loss": 2.5}, "metrics/train.json: tail_mean_loss"),
    ],
)
def test_a_regression_fails_and_names_the_metric(repo, file, change, metric):
    edit_metrics(repo, file, **change)
    done = polyfit("gate", cwd=repo)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"**Result: 1 regression(s): {metric}**" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {metric} |"))
    assert "| **FAIL**: worse by " in row


@pytest.mark.parametrize(
    ("value", "why"), [(None, "missing"), (math.nan, "NaN"), ("0.5", "not a number ('0.5')")]
)
@pytest.mark.parametrize("side", ["current", "baseline"])
def test_a_missing_nan_or_text_metric_fails_on_either_side(repo, value, why, side):
    metrics = dict(METRICS["eval.json"])
    if value is None:
        del metrics["held_out.mse"]
    else:
        metrics["held_out.mse"] = value
    write_metrics(repo, "eval.json", metrics)
    if side == "baseline":
        commit_all(repo, "a broken baseline")
        write_metrics(repo, "eval.json", METRICS["eval.json"])
    done = polyfit("gate", cwd=repo)
    assert done.returncode == 1
    assert f"| **FAIL**: {why} on the {side} side |" in done.stdout


def test_the_params_that_differ_are_listed_with_both_values(repo):
    params = {"train": {"lr": 0.02, "steps": 100, "batch_size": 16}, "model": {}}
    write_params(repo, params)
    done = polyfit("gate", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr  # params alone are no regression
    table = done.stdout.split("### Params that differ\n\n")[1]
    assert table.splitlines() == [
        "| param | baseline | current |",
        "|---|---|---|",
        "| model.width | 8 | — |",
        "| train.batch_size | — | 16 |",
        "| train.lr | 0.01 | 0.02 |",
    ]


def test_a_report_it_cannot_write_is_a_usage_error(repo):
    """Exit 2, not 1: a CI job would read 1 as a regression."""
    done = polyfit("gate", "--report", "absent/report.md", cwd=repo)
    assert done.returncode == 2
    assert (
        done.stderr == "polyfit gate: error: --report absent/report.md: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "polyfit gate: error: unknown git revision 'no-such-rev'"),
        (
            lambda p: (p / "metrics/eval.json").unlink(),
            "polyfit gate: error: metrics/eval.json (workspace): metrics file not found",
        ),
        (
            lambda p: (p / "metrics/train.json").write_text("[1, 2"),
            "polyfit gate: error: metrics/train.json (workspace): not a JSON object of metrics",
        ),
        (lambda p: (p / "gate.yaml").write_text("metrics/eval.json: [1, 2"), "malformed YAML"),
        (lambda p: (p / "gate.yaml").unlink(), "polyfit gate: error: gate.yaml: cannot read"),
        (
            lambda p: (p / "gate.yaml").write_text("metrics/eval.json:\n  mse: {better: up}\n"),
            "gate.yaml: metrics/eval.json: mse.better: Input should be 'lower' or 'higher'",
        ),
        (
            lambda p: (p / "gate.yaml").write_text(
                "metrics/eval.json:\n  mse: {better: lower, abs: 0, rell: 0.1}\n"
            ),
            "gate.yaml: metrics/eval.json: mse.rell: unknown key; did you mean 'rel'?",
        ),
        (
            lambda p: (p / "gate.yaml").write_text(
                "metrics/nope.json:\n  mse: {better: lower, abs: 0, rel: 0}\n"
            ),
            "polyfit gate: error: metrics/nope.json at HEAD: metrics file not found",
        ),
    ],
    ids=[
        "revision",
        "no-workspace-metrics",
        "bad-json",
        "malformed-rules",
        "no-rules",
        "bad-rule",
        "misspelt-rule-key",
        "file-not-at-baseline",
    ],
)
def test_usage_errors_exit_2_with_one_line(repo, setup, message):
    setup(repo)
    revision = "no-such-rev" if "revision" in message else "HEAD"
    done = polyfit("gate", "--baseline", revision, cwd=repo)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert message in done.stderr


# --- a real regression: the pipeline on the table, with far fewer steps ---


def train_and_evaluate(folder: Path, params: dict) -> None:
    """The train and evaluate stages in this process, as `dvc repro` runs them after generate."""
    from polyfit.stages import evaluate, train

    write_params(folder, params)
    train.main()
    evaluate.main()


def use_stage_folder(folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")


@pytest.fixture(scope="module")
def trained_baseline(tmp_path_factory):
    """A git repo whose HEAD holds the repo's gate.yaml and the metrics of the pipeline on the
    table, made here by the stages; returns (folder, its params)."""
    from polyfit.stages import generate

    folder = tmp_path_factory.mktemp("gate-baseline")
    params = table_params()
    with pytest.MonkeyPatch.context() as monkeypatch:
        prepare_stage_dir(folder, monkeypatch, params)
        (folder / "gate.yaml").write_text((REPO / "gate.yaml").read_text())
        (folder / ".gitignore").write_text("mlflow.db\nmlflow.db.lock\nmlartifacts/\n")
        generate.main()
        train_and_evaluate(folder, params)
        git(folder, "init", "-q", "-b", "main")
        commit_all(folder, "baseline metrics")
    return folder, params


def test_a_training_with_far_fewer_steps_fails_the_gate(trained_baseline, monkeypatch):
    folder, params = trained_baseline
    use_stage_folder(folder, monkeypatch)
    steps = params["train"]["steps"]
    fewer = table_params(steps=steps // 10)
    try:
        train_and_evaluate(folder, fewer)
        done = polyfit("gate", "--baseline", "HEAD", cwd=folder)
    finally:
        git(folder, "checkout", "-q", ".")  # the committed metrics and params, for other tests
    assert done.returncode == 1, done.stdout + done.stderr
    failed = done.stdout.split("regression(s): ")[1].split("**")[0].split(", ")
    rows = {line.split(" | ")[0][2:]: line for line in done.stdout.splitlines() if " | " in line}
    assert failed and all("| **FAIL**: worse by " in rows[metric] for metric in failed), failed
    assert f"| train.steps | {steps} | {steps // 10} |" in done.stdout
