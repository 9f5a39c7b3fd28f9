"""Gateway auth: one bearer secret (token or password), compared in constant time, with failed
attempts limited per client address.  Shared by every HTTP endpoint and the WebSocket."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from openclaw.config.schema import AuthConfig, RateLimitConfig
from openclaw.errors import AuthenticationError, ConfigError, RateLimitError
from openclaw.paths import make_private_dir


class SharedCount(Protocol):
    """Failures counted beyond this process (workers on one state dir, or replicas on one
    database)."""

    async def record(self, addr: str) -> float | None:
        """Count a failure of ``addr`` over all processes (and apply a lockout it causes).
        When another process had already locked ``addr`` out, this attempt is not counted: the
        wall-clock time that lockout ends."""
        ...

    def forget(self, addr: str) -> None: ...


LOCKED_OUT = "Too many failed authentication attempts; try again later."
ENV_VARS = {"token": "OPENCLAW_GATEWAY_TOKEN", "password": "OPENCLAW_GATEWAY_PASSWORD"}
_PRUNE_AT = 10_000


@dataclass(frozen=True)
class ResolvedSecret:
    """The secret in force and where it came from (``config``, ``env`` or ``generated``)."""

    mode: str
    secret: str
    source: str
    path: Path | None = None


def secret_file(state_dir: Path, mode: str) -> Path:
    return state_dir / "credentials" / f"gateway-{mode}"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_generated_secret(state_dir: Path, mode: str) -> str | None:
    try:
        value = secret_file(state_dir, mode).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None


def _generate_secret(path: Path) -> str:
    make_private_dir(path.parent)
    value = secrets.token_hex(24)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process won the race; use its secret.
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return value


def resolve_secret(
    auth: AuthConfig,
    *,
    state_dir: Path,
    loopback_only: bool,
    env: Mapping[str, str] | None = None,
    generate: bool = True,
) -> ResolvedSecret:
    """Config value, else env var, else (loopback only) a generated secret kept in the state dir."""
    env = os.environ if env is None else env
    mode = auth.mode
    if mode == "none":
        if not loopback_only and not auth.allow_unauthenticated:
            raise ConfigError(
                'gateway.auth.mode: "none" serves anyone who can reach the port; it is allowed '
                "on loopback only, unless gateway.auth.allowUnauthenticated is true"
            )
        return ResolvedSecret(mode, "", "none")
    if mode == "trusted-proxy":
        if not auth.trusted_proxy.addresses:
            raise ConfigError(
                "gateway.auth.trustedProxy.addresses: trusted-proxy auth needs the addresses "
                "of the proxies it trusts"
            )
        return ResolvedSecret(mode, "", "proxy")
    configured = auth.token if mode == "token" else auth.password
    if configured:
        return ResolvedSecret(mode, configured, "config")
    from_env = env.get(ENV_VARS[mode])
    if from_env:
        return ResolvedSecret(mode, from_env, "env")
    path = secret_file(state_dir, mode)
    if not loopback_only:
        raise ConfigError(
            f"gateway.auth.{mode}: no {mode} is set and the gateway is bound beyond loopback; "
            f"set one with `openclaw config set gateway.auth.{mode} <secret>` or the "
            f"{ENV_VARS[mode]} environment variable"
        )
    existing = read_generated_secret(state_dir, mode)
    if existing:
        return ResolvedSecret(mode, existing, "generated", path)
    if not generate:
        raise ConfigError(f"no {mode} generated yet; run `openclaw setup` or start the gateway")
    return ResolvedSecret(mode, _generate_secret(path), "generated", path)


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class FailureLimiter:
    """Counts failed attempts per client address; too many in the window locks the address out."""

    def __init__(self, cfg: RateLimitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = cfg.max_attempts
        self._window = cfg.window_ms / 1000
        self._lockout = cfg.lockout_ms / 1000
        self._exempt_loopback = cfg.exempt_loopback
        self._clock = clock
        self._by_addr: dict[str, _Failures] = {}
        # With several workers: failures counted over all of them (``shared_failures``).
        self.shared: SharedCount | None = None

    def _exempt(self, addr: str | None) -> bool:
        if addr is None:
            return False
        return self._exempt_loopback and (addr.startswith("127.") or addr == "::1")

    def check(self, addr: str | None) -> None:
        """Raise ``RateLimitError`` while ``addr`` is locked out."""
        entry = self._by_addr.get(addr or "")
        if entry is None or self._exempt(addr):
            return
        now = self._clock()
        if entry.locked_until > now:
            raise RateLimitError(LOCKED_OUT, retry_after=entry.locked_until - now)

    def failure(self, addr: str | None) -> None:
        if self._exempt(addr):
            return
        now = self._clock()
        key = addr or ""
        entry = self._by_addr.get(key)
        if entry is None:
            if len(self._by_addr) >= _PRUNE_AT:
                self._prune(now)
            entry = self._by_addr[key] = _Failures()
        times = entry.times
        times.append(now)
        while times and times[0] <= now - self._window:
            times.popleft()
        if len(times) >= self._max:
            # A zero lockout still blocks until the oldest failure leaves the window.
            entry.locked_until = now + max(self._lockout, self._window - (now - times[0]))
            times.clear()

    async def failed(self, addr: str | None) -> None:
        """Count a failed attempt of ``addr``: here, and over all processes when they share
        the count.  The shared count is awaited before the attempt is answered, so that the
        next attempt sees it whichever process it reaches (counted in the background, a quick
        client got past the limit by the attempts in flight).  Raise ``RateLimitError`` when
        another process had locked ``addr`` out already."""
        self.failure(addr)
        if self.shared is None or self._exempt(addr):
            return
        until = await self.shared.record(addr or "")
        if until is not None:
            raise RateLimitError(LOCKED_OUT, retry_after=max(until - time.time(), 0.0))

    def success(self, addr: str | None) -> None:
        if self._by_addr and self._by_addr.pop(addr or "", None) is not None and self.shared:
            self.shared.forget(addr or "")

    def lock(self, addr: str, until: float) -> None:
        """Lock ``addr`` out until ``until`` (wall-clock seconds): another worker counted it."""
        if self._exempt(addr):
            return
        local = self._clock() + (until - time.time())
        entry = self._by_addr.setdefault(addr, _Failures())
        entry.locked_until = max(entry.locked_until, local)

    def _prune(self, now: float) -> None:
        stale = [
            k
            for k, e in self._by_addr.items()
            if e.locked_until <= now and (not e.times or e.times[-1] <= now - self._window)
        ]
        for k in stale:
            del self._by_addr[k]


ANONYMOUS = "anonymous"


class Authenticator:
    """Who a request comes from, by the configured mode: the bearer secret (``token`` /
    ``password``; or a secret given directly, for the WebSocket), a trusted proxy's user header
    (``trusted-proxy``), or nobody in particular (``none``).  Each check returns the caller's
    identity, used to scope what it stores (responses) and in logs; never a secret."""

    def __init__(self, resolved: ResolvedSecret, cfg: AuthConfig) -> None:
        self.mode = resolved.mode
        self._expected = resolved.secret.encode()
        self.limiter = FailureLimiter(cfg.rate_limit)
        # A caller holding the secret: a digest of it, never the secret itself.
        self.identity = "key:" + hashlib.sha256(self._expected).hexdigest()[:24]
        proxy = cfg.trusted_proxy
        self.user_header = proxy.user_header.lower()
        self._proxies = tuple(ipaddress.ip_network(a, strict=False) for a in proxy.addresses)
        self._proxy_loopback = proxy.allow_loopback

    async def check_secret(
        self, presented: str | None, addr: str | None, user: str | None = None
    ) -> str:
        """The caller's identity; raise ``RateLimitError`` or ``AuthenticationError``.
        ``user``: the trusted proxy's user header, in that mode."""
        if self.mode == "none":
            return ANONYMOUS
        if self.mode == "trusted-proxy":
            return self._proxied(addr, user)
        self.limiter.check(addr)
        if presented is not None and hmac.compare_digest(presented.encode(), self._expected):
            self.limiter.success(addr)
            return self.identity
        await self.limiter.failed(addr)
        raise AuthenticationError()

    async def check_header(
        self, authorization: str | None, addr: str | None, user: str | None = None
    ) -> str:
        presented = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = value.strip()
        return await self.check_secret(presented, addr, user)

    def _proxied(self, addr: str | None, user: str | None) -> str:
        """A request from a trusted proxy carrying a user; anything else is 401."""
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            raise AuthenticationError("The request did not come through a trusted proxy.") from None
        # An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d: either form may be
        # the one the configured networks are written in.
        forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            forms.append(ip.ipv4_mapped)
        elif isinstance(ip, ipaddress.IPv4Address):
            forms.append(ipaddress.IPv6Address(f"::ffff:{ip}"))
        trusted = any(f in net for f in forms for net in self._proxies if f.version == net.version)
        loopback = any(f.is_loopback for f in forms)
        if not trusted or (loopback and not self._proxy_loopback):
            raise AuthenticationError("The request did not come through a trusted proxy.")
        name = (user or "").strip()
        if not name:
            raise AuthenticationError(f"The trusted proxy sent no `{self.user_header}` header.")
        return "user:" + name
