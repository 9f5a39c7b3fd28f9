"""Images in the active user turn: ``data:`` URIs checked by content, and (only when enabled)
remote URLs fetched through ``safe_http``'s guard: http/https, optional host allowlist, bounded
redirects, size and time, never to a private, loopback, link-local or other non-public address."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from openclaw import safe_http
from openclaw.config.schema import ImagesConfig, InputsConfig
from openclaw.errors import InvalidRequestError
from openclaw.messages import ImagePart

# The image part's name on each API, by the request field that holds it.
PART_NAMES = {"messages": "image_url", "input": "input_image"}


def _invalid(param: str) -> InvalidRequestError:
    part = PART_NAMES.get(param, "image")
    return InvalidRequestError(f"Invalid {part} content in `{param}`.", param=param)


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


def _checked(data: bytes, declared: str | None, cfg: ImagesConfig, param: str) -> ImagePart:
    if len(data) > cfg.max_bytes:
        raise InvalidRequestError(
            f"An image is larger than the limit of {cfg.max_bytes} bytes.", param=param
        )
    mime = sniff_mime(data)
    if mime is None or mime not in cfg.allowed_mimes:
        raise _invalid(param)
    if declared and declared != mime and not (declared == "image/jpg" and mime == "image/jpeg"):
        raise _invalid(param)
    return ImagePart(mime=mime, data=data)


def split_data_uri(
    url: str, max_bytes: int, param: str, part: str, noun: str
) -> tuple[str | None, bytes]:
    """(declared media type, bytes) of a base64 ``data:`` URI, refused beyond ``max_bytes``
    (``part``: the content part's name, ``noun``: "An image" or "A file", for the errors)."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequestError(f"Invalid {part} content in `{param}`.", param=param)
    declared = header[5:-7].split(";")[0].strip().lower() or None
    # base64 inflates by 4/3: refuse before decoding anything absurd.
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise InvalidRequestError(
            f"{noun} is larger than the limit of {max_bytes} bytes.", param=param
        )
    try:
        return declared, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"Invalid {part} content in `{param}`.", param=param) from None


def decode_data_uri(url: str, cfg: ImagesConfig, param: str = "messages") -> ImagePart:
    part = PART_NAMES.get(param, "image")
    declared, data = split_data_uri(url, cfg.max_bytes, param, part, "An image")
    return _checked(data, declared, cfg, param)


async def fetch_image(url: str, cfg: ImagesConfig, param: str = "messages") -> ImagePart:
    """Fetch a remote image within the configured limits (``safe_http``'s guard)."""
    try:
        got = await safe_http.fetch(
            url,
            max_bytes=cfg.max_bytes,
            timeout=cfg.timeout_ms / 1000,
            max_redirects=cfg.max_redirects,
            allowlist=cfg.url_allowlist,
        )
    except safe_http.FetchError as exc:
        raise InvalidRequestError(f"Could not fetch an image: {exc}", param=param) from None
    return _checked(got.data, got.content_type or None, cfg, param)


async def load_images(
    urls: list[str], cfg: InputsConfig, param: str = "messages", setting: str = "chatCompletions"
) -> list[ImagePart]:
    """All images of the active turn, within the part-count and total-size limits (``param``
    names the request field in errors, ``setting`` the endpoint's config section)."""
    if len(urls) > cfg.max_image_parts:
        raise InvalidRequestError(
            f"Too many images: at most {cfg.max_image_parts} per message.", param=param
        )
    images: list[ImagePart] = []
    remote: list[tuple[int, str]] = []
    for i, url in enumerate(urls):
        if url.startswith("data:"):
            images.append(decode_data_uri(url, cfg.images, param))
        elif cfg.images.allow_url:
            images.append(ImagePart("", b""))
            remote.append((i, url))
        else:
            raise InvalidRequestError(
                "Remote image URLs are disabled; send the image as a data: URI (or enable "
                f"gateway.http.endpoints.{setting}.images.allowUrl).",
                param=param,
            )
    if remote:
        try:
            # A TaskGroup: when one fetch fails, the others are cancelled, not left running.
            async with asyncio.TaskGroup() as group:
                tasks = [
                    (i, group.create_task(fetch_image(u, cfg.images, param))) for i, u in remote
                ]
        except* InvalidRequestError as failed:
            raise failed.exceptions[0] from None
        for i, task in tasks:
            images[i] = task.result()
    if sum(len(p.data) for p in images) > cfg.max_total_image_bytes:
        raise InvalidRequestError(
            f"Images total more than the limit of {cfg.max_total_image_bytes} bytes.",
            param=param,
        )
    return images


def image_url_of(part: Any) -> str:
    url = part.image_url
    return url if isinstance(url, str) else url.url
