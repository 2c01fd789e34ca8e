"""Section "Large data": train.gradient gram against autograd, time per step as n grows.

Each measure is a child process, `python benchmarks/large_data.py N GRADIENT`, that trains as
the train stage does (stages/train.py without its files and MLflow): the repo's params.yaml with
data.function.n_samples = N, build_model, build_optimizer, gram_loss or autograd, full_batch and
fit; it prints `ms_per_step`, the one-off gram pass included.
"""

import functools
import sys
import time

from common import PYTHON, REPO, Row, Section, interleave, last_number, median, run, spread

from polyfit.cli import PROCESS_DEFAULTS

SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
STEPS, THREADS = 200, 2
GRADIENTS = ("autograd", "gram")  # train.gradient


def child(n: int, gradient: str) -> float:
    from polyfit.core.batches import full_batch
    from polyfit.core.data import from_function
    from polyfit.core.fit import build_optimizer, fit
    from polyfit.core.gram import gram_loss
    from polyfit.core.model import build_model
    from polyfit.core.runtime import configure_torch
    from polyfit.params import load_params

    params = load_params(REPO / "params.yaml")
    train = params.train

    def seconds(rows: int, steps: int) -> float:
        block = params.data.function.model_dump() | {"n_samples": rows, "held_out_points": 2}
        table, _ = from_function(**block)
        configure_torch(THREADS, train.seed)
        model = build_model(params.model.model_dump(), len(table.features))
        options = train.optimizer_options()
        optimizer = build_optimizer(train.optimizer, model.parameters(), train.lr, options)
        started = time.perf_counter()
        loss = gram_loss(model, table.X, table.y) if gradient == "gram" else None
        batches = full_batch(table.X, table.y)
        fit(model, optimizer, batches, steps, train.log_every, train.divergence_factor, loss)
        return time.perf_counter() - started

    seconds(64, 5)  # imports, torch._dynamo, first kernels
    return seconds(n, STEPS) / STEPS


def _measure(n: int, gradient: str) -> float:
    args = [PYTHON, __file__, str(n), gradient]
    return last_number(run(args, **PROCESS_DEFAULTS), "ms_per_step")


def large_data(repeats: int, sizes=SIZES) -> Section:
    section = Section(f"Large data (train.gradient, {STEPS} steps, {THREADS} threads)")
    for n in sizes:
        variants = {g: functools.partial(_measure, n, g) for g in GRADIENTS}
        ms = interleave(repeats, variants)
        speedup = median(ms["autograd"]) / median(ms["gram"])
        section.rows += [
            Row(f"n = {n:.0e}: autograd", spread(ms["autograd"], "ms/step", 3)),
            Row(
                f"n = {n:.0e}: gram",
                f"{spread(ms['gram'], 'ms/step', 3)}; autograd / gram: {speedup:.1f}x",
            ),
        ]
    section.notes = [
        f"Medians of {repeats} child process(es) per size and gradient, each warmed up on 64 "
        f"points, then timed over {STEPS} steps from building the loss (gram's one pass over the "
        "data, in float64 chunks) to the last step; the repo's train block otherwise (RMSprop, "
        f"lr, seed), with {THREADS} torch threads and the environment `polyfit` sets.",
        "autograd (the default) is the seed's forward and backward over every point, every step; "
        "gram sums X^T X, X^T y and y^T y once, then each step costs the same at any n.",
    ]
    return section


if __name__ == "__main__":
    print(f"ms_per_step {1e3 * child(int(sys.argv[1]), sys.argv[2]):.6f}")
