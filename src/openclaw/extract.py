"""Readable text out of documents: the main content of an HTML page (trafilatura), the text of a
PDF (pypdf).  Both are CPU work: callers run them in a worker thread."""

from __future__ import annotations

import io
from typing import Literal

Mode = Literal["markdown", "text"]


class ExtractError(Exception):
    """The document could not be read."""


def html_text(data: bytes, mode: Mode = "text") -> str:
    """The page's main content as markdown or plain text; all its text when nothing looks like
    main content (a tiny page)."""
    import trafilatura  # imported on first use: it loads lxml and friends

    text = trafilatura.extract(
        data,
        output_format="markdown" if mode == "markdown" else "txt",
        include_links=mode == "markdown",
        include_tables=True,
    )
    if text:
        return str(text)
    from lxml import etree, html

    if not data.strip():
        return ""
    try:
        return " ".join(html.fromstring(data).text_content().split())
    except (ValueError, TypeError, etree.LxmlError) as exc:  # empty or odd documents
        raise ExtractError(f"not readable HTML ({exc})") from None


def pdf_text(data: bytes, max_pages: int) -> tuple[str, int]:
    """(the text of the first ``max_pages`` pages, the number of pages)."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Most are encrypted with an empty user password (only editing is locked).
            reader.decrypt("")
        pages = reader.pages
        texts = [(page.extract_text() or "").strip() for page in list(pages)[:max_pages]]
        return "\n\n".join(t for t in texts if t), len(pages)
    except FileNotDecryptedError:
        raise ExtractError("an encrypted PDF (it needs a password)") from None
    except (DependencyError, NotImplementedError):
        # AES needs the `cryptography` package, which is not a dependency of the gateway.
        raise ExtractError("an encrypted PDF this gateway cannot decrypt") from None
    except (PyPdfError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ExtractError(f"not a readable PDF ({type(exc).__name__})") from None
