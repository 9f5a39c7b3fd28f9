"""Outbound HTTP GETs that cannot be turned against the gateway's own network (the SSRF guard
shared by remote images and ``web_fetch``): http/https only, an optional host allowlist, every
name resolved once and only public addresses connected to (the address checked is the address
used), each redirect checked again, bounded redirects, size and time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """Why a fetch was refused or failed, in words fit for whoever asked for it."""


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    charset: str | None
    data: bytes


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


def allowed_host(host: str, allowlist: list[str]) -> bool:
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


def check_url(url: str, allowlist: list[str], *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("Only http and https URLs can be fetched.")
    if not allowed_host(parts.hostname, allowlist):
        raise FetchError(f"The host `{parts.hostname}` is not in the allowlist.")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not allow_private and not is_public_address(str(literal)):
        raise FetchError("URLs may not name private, loopback or link-local addresses.")


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refused as soon as it passes ``limit`` (declared or actual)."""
    too_big = FetchError(f"The response is larger than the limit of {limit} bytes.")
    if resp.content_length is not None and resp.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(65536):
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch(
    url: str,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 - one deadline for the whole fetch, redirects included
    max_redirects: int,
    allowlist: list[str] | None = None,
    allow_private: bool = False,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """GET ``url`` (following redirects, each checked) within the limits; FetchError else."""
    resolver = None if allow_private else PublicOnlyResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, limit=2)
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession(connector=connector, headers=headers) as session,
        ):
            for _ in range(max_redirects + 1):
                check_url(url, allowlist or [], allow_private=allow_private)
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in REDIRECTS and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise FetchError(f"The server answered HTTP {resp.status}.")
                    data = await read_capped(resp, max_bytes)
                    return Fetched(url, resp.content_type, resp.charset, data)
            raise FetchError(f"More than {max_redirects} redirects.")
    except TimeoutError:
        raise FetchError(f"No complete answer within {timeout:g} s.") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchError(f"The fetch failed: {type(exc).__name__}: {exc}") from None
