"""The recovery commands of docs/troubleshooting.md, run as written on a scratch repo (the
machinery's table): after a failed train, a corrupted training table and a `dvc exp run`
applied to the workspace, every output comes back with the md5 dvc.lock records and, for the
committed metrics, the committed bytes.
"""

import hashlib
import subprocess

import pytest
import yaml
from conftest import OUTPUTS, make_project, polyfit, run, runs_of, table_params, write_params

from polyfit import paths

pytestmark = pytest.mark.slow

DIVERGES = table_params(optimizer="SGD", lr=1e6)  # any model: the first step explodes


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch repo whose last good `dvc repro` is committed (dvc.lock and metrics/), as CI
    requires after every change."""
    project = make_project(tmp_path_factory.mktemp("recovery") / "project", table_params())
    done = shell("dvc repro", project)
    assert done.returncode == 0, done.stdout + done.stderr
    shell("git add dvc.lock metrics && git commit -qm 'the last good run'", project)
    return project


@pytest.fixture
def baseline(project):
    """The project at its committed baseline before the test, and put back after it."""
    assert_baseline(project)
    yield project
    shell("git checkout -- params.yaml dvc.lock metrics/ && dvc checkout --force", project)
    assert_baseline(project)


def shell(command: str, project):
    """A documented command line, run as a user types it (venv first on PATH)."""
    return run(["bash", "-c", command], project)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_baseline(project) -> None:
    """Every output has dvc.lock's md5; dvc.lock and metrics/ are the committed bytes."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    recorded = {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }
    assert sorted(recorded) == sorted(map(str, OUTPUTS))
    for path, digest in recorded.items():
        assert (project / path).exists(), f"{path} missing"
        assert md5(project / path) == digest, f"{path} is not the version dvc.lock records"
    for path in ["dvc.lock", str(paths.TRAIN_METRICS), str(paths.EVAL_METRICS)]:
        committed = subprocess.run(
            ["git", "show", f"HEAD:{path}"], cwd=project, capture_output=True, check=True
        ).stdout
        assert (project / path).read_bytes() == committed, f"{path} differs from HEAD"
    status = run(["dvc", "status"], project)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


def fail_train(project) -> None:
    """A diverging train under `dvc repro`: DVC exits 255 and has deleted train's outputs."""
    write_params(project, DIVERGES)
    failed = run(["dvc", "repro"], project)
    assert failed.returncode == 255, failed.stdout + failed.stderr  # DVC's code, not polyfit's 1
    assert "polyfit train: error: loss " in failed.stdout + failed.stderr
    assert "failed to reproduce 'train'" in failed.stderr
    for path in (paths.MODEL, paths.LOSS_CURVE, paths.TRAIN_METRICS):
        assert not (project / path).exists(), f"{path} should have been deleted by dvc repro"


def train_runs(project) -> int:
    return len(runs_of(f"sqlite:///{project / 'mlflow.db'}", stage="train"))


def test_failed_train_keeping_the_new_params(baseline):
    """`dvc checkout` restores the cached outputs only: metrics/train.json is `cache: false`,
    and comes back from git."""
    fail_train(baseline)
    assert shell("dvc checkout", baseline).returncode == 0
    assert (baseline / paths.MODEL).exists() and (baseline / paths.LOSS_CURVE).exists()
    assert not (baseline / paths.TRAIN_METRICS).exists()  # what `dvc checkout` alone misses
    assert shell("git checkout -- metrics/", baseline).returncode == 0
    shell("git checkout -- params.yaml dvc.lock", baseline)  # only so that assert_baseline
    assert_baseline(baseline)  # sees HEAD: check recorded the new params in dvc.lock


def test_failed_train_undoing_the_cause(baseline):
    """Params put back, `dvc repro` restores every output from DVC's run cache, metrics
    included, without training again."""
    fail_train(baseline)
    trained = train_runs(baseline)
    done = shell("git checkout -- params.yaml && dvc repro", baseline)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Stage 'train' is cached - skipping run, checking out outputs" in done.stdout
    assert train_runs(baseline) == trained  # nothing was trained or tracked again
    assert_baseline(baseline)


def test_corrupted_training_table_needs_force(baseline):
    table = baseline / paths.TRAIN_DATA
    table.write_text("u,v,y\n0.5,0.25,0.479\n")  # e.g. a CSV saved over the tensor file
    train = polyfit("train", cwd=baseline)
    assert train.returncode == 2
    assert train.stderr == (
        "polyfit train: error: data/train.pt: not a tensor file polyfit can load safely: "
        "it is a text file starting 'u,v,y', not torch.save output\n"
    )
    refused = shell("dvc checkout data/train.pt", baseline)
    assert refused.returncode == 255
    assert "Use `--force` to force" in refused.stderr
    assert table.read_text().startswith("u,v,y")  # DVC keeps what it has no copy of
    assert shell("dvc checkout --force data/train.pt", baseline).returncode == 0
    assert_baseline(baseline)


def test_back_to_the_baseline_after_an_experiment(baseline):
    done = shell("dvc exp run -S train.steps=100", baseline)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Experiment results have been applied to your workspace" in done.stdout
    assert md5(baseline / paths.MODEL) != md5_in_lock(baseline, paths.MODEL, "HEAD")
    back = shell("git checkout -- params.yaml dvc.lock metrics/ && dvc checkout", baseline)
    assert back.returncode == 0, back.stdout + back.stderr
    assert_baseline(baseline)
    kept = shell("dvc exp list --name-only", baseline).stdout.split()
    assert len(kept) == 1  # the experiment stays: `dvc exp apply <name>` brings it back


def md5_in_lock(project, path, revision: str) -> str:
    """The md5 dvc.lock records for `path` at a git revision."""
    lock = yaml.safe_load(
        subprocess.run(
            ["git", "show", f"{revision}:dvc.lock"], cwd=project, capture_output=True, check=True
        ).stdout
    )
    (digest,) = [
        out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"] == str(path)
    ]
    return digest
