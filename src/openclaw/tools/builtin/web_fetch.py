"""``web_fetch``: a web page's readable text (GET, http/https, never a private address)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openclaw.tools.base import Args, Tool, ToolContext, ToolResult


class WebFetchArgs(Args):
    url: str = Field(min_length=1, description="The http or https URL to fetch.")
    extract_mode: Literal["markdown", "text"] = Field(
        "markdown", alias="extractMode", description="Readable text as markdown or plain text."
    )
    max_chars: int | None = Field(
        None, alias="maxChars", ge=100, description="Cut the text at this many characters."
    )


async def run(args: WebFetchArgs, ctx: ToolContext) -> ToolResult:
    final_url, text = await ctx.web.page(args.url, args.extract_mode)
    limit = min(args.max_chars or ctx.config.web_fetch.max_chars, ctx.config.web_fetch.max_chars)
    truncated = len(text) > limit
    if truncated:
        text = text[:limit] + f"\n[cut at {limit} characters]"
    return ToolResult(text, details={"url": final_url, "truncated": truncated})


TOOL = Tool(
    name="web_fetch",
    group="web",
    description="Fetch a web page (http/https) and return its readable text.",
    args=WebFetchArgs,
    run=run,
)
