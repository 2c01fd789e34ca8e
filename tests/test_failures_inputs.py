"""Corrupt or foreign input files, and training that diverges.

Inputs: the tables generate writes (data/train.pt, data/held_out.pt: X (N, F), y (N,) and the
feature names), models/model.pt and the user's CSV file (data.csv.path). Every fault is one line
naming the file (exit 2), and a pickle that carries code never runs it. Divergence: a
non-finite loss, or one past train.divergence_factor x the first, stops training (exit 1), ends
the MLflow run FAILED and writes no model.

The model is whatever params.yaml's model block describes (build_model); the divergence cases
train a linear model of their own, whose growth on the table is known.
"""

import io
import math
import os
import pickle
import random
import re
import warnings

import pytest
import torch
from conftest import TABLE, TABLE_FEATURES, command, polyfit, runs_of, table_params, write_table
from fault_tools import repo_model, snapshot, stage_folder, store_env, write_model

from polyfit import files, paths
from polyfit.core.batches import full_batch
from polyfit.core.data import from_csv, read_csv
from polyfit.core.fit import build_optimizer, check_divergence, fit
from polyfit.core.model import build_model
from polyfit.errors import DivergedError, UsageError

N, F = 8, 2  # rows and features of the hand-made table files
REFUSED = "not a tensor file polyfit can load safely"
DAMAGED_ZIP = f"{REFUSED}: a zip archive but not a complete torch.save one (damaged or truncated)"
UNKNOWN = f"{REFUSED}: neither a torch.save zip archive nor a tensor pickle"
NOT_A_TABLE = "expected a table (X, y, features), found"
SHAPES = "expected X (N, F) and y (N,) with N >= 1, found"
SGD_PLAIN = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}


class RunsCode:
    """Pickles as a call to os.system: loading it with plain pickle creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def saved(obj, legacy: bool = False, protocol: int = 2) -> bytes:
    """torch.save bytes, in the zip format or the legacy pickle-only one."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    return buffer.getvalue()


def table(n: int = N, **overrides) -> bytes:
    """A table file as generate writes it, with entries replaced or added."""
    content = {"X": torch.zeros(n, F), "y": torch.zeros(n), "features": ["u", "v"]}
    return saved(content | overrides)


def code_carriers(marker) -> dict[str, bytes]:
    """The same code-carrying payload in each format a .pt file may arrive in."""
    return {
        "zip": saved({"X": RunsCode(marker), "y": torch.zeros(N), "features": ["u", "v"]}),
        "legacy": saved({"X": RunsCode(marker), "y": torch.zeros(N)}, legacy=True),
        "plain pickle": pickle.dumps(RunsCode(marker)),
    }


TABLE_CASES = {
    # The cause in words, not torch's opcodes ("Unsupported operand 120") or a bare KeyError.
    "truncated": (lambda: table()[: len(table()) // 2], DAMAGED_ZIP),
    "garbage": (lambda: random.Random(0).randbytes(600), UNKNOWN),
    "empty": (lambda: b"", f"{REFUSED}: the file is empty"),
    "csv text": (lambda: b"u,v,y\n0.0,0.0,0.0\n", f"{REFUSED}: it is a text file starting 'u,v,y'"),
    "one word": (lambda: b"error\n", f"{REFUSED}: it is a text file starting 'error', not"),
    "plain pickle": (
        lambda: pickle.dumps({"X": [[0.0] * F] * N, "y": [0.0] * N}),  # protocol 4
        f"{REFUSED}: a Python pickle, not torch.save output: save tensors with torch.save",
    ),
    "old format, protocol 4": (
        lambda: saved({"X": torch.zeros(N, F), "y": torch.zeros(N)}, legacy=True, protocol=4),
        f"{REFUSED}: torch.save's old pickle-only format, damaged or in pickle protocol 4",
    ),
    "X 1-d": (lambda: table(X=torch.zeros(N)), f"{SHAPES} X (8,), y (8,)"),
    "X 3-d": (lambda: table(X=torch.zeros(N, F, 1)), f"{SHAPES} X (8, 2, 1), y (8,)"),
    "y 2-d": (lambda: table(y=torch.zeros(N, 1)), f"{SHAPES} X (8, 2), y (8, 1)"),
    "more targets than rows": (lambda: table(y=torch.zeros(N + 1)), f"{SHAPES} X (8, 2), y (9,)"),
    "no rows": (lambda: table(0), f"{SHAPES} X (0, 2), y (0,)"),
    "float64": (lambda: table(y=torch.zeros(N).double()), "'y' must be a float32 tensor"),
    "int64": (lambda: table(X=torch.zeros(N, F, dtype=torch.int64)), "found torch.int64"),
    "nan": (lambda: table(y=torch.full((N,), torch.nan)), "'y' holds NaN or infinite values"),
    "inf": (lambda: table(X=torch.full((N, F), torch.inf)), "'X' holds NaN or infinite values"),
    "sparse": (lambda: table(X=torch.zeros(N, F).to_sparse()), "'X' must be a dense CPU tensor"),
    "a list": (lambda: table(X=[[0.0] * F] * N), "'X' must be a float32 tensor, found list"),
    "too few names": (lambda: table(features=["u"]), "'features' must name the 2 column(s) of X"),
    "names not text": (lambda: table(features=[1, 2]), "'features' must name the 2 column(s)"),
    "one string": (lambda: table(features="uv"), "'features' must name the 2 column(s) of X"),
    "missing y": (
        lambda: saved({"X": torch.zeros(N, F), "features": ["u", "v"]}),
        f"{NOT_A_TABLE} ['X', 'features']",
    ),
    "extra key": (lambda: table(z=torch.zeros(N)), f"{NOT_A_TABLE} ['X', 'features', 'y', 'z']"),
    "int key": (lambda: table(**{"1": torch.zeros(N)}), f"{NOT_A_TABLE} ['1', 'X', 'features',"),
    "the old dataset file": (
        lambda: saved({"x": torch.zeros(N), "y": torch.zeros(N)}),
        f"{NOT_A_TABLE} ['x', 'y']",
    ),
    "not a dict": (lambda: saved([torch.zeros(N)] * 2), f"{NOT_A_TABLE} list"),
    "bare tensor": (lambda: saved(torch.zeros(N, F)), f"{NOT_A_TABLE} Tensor"),
}


def error_for(load, path) -> str:
    """The UsageError's message: one line naming the file, and no warning besides."""
    with warnings.catch_warnings(record=True) as warned, pytest.raises(UsageError) as caught:
        warnings.simplefilter("always")
        load(path)
    assert [str(warning.message) for warning in warned] == []
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def test_a_good_table_loads_with_its_digests(tmp_path):
    path = tmp_path / "train.pt"
    path.write_bytes(table())
    loaded, digests = files.load_table(path)
    assert loaded.X.shape == (N, F) and loaded.y.shape == (N,)
    assert loaded.features == ("u", "v")
    assert digests == files.digests(path.read_bytes())


@pytest.mark.parametrize(("make", "expected"), TABLE_CASES.values(), ids=TABLE_CASES.keys())
def test_bad_table_is_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "train.pt"
    path.write_bytes(make())
    assert expected in error_for(files.load_table, path)


def test_missing_or_unreadable_table_names_the_file(tmp_path):
    load = files.load_table
    assert "cannot read: No such file or directory" in error_for(load, tmp_path / "absent.pt")
    (tmp_path / "folder.pt").mkdir()
    assert "cannot read: Is a directory" in error_for(load, tmp_path / "folder.pt")


def test_the_code_carrying_payloads_do_run_code_when_unpickled_unsafely(tmp_path):
    """Proves the next tests' payloads are live: only weights_only keeps them inert."""
    for label, content in code_carriers(tmp_path / "ran").items():
        if label == "plain pickle":
            pickle.loads(content)
        else:
            torch.load(io.BytesIO(content), weights_only=False)
        assert (tmp_path / "ran").exists(), label
        (tmp_path / "ran").unlink()


@pytest.mark.parametrize("label", ["zip", "legacy", "plain pickle"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, label):
    marker = tmp_path / "ran"
    path = tmp_path / "train.pt"
    path.write_bytes(code_carriers(marker)[label])
    assert REFUSED in error_for(files.load_table, path)
    path.write_bytes(code_carriers(marker)[label])
    assert REFUSED in error_for(lambda p: files.load_weights(p, repo_model()), path)
    assert not marker.exists()


def weights(n_features: int = F) -> dict:
    """The state_dict of the model params.yaml describes, for a table of n_features."""
    return build_model(table_params()["model"], n_features).state_dict()


def without_first(state: dict) -> tuple[dict, str]:
    name = next(iter(state))
    return {key: value for key, value in state.items() if key != name}, name


MODEL_CASES = {
    "other number of features": (
        lambda: saved(weights(F + 1)),
        "does not fit the model params.model describes: ",
    ),
    "a weight missing": (
        lambda: saved(without_first(weights())[0]),
        f'Missing key(s) in state_dict: "{without_first(weights())[1]}"',
    ),
    "a weight too many": (
        lambda: saved(weights() | {"extra": torch.zeros(1)}),
        'Unexpected key(s) in state_dict: "extra"',
    ),
    "float64": (
        lambda: saved({k: v.double() for k, v in weights().items()}),
        "must be a float32 tensor, found torch.float64",
    ),
    "whole module": (lambda: saved(repo_model()), f"{REFUSED}: it holds Python objects, not"),
    "truncated": (lambda: saved(weights())[:100], DAMAGED_ZIP),
    "a table": (lambda: table(), "'features' must be a float32 tensor, found list"),
}


@pytest.mark.parametrize(("make", "expected"), MODEL_CASES.values(), ids=MODEL_CASES.keys())
def test_bad_model_is_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "model.pt"
    path.write_bytes(make())
    assert expected in error_for(lambda p: files.load_weights(p, repo_model()), path)


def test_a_model_for_other_features_says_which_weights_do_not_fit(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(saved(weights(F + 1)))
    message = error_for(lambda p: files.load_weights(p, repo_model()), path)
    assert "size mismatch for " in message  # torch's reason, on the same line


# --- the user's CSV file (data.csv.path), read by generate ---

HEADER = "u,v,y\n"
GOOD_ROWS = "0.5,-0.25,1.0\n-0.5,0.75,2.0\n"
NOT_FINITE = "is not a finite float32 number"
CSV_CASES = {
    "missing column": ("u,w,y\n" + GOOD_ROWS, "no column 'v' (the header has ['u', 'w', 'y'])"),
    "a word": (HEADER + GOOD_ROWS + "0.1,abc,3.0\n", f"line 4, column 'v': 'abc' {NOT_FINITE}"),
    "an empty cell": (HEADER + "0.5,,1.0\n" + GOOD_ROWS, f"line 2, column 'v': '' {NOT_FINITE}"),
    "infinite": (HEADER + GOOD_ROWS + "0.1,0.2,inf\n", f"line 4, column 'y': 'inf' {NOT_FINITE}"),
    "nan": (HEADER + "nan,0.2,3.0\n" + GOOD_ROWS, f"line 2, column 'u': 'nan' {NOT_FINITE}"),
    "beyond float32": (
        HEADER + GOOD_ROWS + "0.1,1e39,3.0\n",
        f"line 4, column 'v': '1e39' {NOT_FINITE}",
    ),
    "too few values": (HEADER + GOOD_ROWS + "0.1,0.2\n", "line 4: 2 values, the header has 3"),
    "too many values": (
        HEADER + "0.1,0.2,0.3,0.4\n" + GOOD_ROWS,
        "line 2: 4 values, the header has 3",
    ),
    "one row": (HEADER + "0.5,-0.25,1.0\n", "1 row(s) of data; at least 2 are needed"),
    "header only": (HEADER, "0 row(s) of data; at least 2 are needed"),
    "empty file": ("", "empty: expected a header row, then one row per point"),
}


def csv_error(path, content: bytes) -> str:
    path.write_bytes(content)
    return error_for(lambda p: read_csv(str(p), TABLE_FEATURES, "y"), path)


@pytest.mark.parametrize(("text", "expected"), CSV_CASES.values(), ids=CSV_CASES.keys())
def test_bad_csv_is_one_line_naming_the_file_line_and_column(tmp_path, text, expected):
    path = tmp_path / "table.csv"
    assert csv_error(path, text.encode()) == f"{path}: {expected}"


def test_a_csv_that_is_not_utf8_names_the_byte(tmp_path):
    content = (HEADER + GOOD_ROWS).encode() + "0.1,0.2,0.3 # café\n".encode("latin-1")
    offset = content.index(b"\xe9")
    message = csv_error(tmp_path / "table.csv", content)
    assert message.endswith(f": not UTF-8 text: invalid continuation byte at byte {offset}")


def test_a_line_break_inside_quotes_counts_in_the_line_number(tmp_path):
    text = HEADER + '"0.5\n",0.1,0.2\n' + "0.1,x,0.3\n"  # the quoted cell spans lines 2-3
    assert "line 4, column 'v': 'x' is not a finite" in csv_error(tmp_path / "t.csv", text.encode())


def test_a_good_csv_is_split_by_its_seed(tmp_path):
    """Spaces around numbers, CRLF line ends and other columns are fine; the split is seeded."""
    text = "y,u,note,v\r\n" + "".join(f" {i} , {i / 10},row {i},{-i}\r\n" for i in range(20))
    (tmp_path / "t.csv").write_bytes(text.encode())
    train, held_out = from_csv(str(tmp_path / "t.csv"), ["u", "v"], "y", 0.25, 7)
    assert (len(train.y), len(held_out.y)) == (15, 5) and train.features == ("u", "v")
    assert sorted(train.y.tolist() + held_out.y.tolist()) == [float(i) for i in range(20)]
    assert torch.equal(train.X[:, 1], -train.y) and torch.equal(train.X[:, 0] * 10, train.y)
    again, _ = from_csv(str(tmp_path / "t.csv"), ["u", "v"], "y", 0.25, 7)
    other, _ = from_csv(str(tmp_path / "t.csv"), ["u", "v"], "y", 0.25, 8)
    assert torch.equal(again.y, train.y) and not torch.equal(other.y, train.y)


def test_a_missing_csv_is_a_bad_input_naming_the_file(tmp_path):
    """As a missing data/train.pt is (load_table): exit 2, `cannot read`. PRODUCT BUG: read_csv
    lets FileNotFoundError through, so the CLI exits 1 with the OS's line."""
    message = error_for(lambda p: read_csv(str(p), TABLE_FEATURES, "y"), tmp_path / "absent.csv")
    assert message.endswith("cannot read: No such file or directory")


@pytest.mark.parametrize("case", CSV_CASES)
def test_generate_refuses_a_bad_csv_with_exit_2_and_writes_nothing(stage_dir, capsys, case):
    """`polyfit generate` in this process (conftest's stage_dir), on the table made bad."""
    (stage_dir / TABLE).write_text(CSV_CASES[case][0])
    code, out, err = command(capsys, "generate")
    assert (code, out) == (2, "")
    assert err == f"polyfit generate: error: {TABLE}: {CSV_CASES[case][1]}\n"
    assert not (stage_dir / paths.TRAIN_DATA).exists()
    assert runs_of(f"sqlite:///{stage_dir / 'mlflow.db'}") == []  # refused before any run


# --- the CLI: one process each, for the exit code and nothing on stderr but the line ---


@pytest.fixture
def folder(tmp_path):
    """A stage folder (the table) whose data/*.pt and models/model.pt are valid, no store."""
    folder = stage_folder(tmp_path / "work", store=False)
    write_model(folder)
    return folder


CLI_CASES = {
    "generate, a word in the csv": ("generate", TABLE, "a word", "line 4, column 'v': 'abc'"),
    "train, code in the training data": (
        "train",
        paths.TRAIN_DATA,
        "zip",
        "unsupported GLOBAL posix.system",
    ),
    "evaluate, a pickle as held-out data": (
        "evaluate",
        paths.HELD_OUT_DATA,
        "plain pickle",
        "a Python pickle, not",
    ),
}


@pytest.mark.parametrize(("stage", "name", "fault", "expected"), CLI_CASES.values(), ids=CLI_CASES)
def test_cli_bad_input_exits_2_naming_the_file(folder, stage, name, fault, expected):
    marker = folder.parent / "ran"
    carriers = code_carriers(marker)
    content = carriers[fault] if fault in carriers else CSV_CASES[fault][0].encode()
    (folder / name).write_bytes(content)
    before = snapshot(folder)
    done = polyfit(stage, cwd=folder, env=store_env(folder))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"polyfit {stage}: error: {name}: ")
    assert expected in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""
    assert not marker.exists()
    assert snapshot(folder) == before
    assert not (folder / "mlflow.db").exists()  # refused before any MLflow run


# --- divergence ---


class Linear(torch.nn.Module):
    """y = w . x + b over (N, F): on the table, plain SGD at lr 0.02 multiplies the loss by
    about 3.7 a step, and at 0.05 overflows it within a few dozen."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(len(TABLE_FEATURES), 1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layer(X)[:, 0]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The table's training rows, as generate splits them."""
    path = tmp_path_factory.mktemp("table") / "table.csv"
    write_table(path)
    csv = table_params()["data"]["csv"] | {"path": str(path)}
    return from_csv(**csv)[0]


def fitted(rows, lr: float, steps: int, log_every: int, factor: float, scale: float = 1.0):
    """Fit the linear model to the rows (X times `scale`) with plain SGD; return the steps it
    reported, and the losses."""
    torch.manual_seed(0)
    model = Linear()
    optimizer = build_optimizer("SGD", model.parameters(), lr, SGD_PLAIN)
    reported = []
    report = lambda step, loss: reported.append(step)  # noqa: E731
    batches = full_batch(rows.X * scale, rows.y)
    losses = fit(model, optimizer, batches, steps, log_every, factor, report=report)
    return reported, losses


def test_non_finite_loss_stops_training(rows):
    expected = r"^loss became non-finite at step \d+ \(train\.lr too large\?\)$"
    with pytest.raises(DivergedError, match=expected):
        fitted(rows, lr=0.05, steps=200, log_every=50, factor=math.inf)  # no growth check first


def test_loss_growing_past_the_factor_stops_training(rows):
    fitted(rows, lr=0.02, steps=10, log_every=10, factor=1e20)  # grows, but within the factor
    with pytest.raises(DivergedError, match=r"over 1000 x the first loss .*divergence_factor"):
        fitted(rows, lr=0.02, steps=10, log_every=10, factor=1e3)


def test_divergence_is_checked_between_reports(rows):
    with pytest.raises(DivergedError):
        fitted(rows, lr=0.05, steps=30, log_every=1000, factor=1e3)


def test_divergence_stops_at_the_first_step_past_the_factor(rows):
    _, losses = fitted(rows, lr=0.02, steps=10, log_every=10, factor=math.inf)  # unchecked
    first_past = next(step for step, loss in enumerate(losses) if loss > 1e3 * losses[0])
    assert 0 < first_past < 9  # the run goes on growing after it
    with pytest.raises(DivergedError, match=rf"^loss grew to \S+ at step {first_past}, "):
        fitted(rows, lr=0.02, steps=10, log_every=10, factor=1e3)


def test_a_loss_that_overflows_from_the_start_points_at_the_data_not_the_lr(rows):
    with pytest.raises(DivergedError, match=r"^loss became non-finite at step 0 \(the data") as e:
        fitted(rows, lr=1e-3, steps=10, log_every=5, factor=1e3, scale=1e20)  # squares overflow
    assert "train.lr" not in str(e.value)
    with pytest.raises(DivergedError, match=r"at step 0 \(the data"):
        check_divergence([math.nan], 1e3)


def test_the_loss_is_reported_every_log_every_steps_and_at_the_last(rows):
    reported, losses = fitted(rows, lr=1e-3, steps=10, log_every=4, factor=1e3)
    assert reported == [3, 7, 9]
    assert len(losses) == 10


DIVERGES = table_params(optimizer="SGD", lr=1e6)  # any model: the first step explodes


@pytest.mark.slow
def test_cli_divergence_fails_the_run_and_keeps_the_earlier_model(tmp_path):
    folder = stage_folder(tmp_path / "work", DIVERGES)
    write_model(folder)
    before = snapshot(folder)
    done = polyfit("train", cwd=folder, env=store_env(folder))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr  # the store exists: nothing but the cause
    error = done.stderr.rstrip("\n")
    # Checked at every step: the first step's loss already stops it.
    assert re.match(
        r"polyfit train: error: loss (grew to \S+|became non-finite) at step 1\b", error
    )
    assert "Traceback" not in done.stderr
    assert snapshot(folder) == before  # model intact, no metrics, plots or temp files
    (run,) = runs_of(f"sqlite:///{folder / 'mlflow.db'}", stage="train")
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == error.removeprefix("polyfit train: error: ")
