"""One configured logger: a line per event, text or JSON, with the request id from a contextvar."""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "openclaw_request_id", default=None
)

LOGGER_NAME = "openclaw"
_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            data["request_id"] = rid
        data.update(_extras(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.getMessage()]
        rid = request_id_var.get()
        extras = _extras(record)
        if rid and "request_id" not in extras:
            extras["request_id"] = rid
        for key, value in extras.items():
            text = str(value)
            parts.append(f"{key}={text if text and ' ' not in text else repr(text)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _Worker(logging.Filter):
    """Marks every line with the worker that wrote it (``gateway run --workers N``)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def configure(
    level: str | None = None, fmt: str | None = None, *, worker: int | None = None
) -> None:
    """Set up the ``openclaw`` logger (env: `OPENCLAW_LOG_LEVEL`, `OPENCLAW_LOG_FORMAT`)."""
    level = (level or os.environ.get("OPENCLAW_LOG_LEVEL") or "info").upper()
    fmt = (fmt or os.environ.get("OPENCLAW_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # uvicorn reports bind failures and protocol errors through its own logger.
    uv = logging.getLogger("uvicorn.error")
    uv.handlers[:] = [handler]
    uv.setLevel(logging.WARNING)
    uv.propagate = False
