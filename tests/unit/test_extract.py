"""Text out of documents: odd HTML and PDFs give a clear ``ExtractError`` (a 400 where a client
sent them), never an exception the gateway does not expect."""

from __future__ import annotations

import pytest

from openclaw.extract import ExtractError, html_text, pdf_text
from tests.documents import encrypted_pdf, pdf


@pytest.mark.parametrize("data", [b"", b"   \n ", b"<html></html>"])
def test_empty_html_is_empty_text(data: bytes) -> None:
    assert html_text(data).strip() == ""


def test_pdf_pages_and_text() -> None:
    assert pdf_text(pdf("one", "two", "three"), 2) == ("one\n\ntwo", 3)


def test_a_pdf_locked_for_editing_only_is_read() -> None:
    # Encrypted with an empty user password: anyone may open it.
    assert pdf_text(encrypted_pdf("open to all", ""), 5)[0] == "open to all"


def test_a_pdf_that_needs_a_password_says_so() -> None:
    with pytest.raises(ExtractError, match="needs a password"):
        pdf_text(encrypted_pdf("secret", "userpw"), 5)


def test_an_aes_pdf_without_the_crypto_package_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import pypdf._crypt_providers._fallback as fallback

    # Writing AES needs the `cryptography` package, not installed here: its encryption step is
    # skipped, which makes a file that reads as AES-encrypted all the same.
    monkeypatch.setattr(fallback.CryptAES, "encrypt", lambda self, data: data)
    locked = encrypted_pdf("aes", "", algorithm="AES-128")
    monkeypatch.undo()
    try:
        import cryptography  # noqa: F401
    except ImportError:
        with pytest.raises(ExtractError, match="cannot decrypt"):
            pdf_text(locked, 5)


@pytest.mark.parametrize("data", [b"%PDF-1.4 garbage", b"%PDF-", b"not a pdf at all"])
def test_broken_pdfs(data: bytes) -> None:
    with pytest.raises(ExtractError, match="not a readable PDF"):
        pdf_text(data, 5)
