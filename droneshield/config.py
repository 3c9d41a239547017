"""Settings: one frozen dataclass, built once in the CLI from DRONESHIELD_* env vars and flags.

Nothing below the CLI reads the environment; settings are passed down explicitly so tests can
build a daemon with any combination without touching os.environ.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .targets import AllowList

HTTP_PORT_DEFAULT: Final = 8000
GRPC_PORT_DEFAULT: Final = 50051
HOST_DEFAULT: Final = "127.0.0.1"
OFFLINE_AFTER_DEFAULT: Final = 30.0  # seconds
YOUNG_THRESHOLD_DEFAULT: Final = 10_000  # allocations between young collections (Python: 700)
WHEEL_RESOLUTION_DEFAULT: Final = 0.25  # seconds: offline at most this much after offline_after
SWEEP_INTERVAL_DEFAULT: Final = 60.0  # seconds
EVENT_RETENTION_DEFAULT: Final = 30 * 86400.0  # seconds (30 days)
HISTORY_RETENTION_DEFAULT: Final = 30 * 86400.0  # seconds (30 days) of fleet_history samples
ACK_TIMEOUT_DEFAULT: Final = 10.0  # seconds a report may wait for its commit
BATCH_MAX_DEFAULT: Final = 2000  # reports per group commit
QUEUE_SIZE_DEFAULT: Final = 20000  # reports buffered before callers wait
WRITER_LANES_DEFAULT: Final = 2  # connections committing reports side by side
POOL_SIZE_DEFAULT: Final = 4  # connections: the writer's lanes and everything else
SHUTDOWN_GRACE_DEFAULT: Final = 3.0  # seconds to drain in-flight reports on shutdown
MAX_UPLOAD_BYTES_DEFAULT: Final = 100 * 1024 * 1024  # bytes per file
BODY_TIMEOUT_DEFAULT: Final = 300.0  # seconds a request body (an upload) may take to arrive
SEED_COUNT_DEFAULT: Final = 100  # sensors
WS_PING_INTERVAL_DEFAULT: Final = 15.0  # seconds
WS_TIMEOUT_DEFAULT: Final = 45.0  # seconds
SEND_TIMEOUT_DEFAULT: Final = 15.0  # seconds
WORKERS_DEFAULT: Final = 1  # daemon processes sharing the ports
GRPC_MAX_MESSAGE_BYTES_DEFAULT: Final = 4 * 1024 * 1024  # bytes, gRPC's own default
GRPC_MAX_STREAMS_DEFAULT: Final = 100  # concurrent HTTP/2 streams per gRPC connection
HTTP_KEEP_ALIVE_TIMEOUT_DEFAULT: Final = 5.0  # seconds an HTTP connection may wait for a request
GRPC_MAX_CONNECTIONS_DEFAULT: Final = 10_000  # open gRPC connections (keep below `ulimit -n`)
GRPC_BUDGET_WINDOW_DEFAULT: Final = 10.0  # seconds over which frame budgets are counted
GRPC_MAX_RESETS_DEFAULT: Final = 200  # stream resets per connection per window
GRPC_MAX_PINGS_DEFAULT: Final = 1000  # PING frames per connection per window
GRPC_MAX_SETTINGS_DEFAULT: Final = 100  # SETTINGS frames per connection per window
GRPC_IDLE_TIMEOUT_DEFAULT: Final = 300.0  # seconds a gRPC connection may have no call open
GRPC_HANDSHAKE_TIMEOUT_DEFAULT: Final = 10.0  # seconds to complete the HTTP/2 preface
GRPC_BUDGET_PENALTY_DEFAULT: Final = 10.0  # seconds an address is refused after a broken budget
HTTP_MAX_CONNECTIONS_DEFAULT: Final = 10_000  # open HTTP connections (keep below `ulimit -n`)
# Per client address (a NAT or a gateway is one): open at once, and new ones per second.
MAX_CONNECTIONS_PER_ADDRESS_DEFAULT: Final = 1000
CONNECTION_RATE_PER_ADDRESS_DEFAULT: Final = 200
GRPC_MAX_HEALTH_CALLS_DEFAULT: Final = 1000  # health calls (Watch streams) open at once
MAX_UPLOAD_PARTS_DEFAULT: Final = 64  # multipart parts per upload request
WS_MAX_MESSAGE_BYTES_DEFAULT: Final = 256 * 1024  # bytes per WebSocket client message
WS_MAX_SERIALS_DEFAULT: Final = 1000  # sensors one WebSocket client may subscribe to
WEBHOOK_RETRY_FOR_DEFAULT: Final = 86400.0  # seconds an event is retried before it is failed
WEBHOOK_TIMEOUT_DEFAULT: Final = 10.0  # seconds one webhook POST may take
WEBHOOK_RETENTION_DEFAULT: Final = 7 * 86400.0  # seconds delivered/failed outbox rows are kept
WEBHOOK_POLL_DEFAULT: Final = 10.0  # seconds between the dispatcher's looks when nothing rang


@dataclass(frozen=True)
class Settings:
    """Everything the daemon can be told. Each field maps to `DRONESHIELD_<NAME>` (or the
    field's `env` metadata) and to the `--<name>` flag of `droneshield serve`."""

    database_url: str | None = field(
        default=None,
        metadata={"env": "DATABASE_URL", "help": "PostgreSQL URL; unset: embedded PostgreSQL"},
    )
    data_dir: Path = field(
        default=Path(".data"),
        metadata={"help": "uploads and the embedded database live here"},
    )
    host: str = field(default=HOST_DEFAULT, metadata={"help": "address to bind both servers"})
    http_port: int = field(default=HTTP_PORT_DEFAULT, metadata={"help": "HTTP/WebSocket port"})
    grpc_port: int = field(default=GRPC_PORT_DEFAULT, metadata={"help": "gRPC port"})
    offline_after: float = field(
        default=OFFLINE_AFTER_DEFAULT,
        metadata={"help": "seconds without a report before a sensor is offline"},
    )
    wheel_resolution: float = field(
        default=WHEEL_RESOLUTION_DEFAULT,
        metadata={"help": "seconds per timing-wheel slot (offline fires at most this late)"},
    )
    sweep_interval: float = field(
        default=SWEEP_INTERVAL_DEFAULT,
        metadata={"help": "seconds between safety sweeps for sensors no instance tracks"},
    )
    event_retention: float = field(
        default=EVENT_RETENTION_DEFAULT,
        metadata={
            "help": "seconds sensor_event rows are kept, and a version never uploaded that no "
            "sensor reports any more"
        },
    )
    history_retention: float = field(
        default=HISTORY_RETENTION_DEFAULT,
        metadata={"help": "seconds fleet history samples (one a minute) are kept"},
    )
    ack_timeout: float = field(
        default=ACK_TIMEOUT_DEFAULT,
        metadata={"help": "seconds a report waits for its commit before UNAVAILABLE"},
    )
    batch_max: int = field(default=BATCH_MAX_DEFAULT, metadata={"help": "reports per commit"})
    queue_size: int = field(
        default=QUEUE_SIZE_DEFAULT,
        metadata={"help": "reports buffered before callers wait (backpressure)"},
    )
    writer_lanes: int = field(
        default=WRITER_LANES_DEFAULT,
        metadata={"help": "writer lanes: connections committing reports side by side"},
    )
    pool_size: int = field(
        default=POOL_SIZE_DEFAULT,
        metadata={
            "help": "database connections (each writer lane keeps one; the writer's side lane "
            "and the rest need one more each, at least); "
            "listings open pool_size - writer_lanes more"
        },
    )
    shutdown_grace: float = field(
        default=SHUTDOWN_GRACE_DEFAULT,
        metadata={"help": "seconds to finish in-flight work on shutdown"},
    )
    max_upload_bytes: int = field(
        default=MAX_UPLOAD_BYTES_DEFAULT, metadata={"help": "largest accepted release file"}
    )
    body_timeout: float = field(
        default=BODY_TIMEOUT_DEFAULT,
        metadata={
            "help": "seconds a request body (an upload) may take to arrive, and a gRPC "
            "message once its length prefix has"
        },
    )
    api_key: str | None = field(
        default=None, metadata={"help": "bearer key required for writes; unset: writes open"}
    )
    seed_count: int = field(
        default=SEED_COUNT_DEFAULT, metadata={"help": "sensors `seed` and `just dev` ensure exist"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})
    gc_young_threshold: int = field(
        default=YOUNG_THRESHOLD_DEFAULT,
        metadata={
            "help": "allocations between young garbage collections, with start-up's objects "
            "frozen out of full collections; 0: Python's defaults, nothing frozen"
        },
    )
    ws_ping_interval: float = field(
        default=WS_PING_INTERVAL_DEFAULT,
        metadata={"help": "seconds between keep-alive pings to each WebSocket client"},
    )
    ws_timeout: float = field(
        default=WS_TIMEOUT_DEFAULT,
        metadata={
            "help": "seconds a WebSocket client may leave pings unanswered before it is dropped"
        },
    )
    send_timeout: float = field(
        default=SEND_TIMEOUT_DEFAULT,
        metadata={
            "help": "seconds data sent to an HTTP/WebSocket client may stay unacknowledged "
            "before its connection is dropped (TCP_USER_TIMEOUT)"
        },
    )
    relay_url: str | None = field(
        default=None,
        metadata={
            "help": "nats://host:port of a NATS JetStream server that relays changes between "
            "daemons; unset: PostgreSQL NOTIFY"
        },
    )
    relay_stream: str | None = field(
        default=None,
        metadata={
            "help": "the JetStream stream (and subject prefix) this deployment's daemons relay "
            "on; deployments sharing a NATS server need different ones. Unset: "
            "DRONESHIELD_RELAY_<database name>"
        },
    )
    workers: int = field(
        default=WORKERS_DEFAULT,
        metadata={"help": "daemon processes sharing the gRPC and HTTP ports (SO_REUSEPORT)"},
    )
    grpc_token: str | None = field(
        default=None,
        metadata={"help": "bearer token reports must carry (gRPC and POST /reports); unset: open"},
    )
    tls_cert: Path | None = field(
        default=None,
        metadata={"help": "PEM certificate chain; with tls_key, both servers speak TLS only"},
    )
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key of tls_cert"})
    grpc_client_ca: Path | None = field(
        default=None,
        metadata={"help": "PEM CA bundle; gRPC clients must present a certificate it signed"},
    )
    grpc_max_message_bytes: int = field(
        default=GRPC_MAX_MESSAGE_BYTES_DEFAULT,
        metadata={"help": "largest gRPC request message (RESOURCE_EXHAUSTED beyond)"},
    )
    grpc_max_streams: int = field(
        default=GRPC_MAX_STREAMS_DEFAULT,
        metadata={"help": "concurrent calls (HTTP/2 streams) per gRPC connection"},
    )
    http_keep_alive_timeout: float = field(
        default=HTTP_KEEP_ALIVE_TIMEOUT_DEFAULT,
        metadata={"help": "seconds an idle HTTP/1.1 connection is kept open for another request"},
    )
    grpc_max_connections: int = field(
        default=GRPC_MAX_CONNECTIONS_DEFAULT,
        metadata={"help": "gRPC connections open at once (further ones are closed at once)"},
    )
    grpc_max_connections_per_address: int = field(
        default=MAX_CONNECTIONS_PER_ADDRESS_DEFAULT,
        metadata={"help": "gRPC connections open at once from one client address (or IPv6 /64)"},
    )
    grpc_connection_rate_per_address: int = field(
        default=CONNECTION_RATE_PER_ADDRESS_DEFAULT,
        metadata={"help": "new gRPC connections per second from one client address"},
    )
    grpc_budget_penalty: float = field(
        default=GRPC_BUDGET_PENALTY_DEFAULT,
        metadata={
            "help": "seconds new gRPC connections from an address are refused after one of "
            "its connections broke a frame budget (0: never)"
        },
    )
    http_max_connections: int = field(
        default=HTTP_MAX_CONNECTIONS_DEFAULT,
        metadata={"help": "HTTP connections open at once (further ones are closed at once)"},
    )
    http_max_connections_per_address: int = field(
        default=MAX_CONNECTIONS_PER_ADDRESS_DEFAULT,
        metadata={"help": "HTTP connections open at once from one client address (or IPv6 /64)"},
    )
    http_connection_rate_per_address: int = field(
        default=CONNECTION_RATE_PER_ADDRESS_DEFAULT,
        metadata={"help": "new HTTP connections per second from one client address"},
    )
    grpc_budget_window: float = field(
        default=GRPC_BUDGET_WINDOW_DEFAULT,
        metadata={"help": "seconds over which a gRPC connection's frame budgets are counted"},
    )
    grpc_max_resets: int = field(
        default=GRPC_MAX_RESETS_DEFAULT,
        metadata={"help": "stream resets per gRPC connection per window (GOAWAY beyond)"},
    )
    grpc_max_pings: int = field(
        default=GRPC_MAX_PINGS_DEFAULT,
        metadata={"help": "PING frames per gRPC connection per window (GOAWAY beyond)"},
    )
    grpc_max_settings: int = field(
        default=GRPC_MAX_SETTINGS_DEFAULT,
        metadata={"help": "SETTINGS frames per gRPC connection per window (GOAWAY beyond)"},
    )
    grpc_idle_timeout: float = field(
        default=GRPC_IDLE_TIMEOUT_DEFAULT,
        metadata={"help": "seconds a gRPC connection may stay without an open call"},
    )
    grpc_handshake_timeout: float = field(
        default=GRPC_HANDSHAKE_TIMEOUT_DEFAULT,
        metadata={"help": "seconds a gRPC connection has to send its HTTP/2 preface"},
    )
    grpc_max_health_calls: int = field(
        default=GRPC_MAX_HEALTH_CALLS_DEFAULT,
        metadata={"help": "health calls (Watch streams) open at once (RESOURCE_EXHAUSTED beyond)"},
    )
    max_upload_parts: int = field(
        default=MAX_UPLOAD_PARTS_DEFAULT,
        metadata={"help": "multipart parts (files and fields) per upload request"},
    )
    ws_max_message_bytes: int = field(
        default=WS_MAX_MESSAGE_BYTES_DEFAULT,
        metadata={"help": "largest WebSocket client message (closed with 1009 beyond)"},
    )
    ws_max_serials: int = field(
        default=WS_MAX_SERIALS_DEFAULT,
        metadata={"help": "sensors one WebSocket client may subscribe to by serial"},
    )
    webhook_allow_hosts: str | None = field(
        default=None,
        metadata={
            "help": "comma-separated hosts or CIDRs webhooks may target although internal "
            "(loopback, private, link-local are refused otherwise)"
        },
    )
    webhook_retry_for: float = field(
        default=WEBHOOK_RETRY_FOR_DEFAULT,
        metadata={"help": "seconds a webhook event is retried before it is marked failed"},
    )
    webhook_timeout: float = field(
        default=WEBHOOK_TIMEOUT_DEFAULT,
        metadata={"help": "seconds one webhook POST may take before it counts as failed"},
    )
    webhook_retention: float = field(
        default=WEBHOOK_RETENTION_DEFAULT,
        metadata={"help": "seconds delivered and failed webhook events are kept"},
    )
    webhook_poll: float = field(
        default=WEBHOOK_POLL_DEFAULT,
        metadata={
            "help": "seconds between looks for webhook events no commit of this process rang "
            "for (another daemon's, one that died before sending)"
        },
    )

    allow_insecure: bool = field(
        default=False,
        metadata={
            "help": "serve beyond loopback without api_key and grpc_token (anyone on the "
            "network may upload and report); unset: such a start is refused"
        },
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check(f.name, getattr(self, f.name))
        if self.pool_size < self.writer_lanes + 2:
            # Expiry, the relay, fleet totals and HTTP requests share what the lanes leave; the
            # side lane (writer.py) takes one while it commits, for as long as a row is held.
            raise ValueError(
                f"pool_size must be at least writer_lanes + 2 = {self.writer_lanes + 2} "
                "(each writer lane keeps a connection, the side lane takes one while a sensor's "
                "row is held elsewhere, and presence, the relay and HTTP need one)"
            )
        if self.offline_after / self.wheel_resolution > WHEEL_SLOTS_MAX:
            raise ValueError(
                f"offline_after / wheel_resolution must be at most {WHEEL_SLOTS_MAX:,} (the "
                "timing wheel's slots); raise wheel_resolution"
            )
        if self.http_port == self.grpc_port != 0:
            raise ValueError(f"http_port and grpc_port must differ (both {self.http_port})")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.relay_url is not None and not self.relay_url.startswith(("nats://", "tls://")):
            raise ValueError("relay_url must be a nats:// (or tls://) URL of a NATS server")
        if self.grpc_client_ca is not None and self.tls_cert is None:
            raise ValueError("grpc_client_ca needs tls_cert and tls_key (mTLS is over TLS)")
        AllowList.parse(self.webhook_allow_hosts)  # raises ValueError on a malformed entry

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "software"

    @property
    def staging_dir(self) -> Path:
        """Uploads in progress; same filesystem as upload_dir, so storing is a rename."""
        return self.data_dir / "incoming"

    @property
    def tls_files(self) -> tuple[Path, Path] | None:
        """(certificate chain, key) when TLS is configured."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return self.tls_cert, self.tls_key

    @property
    def webhook_targets(self) -> AllowList:
        return AllowList.parse(self.webhook_allow_hosts)

    @property
    def embedded_db_dir(self) -> Path:
        return self.data_dir / "pg"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Seconds a duration may be at most: ten years, past any use and inside what trio, datetime and
# PostgreSQL's intervals take (a retention of 1e14 s overflowed a timedelta after "ready").
DURATION_MAX: Final = 10 * 365 * 86_400
# Slots of the timing wheel, offline_after / wheel_resolution: each is a list, ~75 bytes, made
# at start (7 days at 0.25 s took 180 MB; ten years could not be allocated).
WHEEL_SLOTS_MAX: Final = 1_000_000
# TCP_USER_TIMEOUT counts milliseconds in 32 bits.
SEND_TIMEOUT_MAX: Final = (2**32 - 1) // 1000
_PORT: Final = (lambda v: 0 <= v <= 65535, "must be a port number, 0 to 65535 (0 picks a free one)")
_POSITIVE: Final = (lambda v: 0 < v < math.inf, "must be positive")
_NOT_NEGATIVE: Final = (lambda v: 0 <= v < math.inf, "must be 0 or more")
_SECONDS: Final = (
    lambda v: 0 < v <= DURATION_MAX,
    f"must be positive seconds, at most {DURATION_MAX:,} (ten years)",
)
_SECONDS_OR_ZERO: Final = (
    lambda v: 0 <= v <= DURATION_MAX,
    f"must be 0 or more seconds, at most {DURATION_MAX:,} (ten years)",
)
# The rule of each setting that has one, as the parser and Settings both state it.
RULES: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "http_port": _PORT,
    "grpc_port": _PORT,
    **dict.fromkeys(
        (
            "offline_after",
            "wheel_resolution",
            "sweep_interval",
            "event_retention",
            "history_retention",
            "ack_timeout",
            "http_keep_alive_timeout",
            "grpc_budget_window",
            "grpc_idle_timeout",
            "grpc_handshake_timeout",
            "webhook_retry_for",
            "webhook_timeout",
            "webhook_retention",
            "webhook_poll",
            "body_timeout",
            "ws_ping_interval",
            "ws_timeout",
        ),
        _SECONDS,
    ),
    "send_timeout": (
        lambda v: 0 < v <= SEND_TIMEOUT_MAX,
        f"must be positive seconds, at most {SEND_TIMEOUT_MAX:,} (TCP_USER_TIMEOUT's limit)",
    ),
    "gc_young_threshold": (
        lambda v: 0 <= v < 2**31,
        "must be 0 (Python's defaults) or a positive count of allocations",
    ),
    **dict.fromkeys(
        (
            "batch_max",
            "queue_size",
            "writer_lanes",
            "max_upload_bytes",
            "workers",
            "grpc_max_message_bytes",
            "grpc_max_connections",
            "grpc_max_connections_per_address",
            "grpc_connection_rate_per_address",
            "http_max_connections",
            "http_max_connections_per_address",
            "http_connection_rate_per_address",
            "grpc_max_resets",
            "grpc_max_pings",
            "grpc_max_settings",
            "grpc_max_health_calls",
            "max_upload_parts",
            "ws_max_message_bytes",
            "ws_max_serials",
        ),
        _POSITIVE,
    ),
    # An HTTP/2 SETTINGS value (31 bits for the streams a peer may open; h2 refused more on
    # every connection, after the daemon had started).
    "grpc_max_streams": (lambda v: 0 < v <= 2**31 - 1, "must be 1 to 2,147,483,647"),
    "relay_stream": (
        lambda v: re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v) is not None,
        "must be 1 to 64 letters, digits, _ or - (a NATS stream name and subject token)",
    ),
    "pool_size": (lambda v: v >= 3, "must be at least 3 (a writer lane, its side lane, the rest)"),
    "shutdown_grace": _SECONDS_OR_ZERO,
    "grpc_budget_penalty": _SECONDS_OR_ZERO,
    "seed_count": _NOT_NEGATIVE,
    "log_level": (
        lambda v: v.upper() in LOG_LEVELS,
        f"must be one of {', '.join(level.lower() for level in LOG_LEVELS)}",
    ),
}


def check(name: str, value: Any) -> None:
    """Raises: ValueError `<name> must be …` when `value` breaks the setting's rule."""
    rule = RULES.get(name)
    if rule is not None and value is not None and not rule[0](value):
        raise ValueError(f"{name} {rule[1]}")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere, or "" (all addresses)


def open_to_network(settings: Settings) -> list[str]:
    """What anyone on the network could do if the daemon started as set (empty: nothing):
    writes without `api_key`, reports without `grpc_token`, once bound beyond loopback."""
    if is_loopback(settings.host) or settings.allow_insecure:
        return []
    return [
        *(["upload releases (no DRONESHIELD_API_KEY)"] if settings.api_key is None else []),
        *(["report over gRPC (no DRONESHIELD_GRPC_TOKEN)"] if settings.grpc_token is None else []),
    ]


def env_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("env", f"DRONESHIELD_{f.name.upper()}"))


TRUE: Final = ("1", "true", "yes", "on")
FALSE: Final = ("0", "false", "no", "off", "")


def convert(f: dataclasses.Field[Any], raw: str) -> Any:
    """`raw` (a flag's or a variable's text) as the field's type.

    Raises: ValueError when it does not parse.
    """
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if not raw and "None" in kind:
        return None  # an empty variable unsets an optional setting (not Path("."))
    if kind.startswith("bool"):
        if raw.lower() not in TRUE + FALSE:
            raise ValueError(raw)
        return raw.lower() in TRUE
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("Path"):
        return Path(raw)
    return raw


def from_mapping(values: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Build settings with precedence flag > env var > default. Flags the parser has already
    converted (anything not a string) are taken as they are.

    Raises:
        ValueError: a value does not parse as its field's type (the message names the setting).
    """
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = values.get(f.name)
        if raw is None:
            raw = env.get(env_name(f))
        if raw is None:
            continue
        if not isinstance(raw, str):
            kwargs[f.name] = raw
            continue
        try:
            kwargs[f.name] = convert(f, raw)
        except ValueError:
            raise ValueError(f"{env_name(f)}={raw!r} is not a valid {f.type}") from None
        try:
            check(f.name, kwargs[f.name])
        except ValueError as exc:
            raise ValueError(f"{env_name(f)}={raw!r}: {exc}") from None
    return Settings(**kwargs)


def from_env() -> Settings:
    return from_mapping({}, os.environ)
