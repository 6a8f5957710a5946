#!/usr/bin/env bash
# Prepare, on this machine, the wheels bench/device-run.sh installs on the lent GPU machine.
#
#   bash bench/wheels.sh        # from the repo root; writes .whl/ (ignored by git)
#
# The GPU machine has Python 3.12, torch with CUDA, numpy, pandas, scipy, pillow,
# filelock, tqdm, pyyaml, packaging, markupsafe, narwhals and typing-extensions,
# and no package index. It lacks what the study service imports besides those:
# optuna and its needs (sqlalchemy, alembic, mako, colorlog) and plotly (SQLAlchemy 2.1
# needs greenlet only for asyncio, which the service does not use).
# pip downloads them here for that machine's Python and platform (no deps
# resolved: the list names each one), at the versions installed here, so the
# GPU run uses what the CPU tests used.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
mkdir -p "$DEST"
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
PACKAGES=()
for name in optuna sqlalchemy alembic mako colorlog plotly; do
    PACKAGES+=("$name==$(version "$name")")
done
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "${PACKAGES[@]}"
ls -1 "$DEST"
du -sh "$DEST"
