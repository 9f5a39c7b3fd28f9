"""The configured providers, built once; model refs (``<provider>/<model>``) resolved to them; and
the call policy: retries with backoff before the first event only, then fallbacks in order."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from openclaw.config import defaults as d
from openclaw.config.schema import Config, ProviderConfig
from openclaw.errors import (
    ConfigError,
    ContextTooLongError,
    OpenClawError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamRateLimitError,
)
from openclaw.logs import get_logger
from openclaw.providers.base import (
    EmbeddingInput,
    Embeddings,
    ModelRequest,
    Provider,
    ProviderEvent,
)

log = get_logger("providers")

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 4.0
# A Retry-After longer than this is passed on to the client instead of being waited out.
MAX_RETRY_AFTER_SECONDS = 5.0


def build_provider(name: str, cfg: ProviderConfig, state_dir: Path) -> Provider:
    if cfg.api == "openai-completions":
        from openclaw.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(name, cfg)
    if cfg.api == "anthropic-messages":
        from openclaw.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, cfg)
    from openclaw.providers.local_gguf import LocalGgufProvider

    return LocalGgufProvider(name, cfg, state_dir)


class ProviderRegistry:
    def __init__(
        self,
        config: Config,
        state_dir: Path,
        *,
        instances: Mapping[str, Provider] | None = None,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        """``instances`` supplies ready-made providers by name (the seam tests use); ``redact``
        masks secrets in what upstreams say in their errors (a provider's 401 may quote the
        key it was sent): every provider error passes through here before it is logged,
        stored or answered."""
        self._redact = redact
        self._configs = dict(config.models.providers)
        if d.LOCAL_PROVIDER not in self._configs:
            self._configs[d.LOCAL_PROVIDER] = ProviderConfig(api="local-gguf")
        self._state_dir = state_dir
        self._providers: dict[str, Provider] = dict(instances or {})
        for name in self._providers:
            # An injected instance has no file config; it gets the defaults (retries etc.).
            self._configs.setdefault(name, ProviderConfig(api="local-gguf"))

    def check_ref(self, ref: str, where: str) -> None:
        """Start-up check that a model ref names a configured provider."""
        provider = ref.partition("/")[0]
        if provider not in self._configs:
            known = ", ".join(sorted(self._configs))
            raise ConfigError(f'{where}: unknown provider "{provider}" (configured: {known})')

    def resolve(self, ref: str) -> tuple[Provider, str, ProviderConfig]:
        name, _, model = ref.partition("/")
        cfg = self._configs.get(name)
        if cfg is None:
            raise UpstreamError(f"Model `{ref}` names no configured provider.")
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = build_provider(name, cfg, self._state_dir)
        return provider, model, cfg

    async def aclose(self) -> None:
        for provider in self._providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()
        self._providers.clear()

    async def embed(
        self, ref: str, inputs: Sequence[EmbeddingInput], dimensions: int | None = None
    ) -> Embeddings:
        """Embeddings from the model ``ref``: one call, retried before it answers as chat calls
        are (no fallbacks: another model's vectors would not be comparable)."""
        provider, model, cfg = self.resolve(ref)
        for attempt in range(cfg.max_retries + 1):
            try:
                return await provider.embed(model, inputs, dimensions)
            except UpstreamError as exc:
                self._mask(exc)
                delay = _retry_delay(exc, attempt, cfg.max_retries)
                if delay is None:
                    raise
                log.warning(
                    "embeddings failed; retrying",
                    extra={"model": ref, "attempt": attempt + 1, "error": exc.message},
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _mask(self, exc: OpenClawError) -> None:
        masked = self._redact(exc.message)
        if masked != exc.message:
            exc.message = masked
            exc.args = (masked,)

    async def stream(
        self, refs: Sequence[str], request: ModelRequest, *, deltas: bool
    ) -> AsyncGenerator[tuple[str, ProviderEvent], None]:
        """Events of the first model ref that answers, tagged with that ref."""
        last: UpstreamError | ContextTooLongError | None = None
        for ref in refs:
            provider, model, cfg = self.resolve(ref)
            req = replace(request, model=model)
            for attempt in range(cfg.max_retries + 1):
                started = False
                events = provider.stream(req, deltas=deltas)
                try:
                    async for event in events:
                        started = True
                        yield ref, event
                    return
                except (UpstreamError, ContextTooLongError) as exc:
                    self._mask(exc)
                    if started:
                        raise
                    last = exc
                    delay = _retry_delay(exc, attempt, cfg.max_retries)
                    if delay is None:
                        break
                    log.warning(
                        "upstream failed; retrying",
                        extra={"model": ref, "attempt": attempt + 1, "error": exc.message},
                    )
                    await asyncio.sleep(delay)
                finally:
                    await events.aclose()
            if isinstance(last, UpstreamBadRequestError):
                raise last
            if ref != refs[-1]:
                log.warning("model failed; trying fallback", extra={"model": ref})
        assert last is not None
        raise last


def _retry_delay(exc: Exception, attempt: int, max_retries: int) -> float | None:
    if attempt >= max_retries or not getattr(exc, "retryable", False):
        return None
    if isinstance(exc, UpstreamRateLimitError) and exc.retry_after is not None:
        if exc.retry_after > MAX_RETRY_AFTER_SECONDS:
            return None
        return float(exc.retry_after)
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * (2.0**attempt))
    return delay * random.uniform(0.8, 1.2)
