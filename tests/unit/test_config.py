from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from openclaw.cli.main import cli
from openclaw.config.edit import parse_path, set_in_file
from openclaw.config.loader import load_config, read_raw, substitute_env, validate
from openclaw.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "openclaw.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_means_all_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.json", env={})
    assert config.gateway.port == 18789
    assert config.gateway.bind == "loopback"
    assert config.gateway.auth.mode == "token"
    rl = config.gateway.auth.rate_limit
    assert (rl.max_attempts, rl.window_ms, rl.lockout_ms, rl.exempt_loopback) == (
        10,
        60000,
        300000,
        True,
    )
    cc = config.gateway.http.endpoints.chat_completions
    assert cc.enabled is False
    assert cc.max_body_bytes == 20 * 1024 * 1024
    assert cc.max_image_parts == 8
    assert cc.images.allow_url is False


def test_json5_with_comments_trailing_commas_and_unquoted_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """// starter config
        {
          gateway: {
            port: 19001, /* inline */
            http: { endpoints: { chatCompletions: { enabled: true, } } },
          },
          agents: { list: [ { id: 'Beta Agent', default: true }, ], defaults: { model: 'p/m' } },
          models: { providers: { p: { api: 'openai-completions', baseUrl: 'http://x/v1' } } },
        }""",
    )
    config = load_config(path, env={})
    assert config.gateway.port == 19001
    assert config.gateway.http.endpoints.chat_completions.enabled is True
    assert config.agents.entries[0].id == "Beta Agent"
    assert config.agents.defaults.model is not None
    assert config.agents.defaults.model.primary == "p/m"
    assert config.agents.defaults.model.fallbacks == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"gateway": {"auth": {"mode": "open"}}},
            'gateway.auth.mode: expected "token", "password", "none" or "trusted-proxy"',
        ),
        ({"gateway": {"port": "high"}}, "gateway.port: input should be a valid integer"),
        ({"gateway": {"port": 70000}}, "gateway.port: input should be less than or equal to 65535"),
        ({"gateway": {"prot": 1}}, "gateway.prot: unknown key"),
        ({"nope": {}}, "nope: unknown key"),
        ({"gateway": {"bind": "everywhere"}}, 'gateway.bind: expected "loopback", "lan" or an IP'),
        (
            {"gateway": {"auth": {"rateLimit": {"maxAttempts": 0}}}},
            "gateway.auth.rateLimit.maxAttempts: input should be greater than 0",
        ),
        (
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": "maybe"}}}}},
            "gateway.http.endpoints.chatCompletions.enabled: input should be a valid boolean",
        ),
        ({"agents": {"list": [{"name": "x"}]}}, "agents.list[0].id: required"),
        (
            {"agents": {"defaults": {"model": "gpt"}}},
            'agents.defaults.model.primary: expected "<provider>/<model>"',
        ),
        (
            {"models": {"providers": {"p": {"api": "openai-completions"}}}},
            'models.providers.p: "baseUrl" is required for api "openai-completions"',
        ),
        (
            {"models": {"providers": {"p": {"api": "grpc", "baseUrl": "x"}}}},
            "models.providers.p.api: expected",
        ),
        ({"gateway": []}, "gateway: input should be a valid dictionary"),
    ],
)
def test_validation_errors_name_the_exact_path(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(data, env={})
    assert expected in str(info.value)
    assert "Traceback" not in str(info.value)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"gateway": {"port": "x", "auth": {"mode": "y"}}}, env={})
    assert "gateway.port" in str(info.value)
    assert "gateway.auth.mode" in str(info.value)


def test_invalid_json5_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "{ gateway: { port: 1,, } ")
    with pytest.raises(ConfigError, match="not valid JSON5"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="top level must be an object"):
        load_config(write(tmp_path, "[1, 2]"), env={})


def test_env_substitution_in_string_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{gateway: {auth: {token: "${TOK}"}}, models: {providers: {p: {api: "openai-completions",'
        ' baseUrl: "http://${HOST}:8000/v1", apiKey: "$${LITERAL}"}}}}',
    )
    config = load_config(path, env={"TOK": "s3cret", "HOST": "h"})
    assert config.gateway.auth.token == "s3cret"
    provider = config.models.providers["p"]
    assert provider.base_url == "http://h:8000/v1"
    assert provider.api_key == "${LITERAL}"


def test_missing_env_variable_names_path_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '{gateway: {auth: {token: "${NOT_SET_ANYWHERE}"}}}')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "gateway.auth.token" in str(info.value)
    assert "NOT_SET_ANYWHERE" in str(info.value)


def test_substitute_env_walks_lists() -> None:
    assert substitute_env({"a": ["x${V}", 1, {"b": "${V}"}]}, {"V": "1"}) == {
        "a": ["x1", 1, {"b": "1"}]
    }


def test_parse_path() -> None:
    assert parse_path("agents.list[0].id") == ["agents", "list", 0, "id"]
    with pytest.raises(ConfigError):
        parse_path("")


def test_set_in_file_refuses_invalid_and_keeps_file(tmp_path: Path) -> None:
    path = write(tmp_path, "{gateway: {port: 1234}}")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="gateway.auth.mode"):
        set_in_file(path, "gateway.auth.mode", "bogus")
    assert path.read_bytes() == before
    set_in_file(path, "gateway.http.endpoints.chatCompletions.enabled", True)
    data = read_raw(path)
    assert data["gateway"]["port"] == 1234
    assert data["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"] is True


def test_cli_config_get_set_validate(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    runner = CliRunner()
    env = {"OPENCLAW_CONFIG_PATH": str(path), "OPENCLAW_STATE_DIR": str(tmp_path / "s")}
    result = runner.invoke(cli, ["config", "get", "gateway.port"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "18789"
    result = runner.invoke(cli, ["config", "set", "gateway.port", "19999"], env=env)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    result = runner.invoke(cli, ["config", "get", "gateway.port"], env=env)
    assert result.output.strip() == "19999"
    result = runner.invoke(cli, ["config", "set", "gateway.auth.mode", "nope"], env=env)
    assert result.exit_code == 1
    assert 'gateway.auth.mode: expected "token", "password", "none" or "trusted-proxy"' in (
        result.output
    )
    result = runner.invoke(cli, ["config", "get", "gateway.nothing"], env=env)
    assert result.exit_code == 1
    assert "no such key" in result.output
    result = runner.invoke(cli, ["config", "validate"], env=env)
    assert result.exit_code == 0
    assert "valid" in result.output
    path.write_text("{gateway: {auth: {mode: 'x'}}}")
    result = runner.invoke(cli, ["config", "validate"], env=env)
    assert result.exit_code == 1
    assert 'gateway.auth.mode: expected "token", "password", "none" or "trusted-proxy"' in (
        result.output
    )


def test_cli_setup_writes_starter_config_and_token(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    state = tmp_path / "s"
    env = {"OPENCLAW_CONFIG_PATH": str(path), "OPENCLAW_STATE_DIR": str(state)}
    runner = CliRunner()
    result = runner.invoke(cli, ["setup"], env=env)
    assert result.exit_code == 0, result.output
    config = load_config(path, env={})
    assert config.gateway.http.endpoints.chat_completions.enabled is True
    token_file = state / "credentials" / "gateway-token"
    token = token_file.read_text().strip()
    assert len(token) == 48
    assert token not in result.output
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    again = runner.invoke(cli, ["setup"], env=env)
    assert again.exit_code == 0
    assert token_file.read_text().strip() == token
    shown = runner.invoke(cli, ["gateway", "token"], env=env)
    assert shown.output.strip() == token
