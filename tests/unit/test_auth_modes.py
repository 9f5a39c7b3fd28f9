"""Who a caller is, in each auth mode, without a server: the trusted proxy's address checks in
both IP versions, and a secret's identity never holding the secret."""

from __future__ import annotations

from typing import Any

import pytest

from openclaw.config.schema import AuthConfig
from openclaw.errors import AuthenticationError
from openclaw.gateway.auth import ANONYMOUS, Authenticator, ResolvedSecret


def proxy(**trusted: Any) -> Authenticator:
    cfg = AuthConfig.model_validate({"mode": "trusted-proxy", "trustedProxy": trusted})
    return Authenticator(ResolvedSecret("trusted-proxy", "", "proxy"), cfg)


@pytest.mark.parametrize("networks", [["10.0.0.0/8"], ["::ffff:10.0.0.0/104"]])
@pytest.mark.parametrize("addr", ["10.1.2.3", "::ffff:10.1.2.3"])
async def test_a_proxy_in_either_ip_version(networks: list[str], addr: str) -> None:
    assert await proxy(addresses=networks).check_secret(None, addr, "alice") == "user:alice"


@pytest.mark.parametrize(
    ("addr", "user"),
    [
        ("192.168.1.1", "alice"),  # not a proxy
        ("10.1.2.3", ""),  # no user
        ("10.1.2.3", None),
        (None, "alice"),
        ("not-an-ip", "alice"),
    ],
)
async def test_anything_else_is_401(addr: str | None, user: str | None) -> None:
    with pytest.raises(AuthenticationError):
        await proxy(addresses=["10.0.0.0/8"]).check_secret(None, addr, user)


@pytest.mark.parametrize("addr", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
async def test_a_loopback_proxy_only_when_allowed(addr: str) -> None:
    networks = ["127.0.0.0/8", "::1/128"]
    with pytest.raises(AuthenticationError):
        await proxy(addresses=networks).check_secret(None, addr, "alice")
    allowed = proxy(addresses=networks, allowLoopback=True)
    assert await allowed.check_secret(None, addr, "alice") == "user:alice"


async def test_none_and_token_identities() -> None:
    none = Authenticator(ResolvedSecret("none", "", "none"), AuthConfig(mode="none"))
    assert await none.check_secret(None, "203.0.113.9") == ANONYMOUS
    token = Authenticator(ResolvedSecret("token", "s3cret-token", "config"), AuthConfig())
    identity = await token.check_header("Bearer s3cret-token", "127.0.0.1")
    assert identity.startswith("key:") and "s3cret" not in identity
    with pytest.raises(AuthenticationError):
        await token.check_header("Bearer wrong", "127.0.0.1")
