"""`polyfit <command>`: each command as one process, every failure as one line on stderr.

This is the one place polyfit defers imports: a command's module is imported only when it runs,
so `polyfit --help`, `polyfit check` and `polyfit gate` start without torch or MLflow, and a
stage refuses bad params before it loads them.
"""

import importlib
import os
import sys

from polyfit.arguments import STAGES, parser
from polyfit.errors import PolyfitError

# Read by libraries as they load, so set before a command imports them; setdefault, so a value
# the user exported wins.
PROCESS_DEFAULTS = {
    # MKL's conditional numerical reproducibility: on Intel CPUs one code path whatever the
    # instruction set, given a fixed thread count (train.threads). docs/determinism.md.
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    # cuBLAS's deterministic workspace, for train.device: cuda.
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    # MLflow's telemetry starts a thread at `import mlflow` that fetches its settings over
    # HTTPS; that thread's Python work holds the GIL in the middle of the training loop and
    # slows its steps (BENCHMARKS.md). Export MLFLOW_DISABLE_TELEMETRY=false to keep it.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
MODULES = {  # command -> the module whose main() runs it
    **{stage: f"stages.{stage}" for stage in STAGES},
    "check": "tools.check",
    "status": "tools.status",
    "gate": "tools.gate",
    "calibrate": "tools.calibrate",  # `polyfit gate calibrate`
    "predict": "tools.predict",
    "promote": "tools.promote",
    "runs": "tools.cleanup",
    "serve": "tools.serve",
    "ui": "tools.ui",
    "sweep": "sweep.command",
    "worker": "sweep.worker",
}
EXTRAS = {"dask": "cluster", "distributed": "cluster"}  # optional packages -> pyproject's extra


def main(argv: list[str] | None = None) -> None:
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    args = parser().parse_args(argv)
    command = getattr(args, "gate_command", None) or args.command
    try:
        if command in STAGES:
            _preflight(command)
        module = importlib.import_module(f"polyfit.{MODULES[command]}")
        if command in STAGES:
            module.main()  # a stage reads params.yaml alone, as DVC runs it
        else:
            module.main(args)
    except PolyfitError as error:
        _fail(args.command, str(error), error, error.exit_code)
    except ModuleNotFoundError as error:
        if error.name not in EXTRAS:
            raise
        extra = EXTRAS[error.name]
        install = f"install the {extra} extra (pip install -e '.[{extra}]')"
        _fail(args.command, f"{error.name} is not installed: {install}", error, 1)
    except OSError as error:  # the machine: a full disk, a read-only folder, a vanished file
        _fail(args.command, _describe_os_error(error), error, 1)
    except KeyboardInterrupt as interrupt:
        reason = str(interrupt) or "interrupted by SIGINT"
        print(f"polyfit {args.command}: {reason}", file=sys.stderr)
        sys.exit(getattr(interrupt, "exit_code", 130))  # 128 + SIGINT unless told otherwise


def _preflight(stage: str) -> None:
    """Fail in a fraction of a second, before the stage imports torch and MLflow: bad params,
    data that would not fit in memory, or a tracking server that does not answer."""
    from polyfit import paths
    from polyfit.memory import check_memory
    from polyfit.params import load_params
    from polyfit.tracking.uri import probe_store

    check_memory(load_params(paths.PARAMS), stage, str(paths.PARAMS))
    probe_store()


def _fail(command: str, message: str, error: BaseException, exit_code: int) -> None:
    """One line on stderr, with any note added on the way (a run the store could not end)."""
    notes = "".join(f" ({note})" for note in getattr(error, "__notes__", []))
    print(f"polyfit {command}: error: {message}{notes}", file=sys.stderr)
    sys.exit(exit_code)


def _describe_os_error(error: OSError) -> str:
    """'data/train.pt: No space left on device', without Python's [Errno 28] prefix."""
    reason = error.strerror or str(error) or type(error).__name__
    return f"{error.filename}: {reason}" if error.filename else reason
