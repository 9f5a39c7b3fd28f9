"""Which tools an agent gets: profiles, groups, wildcards, allow/deny (deny wins), per-agent
narrowing, typos reported, the HTTP door's own deny list."""

from __future__ import annotations

import pytest

from openclaw.config.schema import AgentToolsConfig, ToolsConfig
from openclaw.tools import policy
from openclaw.tools.registry import BUILTIN

ALL = [t.name for t in BUILTIN]


def allowed(tools: dict[str, object], agent: dict[str, object] | None = None) -> set[str]:
    cfg = ToolsConfig.model_validate(tools)
    per_agent = AgentToolsConfig.model_validate(agent) if agent is not None else None
    return set(policy.allowed_names(ALL, cfg, per_agent))


def test_the_default_profile_is_coding_with_every_builtin_tool() -> None:
    assert ToolsConfig().profile == "coding"
    assert allowed({}) == set(ALL)


@pytest.mark.parametrize(
    ("tools", "want"),
    [
        ({"profile": "minimal"}, set()),
        ({"profile": "messaging"}, {"sessions_list", "sessions_history"}),
        ({"profile": "full"}, set(ALL)),
        ({"allow": ["group:fs"]}, {"read", "write", "edit", "ls"}),
        ({"allow": ["READ", "Exec"]}, {"read", "exec"}),  # case-insensitive
        ({"allow": ["memory_*"]}, {"memory_search", "memory_get"}),
        ({"deny": ["group:runtime", "web_*"]}, set(ALL) - {"exec", "web_fetch"}),
        ({"allow": ["read", "write"], "deny": ["write"]}, {"read"}),  # deny wins
        ({"allow": []}, set()),
    ],
)
def test_global_policy(tools: dict[str, object], want: set[str]) -> None:
    assert allowed(tools) == want


def test_an_agent_can_only_narrow() -> None:
    # The agent asks for more than the global policy leaves: it gets the intersection.
    assert allowed({"allow": ["read"]}, {"profile": "full"}) == {"read"}
    assert allowed({}, {"allow": ["group:fs", "exec"], "deny": ["write"]}) == {
        "read",
        "edit",
        "ls",
        "exec",
    }
    assert allowed({"profile": "messaging"}, {"allow": ["read"]}) == set()


def test_names_that_match_no_tool_are_reported() -> None:
    lists = [["read", "reed", "group:fs", "group:nope", "web_search", "mem*", "zz*"]]
    assert policy.unknown_names(ALL, lists) == ["reed", "group:nope", "zz*"]


def test_the_http_door_denies_host_changing_tools_unless_allowed() -> None:
    default = ("exec", "write", "edit")
    assert policy.http_denied(ALL, [], [], default) == {"exec", "write", "edit"}
    assert policy.http_denied(ALL, ["write"], ["read"], default) == {"exec", "edit", "read"}
