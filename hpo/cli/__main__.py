"""``python -m hpo.cli``: what ``launch`` runs its child workers with."""

import sys

from hpo.cli import main

sys.exit(main())
