"""The building blocks of params.py's schema: strict types that know what torch will do with a
value (float32 and int64 ranges), and each torch.optim optimizer's own options."""

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max
INT64_LIMIT = 2**63  # counts become torch sizes and indices: int64


def _float32(value: float) -> float:
    """torch turns these into float32 (linspace ends, optimizer hyperparameters): it raises
    "cannot be converted to type float without overflow" beyond float32's range."""
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"{value!r} is beyond float32's range (±3.4e38), where torch uses it")
    return value


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


Float32 = Annotated[float, AfterValidator(_float32)]
Count = Annotated[int, Field(ge=1, lt=INT64_LIMIT)]
Seed = Annotated[int, Field(ge=0, lt=INT64_LIMIT)]
Positive = Annotated[Float32, Field(gt=0)]
NonNegative = Annotated[Float32, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Name = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class Frozen(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


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
