"""docker-compose.yml and the Dockerfile: valid, and shaped as documented. Building needs a
Docker engine, which CI does not have; `docker compose config` needs only the CLI (`.ci/run`
installs Debian's docker-compose where it can). The `haproxy` profile's balancer is checked
with the real HAProxy binary against the environment Compose gives it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from .support.balancer import CONFIG, HAPROXY
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


def _config(compose: list[str], *flags: str, profile: str | None = None, **variables: str) -> str:
    """`compose config` (with `flags`, the profile, and `variables` set in its environment)."""
    profiles = ["--profile", profile] if profile else []
    done = subprocess.run(
        [*compose, *profiles, "-f", str(ROOT / "docker-compose.yml"), "config", *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **variables},
        timeout=COMPOSE_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_compose_file_is_valid_with_db_daemon_emitter_and_named_volumes(compose):
    _config(compose, "--quiet")
    # docker-compose 1.x lists every service here; the plugin only those of active profiles.
    assert {"db", "daemon", "emitter"} <= set(_config(compose, "--services").split())
    assert {"pgdata", "uploads"} <= set(_config(compose, "--volumes").split())


def test_monitoring_profile_runs_prometheus_and_grafana_with_the_deploy_files(compose):
    _config(compose, "--quiet", profile="monitoring")
    services = set(_config(compose, "--services", profile="monitoring").split())
    assert {"db", "daemon", "emitter", "prometheus", "grafana"} <= services
    config = yaml.safe_load(_config(compose, profile="monitoring"))["services"]
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


def _service(config: str, name: str) -> str:
    found = re.search(rf"^  {name}:\n((?:    .*\n|  - .*\n)+)", config, re.MULTILINE)
    assert found, f"no service {name!r} in:\n{config}"
    return found.group(1)


def test_haproxy_profile_balances_two_daemon_replicas_with_the_shipped_config(compose):
    config = _config(compose, profile="haproxy")
    assert {"daemon", "daemon-2", "haproxy"} <= set(
        _config(compose, "--services", profile="haproxy").split()
    )
    replica = _service(config, "daemon-2")
    assert "droneshield migrate && droneshield seed && exec droneshield serve" in replica
    assert "DRONESHIELD_HOST: 0.0.0.0" in replica
    balancer = _service(config, "haproxy")
    assert f"{CONFIG}:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer
    assert "image: haproxy:2.6" in balancer
    # On this machine's loopback (short form: docker-compose 1.x; long form: docker compose v2).
    assert re.search(
        r"127\.0\.0\.1:50052:50051|host_ip: 127\.0\.0\.1(\s+\w+: \S+)*\s+published: \W?50052",
        balancer,
    )
    environment = dict(
        (name, value.strip("'"))
        for name, value in re.findall(r"^      (DRONESHIELD_\w+): (.*)$", balancer, re.MULTILINE)
    )
    # Compose provides every variable the configuration uses, and they name the replicas.
    used = set(re.findall(r"\$\{(\w+)\}", CONFIG.read_text()))
    assert used == set(environment)
    assert environment["DRONESHIELD_DAEMON_1"] == "daemon:50051"
    assert environment["DRONESHIELD_DAEMON_2"] == "daemon-2:50051"
    if HAPROXY is None:
        pytest.skip("haproxy is not installed: the configuration itself is not checked")
    # The replicas' names resolve only inside Compose's network; `init-addr` lets HAProxy
    # accept them unresolved, as it must when it starts before them.
    checked = subprocess.run(
        [HAPROXY, "-c", "-f", str(CONFIG)],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=COMPOSE_TIMEOUT,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


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


def test_compose_publishes_on_loopback_and_allows_keyless_only_there(compose):
    config = _config(compose)
    assert "127.0.0.1:8000:8000" in config
    assert "127.0.0.1:50051:50051" in config
    entry = re.search(r"case .*?esac;", config, re.DOTALL)
    assert entry is not None
    script = (
        entry.group(0).replace("$$", "$").replace("\n", " ") + ' echo "$DRONESHIELD_ALLOW_INSECURE"'
    )
    for publish, allowed in (("127.0.0.1", "1"), ("0.0.0.0", "")):
        env = {"DRONESHIELD_PUBLISH_HOST": publish, "DRONESHIELD_ALLOW_INSECURE": ""}
        done = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == allowed


def _published_on(service: dict[str, object]) -> set[str]:
    """The host addresses a service publishes its ports on ("" for every interface); the long
    form of docker compose v2 or the short one of docker-compose 1.x."""
    hosts = set()
    for port in service.get("ports", []):  # type: ignore[attr-defined]
        if isinstance(port, dict):
            hosts.add(port.get("host_ip", ""))
        else:
            parts = str(port).split(":")
            hosts.add(parts[0] if len(parts) == 3 else "")
    return hosts


@pytest.mark.parametrize("profile", [None, "monitoring", "haproxy", "nats"])
def test_every_profile_publishes_on_loopback_only(compose, profile):
    services = yaml.safe_load(_config(compose, profile=profile))["services"]
    for name, service in services.items():
        assert _published_on(service) <= {"127.0.0.1"}, name


def test_nats_profile_runs_jetstream_and_two_daemons_relaying_over_it(compose):
    relay_url = "nats://nats:4222"
    config = _config(compose, profile="nats", DRONESHIELD_RELAY_URL=relay_url)
    services = yaml.safe_load(config)["services"]
    assert {"db", "daemon", "daemon-2", "nats", "emitter"} <= set(services)
    server = services["nats"]
    assert server["profiles"] == ["nats"]
    assert "--jetstream" in server["command"]
    assert any("natsdata" in str(v) for v in server["volumes"])  # the stream outlives it
    for name in ("daemon", "daemon-2"):
        environment = services[name]["environment"]
        assert environment["DRONESHIELD_RELAY_URL"] == relay_url
        assert not environment["DRONESHIELD_RELAY_STREAM"]  # the database's own stream
    # Without the variable the daemons stay on NOTIFY (an empty variable unsets the setting).
    plain = yaml.safe_load(_config(compose))["services"]["daemon"]["environment"]
    assert not plain["DRONESHIELD_RELAY_URL"]
