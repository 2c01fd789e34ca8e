"""Make torch deterministic and sized from params before any tensor work."""

import torch


def configure_torch(threads: int | None = None, seed: int | None = None) -> None:
    """Deterministic kernels, plus a fixed thread count and seeded RNG where a stage uses them."""
    if threads is not None:
        torch.set_num_threads(threads)
    # Same as use_deterministic_algorithms(True), which also imports torch._inductor (~1.3 s).
    torch.set_deterministic_debug_mode("error")
    # That mode also NaN-fills every new tensor, a debugging aid against kernels that read memory
    # they never wrote: an extra write of every temporary, 1% of a step at n=2000. Our results
    # are checked byte for byte across runs instead (tests, `dvc repro -f`).
    torch.utils.deterministic.fill_uninitialized_memory = False
    if seed is not None:
        torch.manual_seed(seed)
