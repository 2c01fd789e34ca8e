"""Make torch deterministic and sized from params before any tensor work.

Imports torch only inside functions, so the CLI can read REPRODUCIBLE_MKL for free.
"""

# MKL's conditional numerical reproducibility, set by the CLI before torch loads. On Intel CPUs
# it makes MKL take one code path whatever the instruction set (AVX2 and AVX-512 give the same
# bytes); on AMD it changes nothing measurable. CNR also needs a fixed thread count:
# train.threads, and no dynamic adjustment. See docs/determinism.md.
REPRODUCIBLE_MKL = {"MKL_CBWR": "COMPATIBLE", "MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}


def configure_torch(threads: int | None = None, seed: int | None = None) -> None:
    """Deterministic kernels, plus a fixed thread count and seeded RNG where a stage uses them."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)  # also MKL's thread count
    # Same as use_deterministic_algorithms(True), which also imports torch._inductor (~1.3 s).
    torch.set_deterministic_debug_mode("error")
    # That mode also NaN-fills every new tensor, a debugging aid against kernels that read memory
    # they never wrote: an extra write of every temporary, 1% of a step at n=2000. Our results
    # are checked byte for byte across runs instead (tests, `dvc repro -f`).
    torch.utils.deterministic.fill_uninitialized_memory = False
    if seed is not None:
        torch.manual_seed(seed)
