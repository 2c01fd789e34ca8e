"""The pipeline where Linux's own interfaces are missing, as on Windows or macOS: no `fcntl`
module, no /proc/meminfo, no os.sysconf("SC_AVPHYS_PAGES"). generate, train and evaluate run
as real `python -m polyfit` processes and write their outputs; `polyfit runs cleanup` still
tells dead processes from live ones. The store's first-use lock falls back to filelock's
portable lock, the memory check is skipped (psutil has no answer) and cleanup asks psutil.

A sitecustomize.py on PYTHONPATH takes the interfaces away before anything is imported, and at
exit writes what the process saw, so each test also proves the fault was really in effect there.
DVC itself cannot run so (dvc_objects imports fcntl on every Linux), hence no `dvc repro` here.
"""

import json
import os
import socket
import subprocess

import pytest
from conftest import (
    OUTPUTS,
    TABLE,
    copy_made_store,
    mlflow_client,
    polyfit,
    runs_of,
    table_params,
    write_params,
    write_table,
)
from fault_tools import store_env

pytestmark = pytest.mark.slow  # real stage processes, one per stage

SITECUSTOMIZE = '''\
"""Take away what Windows and macOS lack; at exit, write what this process saw."""
import atexit
import builtins
import io
import json
import os
import sys

sys.modules["fcntl"] = None  # `import fcntl` raises ImportError, as on Windows
_open = builtins.open


def _open_without_meminfo(file, *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and os.fsdecode(file) == "/proc/meminfo":
        raise FileNotFoundError(2, "No such file or directory", "/proc/meminfo")
    return _open(file, *args, **kwargs)


builtins.open = io.open = _open_without_meminfo
_sysconf = os.sysconf


def _sysconf_without_avphys(name):
    if name in ("SC_AVPHYS_PAGES", os.sysconf_names.get("SC_AVPHYS_PAGES")):
        raise ValueError("unrecognized configuration name")
    return _sysconf(name)


os.sysconf = _sysconf_without_avphys


def _failure(probe):
    try:
        probe()
    except Exception as error:
        return type(error).__name__
    return None


def _report():
    seen = {
        "fcntl": _failure(lambda: __import__("fcntl")),
        "meminfo": _failure(lambda: open("/proc/meminfo").close()),
        "sysconf": _failure(lambda: os.sysconf("SC_AVPHYS_PAGES")),
        "modules": sorted(name for name in sys.modules if name.startswith("polyfit")),
    }
    if "psutil" in sys.modules:
        seen["psutil"] = _failure(sys.modules["psutil"].virtual_memory)
    if "polyfit.memory" in sys.modules:
        seen["available_memory"] = sys.modules["polyfit.memory"].available_memory()
    if "filelock" in sys.modules:
        seen["file_lock"] = sys.modules["filelock"].FileLock.__name__
    with _open(os.environ["PORTABLE_REPORT"], "w") as report:
        json.dump(seen, report)


atexit.register(_report)
'''
STAGES = ("generate", "train", "evaluate")


def portable_env(folder, site, report: str) -> dict:
    return store_env(folder, PYTHONPATH=str(site), PORTABLE_REPORT=str(folder / report))


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """A stage folder on the table where generate, train, evaluate and `runs cleanup` ran
    without fcntl, /proc/meminfo and SC_AVPHYS_PAGES: (folder, {command: its process})."""
    root = tmp_path_factory.mktemp("portable")
    site, folder = root / "site", root / "work"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    folder.mkdir()
    (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    write_params(folder, table_params())
    write_table(folder / TABLE)
    copy_made_store(folder)
    done = {}
    for stage in STAGES:
        done[stage] = polyfit(stage, cwd=folder, env=portable_env(folder, site, f"{stage}.json"))
        assert done[stage].returncode == 0, done[stage].stderr
    orphan = orphan_run(folder)
    env = portable_env(folder, site, "cleanup.json")
    done["cleanup"] = polyfit("runs", "cleanup", cwd=folder, env=env)
    return folder, done, orphan


def orphan_run(folder) -> str:
    """A RUNNING run whose process has exited: what a SIGKILLed stage leaves."""
    exited = subprocess.Popen(["true"])
    exited.wait()
    client = mlflow_client(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("polyfit").experiment_id
    tags = {"host": socket.gethostname(), "pid": str(exited.pid)}
    return client.create_run(experiment, tags=tags, run_name="orphan").info.run_id


def report(folder, command: str) -> dict:
    return json.loads((folder / f"{command}.json").read_text())


def test_the_stages_write_every_output(portable):
    folder, done, _ = portable
    for path in OUTPUTS:
        assert (folder / path).stat().st_size > 0, path
    assert "wrote data/train.pt: 72 rows of u, v and y" in done["generate"].stdout
    assert "Result: " in done["train"].stdout
    assert "held_out.mse " in done["evaluate"].stdout
    for stage in STAGES:
        assert "Traceback" not in done[stage].stderr


def test_each_stage_is_one_finished_run(portable):
    folder, _, _ = portable
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    for stage in STAGES:
        (run,) = runs_of(uri, stage=stage)
        assert run.info.status == "FINISHED", stage
    (train,) = runs_of(uri, stage="train")
    (evaluate,) = runs_of(uri, stage="evaluate")
    assert "eval.held_out.mse" in train.data.metrics  # evaluate found the model it scored
    assert evaluate.data.tags["model_id"] == train.data.tags["model_id"]


@pytest.mark.parametrize("command", [*STAGES, "cleanup"])
def test_the_missing_interfaces_were_missing_in_that_process(portable, command):
    folder, _, _ = portable
    seen = report(folder, command)
    assert seen["fcntl"] == "ModuleNotFoundError"
    assert seen["meminfo"] == "FileNotFoundError"
    assert seen["sysconf"] == "ValueError"
    assert seen["psutil"] == "FileNotFoundError"  # psutil had no answer about memory
    assert seen["file_lock"] == "SoftFileLock"  # the store's lock: filelock's portable one
    assert "polyfit.tracking.store" in seen["modules"]  # which every command here took
    if command in STAGES:  # checked before each stage: skipped, without a crash
        assert "polyfit.memory" in seen["modules"] and seen["available_memory"] is None
    else:
        assert "polyfit.tools.cleanup" in seen["modules"]


def test_cleanup_tells_dead_processes_from_live_ones(portable):
    folder, done, orphan = portable
    assert done["cleanup"].returncode == 0, done["cleanup"].stderr
    assert f"marked KILLED: run {orphan} (orphan)" in done["cleanup"].stdout
    assert "1 run(s) marked KILLED, 0 left RUNNING" in done["cleanup"].stdout
    client = mlflow_client(f"sqlite:///{folder / 'mlflow.db'}")
    assert client.get_run(orphan).info.status == "KILLED"


def test_the_injection_is_real_and_ours_alone():
    """The faults are the sitecustomize's: this process has all three interfaces."""
    import fcntl

    assert fcntl.flock
    with open("/proc/meminfo") as meminfo:
        assert meminfo.readline().startswith("MemTotal:")
    assert os.sysconf("SC_AVPHYS_PAGES") > 0
