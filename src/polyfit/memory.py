"""Refuse params whose sizes cannot fit in this machine's memory, before a stage allocates.

A rough upper bound, not a model of each allocation: every row of data, held-out point or
training step costs at most BYTES_PER_ITEM bytes in any stage (float32 and float64 copies of the
data, the powers, the loss history and its CSV line), and a CSV file at most CSV_EXPANSION times
its size while it is read. The imports' memory is already paid when a stage could be refused.
"""

import os

import psutil

from polyfit.errors import UsageError
from polyfit.params import Params

BYTES_PER_ITEM = 400  # covers evaluate at model.degree 12: ~370 B a row
CSV_EXPANSION = 40  # Python floats and lists while the csv module reads the file


def memory_needed(params: Params, stage: str) -> tuple[int, str]:
    """(bytes the stage may need, the key that needs the most)."""
    data = params.data
    sizes = {}
    if data.source == "function":
        sizes["data.function.n_samples"] = data.function.n_samples * BYTES_PER_ITEM
        sizes["data.function.held_out_points"] = data.function.held_out_points * BYTES_PER_ITEM
    elif stage == "generate":
        sizes["data.csv.path"] = _file_size(data.csv.path) * CSV_EXPANSION
    if stage == "train":
        sizes["train.steps"] = params.train.steps * BYTES_PER_ITEM
    if not sizes:  # the tables' rows, counted when the CSV file was read
        return 0, "data"
    key = max(sizes, key=sizes.get)
    return sizes[key], key


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # the stage says what is wrong with the file


def available_memory() -> int | None:
    """What can be allocated without swapping, in bytes; None where the system does not say."""
    try:
        return psutil.virtual_memory().available
    except Exception:  # psutil reads /proc/meminfo on Linux, other calls elsewhere
        return None


def check_memory(params: Params, stage: str, source: str, available: int | None = None) -> None:
    """Refuse a stage whose sizes would need more memory than is available."""
    needed, key = memory_needed(params, stage)
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise UsageError(
            f"{source}: {key}: {stage} would need about {needed} bytes ({_size(needed)}) of "
            f"memory, {available} bytes ({_size(available)}) available"
        )


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")
