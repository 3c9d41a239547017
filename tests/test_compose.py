"""docker-compose.yml and the Dockerfile: valid, and shaped as documented. Building needs a
Docker engine, which CI does not have; `docker compose config` needs only the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from .support.processes import ROOT

COMPOSE_TIMEOUT = 60  # seconds


def _compose() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=COMPOSE_TIMEOUT
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
    return command


MONITORING = ("--profile", "monitoring")


def _config(compose: list[str], *flags: str, profiles: tuple[str, ...] = ()) -> str:
    done = subprocess.run(
        [*compose, "-f", str(ROOT / "docker-compose.yml"), *profiles, "config", *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=COMPOSE_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_compose_file_is_valid_with_db_daemon_emitter_and_named_volumes(compose):
    _config(compose, "--quiet")
    # docker-compose 1.x lists services of every profile; the v2 plugin only the active ones.
    assert {"db", "daemon", "emitter"} <= set(_config(compose, "--services").split())
    assert {"pgdata", "uploads"} <= set(_config(compose, "--volumes").split())


def test_monitoring_profile_runs_prometheus_and_grafana_with_the_deploy_files(compose):
    _config(compose, "--quiet", profiles=MONITORING)
    services = set(_config(compose, "--services", profiles=MONITORING).split())
    assert services == {"db", "daemon", "emitter", "prometheus", "grafana"}
    config = yaml.safe_load(_config(compose, profiles=MONITORING))["services"]
    for name in ("prometheus", "grafana"):
        assert config[name]["profiles"] == ["monitoring"]
        assert "profiles" not in config["daemon"]
    mounts = {
        str(v["source"] if isinstance(v, dict) else v.split(":")[0])
        for name in ("prometheus", "grafana")
        for v in config[name]["volumes"]
    }
    for folder in ("deploy/prometheus", "deploy/grafana/provisioning", "deploy/grafana/dashboards"):
        assert str(ROOT / folder) in mounts, mounts
        assert (ROOT / folder).is_dir()


def test_compose_daemon_waits_for_a_healthy_db_and_migrates_before_serving(compose):
    config = _config(compose)
    assert "condition: service_healthy" in config
    assert "droneshield migrate && droneshield seed && exec droneshield serve" in config
    assert "DRONESHIELD_HOST: 0.0.0.0" in config
    assert "pg_isready" in config


def test_image_is_multi_stage_built_with_uv_and_runs_unprivileged():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", dockerfile, re.MULTILINE)
    assert len(stages) == 2
    assert all(image.endswith("-slim") for image, _ in stages)
    assert "uv sync --frozen --no-dev" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["droneshield"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".data"} <= set(ignored)
