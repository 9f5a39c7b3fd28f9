"""The chat and control page: static files shipped in the package, served on the gateway port.

The page is a client of the gateway like any other: it speaks the WebSocket protocol (the same
methods the CLI and other clients use) and holds no secret of its own.  Its files are read and
hashed once, when the app is built: each asset is served under a name carrying its content hash,
cached for a year, and the page (never cached without revalidation) names the current ones.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from openclaw.errors import NotFoundError

# What the page may do: its own scripts and styles only (no inline script, so an injected
# <script> would not run), connections to its own origin only (the WebSocket included),
# images from itself or the data:/blob: URLs of attachments the user picked.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSET_CACHE = "public, max-age=31536000, immutable"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The files the page is made of, besides index.html (which names them by placeholder).
ASSET_FILES = ("app.js", "app.css", "icon.svg")


@dataclass(frozen=True, slots=True)
class Asset:
    data: bytes
    media_type: str
    etag: str


def _hashed(name: str, data: bytes) -> tuple[str, str]:
    """(the name served, its ETag): ``app.js`` -> ``app.1a2b3c4d5e6f.js``."""
    digest = hashlib.sha256(data).hexdigest()
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{digest[:12]}{dot}{ext}", f'"{digest[:32]}"'


class ControlUi:
    """The page at ``base_path`` and its assets under ``<base_path>/assets/``."""

    def __init__(self, base_path: str = "/") -> None:
        self.base = base_path.rstrip("/")  # "" for the root
        self.assets_prefix = f"{self.base}/assets/"
        static = resources.files(__name__).joinpath("static")
        self.assets: dict[str, Asset] = {}
        page = static.joinpath("index.html").read_text(encoding="utf-8")
        for name in ASSET_FILES:
            data = static.joinpath(name).read_bytes()
            served, etag = _hashed(name, data)
            ext = name[name.rfind(".") :]
            self.assets[served] = Asset(data, _TYPES[ext], etag)
            page = page.replace("{{" + name + "}}", self.assets_prefix + served)
        # The page finds its WebSocket (and links) from its base path, given in a <meta> tag:
        # no inline script is allowed to say it.
        # (The base path is plain segments by the config's rule; escaped all the same.)
        page = page.replace("{{base}}", html.escape(self.base or "/"))
        data = page.encode()
        self.page = Asset(data, "text/html; charset=utf-8", _hashed("index.html", data)[1])

    def routes(self) -> list[BaseRoute]:
        paths = [self.base + "/"] if not self.base else [self.base, self.base + "/"]
        return [
            *(Route(p, self.serve_page, methods=["GET", "HEAD"]) for p in paths),
            Route(self.assets_prefix + "{name}", self.serve_asset, methods=["GET", "HEAD"]),
        ]

    async def serve_page(self, request: Request) -> Response:
        headers = {
            "cache-control": "no-cache",
            "content-security-policy": CSP,
            "x-frame-options": "DENY",
            "cross-origin-opener-policy": "same-origin",
        }
        return _respond(request, self.page, headers)

    async def serve_asset(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["name"])
        if asset is None:
            raise NotFoundError(f"No asset `{request.url.path}`.", code="not_found")
        return _respond(request, asset, {"cache-control": ASSET_CACHE})


def _respond(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    headers["etag"] = asset.etag
    wanted = request.headers.get("if-none-match", "")
    if wanted.strip() == "*" or asset.etag in wanted:
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.data
    response = Response(body, media_type=asset.media_type, headers=headers)
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(asset.data))
    return response
