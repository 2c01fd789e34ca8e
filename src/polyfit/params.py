"""Read and validate params.yaml into frozen typed objects: the only place settings are parsed.

Every key is required and strictly typed, so a typo, a missing key or a quoted number ("0.1")
stops the pipeline before it writes anything.
"""

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyfit.errors import UsageError

TARGETS = ("sin", "cos", "exp")
OPTIMIZERS = ("SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "LBFGS")

Count = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]


class Frozen(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class DataParams(Frozen):
    target: Literal[TARGETS]
    x_min: float
    x_max: float
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
    divergence_factor: Annotated[float, Field(gt=1)]
    gradient: Literal["autograd", "gram"]
    options: OptimizerOptions

    def optimizer_options(self) -> dict:
        """The selected optimizer's own options."""
        return getattr(self.options, self.optimizer).model_dump()


class EvaluateParams(Frozen):
    grid_points: Annotated[int, Field(ge=2)]


class MlflowParams(Frozen):
    experiment: Annotated[str, Field(min_length=1)]
    registered_model: Annotated[str, Field(min_length=1)]


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
        return self


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
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeated", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
    key = ".".join(str(part) for part in first["loc"])
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
            message += f" (got {value!r})"
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
