"""dvc.yaml declares exactly what each stage reads and writes, in step with paths.py."""

import ast
import json
from pathlib import Path

import yaml
from conftest import REPO, dvc

from polyfit import paths
from polyfit.params import flatten

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]
SRC = REPO / "src"


def _names(entries) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}


def test_outs_and_metrics_are_the_files_paths_py_names():
    outs = set().union(*(_names(s.get("outs", [])) for s in STAGES.values()))
    metrics = set().union(*(_names(s.get("metrics", [])) for s in STAGES.values()))
    assert outs == {str(p) for p in (paths.DATASET, paths.MODEL, paths.LOSS_CURVE, paths.FIT_CURVE)}
    assert metrics == {str(paths.TRAIN_METRICS), str(paths.EVAL_METRICS)}
    for stage in STAGES.values():
        for entry in stage.get("metrics", []):
            assert next(iter(entry.values())) == {"cache": False}


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
# params parsing and the CLI only record or route, so editing them re-runs nothing.
DECIDES_OUTPUTS = ("src/polyfit/stages/", "src/polyfit/core/", "src/polyfit/files.py")


def _code_of(stage: str) -> set[str]:
    """The stage module and the polyfit modules it imports transitively that decide outputs."""
    todo, seen = [SRC / "polyfit" / "stages" / f"{stage}.py"], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_polyfit_imports(path))
    code = {str(path.relative_to(REPO)) for path in seen if path.name != "__init__.py"}
    return {path for path in code if path.startswith(DECIDES_OUTPUTS)}


def test_every_stage_depends_on_the_code_that_decides_its_outputs_and_nothing_else():
    for stage, spec in STAGES.items():
        code_deps = {d for d in spec["deps"] if d.startswith("src/")}
        assert code_deps == _code_of(stage), stage


def test_declared_params_exist_in_params_yaml():
    keys = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    for spec in STAGES.values():
        for declared in spec["params"]:
            assert any(k == declared or k.startswith(declared + ".") for k in keys), declared


def test_committed_metrics_are_valid_json_with_the_gated_keys():
    rules = yaml.safe_load((REPO / "gate.yaml").read_text())
    for file, metrics in rules.items():
        committed = json.loads((REPO / file).read_text())
        assert set(metrics) <= set(committed), file


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


def test_committed_lock_matches_the_code_params_and_metrics(project):
    """Code or params changed without `dvc repro` and committing dvc.lock fail here, as do
    committed metrics that are not the ones dvc.lock recorded."""
    assert _stale(project) == {}, "run `dvc repro`, then commit dvc.lock and metrics/"
    with (project / "src/polyfit/core/fit.py").open("a") as source:
        source.write("# changed\n")
    (project / "params.yaml").write_text(
        (project / "params.yaml").read_text().replace("lr: 1.0e-3", "lr: 2.0e-3")
    )
    assert _stale(project) == {
        "train changed deps: src/polyfit/core/fit.py": "modified",
        "train changed deps: params.yaml": {"train.lr": "modified"},
    }


def test_mlflow_names_and_print_only_settings_rerun_nothing(project):
    params = (project / "params.yaml").read_text()
    for old, new in [
        ("experiment: polyfit", "experiment: renamed"),
        ("log_every: 100", "log_every: 7"),
    ]:
        assert old in params
        params = params.replace(old, new)
    (project / "params.yaml").write_text(params)
    assert _stale(project) == {}
