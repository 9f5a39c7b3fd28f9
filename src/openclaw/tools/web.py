"""Web pages for ``web_fetch``: fetched through ``safe_http``'s guard, readable text extracted
from HTML (trafilatura, in a worker thread: it is CPU work), kept a few minutes."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from openclaw import safe_http
from openclaw.config.schema import WebFetchConfig
from openclaw.extract import ExtractError, Mode, html_text
from openclaw.tools.base import ToolError

CACHE_ENTRIES = 128
_HTML = ("text/html", "application/xhtml+xml")
_TEXT = ("text/", "application/json", "application/xml", "application/javascript")
HEADERS = {
    "User-Agent": "openclaw-gateway (web_fetch)",
    "Accept": "text/html, text/plain;q=0.9, */*;q=0.5",
}


def extract(page: safe_http.Fetched, mode: Mode) -> str:
    """The page's readable text: the main content of HTML (as markdown or plain text), other
    text types as they are."""
    if page.content_type in _HTML:
        try:
            return html_text(page.data, mode)
        except ExtractError as exc:
            raise ToolError(f"The page is {exc}.") from None
    if page.content_type.startswith(_TEXT):
        return page.data.decode(page.charset or "utf-8", "replace")
    raise ToolError(f"The page is not text (content type `{page.content_type or 'unknown'}`).")


class WebFetcher:
    def __init__(self, cfg: WebFetchConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._cache: OrderedDict[tuple[str, Mode], tuple[float, str, str]] = OrderedDict()

    async def page(self, url: str, mode: Mode) -> tuple[str, str]:
        """(final URL, readable text) of ``url``; ToolError when it cannot be fetched."""
        key = (url, mode)
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1], hit[2]
        try:
            got = await safe_http.fetch(
                url,
                max_bytes=self.cfg.max_bytes,
                timeout=self.cfg.timeout_seconds,
                max_redirects=self.cfg.max_redirects,
                allow_private=self.cfg.allow_private_network,
                headers=HEADERS,
            )
        except safe_http.FetchError as exc:
            raise ToolError(f"Could not fetch {url}: {exc}") from None
        text = await asyncio.to_thread(extract, got, mode)
        if self.cfg.cache_seconds:
            self._cache[key] = (now + self.cfg.cache_seconds, got.url, text)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return got.url, text
