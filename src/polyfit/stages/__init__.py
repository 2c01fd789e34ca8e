"""The pipeline's stage entry points; dvc.yaml alone decides their order."""
