"""Read and validate params.yaml into frozen typed objects: the only place settings are parsed.

Every key is required and strictly typed, so a typo, a missing key or a quoted number ("0.1")
stops the pipeline before it writes anything.
"""

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyfit.errors import UsageError

TARGETS = ("sin", "cos", "exp")
OPTIMIZERS = ("SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "LBFGS")

FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max
INT64_LIMIT = 2**63  # counts become torch sizes and indices: int64


def _float32(value: float) -> float:
    """torch turns these into float32 (linspace ends, optimizer hyperparameters): it raises
    "cannot be converted to type float without overflow" beyond float32's range."""
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"{value!r} is beyond float32's range (±3.4e38), where torch uses it")
    return value


Float32 = Annotated[float, AfterValidator(_float32)]
Count = Annotated[int, Field(ge=1, lt=INT64_LIMIT)]
Seed = Annotated[int, Field(ge=0, lt=INT64_LIMIT)]
Positive = Annotated[Float32, Field(gt=0)]
NonNegative = Annotated[Float32, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]


class Frozen(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class DataParams(Frozen):
    target: Literal[TARGETS]
    x_min: Float32
    x_max: Float32
    n_samples: Count
    noise_std: NonNegative
    seed: Seed


class ModelParams(Frozen):
    degree: Annotated[int, Field(ge=1, le=12)]


class SGDOptions(Frozen):
    momentum: NonNegative
    dampening: NonNegative
    nesterov: bool
    weight_decay: NonNegative

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        return self


class RMSpropOptions(Frozen):
    alpha: Annotated[float, Field(gt=0, le=1)]
    eps: Positive
    momentum: NonNegative
    centered: bool
    weight_decay: NonNegative


class AdamOptions(Frozen):
    beta1: Beta
    beta2: Beta
    eps: Positive
    weight_decay: NonNegative
    amsgrad: bool


class AdagradOptions(Frozen):
    lr_decay: NonNegative
    eps: Positive
    weight_decay: NonNegative
    initial_accumulator_value: NonNegative


class LBFGSOptions(Frozen):
    max_iter: Count
    history_size: Count
    tolerance_grad: Positive
    tolerance_change: Positive
    line_search_fn: Literal["strong_wolfe", "none"]


class OptimizerOptions(Frozen):
    SGD: SGDOptions
    RMSprop: RMSpropOptions
    Adam: AdamOptions
    AdamW: AdamOptions
    Adagrad: AdagradOptions
    LBFGS: LBFGSOptions


class TrainParams(Frozen):
    optimizer: Literal[OPTIMIZERS]
    lr: Positive
    steps: Count
    seed: Seed
    log_every: Count
    threads: Annotated[int, Field(ge=1, le=256)]
    divergence_factor: Annotated[float, Field(gt=1)]  # compared in Python float64, not torch
    gradient: Literal["autograd", "gram"]
    options: OptimizerOptions

    def optimizer_options(self) -> dict:
        """The selected optimizer's own options."""
        return getattr(self.options, self.optimizer).model_dump()


class EvaluateParams(Frozen):
    grid_points: Annotated[int, Field(ge=2, lt=INT64_LIMIT)]


def _not_blank(name: str) -> str:
    if not name.strip():
        raise ValueError("must not be blank")
    return name


def _model_name(name: str) -> str:
    """MLflow uses model names as paths: no '/' or ':', nothing that normalises to another."""
    if "/" in name or ":" in name or name == "." or name.startswith(".."):
        raise ValueError(f"{name!r} must not contain '/' or ':' or start with '..'")
    return name


class MlflowParams(Frozen):
    experiment: Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_not_blank)]
    registered_model: Annotated[
        str, Field(min_length=1), AfterValidator(_not_blank), AfterValidator(_model_name)
    ]


class Params(Frozen):
    data: DataParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    mlflow: MlflowParams

    @model_validator(mode="after")
    def _consistent(self):
        if self.data.x_min >= self.data.x_max:
            raise ValueError(
                f"data.x_min ({self.data.x_min}) must be below data.x_max ({self.data.x_max})"
            )
        if self.data.n_samples <= self.model.degree:
            raise ValueError(
                f"data.n_samples ({self.data.n_samples}) must exceed model.degree "
                f"({self.model.degree}) for the fit to be determined"
            )
        _check_float32_data(self.data, self.model.degree)
        return self


def _check_float32_data(data: DataParams, degree: int) -> None:
    """The dataset and the model's features are float32: refuse ranges that overflow them."""
    key = "data.x_max" if abs(data.x_max) >= abs(data.x_min) else "data.x_min"
    reach = max(abs(data.x_min), abs(data.x_max))
    if reach > 1 and degree * math.log(reach) >= math.log(FLOAT32_MAX):
        raise ValueError(
            f"{key} ({reach:g}): x^{degree} (model.degree) overflows float32 beyond "
            f"|x| = {FLOAT32_MAX ** (1 / degree):.4g}"
        )
    if data.target == "exp" and data.x_max >= math.log(FLOAT32_MAX):
        raise ValueError(f"data.x_max ({data.x_max:g}): exp(x) overflows float32 beyond 88.72")
    # A standard normal draw stays within 10 sigma for any dataset that fits in memory.
    largest_y = math.exp(data.x_max) if data.target == "exp" else 1.0
    if data.noise_std * 10 + largest_y > FLOAT32_MAX:
        raise ValueError(f"data.noise_std ({data.noise_std:g}): y + noise overflows float32")


# Memory: bytes a stage allocates, as per-item costs read off the stage code (float32 4 B,
# float64 8 B), counting the temporaries of a step as if alive at once: an upper estimate of
# the peak, checked before anything is allocated. The ~1 GB of the torch and MLflow imports is
# not counted: it is already paid when a stage could be refused.
GENERATE_PER_SAMPLE = (
    8  # x, y (float32)
    + 12  # randn, noise_std * randn, y + noise
    + 16  # torch.save into a buffer, and the buffer's copy (getvalue)
    + 24  # those bytes pickled through the pipe: the child's copy, the parent's read and result
)
LOADED_PER_SAMPLE = 16  # the dataset file's bytes, then its x, y tensors
TRAIN_PER_STEP = (
    64  # the loss history, a Python list of floats, in the torch worker and in the stage process
    + 16  # that list pickled through the pipe
    + 80  # plots/loss.csv as text: one line per step, then joined and encoded
    + 88  # matplotlib's arrays for the loss picture (x, y, the path and its transform)
)
EVALUATE_PER_SAMPLE = (
    LOADED_PER_SAMPLE
    + 32  # float64 x and y for lstsq, and lstsq's copy of y
    + 36  # the model's prediction and errors(): two float64 copies, residual, square/abs
    + 32  # polynomial(optimum, x) in float64: x, result and a Horner temporary, errors' residual
)
EVALUATE_PER_GRID_POINT = (
    4  # grid_x
    + 16  # grid_x.double() and the target on it
    + 36  # the model's prediction and errors()
    + 32  # polynomial(optimum, grid_x)
)


def memory_needed(params: Params, stage: str) -> tuple[int, str]:
    """(estimated peak bytes of the stage, the params key that contributes most)."""
    n, degree = params.data.n_samples, params.model.degree
    if stage == "generate":
        return n * GENERATE_PER_SAMPLE, "data.n_samples"
    if stage == "train":
        per_sample = LOADED_PER_SAMPLE
        if params.train.gradient == "autograd":  # gram reads the data in fixed-size chunks
            per_sample += 4 * degree + 12  # features (N, degree), output, residual, gradient
        parts = {
            "data.n_samples": n * per_sample,
            "train.steps": params.train.steps * TRAIN_PER_STEP,
        }
    else:
        per_sample = EVALUATE_PER_SAMPLE + 16 * (degree + 1) + 4 * degree  # design, copy, features
        per_point = EVALUATE_PER_GRID_POINT + 4 * degree  # the features of the grid
        grid = params.evaluate.grid_points * per_point
        parts = {"data.n_samples": n * per_sample, "evaluate.grid_points": grid}
    return sum(parts.values()), max(parts, key=parts.get)


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
    """Refuse a stage whose estimated allocation exceeds the memory available."""
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


def load_params(path: Path) -> Params:
    """Parse and validate the params file; raise UsageError with one line on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text: {error.reason} at byte {error.start}") from None
    return validate_params(parse_yaml(text, str(path)), source=str(path))


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float, as YAML 1.2 and DVC do, and refuses repeated keys.

    PyYAML follows YAML 1.1, where `1e-3` is a string; DVC reads params.yaml as YAML 1.2 and
    writes floats that way (`dvc exp run -S train.lr=1e-6` stores `lr: 1e-06`), so we must agree.
    A key given twice would otherwise silently take the last value.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not _hashable(key):
                continue  # SafeLoader's own check reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeated", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _hashable(key: object) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> object:
    """Parse YAML (1.2 floats) with a one-line UsageError naming the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader: builds no objects
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UsageError(f"{source}: malformed YAML{line}: {problem}") from None


def validate_params(raw: object, source: str = "params") -> Params:
    """Validate an already-parsed mapping (as read from YAML)."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping of blocks, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise UsageError(f"{source}: {describe(error)}") from None


def describe(error: ValidationError) -> str:
    """One line naming the first bad key and what is wrong with it."""
    first = error.errors()[0]
    key = ".".join(str(part) if str(part).isprintable() else repr(part) for part in first["loc"])
    kind, value = first["type"], first.get("input")
    if kind == "missing":
        message = "missing key"
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif isinstance(value, str) and _reads_as_number(value):
        message = f"got the string {value!r}; write the number without quotes: {float(value)!r}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        if kind not in ("value_error",):
            shown = repr(value)
            message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    if more := len(error.errors()) - 1:
        message += f" (and {more} more problem{'s' * (more > 1)})"
    return f"{key}: {message}" if key else message


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: the key style of DVC and of MLflow params."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
