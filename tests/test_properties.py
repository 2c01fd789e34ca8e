"""Property: whatever params.yaml holds, every stage exits 0, 1 or 2, never with a traceback,
and a failure ends with one `polyfit <stage>: ...` line that names the key or the file.

Hypothesis mutates a small copy of the default params (any leaf to any YAML value, deleted and
extra keys, extreme numbers) and runs `python -m polyfit generate`, `train`, `evaluate` in a
scratch folder, as DVC would, stopping at the first stage that fails.
"""

import re
import tempfile
from pathlib import Path

import pytest
from conftest import STAGES, clean_env, copy_made_store, polyfit, small_params, write_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_limits import LEAVES, YAML_VALUES

pytestmark = pytest.mark.slow

# A failure's line names a params key (`train.lr`), a block, or a file the stage read or wrote.
NAMES_KEY_OR_FILE = re.compile(
    r"params\.yaml: |\b(data|model|train|evaluate|mlflow)\.\w|\w+\.pt: |/mlflow\.db"
)
NUMERIC_LEAVES = [path for path in LEAVES if path[-1] not in ("target", "optimizer", "gradient")]
EXTREMES = st.sampled_from(
    [1e308, -1e308, 3.5e38, -3.5e38, 1e-308, 2**63, 2**63 - 1, -(2**63), 10**11, 10**12, 1e12]
)


def base_params() -> dict:
    """The default params' shape with a short training run: each example costs seconds."""
    return small_params(steps=200, log_every=50)


@st.composite
def mutations(draw) -> list[tuple]:
    """1 to 3 edits: ("set", path, value), ("delete", path) or ("add", path, value)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "extreme", "delete", "add"]))
        if kind == "extreme":
            edits.append(("set", draw(st.sampled_from(NUMERIC_LEAVES)), draw(EXTREMES)))
        elif kind == "set":
            edits.append(("set", draw(st.sampled_from(LEAVES)), draw(YAML_VALUES)))
        elif kind == "delete":
            path = draw(st.sampled_from(LEAVES))
            edits.append(("delete", path[: draw(st.integers(1, len(path)))]))
        else:
            parent = draw(st.sampled_from(LEAVES))[: draw(st.integers(0, 2))]
            name = draw(st.text(min_size=1, max_size=8))
            edits.append(("add", (*parent, name), draw(YAML_VALUES)))
    return edits


def apply(params: dict, edits: list[tuple]) -> dict:
    for kind, path, *value in edits:
        block = params
        for key in path[:-1]:
            if not isinstance(block.get(key), dict):
                break  # an earlier edit replaced or deleted this block
            block = block[key]
        else:
            if kind == "delete":
                block.pop(path[-1], None)
            else:
                block[path[-1]] = value[0]
    return params


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for every example, its tables made: making them costs seconds."""
    folder = tmp_path_factory.mktemp("store")
    copy_made_store(folder)
    return f"sqlite:///{folder / 'mlflow.db'}"


@settings(
    max_examples=20,  # ~1 in 4 runs all three stages (~12 s); the rest fail in under a second
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations())
def test_stages_exit_cleanly_whatever_params_hold(store, edits):
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
        write_params(folder, apply(base_params(), edits))
        for stage in STAGES:
            done = polyfit(stage, cwd=folder, env=clean_env(MLFLOW_TRACKING_URI=store))
            context = f"{stage} with {edits}: exit {done.returncode}\n{done.stderr}"
            assert done.returncode in (0, 1, 2), context
            assert "Traceback" not in done.stderr, context
            if done.returncode == 0:
                continue
            lines = done.stderr.splitlines()
            assert len(lines) == 1, context
            prefix = f"polyfit {stage}: error: "
            assert lines[0].startswith(prefix), context
            assert NAMES_KEY_OR_FILE.search(lines[0].removeprefix(prefix)), context
            break
