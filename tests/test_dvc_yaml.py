"""dvc.yaml declares exactly what each stage reads and writes, in step with paths.py."""

import ast
import json
from pathlib import Path

import yaml
from conftest import REPO

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


def _code_of(stage: str) -> set[str]:
    """The stage module and everything it imports from polyfit, transitively."""
    todo, seen = [SRC / "polyfit" / "stages" / f"{stage}.py"], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_polyfit_imports(path))
    return {str(path.relative_to(REPO)) for path in seen if path.name != "__init__.py"}


def test_every_stage_depends_on_the_code_it_runs_and_nothing_else():
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
