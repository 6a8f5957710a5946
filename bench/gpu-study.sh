#!/usr/bin/env bash
# The blog grid on one GPU, end to end: 16 configurations (lr x batch), synchronous
# halving (eta 2, 5 cumulative rungs: 80 epochs), full SAAN (resnet50, head 2048,
# random init) at 224 px on synthetic 1600x1200 JPEGs, two workers sharing the GPU,
# then `status`, `report` and `export --evaluate`.
#
#   bash bench/gpu-study.sh                          # on a CUDA machine, repo root; < 5 min on one H100
#   SAAN_HPO_BENCH_SMOKE=1 bash bench/gpu-study.sh   # CPU, tiny: resnet18, 32 px, 2x1 grid, 2 rungs
#
# Prints the wall time of the launch, the median epoch, the fixed per-epoch cost
# (epoch wall minus the training loop's time: validation, checkpoint,
# bookkeeping, rebuild on resume; bench/study_summary.py) and the winner.
#
# Size: SAAN_HPO_STUDY_TRAIN (default 2400) train images, 64 distinct pictures
# hard-linked (each copy still decoded in full when the cache is built),
# SAAN_HPO_STUDY_EVAL (default 160) in val and in test. At ~4,000 img/s an
# epoch of 2,400 images trains in ~0.6 s, so 80 epochs are ~1 min of training
# plus 80 x the fixed cost: the figure this script exists to measure.
#
# Packages: the study service needs optuna, sqlalchemy, alembic, plotly and what the GPU machine
# already has (pandas, scipy, filelock, tqdm). That machine has no package index: bench/wheels.sh
# downloads the missing ones here into .whl/ (ignored by git) for its Python 3.12 and platform,
# and bench/device-run.sh installs them there before it runs this script. Run directly, this
# script uses whatever python finds.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export SAAN_HPO_NO_PROGRESS=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# the CLI from this tree (no console script needed on a bare machine)
SAAN_HPO=(python -c 'import sys; from hpo.cli import main; sys.exit(main())')

SMOKE=0
if [[ "${1:-}" == "--smoke" || "${SAAN_HPO_BENCH_SMOKE:-0}" == "1" ]]; then SMOKE=1; fi
WORK=$(mktemp -d /tmp/saan-gpu-study-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"

if [[ $SMOKE == 1 ]]; then
    N_TRAIN=${SAAN_HPO_STUDY_TRAIN:-24}; N_EVAL=${SAAN_HPO_STUDY_EVAL:-8}; W=320; H=240
    BACKBONE=resnet18; HEAD=32; SIZE=32; LRS="[1e-3, 1e-4]"; BATCHES="[8]"; RUNGS=2; DEVICE=cpu; WORKERS=0
    PROCS=1  # one trial process: the smoke checks the path, and each process costs ~3.5 CPU-s
    LIMIT=280
else
    N_TRAIN=${SAAN_HPO_STUDY_TRAIN:-2400}; N_EVAL=${SAAN_HPO_STUDY_EVAL:-160}; W=1600; H=1200
    BACKBONE=resnet50; HEAD=2048; SIZE=224; LRS="[1e-3, 1e-4, 1e-5, 1e-6]"; BATCHES="[64, 32, 16, 8]"
    RUNGS=5; DEVICE=cuda:0; LIMIT=270; WORKERS=4; PROCS=2
    echo "== GPU"
    timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi failed"
fi

echo "== data: $N_TRAIN train JPEGs of ${W}x${H} (64 distinct), $N_EVAL val / test"
timeout 120 python -c "
import sys; from pathlib import Path
sys.path.insert(0, '$REPO/bench')
from trainer import make_dataset
make_dataset(Path('$WORK/baid'), $N_TRAIN, $W, $H, 64, n_eval=$N_EVAL)
" || { echo "bench/gpu-study.sh: data generation failed"; exit 1; }

cat > "$WORK/study.toml" <<TOML
[study]
name = "gpu-study"
metric = "srcc"
direction = "maximize"
storage = "sqlite:///$WORK/study.db"
artifacts = "$WORK/artifacts"

[grid]
lr = $LRS
batch_size = $BATCHES

[scheduler]
kind = "sync-halving"
eta = 2
rungs = $RUNGS
min_epochs = 1
schedule = "cumulative"

[data]
root = "$WORK/baid"
image_size = $SIZE
num_workers = $WORKERS

[model]
backbone = "$BACKBONE"
head_hidden = $HEAD
pretrained = "none"

[trainer]
schedule = "paper"
seed = 0
device = "$DEVICE"
TOML

echo "== launch: $PROCS workers on $DEVICE"
START=$(date +%s.%N)
timeout "$LIMIT" "${SAAN_HPO[@]}" launch "$WORK/study.toml" --workers "$PROCS" --device "$DEVICE"
rc=$?
END=$(date +%s.%N)
WALL=$(python -c "print($END - $START)")
if [[ $rc -ne 0 ]]; then
    echo "bench/gpu-study.sh: launch exited $rc after $WALL s (124: timed out); worker logs:"
    tail -n 20 "$WORK"/logs/*.log "$WORK"/*/logs/*.log 2>/dev/null
fi
URL="sqlite:///$WORK/study.db"
echo "== status";  timeout 60 "${SAAN_HPO[@]}" status --study gpu-study --storage "$URL"
echo "== report";  timeout 60 "${SAAN_HPO[@]}" report --study gpu-study --storage "$URL" -o "$WORK/report.html" \
    && ls -l "$WORK/report.html"
echo "== export --evaluate"
timeout 120 "${SAAN_HPO[@]}" export --study gpu-study --storage "$URL" -o "$WORK/best.toml" --evaluate \
    --device "$DEVICE"
echo "== summary"
python bench/study_summary.py --db "$WORK/study.db" --study gpu-study --train-images \
    "$(( $(wc -l < "$WORK/baid/dataset/train_set.csv") - 1 ))" --wall "$WALL"
exit $rc
