"""SAAN network, BAID data, trainer and metrics. Knows nothing of Optuna or hpo/."""
