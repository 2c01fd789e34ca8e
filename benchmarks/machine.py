"""What the benchmark ran on: CPU, cores, RAM, OS, versions, commit and load."""

import os
import platform
from importlib.metadata import version
from pathlib import Path

from timing import REPO, run

from polyfit.tracking.provenance import cpu_description


def _ram_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _os_name() -> str:
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    return platform.platform()


def _commit() -> str:
    commit = run(["git", "rev-parse", "--short", "HEAD"], REPO).stdout.strip()
    changed = run(["git", "status", "--porcelain", "--untracked-files=no"], REPO).stdout
    return commit + (" + uncommitted changes to tracked files" if changed.strip() else "")


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def describe() -> dict[str, str]:
    """Machine facts as label -> value, in the order the report shows them."""
    cpu = cpu_description()
    return {
        "CPU vendor": cpu["vendor"],
        "CPU model": cpu["model"],
        "cores": str(os.cpu_count()),
        "RAM": f"{_ram_gib():.1f} GiB",
        "OS": _os_name(),
        "Python": platform.python_version(),
        "torch": version("torch"),
        "mlflow": version("mlflow"),
        "dvc": version("dvc"),
        "polyfit commit": _commit(),
    }
