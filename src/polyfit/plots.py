"""PNG pictures for MLflow: the loss curve and the fit against the target (matplotlib, Agg)."""

import io


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 4), dpi=100)


def _png(plt, figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def loss_png(loss_history: list[float]) -> bytes:
    """Loss by step on a log scale (it falls by orders of magnitude)."""
    plt, figure, axes = _figure()
    axes.plot(range(len(loss_history)), loss_history)
    axes.set(xlabel="step", ylabel="loss (sum of squared errors)", yscale="log", title="Loss")
    return _png(plt, figure)


def fit_png(x: list[float], target: list[float], prediction: list[float]) -> bytes:
    """The fitted polynomial over the target function."""
    plt, figure, axes = _figure()
    axes.plot(x, target, label="target", linewidth=3, alpha=0.5)
    axes.plot(x, prediction, label="model", linestyle="--")
    axes.set(xlabel="x", ylabel="y", title="Fit against the target")
    axes.legend()
    return _png(plt, figure)
