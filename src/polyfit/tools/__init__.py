"""The commands around the pipeline: gate, predict, promote, serve, ui, runs cleanup."""
