"""The GPU measurement scripts cannot rot: bench/device-run.sh --smoke runs them all on CPU.

bench/device-run.sh is the one command a lent GPU machine runs (bench/gpu.sh,
bench/gpu-study.sh, bench/kernels.py); its ``--smoke`` form runs the same
scripts' same Python paths on CPU with tiny settings. Every line the GPU run
must print for bench/RESULTS.md is checked here, so a script that stops
printing one fails in CI, not on the device.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("device-out")
    env = {**os.environ, "OUT": str(out)}
    env.pop("SAAN_HPO_BENCH_SMOKE", None)
    done = subprocess.run(["bash", "bench/device-run.sh", "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return done, out


@pytest.mark.slow
def test_device_run_smoke_exits_0_and_writes_every_log(smoke):
    done, out = smoke
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for name in ("versions.txt", "gpu.log", "gpu-study.log", "kernels.log", "kernels.txt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / ".inductor-cache").exists()  # removed: not a result to bring back
    versions = (out / "versions.txt").read_text()
    assert re.search(r"^torch \d", versions, re.M) and re.search(r"^optuna \d", versions, re.M)
    assert "CUDA" in versions and "device:" in versions


@pytest.mark.slow
def test_gpu_sh_prints_rows_a_c_d_e_f_with_rates_epoch_seconds_and_peak_share(smoke):
    log = (smoke[1] / "gpu.log").read_text()
    for row in ("a) reference", "c) Trainer, warm cache", "d)  + style statistics cached",
                "e)  + data on the device", "f)  + torch.compile"):
        line = next((line for line in log.splitlines() if line.startswith(row)), None)
        assert line is not None, f"row {row!r} missing:\n{log[-3000:]}"
        numbers = re.findall(r"\d+\.\d+", line[len(row):])
        assert len(numbers) == 4, line  # img/s, s/epoch, median, s per 48,000-image epoch
    assert "warm-up epoch of f):" in log  # f's compile time (cold)
    assert "training FLOPs per image:" in log
    assert re.search(r"fastest [cdef]\) \d+ img/s, [\d.]+ s per 48000-image epoch", log), log[-2000:]


@pytest.mark.slow
def test_gpu_study_sh_prints_wall_time_median_epoch_fixed_cost_and_winner(smoke):
    log = (smoke[1] / "gpu-study.log").read_text()
    for pattern in (r"^wall time: \d+ s", r"^median epoch: [\d.]+ s", r"^fixed per-epoch cost: median [\d.]+ s",
                    r"^winner: trial \d+ at epoch \d+, value [\d.]+"):
        assert re.search(pattern, log, re.M), f"{pattern!r} missing:\n{log[-3000:]}"


@pytest.mark.slow
def test_kernels_py_prints_compile_time_and_a_top_15_table(smoke):
    log = (smoke[1] / "kernels.log").read_text()
    assert re.search(r"^compile \(first epoch\): [\d.]+ s", log, re.M), log[-2000:]
    assert "top 15 kernels of one training step" in log
    table = (smoke[1] / "kernels.txt").read_text()
    rows = [line for line in table.splitlines() if re.match(r"^\s*\S.*\d+\.\d+(us|ms|s)\b", line)]
    assert len(rows) >= 10, table  # the profiler's rows, not an empty table
