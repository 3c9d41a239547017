"""asyncio's own event loop, for code that must not run on trio-asyncio's.

Importing trio_asyncio (the daemon's modules do) installs its event loop policy: from then on
`asyncio.run` builds trio-asyncio's `SyncTrioEventLoop`, which, like its async loop, runs one
callback per pass of a trio scheduler. Until 2026-12-03 the bench's "bare grpclib" ceiling
and its load generators ran on it without anyone asking for it: a ceiling lower than
grpclib's own, and clients slower than a real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on asyncio's selector loop, whatever the installed policy."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(main)
