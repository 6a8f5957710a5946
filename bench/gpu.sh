#!/usr/bin/env bash
# One GPU, the paper's settings: SAAN (resnet50, head 2048) at 224 px, batch 64.
#
#   bash bench/gpu.sh                        # on a CUDA machine, from the repo root; < 5 min on one H100
#   SAAN_HPO_BENCH_SMOKE=1 bash bench/gpu.sh # the same Python path on CPU, tiny (checks the script runs)
#   bash bench/gpu.sh --smoke                # the same
#
# Prints the GPU (nvidia-smi), then bench/trainer.py's table:
#   a) the paper's loop: PIL decode + Resize(224) of 1600x1200 JPEGs every epoch
#      in a DataLoader with one worker per core (up to 16), fp32 (TF32 convs as
#      PyTorch's default);
#   c) this trainer, warm decode-once cache: bf16 autocast, channels_last,
#      cudnn.benchmark, fused Adam, pinned non-blocking copies, 4 loader workers,
#      the VGG run every step;
#   d) + style statistics computed once (data.style_cache; no VGG in the step);
#   e) + data on the device (data.device_cache = "on");
#   f) + torch.compile of the model call (trainer.compile); its compile time is
#      the "warm-up epoch of f)" line (Inductor cache in a fresh folder: cold);
# with images/s, the projected seconds per BAID epoch (48,000 training images)
# and the fraction of the GPU's bf16 dense peak (the full model's FLOPs per
# image: with d)-f) the VGG forward is not run, so theirs are effective shares).
#
# FLOPs per image are counted by torch.utils.flop_counter on one real training
# step (convolutions and matmuls; 2 FLOPs per multiply-add): the frozen generic
# branch and VGG forward only, the trained style trunk, non-local block and
# head forward + backward. docs/saan.md's forward is 36.3 GFLOP at 224 (VGG
# 24.2, generic 6.6, style trunk 3.6, non-local 1.9); a training step ~47.1.
# Peaks (bf16 dense): H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, H100 NVL 835
# (table in bench/trainer.py). Self-contained: synthetic JPEGs in a temporary
# folder, nothing installed, nothing downloaded; every step has a timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
export SAAN_HPO_NO_PROGRESS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" == "--smoke" || "${SAAN_HPO_BENCH_SMOKE:-0}" == "1" ]]; then
    # CPU, tiny; compile with the eager backend (the graph capture without Inductor's C++ build)
    SAAN_HPO_COMPILE_BACKEND=eager exec timeout 300 python bench/trainer.py --device cpu \
        --backbone resnet18 --head-hidden 64 --image-size 32 --batch 4 --n 8 --unique 4 \
        --width 320 --height 240 --epochs 1 --no-cold --flops --epoch-images 48000 --compile
fi

echo "== GPU"
timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
    --format=csv || echo "nvidia-smi failed"
timeout 30 nvidia-smi -L || true

CORES=$(nproc)
REF_WORKERS=$(( CORES < 16 ? CORES : 16 ))
# A fresh Inductor cache (f's compile is cold), unless bench/device-run.sh hands one in to keep
# for bench/kernels.py's warm compile.
if [[ "${SAAN_HPO_KEEP_INDUCTOR_CACHE:-0}" == "1" && -n "${TORCHINDUCTOR_CACHE_DIR:-}" ]]; then
    INDUCTOR_DIR=""; mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
else
    INDUCTOR_DIR=$(mktemp -d /tmp/saan-inductor-XXXXXX)
    export TORCHINDUCTOR_CACHE_DIR="$INDUCTOR_DIR"
fi
echo "== SAAN at 224 px, batch 64 (a: paper's loop; c: this trainer; d, e, f: speed-ups on in turn)"
# 2048 training images (64 distinct pictures, hard-linked copies decode the same),
# one untimed epoch of each loop (f: includes the compile), then 3 timed epochs
# of each, alternating. Expected: about 1 min data + cache, 1.5 min compile, 1 min epochs.
timeout 285 python bench/trainer.py --device cuda --backbone resnet50 --head-hidden 2048 \
    --image-size 224 --batch 64 --n 2048 --unique 64 --epochs 3 \
    --workers "$REF_WORKERS" --trainer-workers 4 --no-cold --flops --epoch-images 48000 --compile
rc=$?
[[ -n "$INDUCTOR_DIR" ]] && rm -rf "$INDUCTOR_DIR"
if [[ $rc -eq 124 ]]; then echo "bench/gpu.sh: timed out after 285 s"; fi
exit $rc
