"""Refuse params whose sizes cannot fit in this machine's memory, before a stage allocates.

A rough upper bound, not a model of each allocation: every size key costs at most
BYTES_PER_ITEM bytes per item in any stage (float32 and float64 copies of the data, features,
the loss history and its CSV line). The imports' ~1 GB is already paid when a stage could be
refused.
"""

import os

from polyfit.errors import UsageError
from polyfit.params import Params

BYTES_PER_ITEM = 400  # covers evaluate at model.degree 12: ~370 B a sample
# The keys that size each stage's memory, in the order ties are named.
STAGE_SIZES = {
    "generate": ("data.n_samples",),
    "train": ("train.steps", "data.n_samples"),
    "evaluate": ("evaluate.grid_points", "data.n_samples"),
}


def memory_needed(params: Params, stage: str) -> tuple[int, str]:
    """(bytes the stage may need, the key that needs the most)."""
    sizes = {
        "data.n_samples": params.data.n_samples,
        "train.steps": params.train.steps,
        "evaluate.grid_points": params.evaluate.grid_points,
    }
    key = max(STAGE_SIZES[stage], key=sizes.get)
    return sizes[key] * BYTES_PER_ITEM, key


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), in bytes."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # free pages, elsewhere


def check_memory(params: Params, stage: str, source: str, available: int | None = None) -> None:
    """Refuse a stage whose sizes would need more memory than is available."""
    needed, key = memory_needed(params, stage)
    available = available_memory() if available is None else available
    if needed > available:
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
