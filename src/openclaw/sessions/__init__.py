"""Sessions: keys, the session index and the JSONL transcripts."""

from openclaw.sessions.keys import (
    ParsedKey,
    build_key,
    ephemeral_key,
    is_valid_key,
    normalize_agent_id,
    parse_key,
    scope_key,
    user_key,
)
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.store import SessionStore, SqliteSessionStore

__all__ = [
    "ParsedKey",
    "SessionEntry",
    "SessionStore",
    "SqliteSessionStore",
    "TranscriptRecord",
    "build_key",
    "ephemeral_key",
    "is_valid_key",
    "normalize_agent_id",
    "parse_key",
    "scope_key",
    "user_key",
]
