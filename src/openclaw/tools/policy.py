"""Which tools an agent may use: profile, then the global allow/deny, then the agent's own
profile and allow/deny.  Names are case-insensitive, ``*`` is a wildcard, ``group:<name>`` names a
group; each layer can only narrow what the one before left, and a deny always wins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Mapping, Sequence

from openclaw.config.schema import AgentToolsConfig, ToolProfile, ToolsConfig

GROUPS: Mapping[str, tuple[str, ...]] = {
    "group:fs": ("read", "write", "edit", "ls", "apply_patch"),
    "group:runtime": ("exec", "process"),
    "group:web": ("web_fetch", "web_search"),
    "group:memory": ("memory_search", "memory_get"),
    "group:sessions": (
        "sessions_list",
        "sessions_history",
        "sessions_send",
        "sessions_spawn",
        "session_status",
    ),
}
PROFILES: Mapping[ToolProfile, tuple[str, ...]] = {
    "minimal": (),
    "coding": ("group:fs", "group:runtime", "group:web", "group:sessions", "group:memory"),
    "messaging": ("group:sessions",),
    "full": ("*",),
}
# Names of the reference's tools that this gateway does not have: in a list they are not typos.
KNOWN_ELSEWHERE = frozenset(name for names in GROUPS.values() for name in names)


def _expand(patterns: Iterable[str]) -> list[str]:
    out: list[str] = []
    for pattern in patterns:
        p = pattern.strip().lower()
        out.extend(GROUPS.get(p, (p,)))
    return out


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _narrow(
    allowed: set[str], profile: ToolProfile | None, allow: list[str] | None, deny: list[str]
) -> set[str]:
    if profile is not None:
        allowed = {n for n in allowed if _matches(n, _expand(PROFILES[profile]))}
    if allow is not None:
        allowed = {n for n in allowed if _matches(n, _expand(allow))}
    denied = _expand(deny)
    return {n for n in allowed if not _matches(n, denied)}


def allowed_names(
    available: Collection[str], tools: ToolsConfig, agent: AgentToolsConfig | None
) -> frozenset[str]:
    """The names of ``available`` tools an agent may use."""
    allowed = _narrow(set(available), tools.profile, tools.allow, tools.deny)
    if agent is not None:
        allowed = _narrow(allowed, agent.profile, agent.allow, agent.deny)
    return frozenset(allowed)


def unknown_names(available: Collection[str], lists: Iterable[Iterable[str]]) -> list[str]:
    """Entries of the policy's lists that name no tool, group or known tool name (typos)."""
    names = {*available, *KNOWN_ELSEWHERE}
    unknown = []
    for entries in lists:
        for entry in entries:
            e = entry.strip().lower()
            if e in GROUPS or any(fnmatch.fnmatchcase(n, e) for n in names):
                continue
            unknown.append(entry)
    return unknown


def http_denied(
    tools: Collection[str], allow: list[str], deny: list[str], default: Iterable[str]
) -> frozenset[str]:
    """``POST /tools/invoke``'s deny list: the default (tools that change the host) plus
    ``deny``, minus what ``allow`` names."""
    denied = {n for n in tools if _matches(n, _expand([*default, *deny]))}
    return frozenset(n for n in denied if not _matches(n, _expand(allow)))
