"""The API's docs pages in a real browser: they render, and nothing they load leaves this
server (a network without internet, no third party told who reads the docs)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from playwright.sync_api import expect

from .support.browser import open_page


@pytest.mark.parametrize(("path", "shown"), [("/docs", "GET/sensors"), ("/redocs", "List sensors")])
async def test_docs_render_and_send_no_request_to_another_origin(browser, running, path, shown):
    base = f"http://127.0.0.1:{running.http_port}"
    elsewhere: list[tuple[str, str | None]] = []  # each request to another origin, and its fate

    def away(request: Any, failure: str | None) -> None:
        if not request.url.startswith((base, "data:", "blob:")):
            elsewhere.append((request.url, failure))

    with trio.fail_after(30):
        page = await open_page(browser, base)

        def load(p: Any) -> str:
            p.on("requestfinished", lambda r: away(r, None))
            p.on("requestfailed", lambda r: away(r, r.failure))
            policy = p.goto(path).headers["content-security-policy"]
            expect(p.locator("body")).to_contain_text(shown, timeout=15_000)
            p.wait_for_load_state("networkidle")
            return policy

        policy = await page(load)
        await page.close()
    # Redoc's bundle asks its CDN for a logo: the page's policy stops it in the browser (here,
    # without internet, it would fail all the same, but as a lookup that was sent).
    assert all(failure == "csp" for _, failure in elsewhere), elsewhere
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
