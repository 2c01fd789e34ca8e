"""metrics/train.json from a loss history: the endpoint and the tail mean, against references."""

import math
import statistics

import pytest

from polyfit.core.loss_metrics import TAIL_STEPS, train_metrics


def test_endpoint_steps_and_tail_mean_of_a_long_history():
    history = [float(step) for step in range(1000)]  # 0, 1, ..., 999
    metrics = train_metrics(history)
    assert metrics == {
        "final_loss": 999.0,
        "steps": 1000,
        "tail_mean_loss": statistics.fmean(range(1000 - TAIL_STEPS, 1000)),
    }
    assert TAIL_STEPS == 200 and metrics["tail_mean_loss"] == 899.5  # (800 + 999) / 2


def test_a_history_shorter_than_the_tail_is_averaged_whole():
    assert train_metrics([3.0, 1.0, 2.0]) == {"final_loss": 2.0, "steps": 3, "tail_mean_loss": 2.0}


def test_the_tail_mean_does_not_depend_on_the_order_of_the_tail():
    # Exactly rounded: a naive left-to-right sum gives 0.0 for one order, 1.0 for the other.
    tail = [1e16, 1.0, -1e16] + [0.0] * (TAIL_STEPS - 3)
    reordered = [1e16, -1e16, 1.0] + [0.0] * (TAIL_STEPS - 3)
    assert train_metrics(tail)["tail_mean_loss"] == 1.0 / TAIL_STEPS
    assert train_metrics(reordered)["tail_mean_loss"] == 1.0 / TAIL_STEPS


def test_an_oscillating_tail_averages_out_where_the_endpoint_does_not():
    """A loss circling 9 with period 50: the endpoint depends on the phase, the tail mean not."""

    def circling(phase: float) -> list[float]:
        return [9 + 0.2 * math.sin(2 * math.pi * step / 50 + phase) for step in range(2000)]

    ends = [train_metrics(circling(phase))["final_loss"] for phase in (0.0, 1.0, 2.0)]
    tails = [train_metrics(circling(phase))["tail_mean_loss"] for phase in (0.0, 1.0, 2.0)]
    assert max(ends) - min(ends) > 0.1
    assert tails == pytest.approx([9.0] * 3, abs=1e-12)


def test_an_empty_history_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        train_metrics([])
