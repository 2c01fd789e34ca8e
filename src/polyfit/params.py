"""Read and validate params.yaml into frozen typed objects: the only place settings are parsed.

Every key is required and strictly typed, so a typo, a missing key or a quoted number ("0.1")
stops the pipeline before it writes anything.
"""

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyfit.errors import UsageError
from polyfit.yaml12 import describe, parse_yaml

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


# params.data and params.model: the blocks you rewrite for your own data and model
# (docs/adapting.md). Their keys are make_dataset's and build_model's arguments (core/).
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
        # Rules joining the default blocks' keys: data or model blocks of your own skip the
        # rules whose keys they lack.
        data, model = self.data, self.model
        if _has(data, "x_min", "x_max") and data.x_min >= data.x_max:
            raise ValueError(f"data.x_min ({data.x_min}) must be below data.x_max ({data.x_max})")
        if _has(model, "degree") and data.n_samples <= model.degree:
            raise ValueError(
                f"data.n_samples ({data.n_samples}) must exceed model.degree "
                f"({model.degree}) for the fit to be determined"
            )
        if _has(data, "target", "x_min", "x_max", "noise_std"):
            _check_float32_data(data, getattr(model, "degree", None))
        return self


def _has(block: BaseModel, *keys: str) -> bool:
    return set(keys) <= set(type(block).model_fields)


def _check_float32_data(data: DataParams, degree: int | None) -> None:
    """The sampled target and a polynomial's features (given its degree) are float32: refuse
    ranges that overflow them."""
    key = "data.x_max" if abs(data.x_max) >= abs(data.x_min) else "data.x_min"
    reach = max(abs(data.x_min), abs(data.x_max))
    if degree is not None and reach > 1 and degree * math.log(reach) >= math.log(FLOAT32_MAX):
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


def load_params(path: Path) -> Params:
    """Parse and validate the params file; raise UsageError with one line on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text: {error.reason} at byte {error.start}") from None
    return validate_params(parse_yaml(text, str(path)), source=str(path))


def validate_params(raw: object, source: str = "params") -> Params:
    """Validate an already-parsed mapping (as read from YAML)."""
    if not isinstance(raw, dict):
        blocks = ", ".join(Params.model_fields)
        found = {type(None): "an empty file", list: "a list", str: "plain text"}.get(
            type(raw), "a single value"
        )
        raise UsageError(f"{source}: expected the blocks {blocks} as a mapping, found {found}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise UsageError(f"{source}: {describe(error)}") from None


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
