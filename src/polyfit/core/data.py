"""The dataset: the (x, y) points generate writes and, when y comes from a known function, the
noise-free target evaluate scores the model against beyond those points.

To fit your own data (docs/adapting.md), rewrite make_dataset (its arguments are params.data's
keys) and make evaluation_grid return None: the grid metrics are then left out.
"""

import torch

TARGET_FUNCTIONS = {"sin": torch.sin, "cos": torch.cos, "exp": torch.exp}


def make_dataset(
    target: str, x_min: float, x_max: float, n_samples: int, noise_std: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return x (n_samples,) and y (n_samples,), float32, exactly as the seed builds them."""
    x = torch.linspace(x_min, x_max, n_samples)
    y = TARGET_FUNCTIONS[target](x)
    if noise_std > 0:
        generator = torch.Generator().manual_seed(seed)
        y = y + noise_std * torch.randn(n_samples, generator=generator)
    return x, y


def evaluation_grid(data: dict, points: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The dense grid evaluate scores on, from params.data: (x, noise-free y), or None for data
    without a known target function."""
    return target_grid(data["target"], data["x_min"], data["x_max"], points)


def target_grid(
    target: str, x_min: float, x_max: float, points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense grid over [x_min, x_max] (float32, as the model sees x) and the noise-free target
    on it (float64): what the model should have learned, beyond its training points."""
    grid_x = torch.linspace(x_min, x_max, points)
    return grid_x, TARGET_FUNCTIONS[target](grid_x.double())
