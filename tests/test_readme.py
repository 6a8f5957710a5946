"""The README, tested as written: every command line and the Python example of its fenced blocks.

Every ```sh block's lines (a trailing backslash joins the next line, ``# comments`` are cut,
``a && b`` is two commands) and every ```python block are run in the README's order, in one
fresh folder (a copy of ``studies/`` and ``bench/demo-curves.csv``, the command's cwd), each
with ``bash -c`` (python blocks with this interpreter). Each must exit 0, print no traceback
and write the files the README says it writes (``COMMANDS`` below); where a second study of
the same name runs (the API example, the fleet), the first one's checkpoints must survive it
(``keeps``: the README keeps the winner's for ``export``). A command that cannot run
here is in ``COMMANDS`` as ``Skip`` with its reason. A README command that is in neither is a
failure, and so is an entry of ``COMMANDS`` that the README no longer has: this table and the
README change together.

Shortened, so that the whole sequence trains for seconds, not minutes (``SHRUNK``): the fresh
folder's copies of three study files are cut down, keeping their names, kinds and rung rules;
the commands themselves run exactly as written.

- ``studies/demo.toml`` (read by every ``saan-hpo ... studies/demo.toml`` / ``--study demo``
  line, ``export``, ``train runs/demo/best.toml``, ``evaluate``, ``simulate``, ``curves``,
  ``report`` and the Python example): 2 configurations (lr 1.5e-5 / 6e-6, batch 16) instead of
  16, 2 rungs (epochs 1, 3: 4 epochs, not 80), 48 synthetic images of 32 px (the default
  splits) instead of 1000 of 48 px, a 64-wide head instead of 256;
- ``studies/blog-grid.toml`` (``launch studies/blog-grid.toml --data synthetic --workers 2``
  and the fleet lines): 2 configurations (lr 1e-3 / 1e-4, batch 32), 2 rungs (epochs 1, 3);
- ``studies/variants.toml`` (``launch studies/variants.toml --data synthetic ...`` and the fleet
  lines): 2 configurations (norm bn / gn, loss mse, batch 64) instead of 12;
- ``studies/demo-space.toml`` (the "Beyond the grid" lines): one bracket over 2 budget levels
  (3 epochs) instead of 8 over 4 (196), 48 images and a 64-wide head as the shrunk demo.

The sequence runs once per session (the ``readme_run`` fixture); each README line that runs is
one test case, named after its README line, whose failure message gives the line, the command,
its exit code and the tail of its output. The full demo (16 configurations, the README's
quoted winner) is tests/test_demo_study.py's; the API example on the full demo grid is
tests/test_api.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
TRACEBACK = "Traceback (most recent call last)"
SH_LANGUAGES = {"sh", "bash", "shell"}  # not "console": its "$ " prompts and output are no commands
SHOWN_LANGUAGES = {"toml"}  # shown, not run: the study file's fields (its keys are validated elsewhere)


# ---- what each README command is -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Run:
    """Run it; it must exit 0 with no traceback and write ``writes`` (globs relative to the
    folder, each matching a non-empty file that the line created or changed);
    ``keeps``: globs of files that must be there before the line and unchanged after it
    (another study's checkpoints); ``check(folder, stdout)`` asserts more."""
    writes: tuple[str, ...] = ()
    keeps: tuple[str, ...] = ()
    check: Callable[[Path, str], None] | None = None
    timeout: float = 120


@dataclasses.dataclass(frozen=True)
class Skip:
    reason: str


def _prints(*words: str) -> Callable[[Path, str], None]:
    def check(folder: Path, stdout: str) -> None:
        missing = [w for w in words if w not in stdout]
        assert not missing, f"stdout lacks {missing}"
    return check


def _json_stdout(folder: Path, stdout: str) -> None:
    json.loads(stdout)  # --json: one JSON document, nothing else


def _synthetic_baid(folder: Path, stdout: str) -> None:
    root = folder / "data" / "synthetic"
    images = [p for p in (root / "images").iterdir() if p.is_file()]
    assert len(images) == 400, f"{root}/images holds {len(images)} images, not --n 400"


BAID = ("a BAID study: needs BAID itself (data.root = data/BAID, 60,337 images) and GPU days; "
        "its synthetic twin runs below (--data synthetic)")
BAID_READER = "reads a BAID study that only the skipped BAID launch lines create"
CLUSTER = "cluster placeholders (db.cluster, /shared paths, $HOME pass file): run on the cluster"
BENCH = ("a benchmark: minutes of work, prints a figure to read (bench/RESULTS.md), and timing "
         "goals are never test assertions")
GPU_BENCH = "a GPU benchmark (needs CUDA; its SAAN_HPO_BENCH_SMOKE=1 CPU mode is not this line)"
NO_DOCKER = "needs a Docker engine (none on CI machines); docker/ is checked by tests/test_docker_files.py"
NO_K8S = "needs a Kubernetes cluster; docker/k8s/ is checked by tests/test_cluster_files.py"
FLEET_DB = "sqlite:///runs/fleet.db"
# Checkpoints of another study that a line must leave alone: the demo's (its winner is kept for
# `export --evaluate` below) while the API example runs a second study named "demo"
# in its own storage, and the blog-grid twin's (runs/blog-grid-synthetic/study.db) while the
# fleet runs a second "blog-grid-synthetic" in runs/fleet.db.
DEMO_CHECKPOINTS = ("runs/demo/artifacts/**/*",)
TWIN_CHECKPOINTS = ("runs/blog-grid-synthetic/artifacts/**/*",)

COMMANDS: dict[str, Run | Skip] = {
    # ---- the first block
    "pip install torch==2.14.1 torchvision==0.29.1 -e '.[test]'":
        Skip("installs packages (the test runs inside that installation)"),
    # The first block's line, and again under Commands on the finished study (no worker starts).
    "saan-hpo launch studies/demo.toml --workers 2":
        Run(writes=("runs/demo/logs/*.log",), check=_prints("winner: trial"), timeout=240),
    "python -m pytest -q -rs --durations=20": Skip("the test suite itself (this test is part of it)"),
    # ---- Python API
    "python: <!-- api-example -->":
        Run(writes=("reports/demo-replay.html", "runs/demo-replay/best.toml"), keeps=DEMO_CHECKPOINTS,
            check=_prints("winner: trial", "'complete': 1")),
    # ---- Commands
    "saan-hpo launch studies/demo.toml": Run(),
    "saan-hpo launch studies/demo.toml --workers 0": Run(),
    "saan-hpo worker studies/demo.toml --storage sqlite:///runs/demo/study.db": Run(),
    "saan-hpo status studies/demo.toml": Run(check=_prints("demo")),
    "saan-hpo status --study demo": Run(check=_prints("demo")),
    "saan-hpo export --study demo --evaluate":
        Run(writes=("runs/demo/best.toml",), check=_prints("test: accuracy", "srcc"), timeout=240),
    "saan-hpo train runs/demo/best.toml --out runs/best":
        Run(writes=("runs/best/last.pt", "runs/best/history.json"), timeout=240),
    "saan-hpo evaluate runs/best/last.pt --split test": Run(check=_prints("test split", "srcc")),
    "saan-hpo make-synthetic data/synthetic --n 400 --size 96":
        Run(writes=("data/synthetic/dataset/train_set.csv", "data/synthetic/dataset/val_set.csv",
                    "data/synthetic/dataset/test_set.csv"), check=_synthetic_baid),
    "saan-hpo simulate studies/demo.toml --curves bench/demo-curves.csv --json":
        Run(check=_json_stdout),
    "saan-hpo curves --study demo -o demo-curves.csv": Run(writes=("demo-curves.csv",)),
    # ---- Beyond the grid (studies/demo-space.toml shrunk, see SHRUNK)
    "saan-hpo launch studies/demo-space.toml --workers 2":
        Run(writes=("runs/demo-space/study.db",), check=_prints("winner: trial")),
    "saan-hpo launch studies/demo-space.toml --replay-curves bench/search-surrogate.json "
    "--storage sqlite:///runs/demo-space-replay.db":
        Run(writes=("runs/demo-space-replay.db",), keeps=("runs/demo-space/artifacts/**/*",),
            check=_prints("winner: trial")),
    "saan-hpo refine --study demo --budget 170": Run(writes=("runs/demo/refined.toml",)),
    "saan-hpo launch runs/demo/refined.toml":
        Skip("trains the refined plan (162 epochs of the demo model on the README's grid); "
             "tests/test_refine.py launches a refined file"),
    # ---- Report
    "saan-hpo report --study demo -o reports/demo.html": Run(writes=("reports/demo.html",)),
    # ---- Reproducing the published results
    "saan-hpo launch studies/reproduce.toml --workers 1": Skip(BAID),
    "saan-hpo launch studies/variants.toml --workers 4": Skip(BAID),
    "saan-hpo table --study variants": Skip(BAID_READER),
    "saan-hpo table studies/ablation.toml --format csv": Skip(BAID_READER),
    "saan-hpo launch studies/blog-grid.toml --workers 4": Skip(BAID),
    "saan-hpo report --study blog-grid -o reports/blog-grid.html": Skip(BAID_READER),
    "saan-hpo export --study blog-grid --evaluate": Skip(BAID_READER),
    "saan-hpo launch studies/blog-grid.toml --data synthetic --workers 2":
        Run(writes=("runs/blog-grid-synthetic/study.db",), timeout=240),
    "saan-hpo launch studies/variants.toml --data synthetic --epochs 2 --name variants-2 --workers 2":
        Run(writes=("runs/variants-2/study.db",), timeout=240),
    # ---- Fleet (docker/)
    "export POSTGRES_PASSWORD=... BAID_DIR=/path/to/BAID": Skip(f"{NO_DOCKER} (placeholders)"),
    "docker compose -f docker/compose.yaml up --scale worker=4": Skip(NO_DOCKER),
    # ---- One fleet, many studies
    "saan-hpo launch studies/blog-grid.toml studies/variants.toml --data synthetic --epochs 2 "
    f"--storage {FLEET_DB} --workers 0": Run(writes=("runs/fleet.db",)),
    f"saan-hpo worker --storage {FLEET_DB} --study blog-grid-synthetic":
        Run(keeps=TWIN_CHECKPOINTS, timeout=240),
    f"saan-hpo worker --storage {FLEET_DB}": Run(keeps=TWIN_CHECKPOINTS, timeout=240),
    f"saan-hpo status --storage {FLEET_DB}":
        Run(check=_prints("blog-grid-synthetic", "variants-synthetic")),
    "saan-hpo launch studies/blog-grid.toml studies/variants.toml --data synthetic --epochs 2 "
    f"--storage {FLEET_DB} --workers 2": Run(keeps=TWIN_CHECKPOINTS, timeout=240),
    # ---- SLURM
    "export SAAN_HPO_STORAGE=postgresql+psycopg://saan_hpo@db.cluster:5432/saan_hpo": Skip(CLUSTER),
    "export SAAN_HPO_PGPASSWORD_FILE=$HOME/.saan-hpo-pgpass": Skip(CLUSTER),
    "export SAAN_HPO_DATA_ROOT=/shared/BAID SAAN_HPO_ARTIFACTS=/shared/saan-hpo/artifacts":
        Skip(CLUSTER),
    "saan-hpo launch studies/blog-grid.toml studies/variants.toml studies/ablation.toml "
    '--artifacts "$SAAN_HPO_ARTIFACTS" --workers 0': Skip(f"{CLUSTER}; BAID studies"),
    "sbatch --array=0-7 docker/slurm/workers.sbatch":
        Skip("needs SLURM; the job file is checked by tests/test_cluster_files.py"),
    "scancel --signal=TERM JOBID": Skip("needs SLURM and a job id"),
    # ---- Kubernetes
    "kubectl create secret generic saan-hpo-postgres --from-literal=password='...'": Skip(NO_K8S),
    "kubectl create configmap saan-hpo-studies --from-file=studies/": Skip(NO_K8S),
    "kubectl apply -f docker/k8s/saan-hpo.yaml": Skip(NO_K8S),
    "kubectl scale deployment/saan-hpo-worker --replicas=8": Skip(NO_K8S),
    # ---- Benchmarks
    "python bench/trainer.py": Skip(BENCH),
    "python bench/checkpoint.py": Skip(BENCH),
    "python bench/epoch_boundary.py": Skip(BENCH),
    "bash bench/gpu.sh": Skip(GPU_BENCH),
    "bash bench/gpu-study.sh": Skip(GPU_BENCH),
    "bash bench/device-run.sh --smoke": Skip("run by tests/test_gpu_scripts.py, which checks its output"),
    "python bench/scaling.py": Skip(BENCH),
    "python bench/scaling.py --fleet": Skip(BENCH),
    "python bench/scaling.py --data-parallel": Skip(BENCH),
    "python bench/coordination.py": Skip(BENCH),
    "python bench/load.py": Skip(BENCH),
    "python bench/budget.py": Skip(BENCH),
    "python bench/data_parallel.py": Skip(BENCH),
    "python bench/report.py": Skip(BENCH),
}

# The fresh folder's study files, cut down (see the module docstring): (old, new) replacements,
# each of which must match, so a changed study file fails here instead of running long.
SHRUNK: dict[str, tuple[tuple[str, str], ...]] = {
    "demo.toml": (("lr = [1.5e-5, 6e-6, 3e-6, 1e-6]", "lr = [1.5e-5, 6e-6]"),
                  ("batch_size = [64, 32, 16, 8]", "batch_size = [16]"),
                  ("rungs = 5", "rungs = 2"),
                  ("synthetic_n = 1000", "synthetic_n = 48"),
                  ("synthetic_val_n = 400", "synthetic_val_n = 0"),
                  ("synthetic_size = 48", "synthetic_size = 32"),
                  ("head_hidden = 256", "head_hidden = 64")),
    "blog-grid.toml": (("lr = [1e-3, 1e-4, 1e-5, 1e-6]", "lr = [1e-3, 1e-4]"),
                       ("batch_size = [64, 32, 16, 8]", "batch_size = [32]"),
                       ("rungs = 5", "rungs = 2")),
    "variants.toml": (('"model.norm" = ["bn", "gn", "gn-all"]', '"model.norm" = ["bn", "gn"]'),
                      ('"trainer.loss" = ["mse", "huber"]', '"trainer.loss" = ["mse"]'),
                      ("batch_size = [64, 16]", "batch_size = [64]")),
    # the shrunk demo's data size and head; 1 bracket of 2 levels
    "demo-space.toml": (("rungs = 4", "rungs = 2"), ("brackets = 8", "brackets = 1"),
                        ("synthetic_n = 240", "synthetic_n = 48"),
                        ("synthetic_size = 48", "synthetic_size = 32"),
                        ("head_hidden = 256", "head_hidden = 64")),
}
FRESH_FILES = ("bench/demo-curves.csv", "bench/search-surrogate.json")
SEQUENCE_SECONDS = 900  # every line together (about 70 s on 2 CPU cores)  # besides studies/: what the run lines read


# ---- the README's fenced blocks -> commands --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Item:
    line: int  # README line (1-based) where the command starts
    key: str   # the command as written (joined, comment cut), or "python: <!-- marker -->"
    code: str  # what runs: the command, or the Python block's source

    @property
    def id(self) -> str:
        return f"L{self.line}:{self.key}"


def _outside_quotes(text: str):
    """(index, char) of the characters of a shell line that are outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        else:
            yield i, ch


def _cut_comment(line: str) -> str:
    for i, ch in _outside_quotes(line):
        if ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _split_and(command: str) -> list[str]:
    cuts = [i for i, ch in _outside_quotes(command) if ch == "&" and command[i:i + 2] == "&&"]
    parts, start = [], 0
    for i in cuts:
        parts.append(command[start:i])
        start = i + 2
    parts.append(command[start:])
    return [p.strip() for p in parts if p.strip()]


def fenced_blocks(text: str) -> list[tuple[str, int, list[str], str]]:
    """(language, README line of the block's first line, its lines, the <!-- marker --> above)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md line {i + 1}: fenced block never closed"
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = above if re.fullmatch(r"<!--\s*[\w-]+\s*-->", above) else ""
        blocks.append((opening.group(1).lower(), i + 2, lines[i + 1:end], marker))
        i = end + 1
    return blocks


def readme_items(text: str) -> list[Item]:
    """Every command and Python block of the README, in its order."""
    items = []
    for language, first, lines, marker in fenced_blocks(text):
        if language in SH_LANGUAGES:
            pending, start = "", first
            for number, raw in enumerate(lines, start=first):
                line = _cut_comment(raw)
                if not pending:
                    start = number
                if line.endswith("\\"):
                    pending += line[:-1].strip() + " "
                    continue
                command, pending = (pending + line.strip()).strip(), ""
                items += [Item(start, part, part) for part in _split_and(command)]
            assert not pending, f"README.md line {start}: a continuation line ends the block"
        elif language == "python":
            key = f"python: {marker}" if marker else f"python: unmarked block at line {first}"
            items.append(Item(first, key, "\n".join(lines) + "\n"))
        else:
            assert language in SHOWN_LANGUAGES, (
                f"README.md line {first - 1}: a ```{language or '(no language)'} block; this test "
                f"runs {sorted(SH_LANGUAGES)} and python blocks and shows {sorted(SHOWN_LANGUAGES)}: "
                "label the block so that tests/test_readme.py knows whether it runs")
    return items


try:
    ITEMS, README_ERROR = readme_items(README.read_text()), ""
except AssertionError as error:  # reported by test_every_readme_command_is_run_or_skipped...
    ITEMS, README_ERROR = [], str(error)
RUN_ITEMS = [item for item in ITEMS if isinstance(COMMANDS.get(item.key), Run)]


# ---- what the extraction itself must get right ------------------------------------------------------
def test_extraction_joins_continuations_cuts_comments_and_splits_and():
    text = "\n".join([
        "```sh",
        "a --x 1 \\",
        "    --y 'p # q' --z 2   # a comment",
        "# a whole-line comment",
        "b && c \"&&\"  # runs b, then c",
        "```",
        "<!-- name -->",
        "```python",
        "print(1)",
        "```",
        "```toml",
        "x = 1",
        "```",
    ])
    assert [(i.line, i.key) for i in readme_items(text)] == [
        (2, "a --x 1 --y 'p # q' --z 2"), (5, "b"), (5, 'c "&&"'), (9, "python: <!-- name -->")]
    with pytest.raises(AssertionError, match="```text block"):
        readme_items("```text\nsaan-hpo status\n```\n")


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    assert not README_ERROR, README_ERROR
    unknown = [f"README.md line {i.line}: {i.key!r}" for i in ITEMS if i.key not in COMMANDS]
    stale = sorted(set(COMMANDS) - {i.key for i in ITEMS})
    problems = []
    if unknown:
        problems.append("README commands neither run nor skipped by tests/test_readme.py; add each "
                        "to COMMANDS, as Run(writes=...) or Skip(reason):\n  " + "\n  ".join(unknown))
    if stale:
        problems.append("tests/test_readme.py COMMANDS lists commands the README no longer has "
                        "(remove them, or fix the README):\n  " + "\n  ".join(stale))
    assert not problems, "\n".join(problems)
    assert all(s.reason.strip() for s in COMMANDS.values() if isinstance(s, Skip))
    assert any(i.key.startswith("python: ") for i in RUN_ITEMS), "the Python API example runs"


def test_a_line_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    item = Item(1, "sleep", "sleep 60 & echo $!; wait")
    outcome = _run(item, Run(), tmp_path, _environment(), timeout=2)
    assert outcome.returncode is None
    child = int(outcome.stdout.split()[0])
    for _ in range(100):  # killed at once; reaped by init soon after
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


# ---- the sequence, once ---------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    returncode: int | None  # None: timed out
    stdout: str
    stderr: str
    seconds: float
    missing: list[str]
    lost: list[str] = dataclasses.field(default_factory=list)
    check_error: str = ""


def _fresh_folder(folder: Path) -> None:
    shutil.copytree(REPO / "studies", folder / "studies")
    for name in FRESH_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, folder / name)
    for name, replacements in SHRUNK.items():
        path = folder / "studies" / name
        text = path.read_text()
        for old, new in replacements:
            assert text.count(old) == 1, f"studies/{name}: {old!r} (tests/test_readme.py SHRUNK)"
            text = text.replace(old, new)
        path.write_text(text)


def _environment() -> dict[str, str]:
    # The user's own SAAN_HPO_* settings (a storage, a data root, a thread count) must not reach
    # the commands: the README's lines run as on a fresh machine.
    keep = {"SAAN_HPO_NO_PROGRESS"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SAAN_HPO_") or k in keep or k.startswith("SAAN_HPO_TEST_")}
    # `saan-hpo` and `python` of this interpreter's installation, with this checkout's code.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    return env


def _run(item: Item, expect: Run, folder: Path, env: dict[str, str], timeout: float) -> Outcome:
    if item.key.startswith("python: "):
        script = folder / f"readme-line-{item.line}.py"
        script.write_text(item.code)
        argv = [sys.executable, script.name]
    else:
        argv = ["bash", "-c", item.code]
    before = {p: p.stat().st_mtime_ns for pattern in expect.writes for p in folder.glob(pattern)}
    kept = {p: p.stat().st_mtime_ns for pattern in expect.keeps for p in folder.glob(pattern)
            if p.is_file()}
    started = time.monotonic()
    # Its own session, so that a line still running at its timeout is killed with every process
    # it started (a launch's workers also stop when launch dies: README, "Promises").
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        returncode = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a process outside the group holds the pipes
            stdout, stderr = "", "(output lost: a process the line started still holds it)"
    seconds = time.monotonic() - started
    # Written by this line: a non-empty file that is new, or changed while the line ran.
    missing = [pattern for pattern in expect.writes
               if not any(p.is_file() and p.stat().st_size > 0 and before.get(p) != p.stat().st_mtime_ns
                          for p in folder.glob(pattern))]
    outcome = Outcome(returncode, stdout, stderr, seconds, missing)
    if expect.keeps and not kept:
        outcome.lost = [f"nothing to keep: no file matches {list(expect.keeps)} before this line"]
    outcome.lost += [f"{p.relative_to(folder)} ({'changed' if p.exists() else 'deleted'})"
                     for p, mtime in kept.items()
                     if not p.exists() or p.stat().st_mtime_ns != mtime]
    if expect.check and returncode == 0:
        try:
            expect.check(folder, stdout)
        except Exception as error:  # noqa: BLE001 - reported as this line's failure
            outcome.check_error = f"{type(error).__name__}: {error}"
    return outcome


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> dict[Item, Outcome]:
    """Every runnable README line, in the README's order, in one fresh folder; run once."""
    folder = tmp_path_factory.mktemp("readme")
    _fresh_folder(folder)
    env = _environment()
    outcomes = {}
    # One deadline for the whole sequence, below the suite's per-test timeout (setup.cfg), so
    # that a hanging line is reported as that line, not as a pytest-timeout of the fixture.
    deadline = time.monotonic() + SEQUENCE_SECONDS
    for item in RUN_ITEMS:
        left = deadline - time.monotonic()
        if left < 1:
            outcomes[item] = Outcome(None, "", "", 0.0, [], check_error=(
                f"not run: the sequence's {SEQUENCE_SECONDS} s were spent before this line"))
            continue
        outcomes[item] = _run(item, COMMANDS[item.key], folder, env, min(COMMANDS[item.key].timeout, left))
        print(f"README line {item.line}: {outcomes[item].seconds:.1f} s  {item.key}")
    return outcomes


def _tail(text: str, chars: int = 4000) -> str:
    text = text.rstrip()
    return text if len(text) <= chars else "..." + text[-chars:]


@pytest.mark.slow
@pytest.mark.parametrize("item", RUN_ITEMS, ids=[i.id for i in RUN_ITEMS])
def test_readme_line_runs_as_written(readme_run, item):
    outcome = readme_run[item]
    problems = []
    if outcome.returncode is None and not outcome.check_error:
        problems.append(f"still running after {outcome.seconds:.0f} s (killed)")
    elif outcome.returncode != 0:
        problems.append(f"exit {outcome.returncode}")
    if TRACEBACK in outcome.stdout or TRACEBACK in outcome.stderr:
        problems.append("a traceback in its output")
    if outcome.missing:
        problems.append(f"did not write {outcome.missing}")
    if outcome.lost:
        problems.append(f"another study's files did not survive it: {outcome.lost}")
    if outcome.check_error:
        problems.append(outcome.check_error)
    assert not problems, (
        f"README.md line {item.line}: {item.key}\n  " + "; ".join(problems)
        + f" ({outcome.seconds:.1f} s)\n--- stdout (tail) ---\n{_tail(outcome.stdout)}"
        + f"\n--- stderr (tail) ---\n{_tail(outcome.stderr)}")
