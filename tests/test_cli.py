"""The command line as a person meets it: each common failure is one line on stderr with the
right exit code and no traceback (unless asked for), and each command's help lists its own
flags. Every case runs `python -m droneshield` as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from droneshield import config

from .support.processes import free_port, spawn

CLI = (sys.executable, "-m", "droneshield")


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DRONESHIELD_") and k != "DATABASE_URL"
    }
    return {**env, **extra}


async def _run(args: Sequence[str], **env: str) -> subprocess.CompletedProcess[str]:
    with trio.fail_after(60):
        done = await trio.run_process(
            [*CLI, *args], env=_env(**env), capture_stdout=True, capture_stderr=True, check=False
        )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def _one_line(done: subprocess.CompletedProcess[str], code: int, expected: str) -> None:
    """The process failed with `code`, and its last words are exactly one line: `expected`."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == expected, done.stderr
    assert sum(line.startswith("droneshield") for line in lines) == 1, done.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _user(url: str, user: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    login = user if password is None else f"{user}:{password}"
    # The embedded server is reached by its socket directory (`?host=…`): no host in the netloc.
    where = f"{parts.hostname}:{parts.port or 5432}" if parts.hostname else ""
    return urlunsplit(parts._replace(netloc=f"{login}@{where}"))


@pytest.mark.parametrize(
    ("server", "flags"),
    [
        ("HTTP", ("--http-port", "{taken}", "--grpc-port", "0")),
        ("gRPC", ("--grpc-port", "{taken}", "--http-port", "0")),
    ],
)
async def test_serve_on_a_taken_port_says_which_server_and_address(
    database_url, taken_port, server, flags
):
    args = ["serve", *(f.format(taken=taken_port) for f in flags)]
    done = await _run(args, DATABASE_URL=database_url)
    _one_line(done, 1, f"droneshield: {server} port 127.0.0.1:{taken_port} is in use")


@pytest.mark.parametrize("command", ["serve", "dev"])
async def test_a_taken_port_is_said_before_any_database_is_reached_or_started(
    taken_port, tmp_path, command
):
    args = [command, "--http-port", str(taken_port), "--grpc-port", "0"]
    given = await _run(args, DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing")
    embedded = await _run(args, DRONESHIELD_DATA_DIR=str(tmp_path))
    for done in (given, embedded):
        _one_line(done, 1, f"droneshield: HTTP port 127.0.0.1:{taken_port} is in use")
    assert list(tmp_path.iterdir()) == []  # no embedded server was made


@pytest.mark.parametrize("command", [("serve", "--workers", "2"), ("dev",)])
async def test_supervisors_on_a_taken_port_say_so_before_starting_children(
    database_url, taken_port, command
):
    args = [*command, "--http-port", str(taken_port), "--grpc-port", str(free_port())]
    done = await _run(args, DATABASE_URL=database_url)
    _one_line(done, 1, f"droneshield: HTTP port 127.0.0.1:{taken_port} is in use")


async def test_unreachable_nats_relay_fails_the_start_in_one_line_without_its_password(
    database_url,
):
    port = free_port()
    done = await _run(
        ["serve", "--http-port", "0", "--grpc-port", "0"],
        DATABASE_URL=database_url,
        DRONESHIELD_RELAY_URL=f"nats://relay:hunter2@127.0.0.1:{port}",
    )
    _one_line(
        done,
        1,
        f"droneshield: NATS at 127.0.0.1:{port} did not answer within 5 s ([Errno 111] "
        f"Connect call failed ('127.0.0.1', {port}))",
    )
    assert "hunter2" not in done.stderr


async def test_unreachable_database_is_named_with_its_password_masked():
    url = f"postgresql://fleet:hunter2@127.0.0.1:{free_port()}/fleet"
    done = await _run(["migrate"], DATABASE_URL=url)
    masked = url.replace("hunter2", "***")
    _one_line(
        done,
        1,
        f"droneshield: cannot reach the database at {masked}: Connect call "
        f"failed ('127.0.0.1', {urlsplit(url).port})",
    )
    assert "hunter2" not in done.stderr


async def test_refused_login_is_one_line(database_url):
    url = _user(database_url, "nobody_here", "hunter2")
    done = await _run(["seed"], DATABASE_URL=url)
    masked = url.replace("hunter2", "***")
    _one_line(
        done,
        1,
        f"droneshield: the database at {masked} refused the login: "
        'role "nobody_here" does not exist',
    )


async def test_seed_before_migrate_says_to_migrate(empty_database_url):
    done = await _run(["seed", "--count", "10"], DATABASE_URL=empty_database_url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith(": run droneshield migrate")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("seed", "--count", "-5"),
            "droneshield seed: argument --count: -5 must be 0 or more "
            "(see droneshield seed --help)",
        ),
        (
            ("serve", "--http-port", "70000"),
            "droneshield serve: argument --http-port: 70000 must be a port number, 0 to 65535 "
            "(0 picks a free one) (see droneshield serve --help)",
        ),
        (
            ("serve", "--history-retention", "inf"),
            "droneshield serve: argument --history-retention: inf must be positive seconds, at "
            "most 315,360,000 (ten years) (see droneshield serve --help)",
        ),
        (
            ("serve", "--send-timeout", "-1"),
            "droneshield serve: argument --send-timeout: -1 must be positive seconds, at most "
            "4,294,967 (TCP_USER_TIMEOUT's limit) (see droneshield serve --help)",
        ),
        (
            ("serve", "--ws-ping-interval", "0"),
            "droneshield serve: argument --ws-ping-interval: 0 must be positive seconds, at most "
            "315,360,000 (ten years) (see droneshield serve --help)",
        ),
        (
            ("serve", "--offline-after", "nan"),
            "droneshield serve: argument --offline-after: nan must be positive seconds, at most "
            "315,360,000 (ten years) (see droneshield serve --help)",
        ),
        (
            ("serve", "--gc-young-threshold", "-3"),
            "droneshield serve: argument --gc-young-threshold: -3 must be 0 (Python's defaults) "
            "or a positive count of allocations (see droneshield serve --help)",
        ),
        (
            ("seed", "--http-port", "8000"),
            "droneshield: unrecognized arguments: --http-port 8000 (see droneshield --help)",
        ),
    ],
)
async def test_invalid_values_are_refused_by_the_parser_with_the_rule(args, line):
    _one_line(await _run(args), 2, line)


async def test_an_invalid_variable_is_named():
    done = await _run(["migrate"], DRONESHIELD_LOG_LEVEL="loud")
    _one_line(
        done,
        2,
        "droneshield: DRONESHIELD_LOG_LEVEL='loud': log_level must be one of debug, info, "
        "warning, error, critical",
    )


async def test_debug_shows_the_traceback_too():
    url = f"postgresql://fleet@127.0.0.1:{free_port()}/fleet"
    done = await _run(["migrate", "--debug"], DATABASE_URL=url)
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("droneshield: cannot reach")


async def test_serve_beyond_loopback_without_keys_is_refused_unless_told_it_is_insecure():
    done = await _run(["serve", "--host", "0.0.0.0", "--grpc-token", "t"])
    _one_line(
        done,
        2,
        "droneshield: refusing to serve on 0.0.0.0 where anyone could upload releases (no "
        "DRONESHIELD_API_KEY): set the key(s), bind 127.0.0.1, or set "
        "DRONESHIELD_ALLOW_INSECURE=1 to accept it",
    )


@pytest.mark.parametrize(
    ("host", "keys", "allow", "open_to"),
    [
        ("127.0.0.1", {}, False, 0),
        ("::1", {}, False, 0),
        ("localhost", {}, False, 0),
        ("0.0.0.0", {}, False, 2),
        ("0.0.0.0", {"api_key": "k"}, False, 1),
        ("0.0.0.0", {"api_key": "k", "grpc_token": "t"}, False, 0),
        ("10.0.0.5", {}, True, 0),
    ],
)
def test_what_a_start_would_open_to_the_network(host, keys, allow, open_to):
    settings = config.Settings(host=host, allow_insecure=allow, **keys)
    assert len(config.open_to_network(settings)) == open_to


async def test_each_command_lists_only_its_own_flags_with_defaults_and_variables():
    seed = (await _run(["seed", "--help"])).stdout
    migrate = (await _run(["migrate", "--help"])).stdout
    serve = (await _run(["serve", "--help"])).stdout
    assert "--count" in seed
    assert "env DRONESHIELD_SEED_COUNT" in " ".join(seed.split())
    assert "default 100" in " ".join(seed.split())
    for text in (seed, migrate):
        assert "--database-url" in text
        assert "--http-port" not in text
        assert "--api-key" not in text
    assert "--count" not in migrate
    assert "--http-port" in serve
    assert "default 8000; env DRONESHIELD_HTTP_PORT" in " ".join(serve.split())


async def test_emitter_help_shows_defaults_and_no_secret_from_the_environment():
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "emitter", "compat", "--help"],
            env=_env(DRONESHIELD_GRPC_TOKEN="tok-3f9a"),
            capture_stdout=True,
        )
    text = " ".join(done.stdout.decode().split())
    assert "seconds between reports (default: 5.0)" in text
    assert "tok-3f9a" not in text


# Run as `droneshield serve` would be, then list what was imported once the daemon has stopped.
_SERVE_AND_LIST_MODULES = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('imported:', *sorted(sys.modules), flush=True))\n"
    "from droneshield.cli import main\n"
    "sys.exit(main(['serve']))\n"
)
# What `serve` must not pay for at start: other commands' modules, the webhook client (made at
# the first delivery; httpx imports rich and click for its own CLI), the NATS client (with
# DRONESHIELD_RELAY_URL only).
NOT_FOR_SERVING = (
    "droneshield.devrun",
    "droneshield.progress",
    "droneshield.sensor_import",
    "httpx",
    "rich",
    "nats",
)


async def test_serve_imports_only_what_serving_needs(database_url, tmp_path):
    env = _env(
        DATABASE_URL=database_url,
        DRONESHIELD_DATA_DIR=str(tmp_path),
        DRONESHIELD_HTTP_PORT="0",
        DRONESHIELD_GRPC_PORT="0",
    )
    with trio.fail_after(60):
        async with spawn([sys.executable, "-c", _SERVE_AND_LIST_MODULES], env=env) as child:
            await child.wait_for("droneshield ready")
            assert await child.stop() == 0, child.output()
            line = await child.wait_for("imported: ")
    imported = set(line.split()[1:])
    assert "droneshield.daemon" in imported  # it did serve
    unwanted = {m for m in imported for n in NOT_FOR_SERVING if m == n or m.startswith(f"{n}.")}
    assert unwanted == set()
