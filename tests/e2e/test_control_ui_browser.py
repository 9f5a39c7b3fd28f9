"""The control page in a real browser: headless Chromium from the system (Debian's `chromium`),
driven by Playwright given the browser's path (no browser is ever downloaded), against a running
gateway and the suite's own upstream.

One user's session, step by step: a wrong then the right token, a streamed reply that grows
while the run goes on, a tool call shown inline, Stop aborting a slow run (the upstream request
closed, the turn stored as aborted), the session listed and its transcript opened, status, a
phone-sized screen and dark mode; and the gateway's secret never in the page's DOM or in anything
the gateway sent it (only in what the user typed and the page sent to connect).

Set OPENCLAW_CHROMIUM to use another browser binary; OPENCLAW_UPDATE_SCREENSHOT=1 writes the
README's screenshot (docs/control-ui.png) from this run.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import call, chat_config
from tests.upstream import Answer, FakeUpstream, ToolCalls, slow_stream

ROOT = Path(__file__).resolve().parents[2]
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SCREENSHOT = ROOT / "docs" / "control-ui.png"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser_path() -> str | None:
    configured = os.environ.get("OPENCLAW_CHROMIUM")
    if configured:
        return configured
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    path = _browser_path()
    if path is None:
        pytest.skip(
            "no Chromium on this machine: install Debian's `chromium` package "
            "(apt-get install -y chromium) or set OPENCLAW_CHROMIUM; .ci/run installs it"
        )
    # Chromium's sandbox cannot start as root (containers, CI).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=args, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


class Traffic:
    """Everything the gateway sent the page (HTTP bodies, WebSocket frames) and what the page
    sent over the WebSocket."""

    def __init__(self, page: Any) -> None:
        self.received: list[str] = []
        self.sent: list[str] = []
        self.responses: list[Any] = []
        page.on("response", lambda response: self.responses.append(response))
        page.on("websocket", self._socket)

    def _socket(self, ws: Any) -> None:
        ws.on("framereceived", lambda payload: self.received.append(str(payload)))
        ws.on("framesent", lambda payload: self.sent.append(str(payload)))

    def bodies(self) -> list[str]:
        out = []
        for response in self.responses:
            try:
                out.append(response.body().decode("utf-8", "replace"))
            except Exception:  # a response without a body (304, redirects)
                out.append("")
            out.append(str(response.all_headers()))
        return out


def _wait_idle(page: Any) -> None:
    """Until the page's run is over (Send enabled again).  Predicates are functions: the page's
    CSP forbids evaluating strings, and Playwright's polling would."""
    page.wait_for_function("() => !document.getElementById('send').disabled", timeout=15_000)


def test_the_control_page_in_chromium(
    browser: Any, fake: FakeUpstream, gateway_factory, tmp_path: Path
) -> None:
    config = chat_config(fake)
    config["tools"] = {"profile": "coding"}
    gw = gateway_factory(config)
    (gw.state_dir / "workspace").mkdir(parents=True, exist_ok=True)
    (gw.state_dir / "workspace" / "notes.md").write_text("remember the milk\n")

    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    traffic = Traffic(page)
    page.goto(gw.url + "/")

    # --- connect: a wrong secret, then the right one, typed with the keyboard -----------------
    page.locator("#secret").fill("not-the-token")
    page.locator("#connect-button").click()
    page.wait_for_function("() => document.getElementById('connect-error').textContent.length > 0")
    assert page.locator("#connect-error").inner_text() == "Wrong token or password."
    assert page.locator("#chat-view").is_hidden()
    page.locator("#secret").fill("")
    page.locator("#secret").focus()
    page.keyboard.type(gw.token)
    page.keyboard.press("Enter")
    page.locator("#chat-view").wait_for(state="visible")
    assert page.locator("#connect-view").is_hidden()
    # Not remembered unless asked: the tab's sessionStorage only.
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("Object.keys(sessionStorage)") == ["openclaw.gateway.secret:/"]
    assert page.locator("#agent-select option").all_inner_texts() == ["main", "beta"]

    # --- a streamed reply grows while the run goes on ----------------------------------------
    fake.script(slow_stream(chunks=40, delay=0.05))
    page.locator("#session-key").fill("browser-chat")
    page.locator("#prompt").fill("stream please")
    page.keyboard.press("Enter")
    reply = page.locator("#messages .msg.assistant").last
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();"
        " const t = m && m.querySelector('.text');"
        " return t && t.textContent.split(' ').length >= 3"
        " && !document.getElementById('stop').disabled; }"
    )
    partial = reply.locator(".text").inner_text()
    assert page.locator("#send").is_disabled()  # the run is still going on
    _wait_idle(page)
    final = reply.locator(".text").inner_text()
    assert final == " ".join(f"w{i}" for i in range(40))
    assert len(final) > len(partial) and final.startswith(partial)
    assert "fake/fake-model" in reply.locator(".meta").inner_text()
    assert "tokens" in reply.locator(".meta").inner_text()
    assert page.locator("#session-key").input_value() == "agent:main:browser-chat"

    # --- a tool call shown inline -----------------------------------------------------------
    fake.script(
        ToolCalls(calls=(call("read", path="notes.md"),), text="Reading."),
        Answer(text="It says: remember the milk."),
    )
    page.locator("#prompt").fill("what is in my notes?")
    page.locator("#send").click()
    _wait_idle(page)
    tool = page.locator("#messages .msg.assistant").last.locator("details.tool")
    assert tool.count() == 1
    assert "done" in (tool.get_attribute("class") or "")
    tool.locator("summary").click()  # expand
    assert "read" in tool.locator("summary").inner_text()
    assert '"path": "notes.md"' in tool.locator("pre.args").inner_text()
    assert "remember the milk" in tool.locator("pre.result").inner_text()
    assert (
        "It says: remember the milk." in page.locator("#messages .msg.assistant").last.inner_text()
    )

    # --- an image attached (a data: URI, within the endpoint's limits) ----------------------
    png = tmp_path / "dot.png"
    png.write_bytes(PNG)
    page.locator("#attach").set_input_files(str(png))
    page.locator(".attachment img").wait_for()
    page.locator("#prompt").fill("what is this?")
    page.locator("#send").click()
    _wait_idle(page)
    assert page.locator("#messages .msg.user").last.locator(".thumbs img").count() == 1
    assert page.locator(".attachment").count() == 0
    sent = fake.model_requests[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in sent] == ["text", "image_url"]
    assert sent[1]["image_url"]["url"].startswith("data:image/png;base64,")

    # --- Stop aborts a slow run --------------------------------------------------------------
    fake.script(slow_stream(chunks=400, delay=0.05))
    page.locator("#prompt").fill("a long one")
    page.locator("#send").click()
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();"
        " const t = m && m.querySelector('.text'); return t && t.textContent.length > 0"
        " && !document.getElementById('stop').disabled; }"
    )
    page.locator("#stop").click()
    _wait_idle(page)
    stopped = page.locator("#messages .msg.assistant").last
    assert stopped.locator(".badge.aborted").inner_text() == "aborted"
    assert fake.wait_for_disconnect(30)
    assert fake.disconnects[-1].chunks_sent < 400

    # --- the session listed, its transcript opened (tool pair, the aborted turn) ---------------
    page.locator("#tabs button[data-view=sessions]").click()
    row = page.locator("#sessions-table tbody tr[data-key='agent:main:browser-chat']")
    row.wait_for()
    page.locator("#session-search").fill("browser")
    row.wait_for()
    assert row.locator("td").nth(0).inner_text() == "main"
    row.locator("button", has_text="Open").click()
    transcript = page.locator("#transcript-messages")
    transcript.locator(".msg").first.wait_for()
    assert page.locator("#transcript-title").inner_text() == "agent:main:browser-chat"
    assert transcript.locator(".msg.user").all_inner_texts() == [
        "stream please",
        "what is in my notes?",
        f"what is this?\n[image image/png, {len(PNG)} bytes]",
        "a long one",
    ]
    stored_tool = transcript.locator("details.tool")
    assert stored_tool.count() == 1 and "done" in (stored_tool.get_attribute("class") or "")
    assert transcript.locator(".badge.aborted").count() == 1
    assert transcript.locator(".msg.assistant").last.locator(".badge.aborted").count() == 1

    # --- status: version, agents, endpoints, config with secrets masked ---------------------
    page.locator("#tabs button[data-view=status]").click()
    page.locator("#status-summary dd").first.wait_for()
    assert "chatCompletions" in page.locator("#status-endpoints").inner_text()
    assert "fake/fake-model" in page.locator("#status-agents").inner_text()
    config_text = page.locator("#status-config").inner_text()
    assert '"token": "[REDACTED]"' in config_text
    assert "No run in progress." in page.locator("#status-runs").inner_text()

    # --- delete the session from its transcript -----------------------------------------------
    page.locator("#tabs button[data-view=sessions]").click()
    page.locator("#session-search").fill("")
    page.locator("#sessions-table tbody tr[data-key='agent:main:browser-chat'] button").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#delete-session").click()
    page.locator("#sessions-table tbody tr[data-key='agent:main:browser-chat']").wait_for(
        state="detached"
    )

    # --- the screenshot for the README: the chat with its streamed text and tool block --------
    page.locator("#tabs button[data-view=chat]").click()
    shot = page.screenshot(full_page=False)
    (tmp_path / "control-ui.png").write_bytes(shot)
    if os.environ.get("OPENCLAW_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(shot)

    # --- the secret: never in the DOM, nor in anything the gateway sent ---------------------
    assert gw.token not in page.content()
    assert gw.token not in page.evaluate("document.documentElement.outerHTML")
    for body in traffic.bodies():
        assert gw.token not in body
    assert traffic.received and not any(gw.token in frame for frame in traffic.received)
    # ... only where the user typed it: the connect frames the page sent.
    carrying = [frame for frame in traffic.sent if gw.token in frame]
    assert carrying and all('"method":"connect"' in frame for frame in carrying)
    assert errors == [] or all("WebSocket" in e or "401" in e for e in errors), errors
    context.close()


def test_remember_narrow_screen_and_dark_mode(
    browser: Any, fake: FakeUpstream, gateway_factory
) -> None:
    gw = gateway_factory(chat_config(fake))
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    page = context.new_page()
    page.goto(gw.url + "/")
    light_bg = "rgb(247, 247, 248)"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light_bg
    page.locator("#secret").fill(gw.token)
    page.locator("#remember").check()
    page.locator("#connect-button").click()
    page.locator("#chat-view").wait_for(state="visible")
    assert page.evaluate("Object.keys(localStorage)") == ["openclaw.gateway.secret:/"]
    # Nothing wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.locator("#prompt").fill("hi")
    page.locator("#send").click()
    _wait_idle(page)
    assert page.locator("#messages .msg.assistant .text").last.inner_text() == "Echo: hi"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # A reload connects again by itself (remembered), and Disconnect forgets the secret.
    page.reload()
    page.locator("#chat-view").wait_for(state="visible")
    page.locator("#disconnect").click()
    page.locator("#connect-view").wait_for(state="visible")
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    context.close()


def test_rate_limited_connect_says_so(browser: Any, fake: FakeUpstream, gateway_factory) -> None:
    gw = gateway_factory(
        chat_config(
            fake,
            gateway={
                "auth": {"rateLimit": {"maxAttempts": 2, "exemptLoopback": False}},
            },
        )
    )
    context = browser.new_context()
    page = context.new_page()
    page.goto(gw.url + "/")
    messages = []
    for _ in range(3):
        page.locator("#secret").fill("wrong")
        page.locator("#connect-button").click()
        page.wait_for_function("() => !document.getElementById('connect-button').disabled")
        messages.append(page.locator("#connect-error").inner_text())
    assert messages[0] == "Wrong token or password."
    assert "Too many failed attempts" in messages[-1]
    context.close()
