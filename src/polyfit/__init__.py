"""polyfit: fit a polynomial to a target function with a DVC pipeline tracked in MLflow."""
