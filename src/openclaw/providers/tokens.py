"""Token counts when an upstream reports none.

The estimate is the widely used rule of thumb for BPE tokenizers on English text: about four
characters per token, at least one token per non-empty text.  It is marked as estimated wherever
it is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from openclaw.messages import ChatMessage, Usage

CHARS_PER_TOKEN = 4
# Chat formats add a few tokens of framing per message (role markers, separators).
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN if text else 0


def estimate_usage(messages: Sequence[ChatMessage], completion: str) -> Usage:
    prompt = sum(estimate_tokens(m.text) + TOKENS_PER_MESSAGE for m in messages)
    return Usage(prompt, max(1, estimate_tokens(completion)) if completion else 0, estimated=True)
