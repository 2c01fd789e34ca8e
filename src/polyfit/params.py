"""Read and validate params.yaml into frozen typed objects: the only place settings are parsed.

Every key is required and strictly typed, so a typo, a missing key or a quoted number ("0.1")
stops the pipeline before it writes anything. The one exception is data's source blocks: only
the block `data.source` names must be there.
"""

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from polyfit.errors import UsageError
from polyfit.schema import (
    FLOAT32_MAX,
    INT64_LIMIT,
    Count,
    Float32,
    Frozen,
    Name,
    NonNegative,
    OptimizerOptions,
    Positive,
    Seed,
)
from polyfit.yaml12 import describe, parse_yaml

TARGETS = ("sin", "cos", "exp")
OPTIMIZERS = ("SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "LBFGS")


# params.data: where the table of features and target comes from (core/data.py).
class FunctionData(Frozen):
    """The tutorial's data: y = target(x) at evenly spaced x, held out: a dense grid of it."""

    target: Literal[TARGETS]
    x_min: Float32
    x_max: Float32
    n_samples: Count
    noise_std: NonNegative
    seed: Seed
    held_out_points: Annotated[int, Field(ge=2, lt=INT64_LIMIT)]


def _distinct(names: list[str]) -> list[str]:
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"{repeated[0]!r} is listed twice")
    return names


class CsvData(Frozen):
    """A CSV file of yours: feature columns and a target column, a seeded share held out."""

    path: Name
    features: Annotated[list[Name], Field(min_length=1), AfterValidator(_distinct)]
    target: Name
    held_out_fraction: Annotated[float, Field(gt=0, lt=1)]
    split_seed: Seed

    @model_validator(mode="after")
    def _target_is_not_a_feature(self):
        if self.target in self.features:
            raise ValueError(f"target {self.target!r} is also listed in features")
        return self


class DataParams(Frozen):
    source: Literal["function", "csv"]
    function: FunctionData | None = None
    csv: CsvData | None = None

    @model_validator(mode="after")
    def _source_block_given(self):
        if getattr(self, self.source) is None:
            raise ValueError(f"data.source is {self.source!r}, but there is no data.{self.source}")
        return self

    def source_params(self) -> dict:
        """The block data.source names, as the keyword arguments of its reader."""
        return getattr(self, self.source).model_dump()


# params.model: the keys are build_model's (core/model.py); rewrite it for your own model.
class ModelParams(Frozen):
    degree: Annotated[int, Field(ge=1, le=12)]


class TrainParams(Frozen):
    optimizer: Literal[OPTIMIZERS]
    lr: Positive
    steps: Count
    batch_size: Count | None  # None: the full batch
    seed: Seed
    device: Literal["cpu", "cuda", "auto"]
    threads: Annotated[int, Field(ge=1, le=256)]
    log_every: Count
    checkpoint_every: Count | None  # None: no checkpoints
    divergence_factor: Annotated[float, Field(gt=1)]  # compared in Python float64, not torch
    gradient: Literal["autograd", "gram"]
    options: OptimizerOptions

    def optimizer_options(self) -> dict:
        """The selected optimizer's own options."""
        return getattr(self.options, self.optimizer).model_dump()

    @model_validator(mode="after")
    def _gram_needs_the_full_batch(self):
        if self.gradient == "gram" and self.batch_size is not None:
            raise ValueError("gradient gram sums the whole table: batch_size must be null")
        return self


def _model_name(name: str) -> str:
    """MLflow uses model names as paths: no '/' or ':', nothing that normalises to another."""
    if "/" in name or ":" in name or name == "." or name.startswith(".."):
        raise ValueError(f"{name!r} must not contain '/' or ':' or start with '..'")
    return name


class MlflowParams(Frozen):
    experiment: Annotated[Name, Field(max_length=500)]
    registered_model: Annotated[Name, AfterValidator(_model_name)]


class Params(Frozen):
    data: DataParams
    model: ModelParams
    train: TrainParams
    mlflow: MlflowParams

    @model_validator(mode="after")
    def _consistent(self):
        # The tutorial's function data against a model with a degree: a model block of your
        # own skips the rules whose keys it lacks.
        function, degree = self.data.function, getattr(self.model, "degree", None)
        if self.data.source != "function" or function is None:
            return self
        if function.x_min >= function.x_max:
            raise ValueError(
                f"data.function.x_min ({function.x_min}) must be below data.function.x_max "
                f"({function.x_max})"
            )
        if degree is not None and function.n_samples <= degree:
            raise ValueError(
                f"data.function.n_samples ({function.n_samples}) must exceed model.degree "
                f"({degree}) for the fit to be determined"
            )
        _check_float32_data(function, degree)
        return self


def _check_float32_data(data: FunctionData, degree: int | None) -> None:
    """The sampled target and a polynomial's powers (given its degree) are float32: refuse
    ranges that overflow them."""
    key = "data.function." + ("x_max" if abs(data.x_max) >= abs(data.x_min) else "x_min")
    reach = max(abs(data.x_min), abs(data.x_max))
    if degree is not None and reach > 1 and degree * math.log(reach) >= math.log(FLOAT32_MAX):
        raise ValueError(
            f"{key} ({reach:g}): x^{degree} (model.degree) overflows float32 beyond "
            f"|x| = {FLOAT32_MAX ** (1 / degree):.4g}"
        )
    if data.target == "exp" and data.x_max >= math.log(FLOAT32_MAX):
        raise ValueError(
            f"data.function.x_max ({data.x_max:g}): exp(x) overflows float32 beyond 88.72"
        )
    # A standard normal draw stays within 10 sigma for any dataset that fits in memory.
    largest_y = math.exp(data.x_max) if data.target == "exp" else 1.0
    if data.noise_std * 10 + largest_y > FLOAT32_MAX:
        raise ValueError(
            f"data.function.noise_std ({data.noise_std:g}): y + noise overflows float32"
        )


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
