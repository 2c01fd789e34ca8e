"""Reading and writing the pipeline's files: atomic writes, checked tensor loads, digests."""

import contextlib
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from polyfit.core.data import Table
from polyfit.errors import UsageError


def write_atomic(path: Path, content: bytes) -> None:
    """Write via a temp file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as error:  # name the output, not the temp file (a write or fsync names none)
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        with contextlib.suppress(OSError):  # a read-only folder refuses even this
            temp.unlink(missing_ok=True)


def write_json(path: Path, payload: dict) -> None:
    """Stable JSON (sorted keys, full float precision) so identical results give identical bytes."""
    write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_csv(path: Path, columns: dict[str, list]) -> None:
    """Columns of equal length as CSV with a header row."""
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    lines = [",".join(names)] + [",".join(repr(value) for value in row) for row in rows]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def to_bytes(content: dict) -> bytes:
    """torch.save into memory: saving to a path would embed the file name in the archive."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class Digests(NamedTuple):
    """A file's content hashes: sha256 for our run tags, md5 as dvc.lock records the file."""

    sha256: str
    md5: str


def digests(content: bytes) -> Digests:
    return Digests(sha256(content), hashlib.md5(content).hexdigest())


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None


def load_saved(path: Path, content: bytes) -> object:
    """What torch.save wrote, refusing pickled code (weights_only=True): tensors, and dicts,
    lists, strings and numbers of them; every fault names the file."""
    try:
        with warnings.catch_warnings():
            # torch's note on any pickle protocol but 2 is not one line; a failure's reason says it
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(io.BytesIO(content), weights_only=True, map_location="cpu")
    except Exception as error:  # damaged bytes surface as any of a dozen exception types
        reason = _load_failure(error, content)
        raise UsageError(f"{path}: not a tensor file polyfit can load safely: {reason}") from None


def load_tensors(path: Path, content: bytes) -> dict[str, torch.Tensor]:
    """A dict of finite, dense, float32 CPU tensors (a state_dict), checked one by one."""
    tensors = load_saved(path, content)
    if not isinstance(tensors, dict):
        raise UsageError(f"{path}: expected a dict of tensors, found {type(tensors).__name__}")
    for name, tensor in tensors.items():
        check_tensor(path, str(name), tensor)
    return tensors


def check_tensor(path: Path, name: str, tensor: object) -> None:
    """Refuse anything but a finite, dense, float32 CPU tensor, naming the file and the entry."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
        kind = getattr(tensor, "dtype", type(tensor).__name__)
        raise UsageError(f"{path}: '{name}' must be a float32 tensor, found {kind}")
    if tensor.layout != torch.strided or tensor.device.type != "cpu":
        where = f"{tensor.layout} on {tensor.device}"
        raise UsageError(f"{path}: '{name}' must be a dense CPU tensor, found {where}")
    if not torch.isfinite(tensor).all():
        raise UsageError(f"{path}: '{name}' holds NaN or infinite values")


# How torch.save's old pickle-only format begins, after the PROTO opcode: its magic number.
LEGACY_MAGIC = bytes.fromhex("8a0a6cfc9c46f9206aa85019")


def _load_failure(error: Exception, content: bytes) -> str:
    """What the bytes are, in words: torch's own reasons name pickle opcodes and internal
    errors (`Unsupported operand 120`, a bare KeyError `101`, `EOFError`)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    blocked = [line for line in lines if "unsupported global" in line.lower()]
    if blocked:  # a pickled object, maybe code (never run): torch names what it refused
        return "it holds Python objects, not just tensors: " + blocked[0].split(". ")[0]
    if not content:
        return "the file is empty"
    if content.startswith(b"PK"):
        return "a zip archive but not a complete torch.save one (damaged or truncated)"
    if content.startswith(b"\x80"):  # a pickle: its PROTO opcode, then the protocol
        if LEGACY_MAGIC in content[:32]:
            return (
                f"torch.save's old pickle-only format, damaged or in pickle protocol {content[1]} "
                "(which the safe loader cannot read): save it with torch.save's defaults"
            )
        return "a Python pickle, not torch.save output: save tensors with torch.save"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in content[:512]):
        first_line = content.split(b"\n", 1)[0][:40].decode()
        return f"it is a text file starting {first_line!r}, not torch.save output"
    return "neither a torch.save zip archive nor a tensor pickle (damaged, or another format)"


def table_bytes(table: Table) -> bytes:
    """A table as the pipeline stores it: X, y and the feature names in one torch.save file."""
    return to_bytes({"X": table.X, "y": table.y, "features": list(table.features)})


def load_table(path: Path) -> tuple[Table, Digests]:
    """A table file and its digests: X (N, F) and y (N,) float32, and F feature names."""
    content = read_bytes(path)
    saved = load_saved(path, content)
    if not isinstance(saved, dict) or set(saved) != {"X", "y", "features"}:
        found = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
        raise UsageError(f"{path}: expected a table (X, y, features), found {found}")
    X, y, features = saved["X"], saved["y"], saved["features"]
    check_tensor(path, "X", X)
    check_tensor(path, "y", y)
    rows = len(y) if y.dim() == 1 else -1
    if X.dim() != 2 or rows < 1 or len(X) != rows:
        shapes = f"X {tuple(X.shape)}, y {tuple(y.shape)}"
        raise UsageError(f"{path}: expected X (N, F) and y (N,) with N >= 1, found {shapes}")
    names_fit = isinstance(features, list) and all(isinstance(name, str) for name in features)
    if not names_fit or len(features) != X.shape[1]:
        raise UsageError(f"{path}: 'features' must name the {X.shape[1]} column(s) of X")
    return Table(X, y, tuple(features)), digests(content)


def load_weights(path: Path, model: torch.nn.Module) -> str:
    """Load the state_dict file into `model` (its keys and shapes must match); its sha256."""
    content = read_bytes(path)
    try:
        model.load_state_dict(load_tensors(path, content))
    except RuntimeError as error:  # missing, unexpected or misshapen weights
        reason = " ".join(str(error).split())
        raise UsageError(
            f"{path}: does not fit the model params.model describes: {reason}"
        ) from None
    return sha256(content)
