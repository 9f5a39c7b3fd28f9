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


@functools.cache
def _registry() -> tuple[Registry, dict[str, Any]]:
    doc = json.loads(SPEC.read_text())
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
