"""One CLI grammar: every option explained, global options anywhere, a live line on a terminal."""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from hpo.cli import COMMANDS, build_parser
from hpo.cli.options import METAVARS
from studyfiles import write_curves, write_study

REPO = Path(__file__).resolve().parent.parent


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_is_built_and_every_option_has_a_sentence_of_help():
    commands = subcommands()
    assert set(commands) == set(COMMANDS)
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"saan-hpo {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{what}: no help"
            assert len(action.help.split()) >= 2, f"{what}: help {action.help!r} is not a sentence"
            takes_value = action.nargs != 0
            if takes_value and not action.choices:
                assert action.metavar in METAVARS, f"{what}: metavar {action.metavar!r}"


def test_reading_commands_accept_the_study_file_or_name():
    for name in ("status", "report", "export", "curves", "table"):
        options = {o for a in subcommands()[name]._actions for o in a.option_strings}
        dests = {a.dest for a in subcommands()[name]._actions}
        assert {"--study", "--storage"} <= options and "study_file" in dests, name


@pytest.mark.parametrize("argv", [["-v", "status", "--study", "x"], ["status", "--study", "x", "-v"],
                                  ["status", "-v", "--study", "x"]])
def test_global_options_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True
    assert build_parser().parse_args(["status", "--study", "x"]).verbose is False


def run_on_a_terminal(argv: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run saan-hpo with stdout and stderr on a pseudo-terminal; (exit code, what it showed)."""
    env = {k: v for k, v in os.environ.items() if k != "SAAN_HPO_NO_PROGRESS"}
    env["PYTHONPATH"] = str(REPO)
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 160 columns
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", *argv], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    shown, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    return code, shown.decode(errors="replace")


@pytest.mark.parametrize("verbose", [False, True])
def test_launch_on_a_terminal_draws_a_progress_line_and_logs_epochs_to_a_file(tmp_path, verbose):
    study = write_study(tmp_path / "blog.toml")
    curves = write_curves(tmp_path / "c.csv", [[0.01 * i + 0.001 * e for e in range(31)]
                                                for i in range(16)])
    argv = ["launch", str(study), "--replay-curves", str(curves), "--replay-epoch-seconds", "0.01"]
    code, shown = run_on_a_terminal(argv + (["-v"] if verbose else []), tmp_path)
    assert code == 0, shown[-3000:]
    assert "80/80 epochs" in shown and "pruned 15" in shown and "rung 5/5" in shown, shown[-3000:]
    assert "winner: trial 15" in shown and "saan-hpo status --study blog" in shown
    log = (tmp_path / "blog-artifacts").parent / "logs" / "launch.log"
    assert "trial 15 epoch 31/31 srcc=0.1800" in log.read_text()
    # Per-epoch lines reach the terminal only with -v; one format (no Optuna "[I ...]" lines).
    assert ("epoch 31/31 srcc=0.1800" in shown) is verbose
    assert "[I 20" not in shown and "[W 20" not in shown


def test_launch_writes_launch_log_each_worker_its_pid_log_and_keeps_stderr_quiet(tmp_path):
    """Off a terminal (as here), without -v: launch's stderr holds no INFO line, the full log
    is in runs/<study>/logs/launch.log (here logs/ beside blog-artifacts/); with -v the
    terminal gets it too. launch's child workers and a worker started by hand each write
    logs/worker-PID.log."""
    import re

    from hpo.service import db
    from studyfiles import study_rows

    curves = write_curves(tmp_path / "c.csv", [[0.01 * i + 0.001 * e for e in range(31)]
                                                for i in range(16)])
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        write_study(folder / "blog.toml", storage=f"sqlite:///{folder / 'study.db'}")
    logs_of = lambda folder: folder / "logs"  # noqa: E731 -- beside <folder>/blog-artifacts

    done = cli_run("launch", one / "blog.toml", "--replay-curves", curves)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    launch_log = logs_of(one) / "launch.log"
    assert f"log {launch_log}" in done.stdout and "winner: trial 15" in done.stdout
    text = launch_log.read_text()
    assert "trial 15 epoch 31/31 srcc=0.1800" in text and "created study 'blog'" in text
    verbose = cli_run("launch", one / "blog.toml", "--replay-curves", curves, "-v")
    assert verbose.returncode == 0 and " INFO hpo." in verbose.stderr, verbose.stderr[-3000:]
    assert launch_log.read_text().startswith(text)  # appended

    done = cli_run("launch", two / "blog.toml", "--workers", "2", "--replay-curves", curves)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    pids = [int(p) for p in re.search(r"workers started \(PIDs (\d+), (\d+)\)", done.stdout).groups()]
    names = {p.name for p in logs_of(two).iterdir()}
    assert names == {"launch.log", *(f"worker-{pid}.log" for pid in pids)}, names
    for pid in pids:
        assert f"attached to study 'blog'" in (logs_of(two) / f"worker-{pid}.log").read_text()

    attached = cli_run("worker", two / "blog.toml", "--replay-curves", curves)  # finished: exits
    assert attached.returncode == 0, attached.stderr[-3000:]
    (row,) = [w for w in study_rows(f"sqlite:///{two / 'study.db'}", db.workers, "blog")
              if w.pid not in pids]
    assert "attached to study 'blog'" in (logs_of(two) / f"worker-{row.pid}.log").read_text()
    assert "attached to study 'blog'" in attached.stderr  # off a terminal: stderr is a log too


def cli_run(*args):
    return subprocess.run([sys.executable, "-m", "hpo.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=Path(str(args[1])).parent.parent)


@pytest.mark.parametrize("verbose", [False, True])
def test_third_party_messages_only_from_warnings_unless_verbose(capsys, verbose):
    import logging

    from hpo.cli.logs import configure_logging

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        configure_logging(verbose)
        for name in ("choreographer", "kaleido", "optuna.storages"):
            logging.getLogger(name).info("%s chatter", name)
            logging.getLogger(name).warning("%s warning", name)
        logging.getLogger("hpo.service.worker").info("own info")
        err = capsys.readouterr().err
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert "own info" in err and "choreographer warning" in err and "kaleido warning" in err
    assert ("choreographer chatter" in err) is verbose and ("kaleido chatter" in err) is verbose
    assert ("optuna.storages chatter" in err) is verbose
    # One format: ours, also for Optuna's records.
    assert " WARNING optuna.storages: optuna.storages warning" in err


def test_status_leader_is_the_trial_furthest_along_then_the_best():
    from types import SimpleNamespace as Row

    from hpo.readers.status import leader

    def row(number, state, epochs, value):
        return Row(number=number, state=state, epochs_done=epochs, last_value=value)

    trials = [row(0, "pruned", 3, 0.99), row(1, "paused", 7, 0.50), row(2, "running", 7, 0.70),
              row(3, "running", 5, 0.95), row(4, "waiting", 0, None)]
    assert leader(trials, "maximize").number == 2  # furthest along (7 epochs), then the best there
    assert leader(trials, "minimize").number == 1
    assert leader([row(0, "pruned", 1, 0.1), row(1, "waiting", 0, None)], "maximize") is None
    tie = [row(5, "complete", 31, 0.9), row(3, "complete", 31, 0.9)]
    assert leader(tie, "maximize").number == 3  # the lower number, as in a rung decision
