"""dvc.yaml declares exactly what each stage reads and writes, in step with paths.py and the
code, and the committed dvc.lock and metrics/ are what that pipeline records.

Written for the repo as a user adapts it: a data file of theirs (e.g. data/points.csv, tracked
with `dvc add`) may be a dep of a stage, and gate.yaml may gate metrics their model does not
produce; what the pipeline computes (output hashes) is never compared, as CPUs round
differently."""

import ast
import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import OUTPUTS, REPO, dvc, dvc_tracked_files, make_project

from polyfit import cli, paths
from polyfit.params import flatten

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]
SRC = REPO / "src"
# What each stage writes, as paths.py names it: (outs, metrics).
WRITES = {
    "check": (set(), set()),
    "generate": ({paths.TRAIN_DATA, paths.HELD_OUT_DATA}, set()),
    "train": ({paths.MODEL, paths.LOSS_CURVE}, {paths.TRAIN_METRICS}),
    "evaluate": ({paths.FIT_CURVE}, {paths.EVAL_METRICS}),
}
# Settings that decide no output: changing them must re-run no stage that writes one.
OUTPUT_FREE = ("mlflow.experiment", "mlflow.registered_model", "train.log_every")
OUTPUT_FREE_OR_NULL = ("train.checkpoint_every",)


def _names(entries) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}


def test_the_stages_are_check_generate_train_evaluate_each_a_polyfit_command():
    assert list(STAGES) == ["check", "generate", "train", "evaluate"]
    for stage, spec in STAGES.items():
        assert spec["cmd"] == f"python -m polyfit {stage}", stage
        assert stage in cli.MODULES, stage


def test_outs_and_metrics_are_the_files_paths_py_names():
    for stage, (outs, metrics) in WRITES.items():
        spec = STAGES[stage]
        assert _names(spec.get("outs", [])) == {str(path) for path in outs}, stage
        assert _names(spec.get("metrics", [])) == {str(path) for path in metrics}, stage
        for entry in spec.get("metrics", []):  # small JSON, committed to git, not DVC's cache
            assert next(iter(entry.values())) == {"cache": False}
    written = {str(path) for outs, metrics in WRITES.values() for path in outs | metrics}
    assert written == {str(path) for path in OUTPUTS}


def test_check_depends_on_all_of_params_yaml_and_writes_nothing():
    """So any change to params.yaml is validated before a stage that writes could delete its
    outputs; and it needs no lock entry of outputs."""
    check = STAGES["check"]
    assert check["params"] == [{"params.yaml": None}]
    assert not check.get("deps") and not check.get("outs") and not check.get("metrics")


def _module_file(stage: str) -> Path:
    return SRC.joinpath("polyfit", *cli.MODULES[stage].split(".")).with_suffix(".py")


def _polyfit_imports(path: Path) -> set[Path]:
    """Source files of the polyfit modules that `path` imports anywhere (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("polyfit"):
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            candidate = SRC.joinpath(*name.split(".")).with_suffix(".py")
            if name.startswith("polyfit") and candidate.exists():
                found.add(candidate)
    return found


# What decides a stage's outputs: the maths and how files are written. MLflow code (tracking/),
# params parsing, checkpoints (resumed trainings end with the same bytes) and the CLI only record
# or route, so editing them re-runs nothing.
DECIDES_OUTPUTS = ("src/polyfit/stages/", "src/polyfit/core/", "src/polyfit/files.py")


def _code_of(stage: str) -> set[str]:
    """The stage's module and the polyfit modules it imports transitively that decide outputs."""
    todo, seen = [_module_file(stage)], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_polyfit_imports(path))
    code = {str(path.relative_to(REPO)) for path in seen if path.name != "__init__.py"}
    return {path for path in code if path.startswith(DECIDES_OUTPUTS)}


def test_every_stage_depends_on_the_code_that_decides_its_outputs_and_nothing_else():
    for stage, spec in STAGES.items():
        code_deps = {d for d in spec.get("deps", []) if d.startswith("src/")}
        assert code_deps == _code_of(stage), stage
    assert "src/polyfit/core/fit.py" in _code_of("train")  # the walk follows imports


def _referenced_outputs(stage: str) -> set[str]:
    """The pipeline's files the stage's module names (paths.X): what it reads or writes."""
    names = {
        node.attr
        for node in ast.walk(ast.parse(_module_file(stage).read_text()))
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "paths"
    }
    return {str(getattr(paths, name)) for name in names} & {str(path) for path in OUTPUTS}


def git_tracked(path: str) -> bool:
    done = subprocess.run(
        ["git", "ls-files", "--error-unmatch", path], cwd=REPO, capture_output=True
    )
    return done.returncode == 0


def test_every_other_dep_is_an_earlier_stages_output_or_a_data_file():
    """A stage depends on the outputs it reads, each written by a stage before it; anything else
    it depends on is data (a user's file, tracked by git or `dvc add`), never code or params."""
    written_before: set[str] = set()
    data_files = set(dvc_tracked_files())
    for stage, spec in STAGES.items():
        others = {d for d in spec.get("deps", []) if not d.startswith("src/")}
        reads = _referenced_outputs(stage) - _names(spec.get("outs", []) + spec.get("metrics", []))
        assert others & {str(path) for path in OUTPUTS} == reads, stage
        assert reads <= written_before, f"{stage} reads an output no earlier stage writes"
        for dep in others - reads:
            assert not dep.endswith(".py") and dep != str(paths.PARAMS), f"{stage}: {dep}"
            assert dep in data_files or git_tracked(dep), f"{stage}: {dep} is not data of the repo"
        written_before |= _names(spec.get("outs", []) + spec.get("metrics", []))


def test_declared_params_exist_in_params_yaml():
    keys = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    for stage, spec in STAGES.items():
        for declared in spec["params"]:
            if isinstance(declared, dict):  # {file: keys}; None: the whole file
                assert declared == {"params.yaml": None}, stage
                continue
            assert any(k == declared or k.startswith(declared + ".") for k in keys), declared


def _declares(spec: dict, key: str) -> bool:
    """Whether a change to `key` re-runs the stage (a declared key, or a block above it)."""
    return any(
        key == declared or key.startswith(declared + ".")
        for declared in spec["params"]
        if isinstance(declared, str)
    )


def test_settings_that_decide_no_output_are_declared_by_no_stage_that_writes():
    """MLflow's names, how often train prints and checkpoints: DVC must not re-run training."""
    for key in OUTPUT_FREE + OUTPUT_FREE_OR_NULL:
        writers = [stage for stage, spec in STAGES.items() if spec.get("outs")]
        assert not [stage for stage in writers if _declares(STAGES[stage], key)], key


def test_committed_metrics_are_json_objects_of_finite_numbers():
    """Each metrics file dvc.yaml declares is committed as flat JSON numbers, and gate.yaml
    judges only files the pipeline writes (a gated metric a model lacks is not applicable)."""
    declared = set().union(*(_names(s.get("metrics", [])) for s in STAGES.values()))
    for file in declared:
        assert git_tracked(file), f"{file} is not committed"
        metrics = json.loads((REPO / file).read_text())
        assert isinstance(metrics, dict) and metrics, file
        for key, value in metrics.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            assert number and math.isfinite(value), f"{file}: {key} = {value!r}"
    rules = yaml.safe_load((REPO / "gate.yaml").read_text())
    assert set(rules) <= declared


# --- the committed dvc.lock, on a fresh copy of the repo, by `dvc status` ---

# `dvc status` on a fresh copy: outputs are absent there, which is all it may report.
ABSENT = ("deleted", "not in cache")


def _stale(project: Path) -> dict:
    """What `dvc status` reports beyond outputs missing from a fresh copy."""
    stale = {}
    for stage, changes in json.loads(dvc(project, "status", "--json")).items():
        for change in changes:  # {"changed deps": {file: state}}, or a word: "changed command"
            if isinstance(change, str):
                stale[stage] = change
                continue
            for kind, files in change.items():
                stale |= {f"{stage} {kind}: {f}": s for f, s in files.items() if s not in ABSENT}
    return stale


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh copy of the repo as committed (with the working tree's changes), no outputs."""
    return make_project(tmp_path_factory.mktemp("dvc-yaml") / "project", store=False)


@pytest.fixture
def edited(project):
    """The project, put back as committed after the test edits it."""
    yield project
    subprocess.run(["git", "checkout", "-q", "."], cwd=project, check=True)


def _set_param(project: Path, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    *path, last = key.split(".")
    block = params
    for part in path:
        block = block[part]
    block[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _param(project: Path, key: str):
    return flatten(yaml.safe_load((project / "params.yaml").read_text()))[key]


def test_committed_lock_matches_the_code_params_and_metrics(edited):
    """Code or params changed without `dvc repro` and committing dvc.lock fail here, as do
    committed metrics that are not the ones dvc.lock recorded."""
    project = edited
    assert _stale(project) == {}, "run `dvc repro`, then commit dvc.lock and metrics/"
    code = sorted(d for d in STAGES["train"]["deps"] if d.startswith("src/"))[0]
    with (project / code).open("a") as source:
        source.write("# changed\n")
    _set_param(project, "train.lr", _param(project, "train.lr") * 2)
    assert _stale(project) == {
        "check changed deps: params.yaml": {"train": "modified"},  # whole blocks, for a file
        f"train changed deps: {code}": "modified",
        "train changed deps: params.yaml": {"train.lr": "modified"},
    }


def test_settings_that_decide_no_output_rerun_no_stage_that_writes(edited):
    """DVC itself: the change makes only `check`, which validates any change to params.yaml,
    stale (whatever else the committed lock may lack: the test above says that)."""
    project = edited
    before = _stale(project)
    for key in OUTPUT_FREE:
        value = _param(project, key)
        _set_param(project, key, value + 1 if isinstance(value, int) else f"{value}-renamed")
    for key in OUTPUT_FREE_OR_NULL:
        _set_param(project, key, 7 if _param(project, key) is None else None)
    changed = {key.split(".")[0]: "modified" for key in OUTPUT_FREE + OUTPUT_FREE_OR_NULL}
    after = _stale(project)
    new = {change: state for change, state in after.items() if before.get(change) != state}
    assert new == {"check changed deps: params.yaml": changed}
