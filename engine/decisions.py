"""Deciding leaves without their evidence: each condition compiled once.

The three-valued pass reads only a leaf's value (true, false or unknown) for
most leaves; the facts behind it are needed only for the leaves a conclusion
shows (:func:`engine.leaves.evaluate_leaf` builds those). A condition is
compiled once into a function of the case, so that deciding it does not walk
the rule-file model again for every case: the combination's parts, the
window of a comparison and the key it is kept under are worked out once.

Combinations stop at the first part that decides them (a false part of
``all``, a true part of ``any``): a rule's guard ("has atrial fibrillation")
spares the rest of its conditions. The value is the one
:func:`engine.leaves.evaluate_leaf` gives (Kleene's three-valued logic,
spec 0.4 for at-least), which tests/test_decisions.py checks on every leaf
of the bundled rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

from . import ruleformat as rf
from .assessment import Score
from .caseview import CaseView, parse_duration
from .leaves import compare_fact, condition_key, evaluate_leaf
from .memo import ByIdentity

if TYPE_CHECKING:
    from .points import PointResult

__all__ = ["Decider", "decide_leaf", "decider"]

Points: TypeAlias = "Mapping[str, PointResult] | None"
Decider: TypeAlias = Callable[[CaseView, dict[str, Score], Points], bool | None]

_compiled: ByIdentity[rf.Condition, Decider] = ByIdentity(limit=8192)


def decider(cond: rf.Condition) -> Decider:
    """The condition compiled into a function ``(view, scores, points)``."""
    return _compiled.get(cond, _compile)


def decide_leaf(
    view: CaseView,
    cond: rf.Condition,
    scores: dict[str, Score],
    points: Points = None,
) -> bool | None:
    """The value :func:`engine.leaves.evaluate_leaf` gives, without evidence.

    Raises:
        UnitError: If a reading's unit cannot be converted for a comparison.
    """
    return decider(cond)(view, scores, points)


def _compile(cond: rf.Condition) -> Decider:
    if isinstance(cond, rf.AllOf):
        return _at_least(len(cond.all), cond.all)
    if isinstance(cond, rf.AnyOf):
        return _at_least(1, cond.any)
    if isinstance(cond, rf.AtLeastOf):
        return _at_least(cond.at_least, cond.of)
    if isinstance(cond, rf.Not):
        return _negation(_compile(cond.not_))
    if isinstance(cond, rf.ConditionTest):
        return _problem_list(cond)
    if isinstance(cond, rf.MedicationTest):
        drug = cond.taking
        return lambda view, _scores, _points: view.taking(drug)
    if isinstance(cond, rf.AllergyTest):
        allergen = cond.allergic_to
        return lambda view, _scores, _points: view.allergic_to(allergen)
    if isinstance(cond, rf.FactComparison):
        return _comparison(cond)
    if isinstance(cond, rf.FindingTest):  # in a point-score item only
        finding = cond.finding
        return lambda view, _scores, _points: view.finding(finding)

    # Scores and point scores: their full result is cheap next to what they
    # read (a model's output, a whole point score kept per case).
    def full(view: CaseView, scores: dict[str, Score], points: Points) -> bool | None:
        return evaluate_leaf(view, cond, scores, points).value  # type: ignore[arg-type]

    return full


def _at_least(k: int, conditions: Sequence[rf.Condition]) -> Decider:
    parts = [_compile(c) for c in conditions]
    n = len(parts)

    def decide(view: CaseView, scores: dict[str, Score], points: Points) -> bool | None:
        # True once k parts are true; false once fewer than k can still be.
        # The same loop as engine.truth.truth's, inlined: a shared loop fed by
        # a generator measured about 5 % slower on this hot path.
        if k <= 0:
            return True
        true = unknown = 0
        left = n
        for part in parts:
            left -= 1
            value = part(view, scores, points)
            if value is True:
                true += 1
                if true >= k:
                    return True
            elif value is None:
                unknown += 1
            if true + unknown + left < k:
                return False
        return None

    return decide


def _negation(inner: Decider) -> Decider:
    def decide(view: CaseView, scores: dict[str, Score], points: Points) -> bool | None:
        value = inner(view, scores, points)
        return None if value is None else not value

    return decide


def _problem_list(cond: rf.ConditionTest) -> Decider:
    name = cond.condition
    since = parse_duration(cond.for_more_than) if cond.for_more_than else None
    return lambda view, _scores, _points: view.has_condition(name, since)


def _comparison(cond: rf.FactComparison) -> Decider:
    # Rules repeat comparisons ("adult" in most of them): each distinct one is
    # decided once per case and kept in the case's cache.
    key = ("decided", condition_key(cond))

    def decide(
        view: CaseView, _scores: dict[str, Score], _points: Points
    ) -> bool | None:
        cache = view.cache
        if key in cache:
            return cache[key]  # type: ignore[return-value]
        value = cache[key] = compare_fact(view, cond, evidence=False).value
        return value

    return decide
