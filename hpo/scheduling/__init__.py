"""Study files and scheduling decisions: pure code, no storage, no Optuna."""
