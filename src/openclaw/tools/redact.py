"""The gateway's known secrets (its token or password, every provider's API key and header
values), cut out of everything a tool returns before the model, a transcript or a client sees
it, and out of the environment of the commands it runs."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import orjson

MASK = "[REDACTED]"
# Provider keys and header values shorter than this are placeholders ("none", "x", "EMPTY"), not
# secrets: masking them would mangle text.  The gateway's own token or password is the key to
# everything, so it is masked however short, down to a length where masking still makes sense.
MIN_SECRET_LENGTH = 8
MIN_GATEWAY_SECRET_LENGTH = 4


class Redactor:
    def __init__(
        self, secrets: Iterable[str | None], *, gateway: Iterable[str | None] = ()
    ) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        found |= {s for s in gateway if s and len(s) >= MIN_GATEWAY_SECRET_LENGTH}
        self.secrets = frozenset(found)
        # Tools that answer in JSON escape quotes and backslashes: a secret holding one must be
        # recognised in that form too.
        forms = found | {orjson.dumps(s).decode()[1:-1] for s in found}
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (this process's environment) without the gateway's credentials: every
        ``OPENCLAW_*`` variable, and any variable whose value holds a known secret."""
        env = dict(os.environ if base is None else base)
        return {
            name: value
            for name, value in env.items()
            if not name.startswith("OPENCLAW_")
            and not (self._pattern is not None and self._pattern.search(value))
        }
