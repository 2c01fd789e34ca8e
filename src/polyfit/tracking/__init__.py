"""Everything MLflow: the store, runs, the logged model, its serving code and the registry."""
