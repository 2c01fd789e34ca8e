"""The same bytes on one machine: the stages under every code path that machine can force (MKL's
instruction set, ATen's vector kernels) write identical data, model and metrics. Across CPU
vendors the bytes differ; the gate's tolerances cover that (docs/determinism.md)."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    OUTPUTS,
    clean_env,
    copy_made_store,
    default_params,
    polyfit,
    run,
    write_params,
)

from polyfit import paths

pytestmark = pytest.mark.slow

# train and evaluate in one process through the CLI's own entry point, as `polyfit` runs each:
# the data is made once (no MKL or vector kernel decides it), the rest under each code path.
TRAIN_AND_EVALUATE = "from polyfit.cli import main; main(['train']); main(['evaluate'])"
MKL_SETTINGS = ("MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC")  # the CLI sets these itself
# Stand-ins for other CPUs: each forces kernels this machine would not pick by itself. Not ATen's
# scalar kernels (ATEN_CPU_CAPABILITY=default): they give other numbers even on one machine, so
# no identity is claimed for them (docs/determinism.md).
CODE_PATHS = {
    "default": {},
    "MKL AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "ATen avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATen avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "MKL AVX2, ATen avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}
ATEN_LEVELS = ["avx2", "avx512"]  # ATen's x86 vector kernels, weakest first


def cpuinfo() -> str:
    return Path("/proc/cpuinfo").read_text().replace("\n", " ")


def has_avx512() -> bool:
    return " avx512f " in cpuinfo()


def is_intel() -> bool:
    return "GenuineIntel" in cpuinfo()


def project(folder: Path) -> Path:
    """A stage folder with the tutorial's params and data."""
    folder.mkdir()
    (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    copy_made_store(folder)  # MLflow's tables: not what is compared
    params = default_params()
    params["train"]["checkpoint_every"] = None  # no pipeline here to fingerprint
    write_params(folder, params)
    done = polyfit("generate", cwd=folder, env=store_env(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def store_env(folder: Path, **forced: str) -> dict:
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}", **forced)
    for name in set(MKL_SETTINGS) - forced.keys():  # the CLI must set these itself
        env.pop(name, None)
    return env


def outputs_under(data: Path, folder: Path, **forced: str) -> dict[str, bytes]:
    """train and evaluate on `data`'s tables in a copy of it, with `forced` in the
    environment; every output."""
    shutil.copytree(data, folder)
    command = [sys.executable, "-c", TRAIN_AND_EVALUATE]
    done = run(command, folder, store_env(folder, **forced))
    assert done.returncode == 0, done.stdout + done.stderr
    return {str(path): (folder / path).read_bytes() for path in OUTPUTS}


def forcible_code_paths() -> dict[str, dict]:
    """CODE_PATHS this CPU follows, without those that would repeat the default: MKL ignores
    MKL_ENABLE_INSTRUCTIONS off Intel CPUs, ATen runs only the levels below its own choice (a
    CPU without AVX-512 dies of SIGILL in avx512 kernels; its own choice forces nothing). Where
    nothing is left to force (an AMD CPU with AVX2 only), the default runs twice: identical
    reruns are the claim that remains."""
    own_choice = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", "avx2", ...
    below = ATEN_LEVELS[: ATEN_LEVELS.index(own_choice)] if own_choice in ATEN_LEVELS else []

    def follows(env: dict) -> bool:
        aten_ok = env.get("ATEN_CPU_CAPABILITY") in [None, *below]
        return aten_ok and (is_intel() or "MKL_ENABLE_INSTRUCTIONS" not in env)

    chosen = {name: env for name, env in CODE_PATHS.items() if follows(env)}
    if len(chosen) == 1:
        chosen["default, again"] = {}
    return chosen


def test_every_forced_code_path_writes_the_same_bytes(tmp_path):
    data = project(tmp_path / "data")
    results = {
        name: outputs_under(data, tmp_path / str(i), **forced)
        for i, (name, forced) in enumerate(forcible_code_paths().items())
    }
    reference = results["default"]
    for name, outputs in results.items():
        different = [path for path in OUTPUTS if outputs[str(path)] != reference[str(path)]]
        assert different == [], f"{name}: {different} differ from the default code path"


@pytest.mark.skipif(not has_avx512(), reason="forcing AVX2 changes MKL's kernels on AVX-512 only")
@pytest.mark.skipif(
    not is_intel(),
    reason="MKL follows MKL_ENABLE_INSTRUCTIONS and MKL_CBWR on Intel CPUs only: on AMD CPUs "
    "every setting gives the same bytes, with the reproducible mode or without",
)
def test_without_the_reproducible_mode_the_forced_paths_differ(tmp_path):
    """The control: the forcing reaches MKL, and a value the user exported wins over the CLI's."""
    off = {"MKL_CBWR": "OFF"}
    data = project(tmp_path / "data")
    native = outputs_under(data, tmp_path / "native", **off)
    avx2 = outputs_under(data, tmp_path / "avx2", **off, MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert native[str(paths.MODEL)] != avx2[str(paths.MODEL)]
    assert native[str(paths.TRAIN_METRICS)] != avx2[str(paths.TRAIN_METRICS)]
