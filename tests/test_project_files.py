"""Project files that must agree with each other: the test command, the suite's timeout."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = re.compile(r"^python -m pytest[^\n|]*?(?= *\|\||$)", re.M)


def test_ci_runs_exactly_the_readme_test_command():
    readme = TEST_COMMAND.findall((ROOT / "README.md").read_text())
    ci = TEST_COMMAND.findall((ROOT / ".ci" / "run").read_text())
    assert readme and ci, (readme, ci)
    assert set(readme) == set(ci) == {"python -m pytest -q -rs --durations=20"}, (readme, ci)


def test_suite_timeout_is_above_every_tests_own_limit():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    suite = int(config["tool:pytest"]["timeout"])
    own = [int(n) for path in (ROOT / "tests").glob("*.py")
           for n in re.findall(r"\btimeout=(\d+)", path.read_text())]
    assert own and suite > max(own), (suite, max(own))
