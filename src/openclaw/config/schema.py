"""The configuration schema (``openclaw.json``), as pydantic models.

Keys are camelCase on disk, as in the reference gateway; unknown keys are errors so that a typo
never silently falls back to a default.  Defaults are named constants in ``defaults``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from openclaw.config import defaults as d


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class RateLimitConfig(_Model):
    """Failed-auth limiting per client address."""

    max_attempts: PositiveInt = d.AUTH_MAX_ATTEMPTS
    window_ms: PositiveInt = d.AUTH_WINDOW_MS
    lockout_ms: NonNegInt = d.AUTH_LOCKOUT_MS
    exempt_loopback: bool = True


class TrustedProxyConfig(_Model):
    """``trusted-proxy`` auth: an identity-aware proxy in front says who the user is."""

    # The proxies' addresses (CIDRs or single addresses); requests from anywhere else are 401.
    addresses: list[str] = []
    # The header the proxy puts the authenticated user's name in.
    user_header: str = "x-forwarded-user"
    # A proxy on this host (loopback) is trusted only when this says so: anything running here
    # could otherwise claim any user.
    allow_loopback: bool = False

    @field_validator("addresses")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for i, item in enumerate(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                # The value itself is not repeated: a secret pasted in the wrong field would
                # end up in the start-up error.
                raise ValueError(f"item {i} is not an address or CIDR") from None
        return value


class AuthConfig(_Model):
    mode: Literal["token", "password", "none", "trusted-proxy"] = "token"
    token: str | None = None
    password: str | None = None
    rate_limit: RateLimitConfig = RateLimitConfig()
    # `none` beyond loopback: only with this (and a loud start-up warning).
    allow_unauthenticated: bool = False
    trusted_proxy: TrustedProxyConfig = TrustedProxyConfig()


class ImagesConfig(_Model):
    allow_url: bool = False
    url_allowlist: list[str] = []
    allowed_mimes: list[str] = list(d.IMAGE_MIMES)
    max_bytes: PositiveInt = d.IMAGE_MAX_BYTES
    max_redirects: NonNegInt = d.IMAGE_MAX_REDIRECTS
    timeout_ms: PositiveInt = d.IMAGE_TIMEOUT_MS


class FilesConfig(_Model):
    """Files in a request (text, markdown, HTML, CSV, JSON, PDF): their text goes to the model."""

    allow_url: bool = False
    url_allowlist: list[str] = []
    allowed_mimes: list[str] = list(d.FILE_MIMES)
    max_bytes: PositiveInt = d.FILE_MAX_BYTES
    max_chars: PositiveInt = d.FILE_MAX_CHARS
    max_redirects: NonNegInt = d.IMAGE_MAX_REDIRECTS
    timeout_ms: PositiveInt = d.FILE_TIMEOUT_MS
    pdf_max_pages: PositiveInt = d.PDF_MAX_PAGES


class InputsConfig(_Model):
    """What an OpenAI endpoint accepts in a request besides text."""

    max_body_bytes: PositiveInt = d.MAX_BODY_BYTES
    max_image_parts: NonNegInt = d.MAX_IMAGE_PARTS
    max_total_image_bytes: PositiveInt = d.MAX_TOTAL_IMAGE_BYTES
    images: ImagesConfig = ImagesConfig()
    max_file_parts: NonNegInt = d.MAX_FILE_PARTS
    files: FilesConfig = FilesConfig()


class ChatCompletionsConfig(InputsConfig):
    enabled: bool = False
    # Tool progress as extra chunks (`openclaw_tool`) in the stream, for every request; a request
    # can ask for it alone with the header `x-openclaw-tool-events: 1`.
    tool_events: bool = False


class ResponsesConfig(InputsConfig):
    enabled: bool = False
    # Stored responses (and the per-response sessions they continue) are kept this long after
    # their last use, as OpenAI keeps them.
    retention_days: PositiveInt = d.RESPONSES_RETENTION_DAYS


class EmbeddingsEndpointConfig(_Model):
    """``POST /v1/embeddings`` (served beside either OpenAI endpoint): its limits."""

    max_inputs: PositiveInt = d.EMBEDDINGS_MAX_INPUTS
    max_input_chars: PositiveInt = d.EMBEDDINGS_MAX_INPUT_CHARS
    max_total_chars: PositiveInt = d.EMBEDDINGS_MAX_TOTAL_CHARS
    max_body_bytes: PositiveInt = d.EMBEDDINGS_MAX_BODY_BYTES


class EndpointsConfig(_Model):
    chat_completions: ChatCompletionsConfig = ChatCompletionsConfig()
    responses: ResponsesConfig = ResponsesConfig()
    embeddings: EmbeddingsEndpointConfig = EmbeddingsEndpointConfig()


class HttpConfig(_Model):
    endpoints: EndpointsConfig = EndpointsConfig()
    body_timeout_ms: PositiveInt = d.BODY_TIMEOUT_MS
    sse_keepalive_ms: PositiveInt = d.SSE_KEEPALIVE_MS


class GatewayToolsConfig(_Model):
    """``POST /tools/invoke``'s own deny list, on top of each agent's policy: ``deny`` adds to
    the default list (tools that change the host), ``allow`` takes names off it."""

    allow: list[str] = []
    deny: list[str] = []


_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
# First path segments the gateway serves itself.
_RESERVED_PATHS = frozenset({"v1", "health", "healthz", "openapi.json", "tools", "ws", "assets"})


class ControlUiConfig(_Model):
    """The chat and control page served on the gateway port."""

    enabled: bool = True
    # Where the page lives: "/" (the default), or a prefix such as "/openclaw" when a reverse
    # proxy shares the host with other applications.
    base_path: str = "/"

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        segments = value.strip("/").split("/") if value.strip("/") else []
        # Plain segments only: nothing a router would read as a parameter ("{x}"), nothing the
        # page would have to escape, no dot segments.
        if not all(_PATH_SEGMENT.fullmatch(s) and s.strip(".") for s in segments):
            raise ValueError(
                'expected "/" or a path of letters, digits, ".", "_", "~" and "-" segments, '
                'such as "/openclaw"'
            )
        if segments and segments[0] in _RESERVED_PATHS:
            raise ValueError(f"/{segments[0]} is the gateway's own; pick another path")
        return "/" + "/".join(segments)


class GatewayConfig(_Model):
    port: Annotated[int, Field(ge=0, le=65535)] = d.GATEWAY_PORT
    bind: str = "loopback"
    auth: AuthConfig = AuthConfig()
    http: HttpConfig = HttpConfig()
    tools: GatewayToolsConfig = GatewayToolsConfig()
    control_ui: ControlUiConfig = ControlUiConfig()
    shutdown_timeout_ms: PositiveInt = d.SHUTDOWN_TIMEOUT_MS
    # Processes serving the port (one state dir); "auto": one per CPU.
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = 1

    def worker_count(self) -> int:
        if self.workers != "auto":
            return self.workers
        if hasattr(os, "sched_getaffinity"):  # the CPUs this process may use
            return min(len(os.sched_getaffinity(0)), 256)
        return min(os.cpu_count() or 1, 256)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        if value in ("loopback", "lan"):
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError('expected "loopback", "lan" or an IP address') from None
        return value


class ModelRef(_Model):
    """``{primary, fallbacks}``; a plain string in the file means ``primary``."""

    primary: str
    fallbacks: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"primary": value}
        return value

    @field_validator("primary", "fallbacks")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        for ref in [value] if isinstance(value, str) else value:
            provider, _, model = ref.partition("/")
            if not provider or not model:
                # Not quoting the value: it may be a key pasted in the wrong field.
                raise ValueError('expected "<provider>/<model>"')
        return value


class CatalogEntry(_Model):
    """A model an agent may be switched to per request (``x-openclaw-model``)."""

    alias: str | None = None


class EmbeddingsConfig(_Model):
    """An agent's embedding model: what ``/v1/embeddings`` answers with for it, and what makes
    its ``memory_search`` hybrid.  Unset: ``/v1/embeddings`` uses the embedded local model and
    memory search stays keyword-only."""

    model: str | None = None

    @field_validator("model")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None:
            provider, sep, model = value.partition("/")
            if not sep or not provider or not model:
                raise ValueError('expected "<provider>/<model>"')
        return value


class AgentDefaults(_Model):
    model: ModelRef | None = None
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    # Models besides the agent's own that a request may pick with ``x-openclaw-model``, keyed by
    # ``provider/model``.
    models: dict[str, CatalogEntry] = {}
    workspace: str | None = None
    timeout_seconds: PositiveInt = d.AGENT_TIMEOUT_SECONDS
    bootstrap_max_chars: PositiveInt = d.BOOTSTRAP_MAX_CHARS
    max_history_messages: PositiveInt = d.MAX_HISTORY_MESSAGES
    max_history_tokens: PositiveInt | None = None
    system_prompt: str | None = None
    max_concurrent: PositiveInt = d.MAX_CONCURRENT_RUNS
    max_queued: NonNegInt = d.MAX_QUEUED_RUNS


ToolProfile = Literal["minimal", "coding", "messaging", "full"]


class AgentToolsConfig(_Model):
    """An agent's own narrowing of the tools (``agents.list[].tools``)."""

    profile: ToolProfile | None = None
    allow: list[str] | None = None
    deny: list[str] = []


class AgentEntry(_Model):
    id: Annotated[str, Field(min_length=1)]
    name: str | None = None
    default: bool = False
    model: ModelRef | None = None
    # Added to ``agents.defaults.models`` for this agent.
    models: dict[str, CatalogEntry] = {}
    embeddings: EmbeddingsConfig | None = None
    workspace: str | None = None
    system_prompt: str | None = None
    tools: AgentToolsConfig = AgentToolsConfig()


class AgentsConfig(_Model):
    defaults: AgentDefaults = AgentDefaults()
    entries: list[AgentEntry] = Field(default=[], alias="list")


class ProviderModel(_Model):
    id: Annotated[str, Field(min_length=1)]
    name: str | None = None
    context_window: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    input: list[Literal["text", "image"]] = ["text"]
    # Whether the model can call tools; unset: yes for the HTTP APIs, no for the local model.
    tools: bool | None = None


class ProviderConfig(_Model):
    api: Literal["openai-completions", "anthropic-messages", "local-gguf"]
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = d.PROVIDER_CONNECT_TIMEOUT_SECONDS
    max_retries: NonNegInt = d.PROVIDER_MAX_RETRIES
    # The field that carries the reply-length limit: generic OpenAI-compatible servers (llama.cpp,
    # vLLM, Ollama) honour `max_tokens`; OpenAI's reasoning models accept only the newer one.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    models: list[ProviderModel] = []
    # local-gguf only
    model_path: str | None = None
    context_size: PositiveInt = d.LOCAL_CONTEXT_SIZE
    threads: PositiveInt | None = None

    @model_validator(mode="after")
    def _needs_base_url(self) -> ProviderConfig:
        if self.api != "local-gguf" and not self.base_url:
            raise ValueError(f'"baseUrl" is required for api "{self.api}"')
        return self


class ModelsConfig(_Model):
    providers: dict[str, ProviderConfig] = {}


class LoopDetectionConfig(_Model):
    # The same tool with the same arguments more often than this in one run is answered with an
    # error result instead of running again.
    max_repeats: PositiveInt = d.TOOLS_LOOP_MAX_REPEATS


class FsToolsConfig(_Model):
    # File tools (and exec's path arguments) stay inside the agent's workspace.
    workspace_only: bool = True


class ExecConfig(_Model):
    security: Literal["deny", "allowlist", "full"] = "allowlist"
    allow: list[str] = list(d.EXEC_ALLOW)
    timeout_seconds: Annotated[float, Field(gt=0)] = d.EXEC_TIMEOUT_SECONDS
    max_output_chars: PositiveInt = d.EXEC_MAX_OUTPUT_CHARS


class WebFetchConfig(_Model):
    timeout_seconds: Annotated[float, Field(gt=0)] = d.WEB_FETCH_TIMEOUT_SECONDS
    max_chars: PositiveInt = d.WEB_FETCH_MAX_CHARS
    max_bytes: PositiveInt = d.WEB_FETCH_MAX_BYTES
    max_redirects: NonNegInt = d.WEB_FETCH_MAX_REDIRECTS
    cache_seconds: NonNegInt = d.WEB_FETCH_CACHE_SECONDS
    # Private, loopback and link-local addresses are refused (the SSRF guard); a gateway meant to
    # read an intranet says so here.
    allow_private_network: bool = False


class ToolsConfig(_Model):
    """The server-side tools every agent may use (``tools``); see the README's Tools section."""

    profile: ToolProfile = d.TOOLS_PROFILE  # type: ignore[assignment]
    allow: list[str] | None = None
    deny: list[str] = []
    max_rounds: PositiveInt = d.TOOLS_MAX_ROUNDS
    loop_detection: LoopDetectionConfig = LoopDetectionConfig()
    fs: FsToolsConfig = FsToolsConfig()
    exec: ExecConfig = ExecConfig()
    web_fetch: WebFetchConfig = WebFetchConfig()


class MaintenanceConfig(_Model):
    """Retention of per-request (ephemeral) sessions."""

    ephemeral_max_age_ms: PositiveInt = d.EPHEMERAL_MAX_AGE_MS
    ephemeral_max_count: PositiveInt = d.EPHEMERAL_MAX_COUNT
    interval_ms: PositiveInt = d.MAINTENANCE_INTERVAL_MS


class PostgresConfig(_Model):
    """The shared store of gateway replicas (``session.store: "postgres"``)."""

    # postgresql://user:password@host:port/database; else env OPENCLAW_DATABASE_URL.
    url: str | None = None
    # The schema holding the gateway's tables (created when missing).
    schema_name: str = Field(
        default="public",
        validation_alias="schema",
        serialization_alias="schema",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
    )
    # Connections for queries and writes; each run in progress on a stored session holds one
    # more (its session lease) from a second pool of up to agents.defaults.maxConcurrent.
    pool_size: PositiveInt = d.POSTGRES_POOL_SIZE
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = d.POSTGRES_CONNECT_TIMEOUT_SECONDS
    statement_timeout_seconds: Annotated[float, Field(gt=0)] = d.POSTGRES_STATEMENT_TIMEOUT_SECONDS

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # The value itself is never repeated in the error: it may hold a password.
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise ValueError(
                "expected postgresql://user:password@host:port/database (characters such as"
                " # ? / @ in the password must be percent-encoded)"
            ) from None
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ValueError("expected postgresql://user:password@host:port/database")
        if parts.fragment or "@" in parts.path + parts.query or parts.path.count("/") > 1:
            # What a password with an unencoded # / ? @ turns into: refused, not half-used.
            raise ValueError(
                "expected postgresql://user:password@host:port/database (characters such as"
                " # ? / @ in the password must be percent-encoded)"
            )
        return value


class SessionConfig(_Model):
    maintenance: MaintenanceConfig = MaintenanceConfig()
    # A committed turn always survives a killed process; fsync makes it survive a power cut
    # (transcript lines synced, SQLite synchronous=FULL), at the cost of a disk flush per commit.
    fsync: bool = False
    # "sqlite": the embedded store in the state dir (one machine); "postgres": a database shared
    # by gateway replicas on several machines.
    store: Literal["sqlite", "postgres"] = "sqlite"
    postgres: PostgresConfig = PostgresConfig()


class Config(_Model):
    """The whole ``openclaw.json``."""

    schema_: str | None = Field(default=None, alias="$schema")
    gateway: GatewayConfig = GatewayConfig()
    agents: AgentsConfig = AgentsConfig()
    models: ModelsConfig = ModelsConfig()
    session: SessionConfig = SessionConfig()
    tools: ToolsConfig = ToolsConfig()
