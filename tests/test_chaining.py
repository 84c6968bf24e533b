"""Pins of the durable-rules behaviours the adapter relies on or works around.

Each test names the item of durable-rules-notes.md it pins. If an upgrade of
durable-rules changes one, the test says which part of engine/chaining.py to
revisit.
"""

from __future__ import annotations

from typing import Any

import pytest
from durable.engine import MessageNotHandledException, MessageObservedException

from engine.chaining import Matcher, _QuietHost

_names = iter(range(10_000))


def _host(definition: dict[str, Any]) -> tuple[_QuietHost, str]:
    host = _QuietHost()
    name = f"pin_{next(_names)}"
    host.register_rulesets({name: definition})
    return host, name


def test_fact_matching_no_rule_raises_not_handled() -> None:
    host, name = _host({"r": {"all": [{"m": {"t": "a"}}], "run": lambda c: None}})
    with pytest.raises(MessageNotHandledException):
        host.assert_fact(name, {"t": "b", "sid": "x"})


def test_identical_fact_twice_raises_observed() -> None:
    host, name = _host({"r": {"all": [{"m": {"t": "a"}}], "run": lambda c: None}})
    host.assert_fact(name, {"t": "a", "sid": "x"})
    with pytest.raises(MessageObservedException):
        host.assert_fact(name, {"t": "a", "sid": "x"})


def test_id_key_is_the_fact_identity() -> None:
    # Why no engine fact has an `id` key: two facts with one id are one fact.
    host, name = _host({"r": {"all": [{"m": {"t": "a"}}], "run": lambda c: None}})
    host.assert_fact(name, {"t": "a", "id": 1, "sid": "x"})
    with pytest.raises(MessageObservedException):
        host.assert_fact(name, {"t": "a", "id": 1, "v": 2, "sid": "x"})


def test_number_against_text_compares_as_text() -> None:
    # Why only booleans and ids reach the matcher: "9" > 10 is true in durable.
    fired: list[str] = []
    host, name = _host(
        {"r": {"all": [{"m": {"$gt": {"x": 10}}}], "run": lambda c: fired.append("r")}}
    )
    host.assert_fact(name, {"x": "9", "sid": "x"})
    assert fired == ["r"]


def test_exception_in_action_is_swallowed_by_durable() -> None:
    def boom(c: Any) -> None:
        raise RuntimeError("inside action")

    host, name = _host({"r": {"all": [{"m": {"t": "a"}}], "run": boom}})
    host.assert_fact(name, {"t": "a", "sid": "x"})  # returns normally
    assert "inside action" in host.get_state(name, "x").get("exception", "")


def test_sessions_do_not_leak_between_sids() -> None:
    fired: list[str] = []
    definition = {
        "r": {
            "all": [{"a": {"t": "hr"}}, {"b": {"t": "bp"}}],
            "run": lambda c: fired.append(str(c.s.sid)),
        }
    }
    host, name = _host(definition)
    host.assert_fact(name, {"t": "hr", "sid": "p1"})
    host.assert_fact(name, {"t": "bp", "sid": "p2"})
    assert fired == []
    host.assert_fact(name, {"t": "bp", "sid": "p1"})
    assert fired == ["p1"]


def test_quiet_host_runs_chained_actions_inside_the_call() -> None:
    order: list[str] = []

    def first(c: Any) -> None:
        order.append("first")
        c.assert_fact({"t": "derived"})

    definition = {
        "first": {"all": [{"m": {"t": "start"}}], "run": first},
        "second": {
            "all": [{"m": {"t": "derived"}}],
            "run": lambda c: order.append("2"),
        },
    }
    host, name = _host(definition)
    host.assert_fact(name, {"t": "start", "sid": "x"})
    assert order == ["first", "2"]


def _chain_matcher(max_firings: int = 100) -> tuple[Matcher, list[str]]:
    def definition(action_for: Any) -> dict[str, Any]:
        return {
            "r0_0": {
                "all": [{"l": {"$and": [{"t": "leaf"}, {"k": 0}, {"v": True}]}}],
                "run": action_for(0, 0),
            },
            "r1_0": {
                "all": [{"f": {"$and": [{"t": "finding"}, {"f": "a"}]}}],
                "run": action_for(1, 0),
            },
        }

    produces = {0: ["a"], 1: ["b"]}
    matcher = Matcher(
        definition,
        lambda s, ri, ci: produces[ri],
        lambda: {"a"},
        max_firings=max_firings,
    )
    return matcher, []


def test_matcher_chains_and_deletes_each_session() -> None:
    matcher, _ = _chain_matcher()
    for _ in range(1100):  # past durable's cap of 1024 live sessions per ruleset
        session = matcher.run([{"t": "leaf", "k": 0, "v": True}], [])
        assert session.fired == [(0, 0), (1, 0)]
        assert session.errors == []
    assert matcher._sessions == {}


def test_sessions_where_nothing_fires_are_deleted_safely() -> None:
    # Deleting a session in which no action ran has crashed durable; the
    # start fact is asserted before such a session is deleted.
    matcher, _ = _chain_matcher()
    for _ in range(1100):
        session = matcher.run([{"t": "leaf", "k": 0, "v": False}], [])
        assert (session.fired, session.errors, session.ran) == ([], [], False)
    assert matcher._sessions == {}


def test_matcher_firing_cap_stops_the_chain() -> None:
    matcher, _ = _chain_matcher(max_firings=1)
    session = matcher.run([{"t": "leaf", "k": 0, "v": True}], [])
    assert session.capped
    assert session.fired == [(0, 0)]
