"""The two value types of the session layer: an index row and a transcript line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from openclaw.messages import Usage


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """One row of the session index; times are unix seconds."""

    key: str
    session_id: str
    agent_id: str
    created_at: float
    updated_at: float
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    ephemeral: bool
    # Bytes of the JSONL transcript that are committed (stored sessions): readers stop there, and
    # anything beyond it is a write that never committed (a crash), cut off by the next writer.
    # None for ephemeral sessions (their lines are rows of the index).
    transcript_bytes: int | None = None
    # User messages stored (a turn each); None for sessions stored before the index counted them.
    turns: int | None = 0
    # Records in the transcript, where the store counts them (the shared store): a turn written
    # for a run that read this many is refused if another writer has added some meanwhile.
    records: int | None = None

    @property
    def usage(self) -> Usage:
        """The session's token totals."""
        return Usage(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True, slots=True)
class TranscriptRecord:
    """One transcript line (a message or event); ``timestamp`` is unix seconds."""

    role: str
    content: str | list[dict[str, Any]]
    timestamp: float
    run_id: str | None = None
    usage: Usage | None = None
    stop_reason: str | None = None
    model: str | None = None
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The on-disk object: camelCase keys, None fields left out."""
        out: dict[str, Any] = {
            "role": self.role,
            "content": self.content,
            "timestamp": self.timestamp,
        }
        if self.run_id is not None:
            out["runId"] = self.run_id
        if self.usage is not None:
            out["usage"] = self.usage.as_dict()
        if self.stop_reason is not None:
            out["stopReason"] = self.stop_reason
        if self.model is not None:
            out["model"] = self.model
        if self.meta is not None:
            out["meta"] = self.meta
        return out

    def to_json_bytes(self) -> bytes:
        """One JSONL line, ``\\n``-terminated (orjson escapes every newline inside strings)."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TranscriptRecord:
        """Parse an on-disk object; raises ValueError when a field has the wrong shape."""
        role = data.get("role")
        content = data.get("content")
        timestamp = data.get("timestamp")
        if not isinstance(role, str):
            raise ValueError("role must be a string")
        if not isinstance(content, str) and not (
            isinstance(content, list) and all(isinstance(part, dict) for part in content)
        ):
            raise ValueError("content must be a string or a list of objects")
        # bool is an int subclass; a boolean timestamp is corruption, not a time.
        if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
            raise ValueError("timestamp must be a number")
        usage = data.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise ValueError("usage must be an object")
        meta = data.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError("meta must be an object")
        return cls(
            role=role,
            content=content,
            timestamp=float(timestamp),
            run_id=_opt_str(data, "runId"),
            usage=None if usage is None else Usage.from_dict(usage),
            stop_reason=_opt_str(data, "stopReason"),
            model=_opt_str(data, "model"),
            meta=meta,
        )


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value
