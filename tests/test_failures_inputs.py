"""Corrupt or foreign input files, and training that diverges.

Inputs: every fault is a one-line UsageError naming the file (exit 2), and a pickle that
carries code never runs it. Divergence: a non-finite loss, or one past train.divergence_factor
x the first, stops training (exit 1), ends the MLflow run FAILED and writes no model.
"""

import io
import math
import os
import pickle
import random
import warnings

import pytest
import torch
from conftest import polyfit, runs_of, small_params
from fault_tools import snapshot, stage_folder, store_env

from polyfit import files, paths
from polyfit.core.data import make_dataset
from polyfit.core.fit import build_optimizer, fit, make_loss
from polyfit.core.model import Polynomial
from polyfit.errors import DivergedError, UsageError

N = 8  # samples in the hand-made dataset files
REFUSED = "not a tensor file polyfit can load safely"
DAMAGED_ZIP = f"{REFUSED}: a zip archive but not a complete torch.save one (damaged or truncated)"
UNKNOWN = f"{REFUSED}: neither a torch.save zip archive nor a tensor pickle"
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


def dataset(n: int = N, **overrides) -> bytes:
    return saved({"x": torch.zeros(n), "y": torch.zeros(n)} | overrides)


def code_carriers(marker) -> dict[str, bytes]:
    """The same code-carrying payload in each format a .pt file may arrive in."""
    return {
        "zip": saved({"x": RunsCode(marker), "y": torch.zeros(N)}),
        "legacy": saved({"x": RunsCode(marker), "y": torch.zeros(N)}, legacy=True),
        "plain pickle": pickle.dumps(RunsCode(marker)),
    }


DATA_CASES = {
    # The cause in words, not torch's opcodes ("Unsupported operand 120") or a bare KeyError.
    "truncated": (lambda: dataset()[: len(dataset()) // 2], DAMAGED_ZIP),
    "garbage": (lambda: random.Random(0).randbytes(600), UNKNOWN),
    "empty": (lambda: b"", f"{REFUSED}: the file is empty"),
    "text": (lambda: b"x,y\n0.0,0.0\n", f"{REFUSED}: it is a text file starting 'x,y', not"),
    "one word": (lambda: b"error\n", f"{REFUSED}: it is a text file starting 'error', not"),
    "plain pickle": (
        lambda: pickle.dumps({"x": [0.0] * N, "y": [0.0] * N}),  # protocol 4: torch would warn
        f"{REFUSED}: a Python pickle, not torch.save output: save tensors with torch.save",
    ),
    "old format, protocol 4": (
        lambda: saved({"x": torch.zeros(N), "y": torch.zeros(N)}, legacy=True, protocol=4),
        f"{REFUSED}: torch.save's old pickle-only format, damaged or in pickle protocol 4",
    ),
    "too many samples": (lambda: dataset(N + 1), "'x' has shape (9,), expected (8,)"),
    "2-d": (lambda: dataset(x=torch.zeros(N, 1)), "'x' has shape (8, 1), expected (8,)"),
    "float64": (lambda: dataset(y=torch.zeros(N).double()), "'y' must be a float32 tensor"),
    "int64": (lambda: dataset(x=torch.zeros(N, dtype=torch.int64)), "found torch.int64"),
    "nan": (lambda: dataset(y=torch.full((N,), torch.nan)), "'y' holds NaN or infinite values"),
    "inf": (lambda: dataset(x=torch.full((N,), torch.inf)), "'x' holds NaN or infinite values"),
    "sparse": (lambda: dataset(x=torch.zeros(N).to_sparse()), "'x' must be a dense CPU tensor"),
    "a list": (lambda: dataset(x=[0.0] * N), "'x' must be a float32 tensor, found list"),
    "missing y": (lambda: saved({"x": torch.zeros(N)}), "expected tensors ['x', 'y'], found ['x']"),
    "extra key": (lambda: dataset(z=torch.zeros(N)), "found ['x', 'y', 'z']"),
    "int key": (lambda: dataset(**{"1": torch.zeros(N)}), "found ['1', 'x', 'y']"),
    "not a dict": (lambda: saved([torch.zeros(N)] * 2), "found list"),
    "bare tensor": (lambda: saved(torch.zeros(2, N)), "found Tensor"),
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


@pytest.mark.parametrize(("make", "expected"), DATA_CASES.values(), ids=DATA_CASES.keys())
def test_bad_dataset_is_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "dataset.pt"
    path.write_bytes(make())
    assert expected in error_for(lambda p: files.load_dataset(p, N), path)


def test_missing_or_unreadable_dataset_names_the_file(tmp_path):
    load = lambda p: files.load_dataset(p, N)  # noqa: E731
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
    path = tmp_path / "dataset.pt"
    path.write_bytes(code_carriers(marker)[label])
    assert REFUSED in error_for(lambda p: files.load_dataset(p, N), path)
    path.write_bytes(code_carriers(marker)[label])
    assert REFUSED in error_for(lambda p: files.load_weights(p, Polynomial(3)), path)
    assert not marker.exists()


def state_dict(degree: int = 3) -> dict:
    return Polynomial(degree).state_dict()


MODEL_CASES = {
    "other degree": (lambda: saved(state_dict(4)), "size mismatch for linear.weight"),
    "no bias": (
        lambda: saved({"linear.weight": torch.zeros(1, 3)}),
        'Missing key(s) in state_dict: "linear.bias"',
    ),
    "float64": (lambda: saved({k: v.double() for k, v in state_dict().items()}), "float32"),
    "whole module": (lambda: saved(Polynomial(3)), f"{REFUSED}: it holds Python objects, not"),
    "truncated": (lambda: saved(state_dict())[:100], DAMAGED_ZIP),
    "a dataset": (lambda: dataset(), 'Unexpected key(s) in state_dict: "x", "y"'),
}


@pytest.mark.parametrize(("make", "expected"), MODEL_CASES.values(), ids=MODEL_CASES.keys())
def test_bad_model_is_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "model.pt"
    path.write_bytes(make())
    assert expected in error_for(lambda p: files.load_weights(p, Polynomial(3)), path)


@pytest.fixture
def folder(tmp_path):
    """A stage folder (small params) whose data/dataset.pt and models/model.pt are valid."""
    folder = stage_folder(tmp_path / "work", small_params(), store=False)
    files.write_atomic(folder / paths.MODEL, files.tensors_to_bytes(state_dict()))
    return folder


CLI_CASES = {
    "train, code in data": ("train", paths.DATASET, "zip", "unsupported GLOBAL posix.system"),
    "train, truncated data": ("train", paths.DATASET, "truncated", DAMAGED_ZIP),
    "evaluate, code in model": ("evaluate", paths.MODEL, "legacy", "unsupported GLOBAL"),
    "evaluate, pickled model": ("evaluate", paths.MODEL, "plain pickle", "a Python pickle, not"),
    "evaluate, other degree": (
        "evaluate",
        paths.MODEL,
        "other degree",
        "size mismatch for linear.weight: copying a param with shape torch.Size([1, 4])",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "name", "fault", "expected"), CLI_CASES.values(), ids=CLI_CASES)
def test_cli_bad_input_exits_2_naming_the_file(folder, stage, name, fault, expected):
    marker = folder.parent / "ran"
    if fault in ("zip", "legacy", "plain pickle"):
        content = code_carriers(marker)[fault]
    else:
        content = {**DATA_CASES, **MODEL_CASES}[fault][0]()
    (folder / name).write_bytes(content)
    before = snapshot(folder)
    done = polyfit(stage, cwd=folder, env=store_env(folder))
    assert done.returncode == 2
    assert done.stderr.startswith(f"polyfit {stage}: error: {name}: ")
    assert expected in done.stderr and done.stderr.count("\n") == 1
    assert not marker.exists()
    assert snapshot(folder) == before
    assert not (folder / "mlflow.db").exists()  # refused before any MLflow run


def fitted(lr: float, steps: int, log_every: int, factor: float) -> tuple[list[int], list]:
    """Fit a cubic to 200 points of sin with plain SGD; return the steps it reported, and
    the losses."""
    x, y = make_dataset("sin", -3.0, 3.0, 200, 0.0, 0)
    torch.manual_seed(0)
    model = Polynomial(3)
    optimizer = build_optimizer("SGD", model.parameters(), lr, SGD_PLAIN)
    reported = []
    report = lambda step, loss: reported.append(step)  # noqa: E731
    objective = make_loss("autograd", model, x, y)
    return reported, fit(objective, optimizer, steps, log_every, factor, report)


def test_non_finite_loss_stops_training():
    expected = r"^loss became non-finite at step \d+ \(train\.lr too large\?\)$"
    with pytest.raises(DivergedError, match=expected):
        fitted(lr=1.0, steps=200, log_every=50, factor=math.inf)  # no growth check first


def test_loss_growing_past_the_factor_stops_training():
    fitted(lr=1e-4, steps=10, log_every=10, factor=1e20)  # grows, but within the factor
    with pytest.raises(DivergedError, match=r"over 1000 x the first loss .*divergence_factor"):
        fitted(lr=1e-4, steps=10, log_every=10, factor=1e3)


def test_divergence_is_checked_between_reports():
    with pytest.raises(DivergedError):
        fitted(lr=1.0, steps=30, log_every=1000, factor=1e3)


def test_divergence_stops_at_the_first_step_past_the_factor():
    _, losses = fitted(lr=1e-4, steps=10, log_every=10, factor=math.inf)  # unchecked
    first_past = next(step for step, loss in enumerate(losses) if loss > 1e3 * losses[0])
    assert 0 < first_past < 9  # the run goes on growing after it
    with pytest.raises(DivergedError, match=rf"^loss grew to \S+ at step {first_past}, "):
        fitted(lr=1e-4, steps=10, log_every=10, factor=1e3)


def test_the_loss_is_reported_every_log_every_steps_and_at_the_last():
    reported, losses = fitted(lr=1e-6, steps=10, log_every=4, factor=1e3)
    assert reported == [3, 7, 9]
    assert len(losses) == 10


@pytest.mark.slow
def test_cli_divergence_fails_the_run_and_keeps_the_earlier_model(tmp_path):
    params = small_params(optimizer="SGD", lr=10.0)  # SGD with momentum 0.9: explodes at once
    folder = stage_folder(tmp_path / "work", params)
    files.write_atomic(folder / paths.MODEL, files.tensors_to_bytes(state_dict()))
    before = snapshot(folder)
    done = polyfit("train", cwd=folder, env=store_env(folder))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr  # the store exists: nothing but the cause
    error = done.stderr.rstrip("\n")
    assert error.startswith("polyfit train: error: loss grew to ")  # checked every step:
    assert "at step 1, over 1000 x the first loss" in error  # caught before it is non-finite
    assert "Traceback" not in done.stderr
    assert snapshot(folder) == before  # model intact, no metrics, plots or temp files
    (run,) = runs_of(f"sqlite:///{folder / 'mlflow.db'}", stage="train")
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == error.removeprefix("polyfit train: error: ")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("value", "shown"),
    [("nan", "nan"), ("inf", "inf"), ("-3.5e38", "-3.5e+38"), ("1e39", "1e+39")],
)
def test_cli_predict_refuses_points_float32_cannot_hold(tmp_path, value, shown):
    """Before loading any model: a nan prediction would look like an answer."""
    for model in ([], ["--model", "models:/polyfit-cubic@champion"]):
        # --x=VALUE: argparse would read a separate "-3.5e38" as an option
        done = polyfit("predict", f"--x={value}", *model, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, "")
        cause = f"--x {shown} is not a finite float32 number (|x| <= 3.4e38)"
        assert done.stderr == f"polyfit predict: error: {cause}\n"
