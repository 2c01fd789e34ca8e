"""Where the pipeline's files live, relative to the directory a stage runs in, and where its
commands are found.

dvc.yaml names the same files; tests/test_dvc_yaml.py keeps the two in step.
"""

import os
import sys
from pathlib import Path

PARAMS = Path("params.yaml")
TRAIN_DATA = Path("data/train.pt")
HELD_OUT_DATA = Path("data/held_out.pt")
MODEL = Path("models/model.pt")
TRAIN_METRICS = Path("metrics/train.json")
EVAL_METRICS = Path("metrics/eval.json")
LOSS_CURVE = Path("plots/loss.csv")
FIT_CURVE = Path("plots/fit.csv")
GATE_RULES = Path("gate.yaml")
PIPELINE = Path("dvc.yaml")
CHECKPOINTS = Path("checkpoints")  # under the project root: git- and DVC-ignored


def project_root() -> Path:
    """The real repository root: DVC_ROOT when DVC runs us (also in experiment copies)."""
    if root := os.environ.get("DVC_ROOT"):
        return Path(root).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return here


def venv_first(env: dict[str, str]) -> dict[str, str]:
    """`env` with this interpreter's bin folder first on PATH, so the `dvc`, `python -m polyfit`
    and `uvicorn` that child processes start are this venv's, whether or not it is activated."""
    path = env.get("PATH", os.defpath)
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{path}"}
