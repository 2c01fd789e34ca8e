"""Where a run came from: the git commit and whether the tracked tree differed from it."""

import subprocess

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
