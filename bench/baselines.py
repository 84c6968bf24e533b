"""What the benchmark compares the engine with: (c), (c0) and (d) of bench/run.py.

The engine decides every leaf (a finding-free condition) in Python and hands
durable-rules only truth facts ``{"t": "leaf", "k": L, "v": true|false}``,
finding facts and gate facts. The baselines here do the same logic without
the engine's bookkeeping:

- :class:`ThresholdMatcher` is (c), durable-rules doing the work the engine
  moved out of it: the engine's compiled rulesets, where each *flat* leaf (one
  numeric fact against cut points, see :func:`flat_leaves`) is a value test
  inside the matcher on a prepared value fact ``{"t": "val", "k": L, "x": n}``.
- :func:`raw_durable` is (c0), the matcher alone: the engine's own ruleset and
  host driven with exactly the facts the engine asserted for the case.
- :func:`plain_python` is (d), the same logic in plain Python: the flat
  comparisons on the same prepared values, the other leaves from the same
  prepared truth values, then the three-valued pass over every rule.

Everything each baseline needs per case is prepared once, outside the timing
(:func:`record` and :func:`prepare`): the facts durable is given, the values
compared, and the engine's own answer to check the baselines against.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durable.engine import MessageNotHandledException, MessageObservedException

from engine import Case, KnowledgeBase
from engine import ruleformat as rf
from engine.chaining import Session, _QuietHost
from engine.compiler import durable_definition
from engine.cutpoints import thresholds_of
from engine.errors import UnitError
from engine.evaluation import _scores, _view
from engine.leaves import LeafResult, evaluate_leaf
from engine.points import Points
from engine.truth import truth
from engine.units import convert

__all__ = [
    "FlatLeaf",
    "Prepared",
    "Recorded",
    "ThresholdMatcher",
    "as_of",
    "flat_leaves",
    "plain_python",
    "prepare",
    "raw_durable",
    "record",
]

Fact = dict[str, Any]

# Per operator of a comparison: its test, and durable's operator on ``x`` when
# the cut point holds and when it fails.
_OPS: dict[str, tuple[Callable[[float, float], bool], str, str]] = {
    "above": (operator.gt, "$gt", "$lte"),
    "at_least": (operator.ge, "$gte", "$lt"),
    "below": (operator.lt, "$lt", "$gte"),
    "at_most": (operator.le, "$lte", "$gt"),
}

_names = itertools.count(1)


@dataclass(frozen=True)
class FlatLeaf:
    """A leaf that is one numeric fact against cut points, all in one unit.

    Attributes:
        index: The leaf's index in ``kb.leaves``.
        unit: The unit every cut point is in, and the value must be in.
        cuts: (operator, cut point) pairs, e.g. ``("at_least", 140.0)``.
        if_missing: The leaf's value when the fact has no reading, if decided.
    """

    index: int
    unit: str
    cuts: tuple[tuple[str, float], ...]
    if_missing: bool | None

    def holds(self, x: float) -> bool:
        """Whether the value meets every cut point."""
        return all(_OPS[op][0](x, cut) for op, cut in self.cuts)

    def pattern(self, want: bool) -> Fact:
        """durable's test for this leaf having the value ``want``.

        True: a value fact meets every cut point. False: it misses some cut
        point (an ``$or``). A leaf that may be decided without a value
        (``if_missing``) also accepts the truth fact the engine would assert.
        """
        head: list[Fact] = [{"t": "val"}, {"k": self.index}]
        if want:
            alternatives = [
                {"$and": [*head, *({_OPS[op][1]: {"x": c}} for op, c in self.cuts)]}
            ]
        else:
            alternatives = [
                {"$and": [*head, {_OPS[op][2]: {"x": c}}]} for op, c in self.cuts
            ]
        if self.if_missing is not None:
            alternatives.append(
                {"$and": [{"t": "leaf"}, {"k": self.index}, {"v": want}]}
            )
        return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def flat_leaves(kb: KnowledgeBase) -> dict[int, FlatLeaf]:
    """The knowledge base's flat leaves, by index.

    A leaf is flat when it is one comparison of a numeric fact with at least
    one cut point, passing on one reading (``readings: 1``) and with no
    duration (``lasting_more_than``): a test on one number. Everything else
    (conditions, drugs, combinations, point scores, text facts, counts over
    readings) stays a truth fact decided outside the matcher, as in the engine.

    The cut points are put in one unit per leaf, that of the first cut point
    given (a plain number is in the fact's own unit); where an operator lists
    the cut point in several units, the one in that unit is taken as written.

    Raises:
        UnitError: If a cut point cannot be converted to the leaf's unit.
    """
    out: dict[int, FlatLeaf] = {}
    for i, cond in enumerate(kb.leaves):
        if not isinstance(cond, rf.FactComparison):
            continue
        fact = kb.catalogue.quantities.get(cond.fact)
        given = {op: thresholds_of(getattr(cond, op)) for op in _OPS}
        given = {op: cuts for op, cuts in given.items() if cuts}
        if (
            fact is None
            or not given
            or cond.readings != 1
            or cond.lasting_more_than is not None
        ):
            continue
        first = next(iter(given.values()))[0]
        unit = first.unit or fact.unit
        cuts: list[tuple[str, float]] = []
        for op, options in given.items():
            native = next((c for c in options if (c.unit or fact.unit) == unit), None)
            if native is not None:
                cuts.append((op, native.value))
            else:
                c = options[0]
                cuts.append((op, convert(c.value, c.unit or fact.unit, unit, fact)))
        out[i] = FlatLeaf(i, unit, tuple(cuts), cond.if_missing)
    return out


# --- what the engine does with each case ---------------------------------------------


def as_of(case: Case) -> datetime:
    """The case's evaluation time in the benchmark: its last entry (``--as-of last``).

    Raises:
        ValueError: If the case has no dated entry.
    """
    if case.last_recorded is None:
        raise ValueError(f"case {case.case_id}: no dated entry to evaluate it as of")
    return case.last_recorded


@dataclass(frozen=True)
class Recorded:
    """One real evaluation of a case, watched at the matcher's door.

    Attributes:
        batches: Each ``assert_facts`` call's facts, in order: the leaf truth
            facts, then per stratum the unknown findings and the gates.
        rules_fired: The rule ids the assessment reports as fired.
    """

    batches: list[list[Fact]]
    rules_fired: frozenset[str]


def record(kb: KnowledgeBase, cases: list[Case]) -> list[Recorded | None]:
    """Evaluate each case once (``as_of`` its last entry), recording the matcher.

    Returns:
        Per case, what it asserted and fired; None for a case that reaches no
        rule (the patient died before the evaluation time).
    """
    matcher = kb.matcher
    real = matcher.assert_facts
    batches: list[list[Fact]] = []

    def watch(session: Session, facts: list[Fact]) -> None:
        batches.append([dict(f) for f in facts])
        real(session, facts)

    out: list[Recorded | None] = []
    matcher.assert_facts = watch  # type: ignore[method-assign]
    try:
        for case in cases:
            batches.clear()
            result = kb.evaluate(case, as_of=as_of(case))
            reached = bool(batches)  # a case concluded without rules asserts nothing
            fired = frozenset(result.rules_fired)
            out.append(Recorded(list(batches), fired) if reached else None)
    finally:
        matcher.assert_facts = real  # type: ignore[method-assign]
    return out


@dataclass(frozen=True)
class Prepared:
    """One case's inputs to (c) and (d), every leaf evaluated in full.

    Attributes:
        facts: What (c) asserts after its start fact, in order: a value fact
            per flat leaf with a value, a truth fact per other decided leaf
            some pattern uses, then the engine's unknown findings and gates.
        values: Per flat leaf with a value, the number compared, in its unit.
        truths: Every other decided leaf's value (also those no pattern uses:
            the three-valued pass reads them).
        rules_fired: The rule ids the engine reports as fired for the case.
    """

    facts: list[Fact]
    values: dict[int, float]
    truths: dict[int, bool]
    rules_fired: frozenset[str]


def prepare(
    kb: KnowledgeBase, case: Case, recorded: Recorded, flats: dict[int, FlatLeaf]
) -> Prepared:
    """Evaluate every leaf of the case with the engine's code; build the facts.

    The value of a flat leaf is the number the engine compared (the evidence
    of its result), converted to the leaf's unit. Not timed.
    """
    view = _view(kb, case, as_of(case))
    scores = _scores(kb, view)
    points = Points(view, kb.point_scores, scores)
    facts: list[Fact] = []
    values: dict[int, float] = {}
    truths: dict[int, bool] = {}
    for i, cond in enumerate(kb.leaves):
        try:
            result = evaluate_leaf(view, cond, scores, points)
        except UnitError:
            continue  # cannot be determined, as in the engine
        flat = flats.get(i)
        x = _compared(kb, cond, result, flat) if flat is not None else None
        if x is not None:
            values[i] = x
            facts.append({"t": "val", "k": i, "x": x})
        elif result.value is not None:
            truths[i] = result.value
            if (i, result.value) in kb.used_leaves:
                facts.append({"t": "leaf", "k": i, "v": result.value})

    # Unknown findings and gates, exactly as the engine asserted them.
    facts += [
        f for batch in recorded.batches for f in batch if f["t"] in ("finding", "gate")
    ]
    return Prepared(facts, values, truths, recorded.rules_fired)


def _compared(
    kb: KnowledgeBase, cond: rf.Condition, result: LeafResult, flat: FlatLeaf
) -> float | None:
    """The number a flat leaf compared, in the leaf's unit; None without one."""
    if not result.facts or not isinstance(result.facts[0].value, float):
        return None
    assert isinstance(cond, rf.FactComparison)
    fact = kb.catalogue.quantities[cond.fact]
    used = result.facts[0]
    return convert(used.value, used.unit or fact.unit, flat.unit, fact)  # type: ignore[arg-type]


# --- (c) thresholds in the matcher ----------------------------------------------------


@dataclass
class _Run:
    """One session's own record: the findings asserted, the rules fired."""

    asserted: set[str] = field(default_factory=set)
    fired: set[int] = field(default_factory=set)


class ThresholdMatcher:
    """(c): the engine's compiled rulesets with the flat threshold tests inside.

    The same conjuncts, gates and finding patterns as the engine's ruleset
    (:func:`engine.compiler.durable_definition`), on a host of its own that
    starts no background threads, under a fresh ruleset name. Each pattern on a
    flat leaf's truth fact is replaced by a value test (:meth:`FlatLeaf.pattern`).
    The actions are minimal: record the rule, assert its findings once per
    session. No lock, no cross-check, no assessment.
    """

    def __init__(self, kb: KnowledgeBase, flats: dict[int, FlatLeaf]) -> None:
        self.name = f"bench_thresholds_{next(_names)}"
        self._runs: dict[str, _Run] = {}
        self._sids = itertools.count(1)
        definition, _leaves, used, _gates = durable_definition(kb.rules, self._action)
        # Only findings some pattern tests are asserted: durable drops a fact
        # that matches no rule, and with it the rest of the action.
        self._asserts = [tuple(f for f in r.produces if f in used) for r in kb.rules]
        self.replaced = 0
        for rule in definition.values():
            rule["all"] = [self._swap(p, flats) for p in rule["all"]]
        # An action must run in every session: deleting one in which none ran
        # has crashed durable (notes, "Facts, events and actions").
        definition["__start"] = {"all": [{"m": {"t": "start"}}], "run": _noop}
        self._host = _QuietHost()
        self._host.register_rulesets({self.name: definition})

    def _swap(self, pattern: Fact, flats: dict[int, FlatLeaf]) -> Fact:
        """The pattern, or a value test if it is a flat leaf's truth fact."""
        ((alias, test),) = pattern.items()
        parts = test.get("$and") if isinstance(test, dict) else None
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            return pattern
        fields = {k: v for p in parts for k, v in p.items()}
        if fields.keys() != {"t", "k", "v"} or fields["t"] != "leaf":
            return pattern
        flat = flats.get(fields["k"])
        if flat is None:
            return pattern
        self.replaced += 1
        return {alias: flat.pattern(bool(fields["v"]))}

    def _action(self, rule: int, _conjunct: int) -> Callable[[Any], None]:
        def act(c: Any) -> None:
            run = self._runs[str(c.s.sid)]
            run.fired.add(rule)
            for finding in self._asserts[rule]:
                # Asserting a fact twice raises in durable: once per session.
                if finding not in run.asserted:
                    run.asserted.add(finding)
                    c.assert_fact({"t": "finding", "f": finding, "u": False})

        return act

    def run(self, facts: list[Fact]) -> set[int]:
        """One case: a fresh session, the start fact, the facts, the session deleted.

        Returns:
            The indices of the rules that fired.
        """
        sid = f"c{next(self._sids)}"
        run = self._runs[sid] = _Run()
        try:
            _drive(self._host, self.name, sid, facts)
        finally:
            del self._runs[sid]
        return run.fired


def _noop(_c: Any) -> None:
    return None


# --- (c0) the matcher alone -----------------------------------------------------------


def raw_durable(kb: KnowledgeBase, batches: list[list[Fact]], sid: str) -> set[int]:
    """(c0): the engine's ruleset and host, given exactly the engine's facts.

    The ruleset's own actions stay (they assert the findings that chain, and
    need a session record to write to); no lock, context manager, per-fact
    error handling, cross-check or assessment.

    Returns:
        The indices of the rules that fired (from that session record).
    """
    matcher = kb.matcher
    session = matcher._sessions[sid] = Session(sid)
    try:
        _drive(matcher._host, matcher.name, sid, itertools.chain(*batches))
    finally:
        del matcher._sessions[sid]
    return {ri for ri, _conjunct in session.fired}


def _drive(host: _QuietHost, name: str, sid: str, facts: Iterable[Fact]) -> None:
    """A session of its own: the start fact, the facts one at a time, deleted."""
    try:
        host.assert_fact(name, {"t": "start", "sid": sid})
        for fact in facts:
            try:
                host.assert_fact(name, {**fact, "sid": sid})
            except (MessageNotHandledException, MessageObservedException):
                pass  # a fact no rule matches: normal
    finally:
        host.delete_state(name, sid)


# --- (d) plain Python -----------------------------------------------------------------


class _Known:
    """Leaf values already decided, as :func:`engine.truth.truth` reads them."""

    def __init__(self, values: dict[int, bool]) -> None:
        self._values = values

    def value(self, index: int) -> bool | None:
        return self._values.get(index)

    def __getitem__(self, index: int) -> LeafResult:
        return LeafResult(self._values.get(index))


def plain_python(
    kb: KnowledgeBase, flats: dict[int, FlatLeaf], case: Prepared
) -> set[int]:
    """(d): the flat comparisons, then the three-valued pass in dependency order.

    Returns:
        The indices of the rules that hold.
    """
    known = dict(case.truths)
    for i, x in case.values.items():
        known[i] = flats[i].holds(x)
    leaves = _Known(known)

    found: dict[str, bool | None] = {}
    holds: set[int] = set()
    for ri in kb.order:
        crule = kb.rules[ri]
        value = truth(crule.expr, leaves, found)
        if value is True:
            holds.add(ri)
        for f in crule.produces:
            if value is True:
                found[f] = True
            elif value is None and found.get(f) is not True:
                found[f] = None
            else:
                found.setdefault(f, False)
    return holds
