"""The pure rules of a run's history and of the ``model`` field: ``reconcile``,
``apply_budget``, ``agent_from_model``."""

from __future__ import annotations

import pytest

from openclaw.agents.history import (
    Reconciled,
    apply_budget,
    client_view,
    reconcile,
    reset_record,
    to_messages,
)
from openclaw.errors import InvalidRequestError
from openclaw.gateway.http.chat_request import agent_from_model
from openclaw.messages import ChatMessage, ToolCall
from openclaw.sessions.models import TranscriptRecord


def u(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def a(text: str) -> ChatMessage:
    return ChatMessage("assistant", text)


STORED = [u("one"), a("1"), u("two"), a("2")]


def test_a_client_that_sends_no_history_gets_the_transcript() -> None:
    assert reconcile(STORED, [], [u("three")]) == Reconciled(STORED, False)


@pytest.mark.parametrize(
    "client",
    [
        [u("one"), a("1"), u("two"), a("2")],  # the same
        [u("two"), a("2")],  # the client trimmed its own history
        [u("zero"), a("0"), u("one"), a("1"), u("two"), a("2")],  # the transcript was cut
        [u("two"), a("  2 ")],  # whitespace is not a difference
    ],
)
def test_agreeing_histories_keep_the_transcript(client: list[ChatMessage]) -> None:
    assert reconcile(STORED, client, [u("three")]) == Reconciled(STORED, False)


def test_an_edited_turn_makes_the_clients_history_win() -> None:
    client = [u("one"), a("1"), u("TWO, edited"), a("2")]
    assert reconcile(STORED, client, [u("three")]) == Reconciled(client, True)


def test_asking_the_last_question_again_is_a_regeneration() -> None:
    # The stored history ends with this very turn and its answer: the old answer goes.
    merged = reconcile(STORED, [u("one"), a("1")], [u("two")])
    assert merged == Reconciled(STORED[:2], True)


def test_tool_calls_count_in_the_comparison() -> None:
    call = ToolCall("c1", "f", '{"x": 1}')
    stored = [u("q"), ChatMessage("assistant", "", tool_calls=(call,))]
    other = [u("q"), ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "f", "{}"),))]
    assert reconcile(stored, other).diverged
    assert not reconcile(stored, list(stored)).diverged


# A turn with two server tool rounds, as stored: the client saw one reply, "Looking.\n\nDone."
LS = ToolCall("c1", "ls", "{}")
READ = ToolCall("c2", "read", '{"path": "a"}')
WEATHER = ToolCall("c3", "get_weather", "{}")
TOOL_TURN = [
    u("one"),
    ChatMessage("assistant", "Looking.", tool_calls=(LS,)),
    ChatMessage("tool", "a.txt", name="ls", tool_call_id="c1"),
    ChatMessage("assistant", "", tool_calls=(READ,)),
    ChatMessage("tool", "alpha", name="read", tool_call_id="c2"),
    a("Done."),
]


def test_client_view_leaves_server_rounds_out() -> None:
    view, starts = client_view(TOOL_TURN)
    assert view == [u("one"), a("Looking.\n\nDone.")]
    assert starts == [0, 1]


def test_a_client_resending_what_it_saw_keeps_the_tool_rounds() -> None:
    client = [u("one"), a("Looking.\n\nDone.")]
    assert reconcile(TOOL_TURN, client, [u("two")]) == Reconciled(TOOL_TURN, False)
    # Regenerating that turn drops all of it, rounds included.
    assert reconcile(TOOL_TURN, [], [u("one")]) == Reconciled([], True)


def test_client_calls_stay_in_the_view_server_calls_do_not() -> None:
    mixed = [
        u("weather?"),
        ChatMessage("assistant", "", tool_calls=(LS, WEATHER)),
        ChatMessage("tool", "a.txt", name="ls", tool_call_id="c1"),
        ChatMessage("tool", "sunny", tool_call_id="c3"),  # the client's result: no name
        a("Sunny."),
    ]
    view, starts = client_view(mixed)
    assert view == [
        u("weather?"),
        ChatMessage("assistant", "", tool_calls=(WEATHER,)),
        ChatMessage("tool", "sunny", tool_call_id="c3"),
        a("Sunny."),
    ]
    assert starts == [0, 1, 3, 4]


def test_the_budget_keeps_the_newest_messages_and_starts_at_a_user_turn() -> None:
    history = [u("q1"), a("a1"), u("q2"), a("a2"), u("q3"), a("a3")]
    assert apply_budget(history, max_messages=4, max_tokens=None) == history[2:]
    # An odd cut would start at a reply: that reply goes too.
    assert apply_budget(history, max_messages=3, max_tokens=None) == history[4:]
    assert apply_budget(history, max_messages=100, max_tokens=None) == history


def test_the_token_budget_drops_the_oldest_first() -> None:
    history = [u("x " * 400), a("short"), u("q"), a("a")]
    kept = apply_budget(history, max_messages=100, max_tokens=50)
    assert kept == history[2:]
    assert apply_budget(history, max_messages=100, max_tokens=1) == []


@pytest.mark.parametrize(
    ("model", "agent"),
    [
        ("openclaw", None),
        (" openclaw ", None),
        ("openclaw/default", None),
        ("openclaw/beta", "beta"),
        ("openclaw:beta", "beta"),
        ("agent:beta", "beta"),
        ("agent:Beta-2", "Beta-2"),  # normalised where the agent is looked up
    ],
)
def test_model_forms(model: str, agent: str | None) -> None:
    assert agent_from_model(model) == agent


@pytest.mark.parametrize("model", ["gpt-4o", "openclaw/", "agent:", "", "claw"])
def test_other_models_are_refused_naming_the_forms(model: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        agent_from_model(model)
    assert info.value.param == "model"
    assert "openclaw/<agentId>" in info.value.message


def test_the_budget_keeps_the_call_the_turn_answers() -> None:
    # A long question, a client tool call, and now its result: the budget would drop the call,
    # and a result without its call is refused by the models' APIs.
    history = [
        u("old"),
        a("old answer"),
        u("word " * 400),
        ChatMessage("assistant", "", tool_calls=(LS, WEATHER)),
        ChatMessage("tool", "a.txt", name="ls", tool_call_id="c1"),
    ]
    result = ChatMessage("tool", "sunny", tool_call_id="c3")
    kept = apply_budget(history, max_messages=100, max_tokens=50, then=[result])
    assert kept == history[2:]
    # Without that result the same budget drops the turn.
    assert apply_budget(history, max_messages=100, max_tokens=50, then=[u("next")]) == []


def test_the_transcript_starts_at_its_last_history_reset() -> None:
    def rec(role: str, text: str) -> TranscriptRecord:
        return TranscriptRecord(role=role, content=text, timestamp=0.0)

    records = [
        rec("user", "old"),
        reset_record([u("zero"), a("0")], 0.0, "r1"),
        rec("user", "one"),
        rec("assistant", "1"),
        reset_record([u("one"), a("1 again")], 0.0, "r2"),
        rec("user", "two"),
        rec("assistant", "2"),
    ]
    # Only the last reset counts: what came before it (earlier resets too) is replaced.
    assert to_messages(records) == [u("one"), a("1 again"), u("two"), a("2")]
    assert to_messages(records[:4]) == [u("zero"), a("0"), u("one"), a("1")]
    assert to_messages(records[:1]) == [u("old")]
    assert to_messages([]) == []
