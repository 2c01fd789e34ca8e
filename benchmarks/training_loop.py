"""Training loop: microseconds per step of polyfit.core.fit.fit against the seed's bare loop."""

import json
import math
import sys
import time

from seed_loop import seed_loop, seed_model_and_optimizer
from timing import Row, Section, median, verdict

N_SAMPLES, STEPS = 2000, 2000
TARGET = 1.05  # the textbook loop, plus history and divergence checks, near the seed's


def _no_report(step: int, loss: float) -> None:
    """Stands in for the per-100-steps print in both loops, so neither writes to the terminal."""


def _one_run(kind: str, x, inputs, target) -> tuple[float, float, list]:
    """(wall us per step, CPU us per step, final weights) of one 2000-step run."""
    import torch

    from polyfit.core.fit import build_optimizer, fit, make_loss
    from polyfit.core.model import build_model
    from polyfit.core.runtime import configure_torch

    if kind == "fit, stage settings":
        configure_torch()  # exactly what the train stage sets (threads: set by _inputs)
    torch.manual_seed(0)
    if kind.startswith("fit"):  # the train stage's model, loss and optimizer; same weights
        model = build_model({"degree": 3})
        optimizer = build_optimizer("RMSprop", model.parameters(), 1e-3, {})
        loss_function = make_loss("autograd", model, x, target)
    else:
        model, optimizer = seed_model_and_optimizer()
    started, cpu_started = time.perf_counter(), time.process_time()
    if kind == "seed":
        seed_loop(model, inputs, target, optimizer, STEPS, report=_no_report)
    elif kind == "tuned":
        tuned_loop(model, inputs, target, optimizer, STEPS)
    elif kind == "tensor history":
        tensor_history_loop(model, inputs, target, optimizer, STEPS)
    else:
        fit(loss_function, optimizer, STEPS, 100, 1e3, _no_report)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    torch.set_deterministic_debug_mode("default")  # undo configure_torch for the next run
    torch.utils.deterministic.fill_uninitialized_memory = True
    weights = [p.detach().clone() for p in model.parameters()]
    return 1e6 * seconds / STEPS, 1e6 * cpu_seconds / STEPS, weights


def tuned_loop(model, inputs, target, optimizer, steps: int) -> None:
    """A measured alternative, not the product: the seed's loop minus two wrappers per step.

    `.grad = None` by hand skips optimizer.zero_grad's profiler record and torch._dynamo
    wrapper, and the functional mse_loss skips a module call: same operations, same bits.
    """
    import torch

    parameters = list(model.parameters())
    for step in range(steps):
        for parameter in parameters:
            parameter.grad = None
        loss = torch.nn.functional.mse_loss(model(inputs), target, reduction="sum")
        if step % 100 == 99:
            _no_report(step, loss.item())
        loss.backward()
        optimizer.step()


def tensor_history_loop(model, inputs, target, optimizer, steps: int) -> list:
    """A measured alternative, not the product: fit's loop keeping each step's loss as a
    tensor (`loss.detach()`, read back every 100 steps), the usual advice for GPUs, where
    .item() waits for the device. fit reads `loss.item()` every step instead."""
    import torch

    loss_function, history, window = torch.nn.MSELoss(reduction="sum"), [], []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_function(model(inputs), target)
        loss.backward()
        optimizer.step()
        window.append(loss.detach())
        if step % 100 == 99:
            history += torch.stack(window).tolist()
            _no_report(step, history[-1])
            window = []
    return history


def _inputs():
    """x (N,), the seed's (N, 3) features and the target, with train.threads = 1."""
    import torch

    from polyfit.core.data import make_dataset
    from polyfit.core.model import Polynomial

    torch.set_num_threads(1)  # train.threads in params.yaml
    x, y = make_dataset("sin", -math.pi, math.pi, N_SAMPLES, 0.0, 0)
    return x, Polynomial(3).features(x), y  # (N, 3), the seed's x.unsqueeze(-1).pow(p)


def training_loop(repeats: int) -> Section:
    import torch

    x, inputs, y = _inputs()
    kinds = ["seed", "fit", "fit, stage settings", "tuned", "tensor history"]
    for kind in kinds:  # warm-up: torch._dynamo import, first kernels
        _one_run(kind, x, inputs, y)
    rounds = 4 * repeats
    us, cpu_us, weights = {kind: [] for kind in kinds}, {kind: [] for kind in kinds}, {}
    for round_index in range(rounds):
        shift = round_index % len(kinds)
        order = kinds[shift:] + kinds[:shift]  # rotate to share drift
        for kind in order:
            step_us, step_cpu_us, weights[kind] = _one_run(kind, x, inputs, y)
            us[kind].append(step_us)
            cpu_us[kind].append(step_cpu_us)

    def ratio(times: dict, kind: str) -> float:  # median of per-round ratios to the seed
        return median([a / b for a, b in zip(times[kind], times["seed"], strict=True)])

    same = all(torch.equal(a, b) for a, b in zip(weights["seed"], weights["fit"], strict=True))
    section = Section(f"Training loop (n={N_SAMPLES}, {STEPS} steps, threads=1)")
    section.rows = [
        Row("seed's bare loop", f"{median(us['seed']):.1f} us/step"),
    ]
    for kind, label in (
        ("fit", "polyfit.core.fit.fit (make_loss, Polynomial)"),
        ("fit, stage settings", "the same with the train stage's deterministic mode"),
        ("tuned", "alternative: the seed's loop with .grad = None and functional mse_loss"),
        ("tensor history", "alternative: fit's loop keeping each loss as a tensor (.detach())"),
    ):
        section.rows.append(
            Row(
                label,
                f"{median(us[kind]):.1f} us/step, {ratio(us, kind):.3f}x seed "
                f"(CPU time: {ratio(cpu_us, kind):.3f}x)",
                f"<= {TARGET:g}x seed",
                verdict(ratio(us, kind) <= TARGET),
            )
        )
    section.notes += [
        f"{rounds} rounds; each round runs every variant once in rotated order, 2000 steps "
        "from the same seeded weights (RMSprop lr 1e-3, MSELoss(sum)), timed in-process. "
        "Ratios are medians of the per-round ratios, which cancels slow drifts in load; the "
        "verdict uses wall time, CPU time (process_time, one thread) is shown as a check.",
        "Every loop reports the loss every 100 steps to a no-op (the seed's print). fit runs "
        "the train stage's Polynomial, make_loss('autograd') and build_optimizer; it is "
        "the textbook loop (optimizer.zero_grad(), loss.backward(), optimizer.step()); it "
        "also reads every step's loss (`loss.item()`) into its history and checks it for "
        "divergence. The alternatives live in benchmarks/training_loop.py, not in polyfit: "
        "'tuned' shows what skipping optimizer.zero_grad's profiler record and "
        "torch._dynamo wrapper and the MSELoss module call would save; 'tensor history' "
        "what keeping each step's loss tensor and reading them back every 100 steps costs "
        "(the usual advice for a GPU) against fit's .item().",
        f"Same computation: final weights of seed and fit are bit-identical: {same}.",
        "'Deterministic mode' is what polyfit.core.runtime.configure_torch sets in the stages: "
        "torch.set_deterministic_debug_mode('error'), without its NaN-filling of every new "
        "tensor (torch.utils.deterministic.fill_uninitialized_memory = False).",
        "Every variant runs in MKL's reproducible mode (MKL_CBWR=COMPATIBLE), as `polyfit` "
        "sets; its cost is measured in its own section.",
    ]
    return section


# `python benchmarks/training_loop.py --child N`: median us/step of N runs with the stage's
# settings, in this process's MKL mode (reproducible_mode.py compares the modes).
if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child_data = _inputs()
    _one_run("fit, stage settings", *child_data)  # warm-up
    runs = [_one_run("fit, stage settings", *child_data)[0] for _ in range(int(sys.argv[2]))]
    print(json.dumps({"us_per_step": median(runs)}))
