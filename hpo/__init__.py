"""The study service: study files, schedulers, storage, workers, reports, export, CLI."""
