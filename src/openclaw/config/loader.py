"""Reading ``openclaw.json``: JSON5, ``${ENV}`` substitution, schema validation, readable errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import json5
from pydantic import ValidationError

from openclaw.config.schema import Config
from openclaw.errors import ConfigError

# `${NAME}` is replaced by the variable; `$${NAME}` is a literal `${NAME}`.
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_raw(path: Path) -> dict[str, Any]:
    """The file as a plain dict, before substitution and validation; ``{}`` when absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if not text.strip():
        return {}
    try:
        data = json5.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON5: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    return data


def substitute_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` in every string value; a missing variable is an error naming the path."""
    if isinstance(value, str):
        if "$" not in value:
            return value

        def repl(match: re.Match[str]) -> str:
            escaped, name = match.group(1), match.group(2)
            if escaped:
                return "${" + name + "}"
            if name not in env:
                raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")
            return env[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute_env(v, env, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _describe(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", '"')
        return f"expected {expected}"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = str(err["msg"])
    return msg[0].lower() + msg[1:] if msg else kind


def _strip_branches(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # pydantic names union branches and validator functions in the location; users only know keys.
    return tuple(
        p
        for p in loc
        if not (isinstance(p, str) and (p.startswith("function-") or p in ("str", "int", "float")))
    )


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``gateway.port: input should be less than or equal to 65535``."""
    lines = []
    seen = set()
    for err in exc.errors():
        line = f"{_loc(_strip_branches(err['loc']))}: {_describe(err)}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def validate(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Substitute env references and validate; raises ``ConfigError`` with every bad path."""
    resolved = substitute_env(dict(data), os.environ if env is None else env)
    try:
        return Config.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the file at ``path``; a missing file means all defaults."""
    try:
        return validate(read_raw(path), env)
    except ConfigError as exc:
        msg = str(exc)
        prefix = f"{path}: "
        detail = msg if msg.startswith(prefix) else f"invalid config {path}:\n{msg}"
        raise ConfigError(detail) from None
