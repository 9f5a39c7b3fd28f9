"""Session keys: build, parse and validate the ``agent:<agentId>:<rest>`` strings.

Every session lives under exactly one key.  Shapes used by the gateway:

    agent:<id>:main                      the agent's main session
    agent:<id>:openai:<uuid hex>         one stateless OpenAI request (ephemeral)
    agent:<id>:openai-user:<user>        all requests carrying the same OpenAI ``user`` field

``<rest>`` may itself contain ``:``; only the first two separators are structural.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

from openclaw.ids import uuid7_hex

KEY_PREFIX = "agent:"
MAX_AGENT_ID_LEN = 64
MAX_KEY_LEN = 512
MAX_USER_LEN = 128

# Appended before the hash of a rewritten user; it is outside the safe set on purpose, so a user
# that needed no rewriting can never look like a hashed one.
USER_HASH_SEP = "~"
USER_HASH_LEN = 16  # hex chars = 64 bits: collisions need ~4e9 distinct rewritten users

_AGENT_ID_BAD = re.compile(r"[^a-z0-9_-]")
_USER_BAD_RUN = re.compile(r"[^A-Za-z0-9._@+-]+")
# C0, DEL and C1 controls break logs and terminals; lone surrogates cannot be stored as UTF-8.
_KEY_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class ParsedKey(NamedTuple):
    """The two parts of an ``agent:<agent_id>:<rest>`` key."""

    agent_id: str
    rest: str


def normalize_agent_id(raw: str) -> str:
    """Canonical agent id: trimmed, lower-case, ``[a-z0-9_-]`` only, at most 64 chars."""
    cleaned = _AGENT_ID_BAD.sub("-", raw.strip().lower())[:MAX_AGENT_ID_LEN]
    if not cleaned:
        raise ValueError("agent id is empty")
    return cleaned


def build_key(agent_id: str, *rest: str) -> str:
    """``agent:<normalised agent_id>:<rest joined by ':'>``; ``rest`` must be non-empty."""
    if not rest or not all(rest):
        raise ValueError("a session key needs at least one non-empty part after the agent id")
    return ":".join((KEY_PREFIX + normalize_agent_id(agent_id), *rest))


def parse_key(key: str) -> ParsedKey | None:
    """Split an ``agent:`` key, or None when it is not one with a canonical agent id and a rest.

    A key whose agent segment is not already normalised (``agent:Main:x``) is rejected rather than
    silently re-mapped, so one session can never be reachable under two spellings.
    """
    if not key.startswith(KEY_PREFIX):
        return None
    agent_id, sep, rest = key[len(KEY_PREFIX) :].partition(":")
    if not sep or not rest or not agent_id:
        return None
    try:
        if normalize_agent_id(agent_id) != agent_id:
            return None
    except ValueError:
        return None
    return ParsedKey(agent_id, rest)


def ephemeral_key(agent_id: str, api: str = "openai") -> str:
    """A fresh key for one stateless request: ``agent:<id>:<api>:<uuid7 hex>`` (time-ordered,
    so the index inserts it at the end of its B-tree); ``api`` is ``openai`` (chat completions)
    or ``openresponses``."""
    return build_key(agent_id, api, uuid7_hex())


def sanitize_user(user: str) -> str:
    """The OpenAI ``user`` field made safe for a key, without ever merging two distinct users.

    Rule: trim; if the result is non-empty, at most 128 chars and only uses ``[A-Za-z0-9._@+-]``,
    it is used verbatim.  Otherwise every run of other characters becomes one ``-``, the text is
    cut so that ``~`` plus 16 hex chars of SHA-256(trimmed user, UTF-8) fit in 128 chars, and that
    suffix is appended.  Any change at all (not just a heavy one) gets the hash, because e.g.
    ``"a b"`` and ``"a-b"`` would otherwise collide.
    """
    trimmed = user.strip()
    if not trimmed:
        raise ValueError("user is empty")
    readable = _USER_BAD_RUN.sub("-", trimmed)
    if readable == trimmed and len(trimmed) <= MAX_USER_LEN:
        return trimmed
    digest = hashlib.sha256(trimmed.encode("utf-8", "surrogatepass")).hexdigest()[:USER_HASH_LEN]
    keep = MAX_USER_LEN - len(USER_HASH_SEP) - USER_HASH_LEN
    return f"{readable[:keep]}{USER_HASH_SEP}{digest}"


def user_key(agent_id: str, user: str, api: str = "openai") -> str:
    """The key shared by all requests of one OpenAI ``user``: ``agent:<id>:<api>-user:<user>``
    (``openai-user`` on chat completions, ``openresponses-user`` on the Responses API)."""
    return build_key(agent_id, f"{api}-user", sanitize_user(user))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """``text`` with ASCII letters lowered, others as they are: key search is case-insensitive
    for ASCII letters on every store (SQLite's ``lower()`` knows no others)."""
    return text.translate(_ASCII_LOWER)


def is_valid_key(key: str) -> bool:
    """True for a non-empty key of at most 512 chars without control chars or lone surrogates."""
    return 0 < len(key) <= MAX_KEY_LEN and _KEY_FORBIDDEN.search(key) is None


def scope_key(raw_key: str, default_agent_id: str) -> str:
    """A client key as a store key: kept when ``agent:``-prefixed, else under the default agent.

    The result still has to pass ``is_valid_key`` and ``parse_key``; the caller rejects it if not.
    An empty ``raw_key`` raises ValueError.
    """
    if raw_key.startswith(KEY_PREFIX):
        return raw_key
    return build_key(default_agent_id, raw_key)


MAIN_SESSION = "main"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a run goes: the agent that runs it, its session's key, and whether that session is
    a per-request one made for this run (ephemeral); ``namespace``: the caller's own space of
    sessions, when it has one (``namespace_of``)."""

    agent_id: str
    key: str
    ephemeral: bool
    namespace: str | None = None


def namespace_of(identity: str) -> str | None:
    """The session space of a caller a trusted proxy names (identity ``user:<name>``): the keys
    it gives (``x-openclaw-session-key``, ``user``, a WebSocket ``sessionKey``) name sessions of
    its own, so one user never reaches another's.  Holders of the gateway secret (and ``none``)
    are one operator: no namespace."""
    if not identity.startswith("user:"):
        return None
    return "u-" + sanitize_user(identity[len("user:") :])


def in_namespace(key: str, namespace: str | None) -> str:
    """``key`` within ``namespace``: ``agent:<id>:<namespace>:<rest>`` (kept as is when it is
    already there, so a key the gateway handed back works again)."""
    if namespace is None:
        return key
    parsed = parse_key(key)
    if parsed is None or parsed.rest.startswith(f"{namespace}:"):
        return key
    return build_key(parsed.agent_id, namespace, parsed.rest)


def owned(key: str, namespace: str | None) -> bool:
    """Whether ``key`` is in ``namespace`` (every key is, without one)."""
    if namespace is None:
        return True
    parsed = parse_key(key)
    return parsed is not None and parsed.rest.startswith(f"{namespace}:")


def main_key(agent_id: str) -> str:
    """The agent's main session, ``agent:<id>:main``: where `openclaw agent` talks by default."""
    return build_key(agent_id, MAIN_SESSION)


def scoped_key(raw_key: str, agent_id: str) -> str:
    """A key a client gave, as a valid store key: ``scope_key`` and the checks it leaves to its
    caller; ValueError (empty, or no valid key) otherwise."""
    key = scope_key(raw_key.strip(), agent_id)
    if not is_valid_key(key) or parse_key(key) is None:
        raise ValueError("invalid session key")
    return key


def resolve_target(
    agent_id: str,
    *,
    session_key: str | None = None,
    user: str | None = None,
    default: Literal["ephemeral", "main"],
    api: str = "openai",
    namespace: str | None = None,
) -> Target:
    """Every door's one rule for where a run goes.

    A session key wins (an ``agent:`` key names its own agent, which then runs; any other is
    scoped under ``agent_id``); then an OpenAI ``user`` (its stable key); else the door's
    default: a new per-request session (the OpenAI endpoints) or the agent's main session (the
    WebSocket, the CLI).  ValueError for a session key that cannot be one; the door says why in
    its own terms.
    """
    if session_key is not None:
        key = in_namespace(scoped_key(session_key, agent_id), namespace)
        parsed = parse_key(key)
        assert parsed is not None  # scoped_key checked it
        if not is_valid_key(key):
            raise ValueError("invalid session key")
        return Target(parsed.agent_id, key, False, namespace)
    if user is not None and user.strip():
        key = in_namespace(user_key(agent_id, user, api), namespace)
        return Target(agent_id, key, False, namespace)
    if default == "main":
        return Target(agent_id, in_namespace(main_key(agent_id), namespace), False, namespace)
    return Target(agent_id, ephemeral_key(agent_id, api), True, namespace)
