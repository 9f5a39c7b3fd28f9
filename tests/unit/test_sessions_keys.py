"""Session keys: building, parsing, normalisation and the user-key collision rule."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from openclaw.sessions.keys import (
    MAX_AGENT_ID_LEN,
    MAX_KEY_LEN,
    MAX_USER_LEN,
    ParsedKey,
    build_key,
    ephemeral_key,
    is_valid_key,
    normalize_agent_id,
    parse_key,
    sanitize_user,
    scope_key,
    user_key,
)

AGENT_ID = re.compile(r"[a-z0-9_-]{1,64}")
USER_PART = re.compile(r"[A-Za-z0-9._@+-]+(~[0-9a-f]{16})?")

agent_ids = st.from_regex(AGENT_ID, fullmatch=True)
rest_parts = st.text(min_size=1, max_size=20)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("main", "main"),
        ("  Main  ", "main"),
        ("My Agent", "my-agent"),
        ("a.b/c", "a-b-c"),
        ("ümlaut", "-mlaut"),
        ("x" * 100, "x" * 64),
        ("under_score-dash", "under_score-dash"),
    ],
)
def test_normalize_agent_id(raw: str, expected: str) -> None:
    assert normalize_agent_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_normalize_agent_id_rejects_empty(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_agent_id(raw)


@given(st.text(min_size=1))
def test_normalize_agent_id_is_canonical_and_idempotent(raw: str) -> None:
    assume(raw.strip())
    out = normalize_agent_id(raw)
    assert AGENT_ID.fullmatch(out)
    assert len(out) <= MAX_AGENT_ID_LEN
    assert normalize_agent_id(out) == out


def test_build_and_parse_known_shapes() -> None:
    assert build_key("main", "main") == "agent:main:main"
    assert build_key("Main", "openai", "abc") == "agent:main:openai:abc"
    assert parse_key("agent:main:main") == ParsedKey("main", "main")
    assert parse_key("agent:main:openai-user:bob:x") == ParsedKey("main", "openai-user:bob:x")


@pytest.mark.parametrize("rest", [(), ("",), ("a", "")])
def test_build_key_needs_non_empty_rest(rest: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        build_key("main", *rest)


@pytest.mark.parametrize(
    "key",
    ["main", "agent:", "agent:main", "agent:main:", "agent::x", "agent:Main:x", "Agent:main:x"],
)
def test_parse_key_rejects(key: str) -> None:
    assert parse_key(key) is None


@given(agent_ids, st.lists(rest_parts, min_size=1, max_size=4))
def test_build_parse_round_trip(agent_id: str, rest: list[str]) -> None:
    key = build_key(agent_id, *rest)
    assert parse_key(key) == ParsedKey(agent_id, ":".join(rest))


def test_ephemeral_key_shape_and_uniqueness() -> None:
    a, b = ephemeral_key("Main"), ephemeral_key("main")
    assert re.fullmatch(r"agent:main:openai:[0-9a-f]{32}", a)
    assert a != b


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("bob", "bob"),
        ("  bob@example.com ", "bob@example.com"),
        ("a.b+c_d-e", "a.b+c_d-e"),
    ],
)
def test_user_key_keeps_safe_users_verbatim(user: str, expected: str) -> None:
    assert user_key("main", user) == f"agent:main:openai-user:{expected}"


def test_user_key_rewrites_and_hashes_unsafe_users() -> None:
    key = user_key("main", "Jörg Müller")
    parsed = parse_key(key)
    assert parsed is not None
    user_part = parsed.rest.removeprefix("openai-user:")
    assert USER_PART.fullmatch(user_part)
    assert user_part.startswith("J-rg-M-ller~")
    # Stable across calls (and processes: SHA-256, not hash()).
    assert user_key("main", "Jörg Müller") == key


def test_user_key_distinguishes_lightly_changed_users() -> None:
    assert user_key("main", "a b") != user_key("main", "a-b")
    assert user_key("main", "a b") != user_key("main", "a\tb")


def test_user_key_truncates_long_users_with_a_hash() -> None:
    long_a, long_b = "u" * 200, "u" * 199 + "v"
    a, b = sanitize_user(long_a), sanitize_user(long_b)
    assert len(a) == len(b) == MAX_USER_LEN
    assert a != b
    assert sanitize_user("u" * MAX_USER_LEN) == "u" * MAX_USER_LEN


@pytest.mark.parametrize("user", ["", "   "])
def test_user_key_rejects_empty(user: str) -> None:
    with pytest.raises(ValueError):
        user_key("main", user)


@given(st.text(min_size=1, max_size=300))
def test_sanitize_user_shape(user: str) -> None:
    assume(user.strip())
    out = sanitize_user(user)
    assert len(out) <= MAX_USER_LEN
    assert USER_PART.fullmatch(out)
    assert is_valid_key(user_key("main", user))


@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200))
def test_sanitize_user_never_merges_distinct_users(a: str, b: str) -> None:
    assume(a.strip() and b.strip() and a.strip() != b.strip())
    assert sanitize_user(a) != sanitize_user(b)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("agent:main:main", True),
        ("agent:main:ünïcode ok", True),
        ("", False),
        ("agent:main:" + "x" * (MAX_KEY_LEN - 11), True),
        ("agent:main:" + "x" * (MAX_KEY_LEN - 10), False),
        ("agent:main:a\nb", False),
        ("agent:main:a\x00b", False),
        ("agent:main:a\x7fb", False),
        ("agent:main:a\x85b", False),
        ("agent:main:a\ud800b", False),
    ],
)
def test_is_valid_key(key: str, valid: bool) -> None:
    assert is_valid_key(key) is valid


def test_scope_key() -> None:
    assert scope_key("agent:ops:main", "main") == "agent:ops:main"
    assert scope_key("my-chat", "Main") == "agent:main:my-chat"
    assert scope_key("agentx:1", "main") == "agent:main:agentx:1"
    with pytest.raises(ValueError):
        scope_key("", "main")


@given(st.text(min_size=1, max_size=50), agent_ids)
def test_scope_key_always_yields_an_agent_key(raw: str, default: str) -> None:
    key = scope_key(raw, default)
    assert key.startswith("agent:")
    if not raw.startswith("agent:"):
        assert parse_key(key) == ParsedKey(default, raw)
