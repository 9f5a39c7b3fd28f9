"""The control page's HTTP surface: its base path cannot turn it into a catch-all or inject
markup; conditional requests (regressions found in review)."""

from __future__ import annotations

import re

from tests.asgi.conftest import App
from tests.e2e.conftest import chat_config


async def test_base_path_with_braces_is_refused_or_not_a_catch_all(app: App, upstream) -> None:
    # A basePath such as "/{p:path}" passes the validator and becomes a Starlette path
    # parameter: the page then answers every path (a catch-all), disabled /v1/* included.
    from openclaw.config.schema import Config

    try:
        Config.model_validate({"gateway": {"controlUi": {"basePath": "/{p:path}"}}})
    except ValueError:
        return
    client = await app(chat_config(upstream, gateway={"controlUi": {"basePath": "/{p:path}"}}))
    for path in ("/nope", "/v1/responses"):
        got = await client.get(path)
        assert got.status_code == 404, (path, got.status_code, got.headers.get("content-type"))


async def test_conditional_and_head(app: App, upstream) -> None:
    client = await app(chat_config(upstream))
    page = await client.get("/")
    asset = re.search(r'src="(/assets/app\.[0-9a-f]{12}\.js)"', page.text).group(1)
    # If-None-Match: * matches any current representation (RFC 9110 13.1.2).
    for path in ("/", asset):
        star = await client.get(path, headers={"if-none-match": "*"})
        assert star.status_code == 304, (path, star.status_code)


async def test_base_path_is_escaped_in_the_page(app: App, upstream) -> None:
    """basePath goes into <meta content="..."> unescaped; `"` and `<` pass the validator."""
    from openclaw.config.schema import Config

    base = '/x"><meta/http-equiv="refresh"/content="0;url=https:evil.example'
    try:
        Config.model_validate({"gateway": {"controlUi": {"basePath": base}}})
    except ValueError:
        return
    client = await app(chat_config(upstream, gateway={"controlUi": {"basePath": base}}))
    page = await client.get(base)
    assert 'http-equiv="refresh"' not in page.text
