"""Secrets out of log output: the API key, the gRPC token and the database password.

Nothing in droneshield logs them on purpose; this is the net under what libraries print at
DEBUG (hpack logs every header it decodes, Authorization included) and under exception texts
that quote a connection string. Every line is formatted first and then cleaned, so messages,
arguments and tracebacks are all covered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from .config import Settings

MASK: Final = "***"
# hpack logs each decoded header at DEBUG: noise at best, a stranger's credentials at worst.
QUIET: Final = ("hpack",)


def secrets_of(settings: Settings) -> list[str]:
    """The values that must never appear in a log line (the password as written in the URL
    and decoded)."""
    found = [settings.api_key, settings.grpc_token]
    if settings.database_url:
        url = urlsplit(settings.database_url)
        # libpq URLs may carry it in the user part or as a `password` query parameter.
        for raw in [url.password, *parse_qs(url.query).get("password", [])]:
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
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.INFO)
    secrets = tuple(secrets)
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(
                RedactingFormatter(handler.formatter or logging.Formatter(), secrets)
            )
