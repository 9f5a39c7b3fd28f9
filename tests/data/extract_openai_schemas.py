"""Cut the schemas the gateway's answers are checked against out of OpenAI's published OpenAPI
document (https://github.com/openai/openai-openapi, MIT license, (c) OpenAI), keeping every
schema they reference.  The document is a specification; the subset is vendored as test data so
no test fetches anything.

Run from a checkout of that repository:
``python tests/data/extract_openai_schemas.py /path/to/openai-openapi > tests/data/openai_schemas.json``
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "Model",
    "CreateEmbeddingResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
    "ErrorResponse",
)


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def main() -> None:
    repo = Path(sys.argv[1])
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    doc = json.loads(
        subprocess.run(
            ["git", "-C", str(repo), "show", "HEAD:openapi.json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    schemas = doc["components"]["schemas"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(refs(schemas[name]) - keep)
    out = {
        "source": "https://github.com/openai/openai-openapi/blob/"
        f"{commit}/openapi.json (MIT license, (c) OpenAI)",
        "commit": commit,
        "version": doc["info"]["version"],
        "roots": list(ROOTS),
        "components": {"schemas": {name: schemas[name] for name in sorted(keep)}},
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
