"""(c1) of bench/run.py: (c) starting from the case, as (b) does.

(c) (:class:`bench.baselines.ThresholdMatcher`) is handed each case's value and
truth facts, worked out beforehand, untimed, by a full evaluation of every leaf
(:func:`bench.baselines.prepare`). (c1) is handed the prepared ``Case`` objects
that (b) is handed, and works the facts out inside the timing, per chunk of
cases (``engine.batch.CHUNK_SIZE``) as ``engine.evaluation.evaluate_cases``
does:

1. each case's view with its calculations (``_view``);
2. each model's scores, one ``score_many`` call per model for the whole chunk
   (``_row`` per case, then ``_score``);
3. per case that reaches the rules, with no evidence and no short-circuit
   (durable needs every fact before it chains): the point scores
   (``engine.points.Points``, each worked out when a leaf reads it); each flat
   leaf's value, the number the leaf compares in the leaf's one cut unit (the
   numeric readings in its window, ``CaseView.numbers``; the latest one,
   rounded half-up to the fact's decimals when it is in the fact's own unit as
   the engine rounds it before comparing, or their mean, least or greatest,
   ``engine.leaves._aggregate``, which rounds; converted with
   ``engine.units.convert``); every other leaf some pattern uses, decided
   without evidence by the engine's own compiled decision
   (``engine.decisions.decider``, as the engine's three-valued pass decides
   it); then the unknown findings and gates;
4. the same durable run as (c): ``ThresholdMatcher.run`` (a fresh session,
   the start fact, the facts one at a time, the chaining, the session
   deleted).

Not timed, worked out once beforehand:

- the plan, once per knowledge base: which leaves are flat, their cut units,
  their windows (parsed with ``engine.caseview.parse_duration``), which other
  leaves some pattern uses and their compiled decisions; as (c)'s cut points
  are compiled into its ruleset;
- whether a case reaches the rules (it does not when the patient died before
  the evaluation time): such a case gets its view and scores, then nothing;
- the unknown-finding and gate facts, recorded from the engine's own
  evaluation, as (c) has them. They are the product of the engine's
  three-valued pass (a finding that cannot be determined is asserted as
  unknown, so that "not F" does not fire on an F that might hold; the gate
  facts, asserted once the strata below are settled, let a "not F" be
  tested), which neither (c) nor (c1) performs: in both, that pass is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench.baselines import FlatLeaf, Recorded, ThresholdMatcher
from engine import Case, KnowledgeBase
from engine import ruleformat as rf
from engine.assessment import Score
from engine.caseview import CaseView, parse_duration
from engine.catalogue import QuantityFact
from engine.cutpoints import round_for_banding, thresholds_of
from engine.decisions import Decider, decider
from engine.errors import UnitError
from engine.evaluation import prepare_chunk
from engine.leaves import _aggregate
from engine.points import Points
from engine.units import convert

__all__ = ["CaseFacts"]

Fact = dict[str, Any]

# The operators in the order the engine looks for a leaf's first cut point.
_OPERATORS = ("above", "at_least", "below", "at_most")


def _as_compared(x: float, fact: QuantityFact) -> float:
    """A reading in the fact's own unit, rounded as the engine compares it.

    Spec 0.3: a value in the canonical unit is rounded half-up to the fact's
    decimals before it is banded (an eGFR of 59.6 is compared as 60); (c)'s
    value facts carry the rounded number, so (c1)'s must too.
    """
    return round_for_banding(x, fact, fact.unit)


@dataclass(frozen=True)
class _FlatValue:
    """How one flat leaf's value is worked out from a case view.

    Attributes:
        index: The leaf's index in ``kb.leaves``.
        name: The fact's name.
        fact: The fact's catalogue entry.
        within: The window, parsed; None for all readings.
        how: ``latest``, ``mean``, ``min`` or ``max``.
        min_readings: Days with readings an aggregate needs.
        mixed: The unit of an aggregate over readings in several units: the
            leaf's first cut point's unit as written, as the engine takes it.
        unit: The leaf's one cut unit, that of (c)'s value tests.
        if_missing: The truth fact asserted without a value, when some
            pattern uses it.
    """

    index: int
    name: str
    fact: QuantityFact
    within: timedelta | None
    how: str
    min_readings: int
    mixed: str
    unit: str
    if_missing: Fact | None

    def value(self, view: CaseView) -> float | None:
        """The number the leaf compares, in its cut unit; None without one.

        Raises:
            UnitError: If a reading's unit does not convert.
        """
        readings = view.numbers(self.name, self.within)
        if not readings:
            return None
        fact = self.fact
        if self.how == "latest":
            r = readings[-1]
            unit = r.unit or fact.unit
            assert isinstance(r.value, float)  # numbers() keeps only those
            x = _as_compared(r.value, fact) if unit == fact.unit else r.value
        else:
            # Too few days of readings count as none, as in the engine.
            if self.min_readings > 1:
                days = {view.time_of(r).date() for r in readings}
                if len(days) < self.min_readings:
                    return None
            units = {r.unit or fact.unit for r in readings}
            unit = units.pop() if len(units) == 1 else self.mixed
            x = _aggregate(view, self.name, self.within, self.how, unit, readings, fact)
        return convert(x, unit or fact.unit, self.unit, fact)


def _flat_value(
    kb: KnowledgeBase, index: int, flat: FlatLeaf, used: set[tuple[int, bool]]
) -> _FlatValue:
    """The plan of one flat leaf (see :func:`bench.baselines.flat_leaves`)."""
    cond = kb.leaves[index]
    assert isinstance(cond, rf.FactComparison)
    first = next(
        thresholds_of(getattr(cond, op))[0] for op in _OPERATORS if getattr(cond, op)
    )
    missing = flat.if_missing
    return _FlatValue(
        index=index,
        name=cond.fact,
        fact=kb.catalogue.quantities[cond.fact],
        within=parse_duration(cond.within) if cond.within else None,
        how=cond.value,
        min_readings=cond.min_readings,
        mixed=first.unit,
        unit=flat.unit,
        if_missing=(
            {"t": "leaf", "k": index, "v": missing}
            if missing is not None and (index, missing) in used
            else None
        ),
    )


class CaseFacts:
    """(c1): (c)'s facts worked out from each case's readings, then (c)'s run.

    Args:
        kb: The knowledge base.
        flats: Its flat leaves (:func:`bench.baselines.flat_leaves`).
        matcher: (c)'s ruleset, whose run (c1) times as (c) does.
        recorded: Per case, the engine's own evaluation; None for a case that
            reaches no rule.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        flats: dict[int, FlatLeaf],
        matcher: ThresholdMatcher,
        recorded: Sequence[Recorded | None],
    ) -> None:
        self.kb, self.matcher = kb, matcher
        self._used = kb.used_leaves

        # In leaf order, as (c)'s facts are: the same facts in the same order
        # make the same durable run, so (c1) - (c) is the work of making them.
        self._steps: list[_FlatValue | tuple[int, Decider]] = []
        for i, cond in enumerate(kb.leaves):
            flat = flats.get(i)
            if flat is not None:
                self._steps.append(_flat_value(kb, i, flat, self._used))
            elif (i, True) in self._used or (i, False) in self._used:
                self._steps.append((i, decider(cond)))

        self._tails: list[list[Fact] | None] = [
            None
            if r is None
            else [f for b in r.batches for f in b if f["t"] in ("finding", "gate")]
            for r in recorded
        ]

    def facts(
        self,
        view: CaseView,
        scores: dict[str, Score],
        points: Points,
        tail: list[Fact],
    ) -> list[Fact]:
        """One case's facts for (c)'s ruleset, after its start fact.

        A leaf whose unit does not convert is left out, as (c) leaves it out
        (the engine cannot determine it).
        """
        out: list[Fact] = []
        for step in self._steps:
            if isinstance(step, _FlatValue):
                try:
                    x = step.value(view)
                except UnitError:
                    continue
                if x is not None:
                    out.append({"t": "val", "k": step.index, "x": x})
                elif step.if_missing is not None:
                    out.append(step.if_missing)
                continue
            i, decide = step
            try:
                v = decide(view, scores, points)
            except UnitError:
                continue
            if v is not None and (i, v) in self._used:
                out.append({"t": "leaf", "k": i, "v": v})
        out += tail
        return out

    def chunk(
        self, first: int, cases: Sequence[Case], times: Sequence[datetime]
    ) -> list[list[Fact] | None]:
        """The facts of a chunk of cases, as ``evaluate_cases`` prepares a chunk.

        Args:
            first: The index of the chunk's first case in the cases given to
                the constructor's ``recorded``.
            cases: The chunk's cases.
            times: Their evaluation times.

        Returns:
            Per case, its facts; None for a case that reaches no rule.
        """
        kb = self.kb
        views, scores = prepare_chunk(kb, cases, times)

        out: list[list[Fact] | None] = []
        for k, (view, found) in enumerate(zip(views, scores, strict=True)):
            tail = self._tails[first + k]
            if tail is None:
                out.append(None)
                continue
            points = Points(view, kb.point_scores, found)
            out.append(self.facts(view, found, points, tail))
        return out

    def run(
        self, first: int, cases: Sequence[Case], times: Sequence[datetime]
    ) -> list[set[int] | None]:
        """(c1) on a chunk: its facts, then (c)'s durable run case by case.

        Returns:
            Per case, the indices of the rules that fired; None for a case
            that reaches no rule.
        """
        return [
            None if facts is None else self.matcher.run(facts)
            for facts in self.chunk(first, cases, times)
        ]
