"""Make torch deterministic and sized from params before any tensor work."""

import torch


def configure_torch(threads: int, seed: int | None = None) -> None:
    """Fixed thread count, deterministic kernels, and the global RNG seeded when one is used."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if seed is not None:
        torch.manual_seed(seed)
