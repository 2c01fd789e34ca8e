"""Make torch deterministic, sized and placed from params before any tensor work."""

import torch

from polyfit.errors import UsageError


def configure_torch(threads: int | None = None, seed: int | None = None) -> None:
    """Deterministic kernels, plus a fixed thread count and seeded RNG where a stage uses them."""
    if threads is not None:
        torch.set_num_threads(threads)  # also MKL's thread count
    # Same as use_deterministic_algorithms(True), which also imports torch._inductor, slowly.
    torch.set_deterministic_debug_mode("error")
    # That mode also NaN-fills every new tensor, a debugging aid against kernels that read memory
    # they never wrote: an extra write of every temporary. Our results are checked byte for byte
    # across runs instead (tests, `dvc repro -f`).
    torch.utils.deterministic.fill_uninitialized_memory = False
    if seed is not None:
        torch.manual_seed(seed)


def device(name: str) -> torch.device:
    """params.train.device as torch's: cpu, cuda, or auto (cuda where torch sees a GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device: cuda, but torch sees no CUDA device on this machine")
    if name == "cuda":
        # Some CUDA kernels have no deterministic version; warn instead of failing on them.
        # Reruns on a GPU are not promised to give the same bytes (docs/determinism.md).
        torch.set_deterministic_debug_mode("warn")
    return torch.device(name)
