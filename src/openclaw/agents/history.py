"""What the model is shown of the past: the stored transcript (bounded by the agent's budget),
reconciled with the history a client sends along (OpenAI clients resend the whole conversation).

A ``history-reset`` record marks a point where the client's history replaced the transcript's (an
edited or regenerated turn); it carries the history that was used, so later turns line up again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from openclaw.messages import ChatMessage, ImagePart, TextPart, ToolCall
from openclaw.providers.tokens import TOKENS_PER_MESSAGE, estimate_tokens
from openclaw.sessions.models import TranscriptRecord

RESET = "history-reset"


def record_content(msg: ChatMessage) -> str | list[dict[str, Any]]:
    """A message as stored: text as is, images as a note of their type and size (not bytes)."""
    if isinstance(msg.content, str):
        return msg.content
    parts: list[dict[str, Any]] = []
    for part in msg.content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            parts.append({"type": "image", "mime": part.mime, "bytes": len(part.data)})
    return parts


def _record_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def starts_turn(record: TranscriptRecord) -> bool:
    """Whether a turn begins at ``record``: a user message, or a history reset (which carries
    the history before it).  A client's tool results begin a turn too, but only as the answer
    to the calls before them: history cannot start there."""
    return record.role == "user" or (record.meta or {}).get("type") == RESET


def to_messages(records: Sequence[TranscriptRecord]) -> list[ChatMessage]:
    """Transcript records as chat turns, starting after the last history reset."""
    # A reset replaces everything before it: start at the last one rather than converting every
    # earlier reset's history only to drop it (a session of regenerated turns has one per turn).
    first = next(
        (
            i
            for i in range(len(records) - 1, -1, -1)
            if (records[i].meta or {}).get("type") == RESET
        ),
        0,
    )
    out: list[ChatMessage] = []
    for rec in records[first:]:
        meta = rec.meta or {}
        if meta.get("type") == RESET:
            out = [_message_from(m) for m in meta.get("history", ()) if _valid_message(m)]
            continue
        text = _record_text(rec.content)
        if rec.role == "tool":
            out.append(
                ChatMessage(
                    role="tool",
                    content=text,
                    name=meta.get("toolName"),
                    tool_call_id=meta.get("toolCallId"),
                )
            )
        elif rec.role == "assistant" and meta.get("toolCalls"):
            calls = tuple(
                ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                for c in meta["toolCalls"]
            )
            out.append(ChatMessage(role="assistant", content=text, tool_calls=calls))
        elif rec.role in ("user", "assistant") and text:
            out.append(
                ChatMessage(role="user" if rec.role == "user" else "assistant", content=text)
            )
    return out


def _key(msg: ChatMessage) -> tuple[str, str]:
    calls = "".join(f"|{c.name}({c.arguments})" for c in msg.tool_calls)
    return msg.role, " ".join(msg.text.split()) + calls


@dataclass(frozen=True, slots=True)
class Reconciled:
    history: list[ChatMessage]
    diverged: bool


def _is_suffix(short: list[tuple[str, str]], long: list[tuple[str, str]]) -> bool:
    return len(short) <= len(long) and long[len(long) - len(short) :] == short


def reconcile(
    stored: list[ChatMessage], client: list[ChatMessage], turn: Sequence[ChatMessage] = ()
) -> Reconciled:
    """Use the transcript when the client's history agrees with it, else the client's.

    The transcript is compared as the client saw it (``client_view``: server tool rounds are
    the gateway's business).  They agree when one is the most recent part of the other
    (clients trim their own history; the transcript is read through a budget).  Asking the
    last stored question again is a regeneration: the old answer is left out.  Anything else
    is an edited turn: the client's history is what the user now sees, so it wins.  Either
    way nothing is sent twice.
    """
    if not stored:
        return Reconciled(client, False)
    view, starts = client_view(stored)
    s = [_key(m) for m in view]
    c = [_key(m) for m in client]
    n = len(turn)
    if (
        n
        and len(s) > n
        and s[-1][0] == "assistant"
        and s[-1 - n : -1] == [_key(m) for m in turn]
        and _is_suffix(c, s[: -1 - n])
    ):
        return Reconciled(stored[: starts[-1 - n]], True)
    if not client:
        return Reconciled(stored, False)
    if _is_suffix(c, s) or _is_suffix(s, c):
        return Reconciled(stored, False)
    return Reconciled(client, True)


def client_view(messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], list[int]]:
    """The conversation as the client saw it, and where each of its messages starts in
    ``messages``: server tool calls and their results (a tool message with a ``name``) left
    out, and a run's rounds one assistant message, texts joined by a blank line as the reply
    joined them."""
    view: list[ChatMessage] = []
    starts: list[int] = []
    continues = False  # the last view message is a tool round's: the run's next answer joins it
    for i, msg in enumerate(messages):
        if msg.role == "tool" and msg.name is not None:
            continue
        shown = msg
        if msg.role == "assistant" and msg.tool_calls:
            server = set()
            for later in messages[i + 1 :]:
                if later.role != "tool":
                    break
                if later.name is not None:
                    server.add(later.tool_call_id)
            shown = replace(msg, tool_calls=tuple(c for c in msg.tool_calls if c.id not in server))
        if continues and shown.role == "assistant":
            text = "\n\n".join(t for t in (view[-1].text, shown.text) if t)
            view[-1] = replace(shown, content=text)
        else:
            view.append(shown)
            starts.append(i)
        continues = shown.role == "assistant" and bool(msg.tool_calls) and not shown.tool_calls
    return view, starts


def apply_budget(
    history: list[ChatMessage],
    *,
    max_messages: int,
    max_tokens: int | None,
    then: Sequence[ChatMessage] = (),
) -> list[ChatMessage]:
    """Drop the oldest turns until within budget; never start with an assistant turn; keep
    tool calls and results in pairs (``then``: the turn that follows, whose tool results may
    answer the history's last calls: that call's turn is kept whatever the budget, or the
    results would reach the model without it)."""
    start = max(0, len(history) - max_messages)
    if max_tokens is not None:
        total = 0
        for i in range(len(history) - 1, start - 1, -1):
            total += estimate_tokens(history[i].text) + TOKENS_PER_MESSAGE
            if total > max_tokens:
                start = i + 1
                break
    start = min(start, _answered_turn(history, then))
    # History must start at a user turn (never mid tool-exchange or with a reply).
    while start < len(history) and history[start].role != "user":
        start += 1
    return paired(history[start:], then)


def _answered_turn(history: Sequence[ChatMessage], then: Sequence[ChatMessage]) -> int:
    """Where the turn starts whose last message's calls ``then`` answers (``len(history)``
    when it answers none)."""
    answers = {m.tool_call_id for m in then if m.role == "tool"}
    i = len(history) - 1
    while i >= 0 and history[i].role == "tool":  # the server's results of the same answer
        i -= 1
    if i < 0 or not answers & {c.id for c in history[i].tool_calls}:
        return len(history)
    while i > 0 and history[i].role != "user":
        i -= 1
    return i


def paired(history: list[ChatMessage], then: Sequence[ChatMessage] = ()) -> list[ChatMessage]:
    """Every tool call next to its result: a call without a result (an aborted run, a client
    that never answered) is left out of its message, a result without its call is dropped; the
    models' APIs refuse either.  The results of the history's last calls may come in ``then``
    (a client answering them this turn)."""
    out: list[ChatMessage] = []
    i = 0
    while i < len(history):
        msg = history[i]
        i += 1
        if msg.role == "tool":
            continue  # not right after its call: an orphan
        if msg.role != "assistant" or not msg.tool_calls:
            out.append(msg)
            continue
        results = []
        while i < len(history) and history[i].role == "tool":
            results.append(history[i])
            i += 1
        answered = {r.tool_call_id for r in results}
        if i == len(history):
            answered |= {m.tool_call_id for m in then if m.role == "tool"}
        calls = tuple(c for c in msg.tool_calls if c.id in answered)
        ids = {c.id for c in calls}
        if calls or msg.text:
            out.append(replace(msg, tool_calls=calls))
        out.extend(r for r in results if r.tool_call_id in ids)
    return out


def _message_dict(msg: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.text}
    if msg.tool_calls:
        out["toolCalls"] = [call.as_dict() for call in msg.tool_calls]
    if msg.tool_call_id:
        out["toolCallId"] = msg.tool_call_id
    if msg.role == "tool" and msg.name:
        out["toolName"] = msg.name
    return out


def _valid_message(m: Any) -> bool:
    return (
        isinstance(m, dict)
        and m.get("role") in ("user", "assistant", "tool")
        and isinstance(m.get("content"), str)
    )


def _message_from(m: dict[str, Any]) -> ChatMessage:
    calls = tuple(
        ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in m.get("toolCalls") or ()
    )
    return ChatMessage(
        role=m["role"],
        content=m["content"],
        name=m.get("toolName") if m["role"] == "tool" else None,
        tool_call_id=m.get("toolCallId"),
        tool_calls=calls,
    )


def reset_record(history: Sequence[ChatMessage], timestamp: float, run_id: str) -> TranscriptRecord:
    return TranscriptRecord(
        role="system",
        content="",
        timestamp=timestamp,
        run_id=run_id,
        meta={
            "type": RESET,
            "reason": "client history differs from the transcript (edited or regenerated turn)",
            "history": [_message_dict(m) for m in history],
        },
    )
