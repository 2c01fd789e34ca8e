"""PNG pictures for MLflow: the loss curve and the fit against the target (matplotlib, Agg).

Drawn on a bare matplotlib Figure: pyplot's import and figure manager cost ~0.3 s per stage.
"""

import io


def preload() -> None:
    """Import matplotlib's Figure and Agg canvas (~0.6 s): train does it while its worker
    imports torch and trains."""
    import matplotlib.backends.backend_agg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def _axes():
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    return figure, figure.add_subplot()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def loss_png(loss_history: list[float]) -> bytes:
    """Loss by step on a log scale (it falls by orders of magnitude)."""
    figure, axes = _axes()
    axes.plot(range(len(loss_history)), loss_history)
    axes.set(xlabel="step", ylabel="loss (sum of squared errors)", yscale="log", title="Loss")
    return _png(figure)


def fit_png(x: list[float], target: list[float], prediction: list[float]) -> bytes:
    """The fitted polynomial over the target function."""
    figure, axes = _axes()
    axes.plot(x, target, label="target", linewidth=3, alpha=0.5)
    axes.plot(x, prediction, label="model", linestyle="--")
    axes.set(xlabel="x", ylabel="y", title="Fit against the target")
    axes.legend()
    return _png(figure)
