"""The running service: its tables, claims and leases, Optuna link, checkpoints, workers."""
