"""``openclaw config get/set``: dotted paths into the config, edits that keep the file valid."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import json5

from openclaw.config.loader import read_raw, validate
from openclaw.config.schema import Config
from openclaw.errors import ConfigError
from openclaw.paths import PRIVATE_FILE, make_private_dir

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """``agents.list[0].id`` -> ``["agents", "list", 0, "id"]``."""
    parts: list[str | int] = []
    pos = 0
    path = path.strip()
    while pos < len(path):
        if path[pos] == "." and parts:
            pos += 1
        match = _SEGMENT.match(path, pos)
        if not match:
            raise ConfigError(f"bad config path: {path!r}")
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if not parts:
        raise ConfigError("empty config path")
    return parts


def effective(config: Config) -> dict[str, Any]:
    """The whole config with defaults filled in, keyed as in the file."""
    return config.model_dump(by_alias=True, exclude_none=False, exclude={"schema_"})


def get_value(data: Any, path: str) -> Any:
    """The value at ``path``; ``ConfigError`` naming the path when there is none."""
    node = data
    for part in parse_path(path):
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if in_list or (isinstance(part, str) and isinstance(node, dict) and part in node):
            node = node[part]
        else:
            raise ConfigError(f"{path}: no such key")
    return node


def parse_value(text: str) -> Any:
    """A JSON5 literal (``true``, ``42``, ``{a: 1}``) when it is one, else the plain string."""
    try:
        return json5.loads(text)
    except ValueError:
        return text


def set_value(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``data`` in place, creating objects on the way."""
    parts = parse_path(path)
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{path}: index {part} does not exist")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {part} is not inside an object")
        if part not in node or node[part] is None:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last > len(node):
            raise ConfigError(f"{path}: index {last} does not exist")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: not inside an object")
        node[last] = value


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a config."""
    make_private_dir(path.parent)
    text = json5.dumps(data, indent=2, quote_keys=True, trailing_commas=False) + "\n"
    # A config holds secrets: never wider than 0600, whatever the file had.
    mode = path.stat().st_mode & PRIVATE_FILE if path.exists() else PRIVATE_FILE
    fd, tmp = tempfile.mkstemp(prefix=".openclaw-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_in_file(path: Path, dotted: str, value: Any) -> None:
    """Set one value in the file; an invalid result is refused and the file left as it was."""
    data = read_raw(path)
    set_value(data, dotted, value)
    # `${VAR}` references are checked at start-up, not here: this shell may lack the variable.
    validate(data, _AnyEnv())
    write_config(path, data)


class _AnyEnv(dict[str, str]):
    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, "")
