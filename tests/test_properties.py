"""Property: whatever params.yaml holds, every stage exits 0, 1 or 2, never with a traceback,
and a failure ends with one `polyfit <stage>: ...` line that names the key or the file.

Hypothesis mutates the machinery's params (conftest.table_params: any leaf of data, train and
mlflow to any YAML value, deleted and extra keys and blocks, extreme numbers) and runs
`python -m polyfit generate`, `train`, `evaluate` in a scratch folder holding the table, as DVC
would, stopping at the first stage that fails. The model block is the user's, and left as is.
"""

import re
import tempfile
from pathlib import Path

import pytest
from conftest import (
    TABLE,
    clean_env,
    copy_made_store,
    polyfit,
    table_params,
    write_params,
    write_table,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_limits import LEAVES, YAML_VALUES

from polyfit.errors import UsageError
from polyfit.memory import available_memory, memory_needed
from polyfit.params import validate_params

pytestmark = pytest.mark.slow

STAGES = ("generate", "train", "evaluate")
# A failure's line names a params key (`train.lr`), a block, or a file the stage read or wrote.
NAMES_KEY_OR_FILE = re.compile(
    r"params\.yaml: |\b(data|model|train|mlflow)\.\w|\w+\.(pt|csv): |/mlflow\.db"
)
TEXT_LEAVES = {"optimizer", "device", "gradient", "source", "path", "target", "line_search_fn"}
NUMERIC_LEAVES = [path for path in LEAVES if path[-1] not in TEXT_LEAVES]
EXTREMES = st.sampled_from(
    [1e308, -1e308, 3.5e38, -3.5e38, 1e-308, 2**63, 2**63 - 1, -(2**63), 10**11, 10**12, 1e12]
)
BLOCKS = ("data", "model", "train", "mlflow")
LONGEST_RUN = 5000  # steps an example may train for; longer ones are drawn again


def base_params() -> dict:
    """The machinery's params with a short training: each example costs seconds."""
    return table_params(steps=50, log_every=10)


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
            path = draw(st.sampled_from([*LEAVES, *((block,) for block in BLOCKS)]))
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


def trains_too_long(params: dict) -> bool:
    """Valid params whose training would pass the memory check yet run for minutes."""
    try:
        validated = validate_params(params)
    except UsageError:
        return False
    train = validated.train
    steps = train.steps * (train.options.LBFGS.max_iter if train.optimizer == "LBFGS" else 1)
    fits = memory_needed(validated, "train")[0] <= (available_memory() or 0)
    return fits and steps > LONGEST_RUN


def names_key_or_file(line: str, params: dict) -> bool:
    csv = params.get("data", {}).get("csv", {}) if isinstance(params.get("data"), dict) else {}
    path = csv.get("path") if isinstance(csv, dict) else None
    return bool(NAMES_KEY_OR_FILE.search(line)) or (
        isinstance(path, str) and line.startswith(f"{path}: ")
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for every example, its tables made: making them costs seconds."""
    folder = tmp_path_factory.mktemp("store")
    copy_made_store(folder)
    return f"sqlite:///{folder / 'mlflow.db'}"


@settings(
    max_examples=10,  # ~1 in 4 runs all three stages (~15 s); the rest fail in under a second
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations())
def test_stages_exit_cleanly_whatever_params_hold(store, edits):
    params = apply(base_params(), edits)
    assume(not trains_too_long(params))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
        write_table(folder / TABLE)
        write_params(folder, params)
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
            assert names_key_or_file(lines[0].removeprefix(prefix), params), context
            break
