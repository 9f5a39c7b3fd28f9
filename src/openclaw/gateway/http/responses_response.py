"""The Responses API's answers: the ``response`` object and its output items, and the typed
stream events (``event:`` + ``data:`` lines, each with its ``sequence_number``) that build it up.

``ResponseShape`` holds what every version of one response shares (id, request echo);
``output_items`` makes a finished run's output; ``EventStream`` turns a run's deltas into events
and ends with the same object a non-streamed request gets.
"""

from __future__ import annotations

import time
from typing import Any

from openclaw.agents.runner import RunResult
from openclaw.errors import OpenClawError
from openclaw.gateway.responses_schema import CreateResponse
from openclaw.gateway.wire import sse_json
from openclaw.ids import hex_id
from openclaw.messages import ToolCall, ToolCallDelta, Usage


def response_id() -> str:
    return "resp_" + hex_id(24)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{hex_id(24)}"


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens or 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """A message item; ``in_progress`` ones (just added to a stream) have no content yet."""
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [] if status == "in_progress" else content,
    }


def call_item(
    item_id: str, call: ToolCall, arguments: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": status,
    }


def output_items(result: RunResult) -> list[dict[str, Any]]:
    """A finished run's output: its text as one message (when it said anything; ``incomplete``
    when the model hit its token limit), then one ``function_call`` item per call of a client
    tool."""
    status = "incomplete" if result.stop_reason == "length" else "completed"
    items = [message_item(_item_id("msg"), result.text, status)] if result.text else []
    items += [call_item(_item_id("fc"), call) for call in result.tool_calls]
    return items


class ResponseShape:
    """The parts of one response object that do not change while it runs."""

    def __init__(self, req: CreateResponse, rid: str, created_at: int) -> None:
        self.id = rid
        self.created_at = created_at
        fmt = req.text.format if req.text and req.text.format else None
        text_format: dict[str, Any] = {"type": "text"}
        if fmt is not None:
            text_format = fmt.model_dump(exclude_none=True, by_alias=True)
        self._echo: dict[str, Any] = {
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": req.model,
            "parallel_tool_calls": True
            if req.parallel_tool_calls is None
            else req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": req.store,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "text": {"format": text_format},
            "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
            "tools": [_tool_echo(t) for t in req.tools or ()],
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "truncation": "disabled",
            "metadata": dict(req.metadata or {}),
            "background": False,
        }
        if req.user is not None:
            self._echo["user"] = req.user

    def object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        *,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        obj = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "output": output,
            **self._echo,
        }
        if usage is not None:  # not known (and not nullable) before the run ends
            obj["usage"] = usage_object(usage)
        return obj

    def finished(self, result: RunResult, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The final object: completed, or incomplete when the model hit its token limit."""
        if result.stop_reason == "length":
            return self.object("incomplete", output, result.usage, incomplete="max_output_tokens")
        return self.object("completed", output, result.usage)

    def failed(self, err: OpenClawError, output: list[dict[str, Any]]) -> dict[str, Any]:
        # The response object's error codes are a fixed set (OpenAI's schema): ours map onto
        # them by status; the message says what happened.
        code = {429: "rate_limit_exceeded", 400: "invalid_prompt"}.get(
            err.http_status, "server_error"
        )
        return self.object("failed", output, error={"code": code, "message": err.message})


def _tool_echo(raw: dict[str, Any]) -> dict[str, Any]:
    """A request's function tool as the response object lists it."""
    return {
        "type": "function",
        "name": raw.get("name"),
        "description": raw.get("description"),
        "parameters": raw.get("parameters"),
        "strict": raw.get("strict", True),
    }


def _event(kind: str, seq: int, data: dict[str, Any]) -> bytes:
    body = sse_json({"type": kind, "sequence_number": seq, **data})
    return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


class EventStream:
    """The events of one streamed response, in OpenAI's order: created, in_progress, then per
    output item added -> (content part added -> text deltas -> text done -> part done | argument
    deltas -> arguments done) -> item done, then completed (or incomplete, or failed)."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self._seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._text: list[str] = []
        self._args: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # the model's call index -> its item

    def _emit(self, kind: str, data: dict[str, Any]) -> bytes:
        out = _event(kind, self._seq, data)
        self._seq += 1
        return out

    def opening(self) -> bytes:
        start = self.shape.object("in_progress", [])
        return self._emit("response.created", {"response": start}) + self._emit(
            "response.in_progress", {"response": start}
        )

    def text(self, delta: str) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != "message":
            out += self._close()
            item = message_item(_item_id("msg"), "", status="in_progress")
            self._open, self._text = item, []
            index = len(self.output)
            out += self._emit("response.output_item.added", {"output_index": index, "item": item})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._emit(
                "response.content_part.added",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part},
            )
        self._text.append(delta)
        return out + self._emit(
            "response.output_text.delta",
            {
                "item_id": self._open["id"],
                "output_index": len(self.output),
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            },
        )

    def call(self, delta: ToolCallDelta) -> bytes:
        out = b""
        item = self._calls.get(delta.index)
        if item is None:
            out += self._close()
            call = ToolCall(delta.id or f"call_{hex_id(12)}", delta.name or "", "")
            item = call_item(_item_id("fc"), call, "", status="in_progress")
            self._calls[delta.index] = item
            self._open, self._args = item, []
            out += self._emit(
                "response.output_item.added", {"output_index": len(self.output), "item": item}
            )
        if delta.arguments and item is self._open:
            self._args.append(delta.arguments)
            out += self._emit(
                "response.function_call_arguments.delta",
                {
                    "item_id": item["id"],
                    "output_index": len(self.output),
                    "delta": delta.arguments,
                },
            )
        return out

    def _close(self, status: str = "completed") -> bytes:
        """End the item being streamed, if any (``status``: how the last one ended)."""
        item, self._open = self._open, None
        if item is None:
            return b""
        index = len(self.output)
        if item["type"] == "message":
            text = "".join(self._text)
            done = message_item(item["id"], text, status)
            part = done["content"][0]
            out = self._emit(
                "response.output_text.done",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                },
            )
            out += self._emit(
                "response.content_part.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part},
            )
        else:
            arguments = "".join(self._args)
            done = {**item, "arguments": arguments, "status": "completed"}
            out = self._emit(
                "response.function_call_arguments.done",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "name": item["name"],
                    "arguments": arguments,
                },
            )
        self.output.append(done)
        return out + self._emit("response.output_item.done", {"output_index": index, "item": done})

    def finish(self, result: RunResult) -> tuple[bytes, dict[str, Any]]:
        """The closing events, and the final response object (as stored)."""
        out = self._close("incomplete" if result.stop_reason == "length" else "completed")
        final = self.shape.finished(result, self.output)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return out + self._emit(kind, {"response": final}), final

    def failed(self, err: OpenClawError) -> bytes:
        """A failure after the stream started: ``response.failed`` with the error."""
        self._open = None  # an item cut short is not part of the output
        return self._emit("response.failed", {"response": self.shape.failed(err, self.output)})
