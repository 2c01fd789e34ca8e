"""Make torch deterministic and sized from params before any tensor work."""

import torch


def configure_torch(threads: int, seed: int | None = None) -> None:
    """Fixed thread count, deterministic kernels, and the global RNG seeded when one is used."""
    torch.set_num_threads(threads)
    # Same as use_deterministic_algorithms(True), which also imports torch._inductor (~1.3 s).
    torch.set_deterministic_debug_mode("error")
    if seed is not None:
        torch.manual_seed(seed)
