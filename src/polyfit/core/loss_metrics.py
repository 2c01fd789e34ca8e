"""What metrics/train.json reports from a loss history: the endpoint, and a stable tail mean.

RMSprop at lr 1e-3 is still circling the optimum at step 2000, so the last loss depends on
where in a ~50-step cycle training stops, and rounding differences between CPUs move that
phase. The mean over the last TAIL_STEPS steps (about four cycles) moves several times less
between CPUs, so the gate judges that instead.
"""

import math

TAIL_STEPS = 200


def train_metrics(loss_history: list[float]) -> dict:
    """final_loss, steps and tail_mean_loss (mean of the last TAIL_STEPS losses, or of all)."""
    if not loss_history:
        raise ValueError("an empty loss history has no metrics")
    tail = loss_history[-TAIL_STEPS:]
    return {
        "final_loss": loss_history[-1],
        "steps": len(loss_history),
        "tail_mean_loss": math.fsum(tail) / len(tail),  # fsum: exactly rounded
    }
