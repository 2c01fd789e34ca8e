"""Sweeps: a grid of DVC experiments on the local queue or on Dask workers."""
