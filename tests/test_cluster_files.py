"""docker/slurm/workers.sbatch and docker/k8s/saan-hpo.yaml have the shape a fleet relies on.

No cluster runs here: the sbatch script is checked by ``bash -n`` and its #SBATCH lines, the
manifest as YAML. What matters: GPU workers attach to PostgreSQL with no study file (so they
serve every study), a password never appears in a file, and a stop lets the epoch in flight finish.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
SBATCH = DOCKER / "slurm" / "workers.sbatch"
MANIFEST = DOCKER / "k8s" / "saan-hpo.yaml"
PASSWORD_IN_URL = re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^/@\s:]+:[^@\s]+@")


# ---- SLURM ----------------------------------------------------------------------------------
def sbatch_options() -> dict[str, str]:
    options = {}
    for line in SBATCH.read_text().splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH "):].strip().partition("=")
            options[key] = value
    return options


def test_sbatch_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sbatch_asks_for_a_job_array_of_one_gpu_tasks():
    options = sbatch_options()
    assert re.fullmatch(r"\d+-\d+(%\d+)?", options["--array"])
    assert options["--gres"] == "gpu:1" and options["--ntasks"] == "1"


def test_sbatch_gets_sigterm_well_before_the_time_limit():
    signal, _, seconds = sbatch_options()["--signal"].partition("@")
    # TERM to the job steps (no "B:" prefix: the worker, not the batch shell), early enough
    # for an epoch to finish.
    assert signal == "TERM" and int(seconds) >= 600


def test_sbatch_runs_the_worker_as_the_job_step_without_a_study_file():
    commands = [line.strip() for line in SBATCH.read_text().splitlines()
                if line.strip().startswith("srun ")]
    assert len(commands) == 1
    words = shlex.split(commands[0])
    worker = words[words.index("saan-hpo"):]
    assert worker[:2] == ["saan-hpo", "worker"]
    assert not [w for w in worker if w.endswith(".toml")], "a fleet worker takes no study file"
    text = SBATCH.read_text()
    for name in ("SAAN_HPO_STORAGE", "SAAN_HPO_DATA_ROOT", "SAAN_HPO_ARTIFACTS"):
        assert f"${{{name}:?" in text, f"{name} must be required"
    assert not PASSWORD_IN_URL.search(text)
    assert "scancel --signal=TERM" in text


# ---- Kubernetes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest() -> dict[str, dict]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def pod_spec(document: dict) -> dict:
    return document["spec"]["template"]["spec"]


def test_postgres_keeps_its_data_on_a_persistent_volume(manifest):
    postgres = manifest["StatefulSet/postgres"]
    spec = pod_spec(postgres)
    container = spec["containers"][0]
    assert container["image"].startswith("postgres:15")
    assert "pg_isready" in container["readinessProbe"]["exec"]["command"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/postgresql/data")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert f"PersistentVolumeClaim/{volume['persistentVolumeClaim']['claimName']}" in manifest
    assert manifest["Service/postgres"]["spec"]["selector"] == postgres["spec"]["selector"]["matchLabels"]


def test_workers_take_one_gpu_each_and_serve_every_study(manifest):
    spec = pod_spec(manifest["Deployment/saan-hpo-worker"])
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "command" not in container, "the image's ENTRYPOINT is saan-hpo worker"
    args = container["args"]
    assert not [a for a in args if a.endswith(".toml")]
    assert args[args.index("--storage") + 1].startswith("postgresql+psycopg://saan_hpo@postgres")
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "saan-hpo-postgres"
    for name in ("SAAN_HPO_DATA_ROOT", "SAAN_HPO_ARTIFACTS"):
        mounted = {m["mountPath"] for m in container["volumeMounts"]}
        assert env[name]["value"] in mounted
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_a_stopped_worker_pod_has_time_to_finish_its_epoch(manifest):
    spec = pod_spec(manifest["Deployment/saan-hpo-worker"])
    assert spec["terminationGracePeriodSeconds"] >= 600
    # SIGTERM must reach the worker at once: a preStop hook would only spend the grace period.
    assert "lifecycle" not in spec["containers"][0]


def test_the_studies_job_creates_them_without_workers(manifest):
    job = pod_spec(manifest["Job/saan-hpo-studies"])
    container = job["containers"][0]
    assert container["command"] == ["saan-hpo", "launch"]
    args = container["args"]
    assert args[args.index("--workers") + 1] == "0"
    studies = Path(__file__).resolve().parents[1] / "studies"
    for name in (Path(a).name for a in args if a.endswith(".toml")):
        assert (studies / name).is_file(), name


def test_no_password_in_the_manifest(manifest):
    assert not PASSWORD_IN_URL.search(MANIFEST.read_text())
    for document in manifest.values():
        if document["kind"] == "Secret":
            pytest.fail("a Secret with a literal password is in the manifest")
        spec = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            for env in container.get("env", []):
                if "PASSWORD" in env["name"]:
                    assert "valueFrom" in env and "value" not in env, env["name"]
