#!/usr/bin/env bash
# The one command for a lent GPU machine: wheels, then bench/gpu.sh, bench/gpu-study.sh and
# bench/kernels.py one after the other, every log under $OUT. Under 8 minutes on one H100.
#
#   bash bench/wheels.sh                 # here, once: the wheels the GPU machine lacks, into .whl/
#   # the device tool, from the repo root, carrying .whl:
#   #   run(command="bash bench/device-run.sh", carry=[".whl"], timeout_s=540)
#   bash bench/device-run.sh --smoke     # on CPU: the same sequence, tiny (what CI checks)
#
# Writes to $OUT (a temporary folder when unset): versions.txt (card, torch, CUDA), gpu.log,
# gpu-study.log, kernels.log, kernels.txt (torch.profiler's top 15 of one training step). The
# Inductor cache of gpu.sh's row f) is kept for kernels.py, whose "compile (first epoch)" line
# is then the compile time with a warm cache (gpu.sh's "warm-up epoch of f)" is the cold one).
# Each step has its own timeout, and the whole run a deadline, so one hung step cannot use
# up the device lease; a failed step is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [[ "${1:-}" == "--smoke" || "${SAAN_HPO_BENCH_SMOKE:-0}" == "1" ]]; then SMOKE=1; fi
OUT=${OUT:-$(mktemp -d /tmp/saan-device-run-XXXXXX)}
mkdir -p "$OUT"
DEADLINE=$(( SECONDS + ${SAAN_HPO_DEVICE_DEADLINE:-470} ))
left() { echo $(( DEADLINE - SECONDS )); }
status=0

# The wheels are for the GPU machine's Python 3.12; a CPU smoke run uses what is installed here.
if [[ $SMOKE == 0 && -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
    echo "== installing the carried wheels (.whl/) into /tmp/site"
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "bench/device-run.sh: wheel install failed"; status=1
    fi
fi
python3 - <<'PY' | tee "$OUT/versions.txt"
import importlib, sys
missing = []
for name in ("torch", "optuna", "sqlalchemy", "alembic", "plotly", "pandas", "scipy", "tqdm", "filelock"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except ImportError as err:
        missing.append(f"{name} ({err})")
import torch
card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"python {sys.version.split()[0]}; CUDA {torch.version.cuda}; device: {card}")
if missing:
    print("missing: " + ", ".join(missing) + " (bash bench/wheels.sh, then carry .whl)")
    sys.exit(1)
PY
[[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "bench/device-run.sh: packages missing, stopping"; exit 1; }

export TORCHINDUCTOR_CACHE_DIR="$OUT/.inductor-cache"  # shared by gpu.sh's f) and kernels.py
export SAAN_HPO_KEEP_INDUCTOR_CACHE=1
step() {  # step NAME SECONDS COMMAND...: bounded by its own limit and by the deadline
    local name=$1 limit=$2; shift 2
    (( limit > $(left) )) && limit=$(left)
    if (( limit < 20 )); then echo "== $name: skipped, $(left) s left before the deadline"; status=1; return; fi
    echo "== $name (limit $limit s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $(( SECONDS - start )) s"
    (( rc == 0 )) || status=1
}
if [[ $SMOKE == 1 ]]; then
    step gpu 300 bash bench/gpu.sh --smoke
    step gpu-study 300 env SAAN_HPO_BENCH_SMOKE=1 bash bench/gpu-study.sh
    step kernels 120 python3 bench/kernels.py --smoke --out "$OUT/kernels.txt"
else
    step gpu 300 bash bench/gpu.sh
    step gpu-study 290 bash bench/gpu-study.sh
    step kernels 120 python3 bench/kernels.py --device cuda --out "$OUT/kernels.txt"
fi
rm -rf "$TORCHINDUCTOR_CACHE_DIR"  # not a result: keep $OUT small for the way back
echo "== logs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit $status
