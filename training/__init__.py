"""Training code for rtdenoise models (needs the `train` extra: torch)."""
