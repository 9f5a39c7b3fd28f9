"""``memory_search``: search over the agent's memory files: keywords (BM25), blended with
vector similarity when the agent has an embedding model."""

from __future__ import annotations

import asyncio

import orjson
from pydantic import Field

from openclaw.errors import OpenClawError
from openclaw.tools.base import Args, Tool, ToolContext, ToolResult
from openclaw.tools.memory_index import hybrid_search


class MemorySearchArgs(Args):
    query: str = Field(min_length=1, description="What to look for.")
    max_results: int = Field(5, alias="maxResults", ge=1, le=50, description="Hits to return.")
    min_score: float = Field(
        0.0, alias="minScore", ge=0, le=1, description="Leave out hits scoring below this (0-1)."
    )


async def run(args: MemorySearchArgs, ctx: ToolContext) -> ToolResult:
    index = ctx.memory.get(ctx.agent_id, ctx.workspace)
    how: dict[str, str] = {"provider": "fts5", "model": "bm25"}
    hits = None
    if ctx.embed is not None and ctx.embedding_model is not None:
        try:
            hits = await hybrid_search(
                index, args.query, ctx.embedding_model, ctx.embed, args.max_results, args.min_score
            )
            how = {"provider": "hybrid", "model": ctx.embedding_model}
        except OpenClawError as exc:
            # The keywords still answer when the embedding model does not.
            how["fallback"] = f"embeddings failed: {exc.message}"
    if hits is None:
        hits = await asyncio.to_thread(index.search, args.query, args.max_results, args.min_score)
    results = [hit.as_dict() for hit in hits]
    body = {"results": results, **how}
    return ToolResult(orjson.dumps(body).decode(), details={"hits": len(results)})


TOOL = Tool(
    name="memory_search",
    group="memory",
    description=(
        "Search the agent's memory (MEMORY.md and memory/*.md in its workspace); returns "
        "matching passages with their paths and line numbers."
    ),
    args=MemorySearchArgs,
    run=run,
)
