"""The agent runtime one gateway (or one ``openclaw agent --local``) owns: agents, providers,
the session store, the event bus, the runner, and the retention of ephemeral sessions."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from openclaw.agents.events import EventBus
from openclaw.agents.registry import AgentRegistry
from openclaw.agents.runner import AgentRunner
from openclaw.aio import reap
from openclaw.config.schema import Config
from openclaw.errors import ConfigError
from openclaw.logs import get_logger
from openclaw.providers.base import Provider
from openclaw.providers.registry import ProviderRegistry
from openclaw.sessions.factory import make_leases, make_store
from openclaw.sessions.postgres import database_url, url_password
from openclaw.tools.redact import Redactor
from openclaw.tools.registry import Toolbox

log = get_logger("runtime")


class Runtime:
    def __init__(
        self,
        config: Config,
        state_dir: Path,
        *,
        providers: Mapping[str, Provider] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        """``secrets``: what the gateway knows beyond its config (its resolved token or
        password), cut out of every tool's output."""
        self.config = config
        self.state_dir = state_dir
        self.agents = AgentRegistry(config, state_dir)
        self.redactor = Redactor(
            [*provider_secrets(config), *database_secrets(config)],
            gateway=gateway_secrets(config, secrets),
        )
        self.providers = ProviderRegistry(
            config, state_dir, instances=providers, redact=self.redactor
        )
        if config.agents.defaults.model is not None:
            for ref in (
                config.agents.defaults.model.primary,
                *config.agents.defaults.model.fallbacks,
            ):
                self.providers.check_ref(ref, "agents.defaults.model")
        for ref in config.agents.defaults.models:
            self.providers.check_ref(ref, "agents.defaults.models")
        if config.agents.defaults.embeddings.model is not None:
            self.providers.check_ref(
                config.agents.defaults.embeddings.model, "agents.defaults.embeddings.model"
            )
        for i, entry in enumerate(config.agents.entries):
            if entry.model is not None:
                for ref in (entry.model.primary, *entry.model.fallbacks):
                    self.providers.check_ref(ref, f"agents.list[{i}].model")
            for ref in entry.models:
                self.providers.check_ref(ref, f"agents.list[{i}].models")
            if entry.embeddings is not None and entry.embeddings.model is not None:
                self.providers.check_ref(entry.embeddings.model, f"agents.list[{i}].embeddings")
        # The embedded store in the state dir, or the database shared by replicas.
        self.store = make_store(config, state_dir)
        self.leases = make_leases(config, state_dir)
        self.bus = EventBus()
        self.toolbox = Toolbox(
            config, self.agents, self.store, state_dir, self.redactor, self.providers
        )
        defaults = config.agents.defaults
        self.runner = AgentRunner(
            self.agents,
            self.store,
            self.providers,
            self.bus,
            self.toolbox,
            self.leases,
            max_concurrent=defaults.max_concurrent,
            max_queued=defaults.max_queued,
            max_rounds=config.tools.max_rounds,
            max_repeats=config.tools.loop_detection.max_repeats,
        )
        self._maintenance: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()
        try:
            await self.leases.start()
        except BaseException:
            await self.store.close()
            raise
        self._maintenance = asyncio.create_task(self._maintain())

    async def close(self) -> None:
        """Stop maintenance, finish pending transcript writes, close providers, close the store."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            await reap(self._maintenance)
        await self.runner.drain()
        await self.providers.aclose()
        try:
            await self.store.close()
        finally:
            await self.leases.aclose()

    async def prune(self) -> int:
        """Stored responses past their retention (and the per-response sessions they kept),
        then old and surplus per-request sessions; how many sessions went."""
        days = self.config.gateway.http.endpoints.responses.retention_days
        responses = await self.store.prune_responses(max_age_seconds=days * 86400)
        if responses:
            log.info("pruned stored responses", extra={"removed": responses})
        m = self.config.session.maintenance
        return await self.store.prune_ephemeral(
            max_age_seconds=m.ephemeral_max_age_ms / 1000,
            max_count=m.ephemeral_max_count,
            in_use=self.runner.sessions_in_use(),
        )

    async def _maintain(self) -> None:
        interval = self.config.session.maintenance.interval_ms / 1000
        while True:
            try:
                removed = await self.prune()
                if removed:
                    log.info("pruned ephemeral sessions", extra={"removed": removed})
            except Exception:
                log.exception("session maintenance failed")
            await asyncio.sleep(interval)


def gateway_secrets(config: Config, extra: Iterable[str] = ()) -> Iterator[str]:
    """The gateway's token or password: configured, from the environment, or generated
    (``extra``)."""
    yield from extra
    auth = config.gateway.auth
    for value in (auth.token, auth.password):
        if value:
            yield value
    for name in ("OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD"):
        value = os.environ.get(name)
        if value:
            yield value


# Header names that carry credentials (others, such as OpenRouter's HTTP-Referer and X-Title,
# are ordinary text that masking would mangle).
CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|password|cookie|session", re.IGNORECASE)


def database_secrets(config: Config) -> Iterator[str]:
    """The shared store's database password, if any: masked in tool output like a key."""
    if config.session.store != "postgres":
        return
    try:
        password = url_password(database_url(config.session.postgres))
    except ConfigError:
        return  # reported when the store is made
    if password:
        yield password


def provider_secrets(config: Config) -> Iterator[str]:
    """Each provider's API key and credential header values."""
    for provider in config.models.providers.values():
        if provider.api_key:
            yield provider.api_key
        for name, value in provider.headers.items():
            if CREDENTIAL_HEADER.search(name):
                yield value
                scheme, _, credential = value.partition(" ")
                if credential and scheme.lower() in ("bearer", "basic", "token"):
                    yield credential.strip()
