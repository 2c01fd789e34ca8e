"""Where a run came from: the git commit, whether the tracked tree differed from it, and the
machine that computed it."""

import re
import subprocess

import torch

from polyfit.cpu import cpu_description

# Written by the pipeline itself while it runs, so they do not make a checkout "dirty".
PIPELINE_OUTPUTS = ("dvc.lock", "metrics")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> tuple[str, str]:
    """(commit sha or 'unknown', 'true'/'false'/'unknown' for uncommitted changes)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return "unknown", "unknown"
    excluded = [f":(exclude){path}" for path in PIPELINE_OUTPUTS]
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    dirty = "unknown" if changes is None else str(bool(changes)).lower()
    return commit, dirty


def machine() -> dict[str, str]:
    """Where a result was computed: the last float32 bits, and so RMSprop's endpoint, depend on
    the CPU vendor and the kernels torch dispatched to (docs/determinism.md)."""
    cpu = cpu_description()
    mkl = re.search(r"Math Kernel Library Version ([^ ]+)", torch.__config__.show())
    return {
        "cpu.model": cpu["model"],
        "cpu.vendor": cpu["vendor"],
        "cpu.capability": torch.backends.cpu.get_cpu_capability(),  # ATen's kernels: AVX2, ...
        "torch.version": torch.__version__,
        "mkl.version": mkl.group(1) if mkl else "none",
        "torch.threads": str(torch.get_num_threads()),
    }
