"""Checking the gateway's answers against OpenAI's own published schemas.

``tests/data/openai_schemas.json`` holds the schemas of the operations the gateway serves, cut
out of OpenAI's OpenAPI document at a pinned commit (its source and license inside; regenerate
with ``tests/data/extract_openai_schemas.py``).  ``conforms(obj, "Response")`` raises with every
violation listed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).parent / "data" / "openai_schemas.json"
URI = "https://openai.example/openapi.json"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (still used in places of OpenAI's 3.1 document) as JSON
    Schema says it: null among the types (and the values, for an enum)."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if "type" not in out and "enum" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _registry() -> tuple[Registry, dict[str, Any]]:
    doc = _nullable(json.loads(SPEC.read_text()))
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    return Registry().with_resource(URI, resource), doc


@functools.cache
def validator(name: str) -> Draft202012Validator:
    registry, doc = _registry()
    if name not in doc["components"]["schemas"]:
        raise KeyError(f"{name} is not in the vendored schemas")
    schema = {"$ref": f"{URI}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=registry)


def conforms(obj: Any, name: str) -> None:
    """Raise AssertionError naming every way ``obj`` breaks OpenAI's schema ``name``."""
    errors = sorted(validator(name).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise AssertionError(f"not a valid {name}:\n" + "\n".join(lines[:20]))
