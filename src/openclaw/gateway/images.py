"""Images in the active user turn: ``data:`` URIs checked by content, and (only when enabled)
remote URLs fetched safely: http/https, optional host allowlist, bounded redirects, size and time,
never to a private, loopback, link-local or otherwise non-public address."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from openclaw.config.schema import ChatCompletionsConfig, ImagesConfig
from openclaw.errors import InvalidRequestError
from openclaw.messages import ImagePart

INVALID = "Invalid image_url content in `messages`."


def sniff_mime(data: bytes) -> str | None:
    """The image type by its magic bytes: the declared type is never trusted alone."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _checked(data: bytes, declared: str | None, cfg: ImagesConfig) -> ImagePart:
    if len(data) > cfg.max_bytes:
        raise InvalidRequestError(
            f"An image is larger than the limit of {cfg.max_bytes} bytes.", param="messages"
        )
    mime = sniff_mime(data)
    if mime is None or mime not in cfg.allowed_mimes:
        raise InvalidRequestError(INVALID, param="messages")
    if declared and declared != mime and not (declared == "image/jpg" and mime == "image/jpeg"):
        raise InvalidRequestError(INVALID, param="messages")
    return ImagePart(mime=mime, data=data)


def decode_data_uri(url: str, cfg: ImagesConfig) -> ImagePart:
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequestError(INVALID, param="messages")
    declared = header[5:-7].split(";")[0].strip().lower() or None
    # base64 inflates by 4/3: refuse before decoding anything absurd.
    if len(payload) > cfg.max_bytes * 4 // 3 + 8:
        raise InvalidRequestError(
            f"An image is larger than the limit of {cfg.max_bytes} bytes.", param="messages"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(INVALID, param="messages") from None
    return _checked(data, declared, cfg)


# IPv6 forms that carry an IPv4 address inside (NAT64, 6to4, IPv4-compatible): refused outright
# rather than trusted to route where they seem to.
_EMBEDDING_V4 = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("2002::/16"),
    ipaddress.ip_network("::/96"),
)


def is_public_address(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif any(ip in net for net in _EMBEDDING_V4):
            return False
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Resolves names and keeps only public addresses, so the address checked is the address
    connected to (no re-resolution between check and connect)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        out: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            addr = str(sockaddr[0])
            if not is_public_address(addr):
                continue
            out.append(
                {
                    "hostname": host,
                    "host": addr,
                    "port": int(sockaddr[1]),
                    "family": fam,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not out:
            raise OSError(f"{host} resolves to no public address")
        return out

    async def close(self) -> None:
        return None


def _allowed_host(host: str, allowlist: list[str]) -> bool:
    if not allowlist:
        return True
    host = host.lower().rstrip(".")
    for entry in allowlist:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*.") and (host.endswith(entry[1:]) or host == entry[2:]):
            return True
        if host == entry:
            return True
    return False


def _check_url(url: str, cfg: ImagesConfig) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(INVALID, param="messages")
    if not _allowed_host(parts.hostname, cfg.url_allowlist):
        raise InvalidRequestError(
            f"Image host `{parts.hostname}` is not in the allowlist.", param="messages"
        )
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not is_public_address(str(literal)):
        raise InvalidRequestError("Image URLs may not name private addresses.", param="messages")


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refused as soon as it passes ``limit`` (declared or actual)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise InvalidRequestError(
            f"An image is larger than the limit of {limit} bytes.", param="messages"
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(65536):
        total += len(chunk)
        if total > limit:
            raise InvalidRequestError(
                f"An image is larger than the limit of {limit} bytes.", param="messages"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_image(url: str, cfg: ImagesConfig) -> ImagePart:
    """Fetch a remote image within the configured limits."""
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), limit=2)
    try:
        # One deadline for the image, redirects included.
        async with (
            asyncio.timeout(cfg.timeout_ms / 1000),
            aiohttp.ClientSession(connector=connector) as session,
        ):
            for _ in range(cfg.max_redirects + 1):
                _check_url(url, cfg)
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise InvalidRequestError(
                            f"Fetching an image failed with HTTP {resp.status}.", param="messages"
                        )
                    data = await _read_capped(resp, cfg.max_bytes)
                    declared = resp.headers.get("Content-Type", "").split(";")[0].strip() or None
                    return _checked(data, declared, cfg)
            raise InvalidRequestError("Too many redirects fetching an image.", param="messages")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise InvalidRequestError(
            f"Could not fetch an image: {type(exc).__name__}.", param="messages"
        ) from None


async def load_images(urls: list[str], cfg: ChatCompletionsConfig) -> list[ImagePart]:
    """All images of the active turn, within the part-count and total-size limits."""
    if len(urls) > cfg.max_image_parts:
        raise InvalidRequestError(
            f"Too many images: at most {cfg.max_image_parts} per message.", param="messages"
        )
    images: list[ImagePart] = []
    remote: list[tuple[int, str]] = []
    for i, url in enumerate(urls):
        if url.startswith("data:"):
            images.append(decode_data_uri(url, cfg.images))
        elif cfg.images.allow_url:
            images.append(ImagePart("", b""))
            remote.append((i, url))
        else:
            raise InvalidRequestError(
                "Remote image URLs are disabled; send the image as a data: URI (or enable "
                "gateway.http.endpoints.chatCompletions.images.allowUrl).",
                param="messages",
            )
    if remote:
        try:
            # A TaskGroup: when one fetch fails, the others are cancelled, not left running.
            async with asyncio.TaskGroup() as group:
                tasks = [(i, group.create_task(fetch_image(u, cfg.images))) for i, u in remote]
        except* InvalidRequestError as failed:
            raise failed.exceptions[0] from None
        for i, task in tasks:
            images[i] = task.result()
    if sum(len(p.data) for p in images) > cfg.max_total_image_bytes:
        raise InvalidRequestError(
            f"Images total more than the limit of {cfg.max_total_image_bytes} bytes.",
            param="messages",
        )
    return images


def image_url_of(part: Any) -> str:
    url = part.image_url
    return url if isinstance(url, str) else url.url
