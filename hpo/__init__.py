"""The study service, in layers (each imports only the ones above it in this list):

- ``hpo.scheduling``: study files, rung arithmetic, the synthetic twin (no storage);
- ``hpo.service``: tables, claims and leases, the Optuna link, checkpoints, workers, trial runs;
- ``hpo.readers``: what a stored study says (results, status, curves, table, export, simulate);
- ``hpo.report``: the HTML report of a study;
- ``hpo.cli``: the ``saan-hpo`` command, one module per subcommand;
- ``hpo.api``: the same from Python -- ``hpo.launch``, ``hpo.attach_worker``, ``hpo.status``,
  ``hpo.report``, ``hpo.export`` (it imports the layers only when called).
"""

from hpo.api import StudyStatus, attach_worker, export, launch, report, status

__all__ = ["StudyStatus", "attach_worker", "export", "launch", "report", "status"]
