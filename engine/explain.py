"""Explanations: how a conclusion was reached, and why another was not.

*How* is read off an assessment: each conclusion's evidence names the rules,
the facts and the findings it chained on, and each of those findings has its
own evidence, so the derivation is a tree. *Why not* re-examines the rules that
could have reached a conclusion: for each, the condition that failed with the
actual value against the threshold, or the fact that was missing, and the
smallest change of one fact that would make it fire.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import ruleformat as rf
from .assessment import NOTICE, Assessment, Component, FactUsed, RuleRef, Score
from .caseview import CaseView
from .cutpoints import thresholds_of
from .leaves import LeafResult, evaluate_leaf
from .points import SCORE_FACT_PREFIX, PointResult, evaluate_points

if TYPE_CHECKING:
    from .knowledge import AsOf, CaseInput, KnowledgeBase

__all__ = ["Derivation", "WhyNot", "how", "why_not"]

_WORDS = {
    "above": "above",
    "at_least": "at least",
    "below": "below",
    "at_most": "at most",
}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Derivation(_Out):
    """One node of a derivation tree."""

    id: str
    kind: Literal["diagnosis", "recommendation", "finding", "score", "point_score"]
    label: str
    value: float | None = None
    rules: list[RuleRef] = Field(default_factory=list)
    facts: list[FactUsed] = Field(default_factory=list)
    contributions: list[tuple[str, float]] = Field(default_factory=list)
    components: list[Component] = Field(
        default_factory=list,
        description="A point score's items, each with its points and facts.",
    )
    because: list[Derivation] = Field(default_factory=list)


class Obstacle(_Out):
    """Why one condition of a rule did not hold."""

    condition: str
    state: Literal["false", "cannot be determined"]
    actual: str
    change: str = Field("", description="The one-fact change that would satisfy it.")


class RuleAttempt(_Out):
    """One rule that could have reached the conclusion, and what stopped it."""

    rule: RuleRef
    state: Literal["false", "cannot be determined", "fired"]
    obstacles: list[Obstacle]
    smallest_change: str = Field(
        "", description="Set when a single condition stands in the way."
    )


class WhyNot(_Out):
    """Why a named conclusion was not reached."""

    id: str
    reached: bool
    attempts: list[RuleAttempt]
    message: str
    notice: str = NOTICE


def how(assessment: Assessment, target: str | None = None) -> list[Derivation]:
    """Derivation trees of a conclusion (or of every conclusion).

    Raises:
        KeyError: If ``target`` is not a conclusion of the assessment.
    """
    nodes: dict[str, tuple[str, object]] = {}
    for d in assessment.diagnoses:
        nodes[d.id] = ("diagnosis", d)
    for r in assessment.recommendations:
        if r.status == "recommended":
            nodes[r.id] = ("recommendation", r)
    for f in assessment.findings:
        nodes.setdefault(f.id, ("point_score" if f.range else "finding", f))
    scores = {s.name: s for s in assessment.scores}

    def build(node_id: str, trail: tuple[str, ...]) -> Derivation:
        kind, obj = nodes[node_id]
        ev = obj.evidence  # type: ignore[attr-defined]
        label = getattr(obj, "display", None) or getattr(obj, "text", None) or node_id
        # The findings it rests on, and the point scores its conditions read.
        read = [
            *ev.findings,
            *(u.name.removeprefix(SCORE_FACT_PREFIX) for u in ev.facts),
        ]
        children = [
            build(f, (*trail, node_id))
            for f in dict.fromkeys(read)
            if f in nodes and f not in trail
        ]
        children += [
            _score_node(scores[s], assessment.as_of) for s in ev.scores if s in scores
        ]
        value = (
            getattr(obj, "certainty", None)
            if kind != "point_score"
            else getattr(obj, "value", None)
        )
        return Derivation(
            id=node_id,
            kind=kind,
            label=str(label),
            value=value,
            rules=ev.rules,
            facts=ev.facts,
            components=getattr(obj, "components", []),
            because=children,
        )

    if target is not None:
        if target in scores and target not in nodes:  # a model's score itself
            return [_score_node(scores[target], assessment.as_of)]
        if target not in nodes:
            raise KeyError(target)
        return [build(target, ())]
    tops = [
        *(d.id for d in assessment.diagnoses),
        *(r.id for r in assessment.recommendations if r.status == "recommended"),
    ]
    return [build(t, ()) for t in tops]


def _score_node(score: Score, as_of: datetime) -> Derivation:
    facts = []
    for k, v in score.inputs.items():
        when = score.input_times.get(k)
        old = (as_of - when).days if when is not None else None
        facts.append(FactUsed(name=k, value=v, unit=None, time=when, age_days=old))
    return Derivation(
        id=score.name,
        kind="score",
        label=f"{score.model_id} {score.model_version}",
        value=score.value,
        facts=facts,
        contributions=score.contributions,
    )


def _describe(cond: rf.Condition) -> str:
    if isinstance(cond, rf.FactComparison):
        parts = []
        for op in _WORDS:
            cuts = thresholds_of(getattr(cond, op))
            if cuts:
                shown = ", ".join(f"{t.value:g} {t.unit}".strip() for t in cuts)
                parts.append(f"{_WORDS[op]} {shown}")
        if cond.equals is not None:
            parts.append(f"= {cond.equals}")
        if cond.one_of is not None:
            parts.append(f"one of {', '.join(cond.one_of)}")
        agg = f"{cond.value} " if cond.value != "latest" else ""
        text = f"{agg}{cond.fact} {' and '.join(parts) or 'recorded'}".strip()
        if cond.readings > 1:
            text += f", on {cond.readings} results on separate days"
        if cond.min_readings > 1:
            text += f", of at least {cond.min_readings} readings on separate days"
        if cond.lasting_more_than:
            text += f", lasting more than {cond.lasting_more_than}"
        if cond.within:
            text += f", within {cond.within}"
        return text
    if isinstance(cond, rf.FindingTest):
        return f"finding {cond.finding}"
    if isinstance(cond, rf.ScoreTest):
        return f"score {cond.score}"
    if isinstance(cond, rf.PointsTest):
        parts = [
            f"{_WORDS[op]} {getattr(cond, op):g}"
            for op in _WORDS
            if getattr(cond, op) is not None
        ]
        if cond.any_item_at_least is not None:
            parts.append(f"with an item scoring at least {cond.any_item_at_least:g}")
        if cond.determined is not None:
            parts.append("determined" if cond.determined else "not determined")
        return f"point score {cond.points} {' and '.join(parts)}".strip()
    if isinstance(cond, rf.ConditionTest):
        return f"condition {cond.condition} on the problem list"
    if isinstance(cond, rf.MedicationTest):
        return f"taking {cond.taking}"
    if isinstance(cond, rf.AllergyTest):
        return f"allergy to {cond.allergic_to}"
    if isinstance(cond, rf.Not):
        return f"not ({_describe(cond.not_)})"
    if isinstance(cond, rf.AllOf):
        return "all of: " + "; ".join(_describe(c) for c in cond.all)
    if isinstance(cond, rf.AnyOf):
        return "any of: " + "; ".join(_describe(c) for c in cond.any)
    if isinstance(cond, rf.AtLeastOf):
        return f"at least {cond.at_least} of: " + "; ".join(
            _describe(c) for c in cond.of
        )
    return type(cond).__name__


def _actual(res: LeafResult) -> str:
    shown = []
    for f in res.facts:
        if isinstance(f.value, float):
            value = f"{f.value:g}"
        else:
            value = str(f.value)
        if f.name.startswith(SCORE_FACT_PREFIX):
            score = f.name.removeprefix(SCORE_FACT_PREFIX)
            shown.append(f"the {score} total is {value} ({f.readings} items)")
            continue
        unit = f" {f.unit}" if f.unit else ""
        when = f" ({f.time.date()})" if f.time else ""
        agg = (
            f" ({f.aggregate} of {f.readings})"
            if f.aggregate not in ("latest",)
            else ""
        )
        shown.append(f"{f.name} is {value}{unit}{agg}{when}")
    if res.missing:
        shown.append("missing: " + ", ".join(res.missing))
    return "; ".join(shown) or "; ".join(res.detail) or "not met"


class _Examiner:
    """Walks a rule's condition, collecting the parts that do not hold."""

    def __init__(
        self,
        view: CaseView,
        scores: dict[str, Score],
        points: dict[str, PointResult],
        found: set[str],
        undetermined_findings: set[str],
    ) -> None:
        self.view, self.scores, self.points = view, scores, points
        self.found, self.unknown = found, undetermined_findings

    def truth(self, cond: rf.Condition) -> bool | None:
        if isinstance(cond, rf.FindingTest):
            if cond.finding in self.found:
                return True
            return None if cond.finding in self.unknown else False
        if isinstance(cond, rf.Not):
            v = self.truth(cond.not_)
            return None if v is None else not v
        if isinstance(cond, rf.AllOf | rf.AnyOf | rf.AtLeastOf):
            kids = (
                cond.all
                if isinstance(cond, rf.AllOf)
                else (cond.any if isinstance(cond, rf.AnyOf) else cond.of)
            )
            need = (
                len(kids)
                if isinstance(cond, rf.AllOf)
                else (1 if isinstance(cond, rf.AnyOf) else cond.at_least)
            )
            values = [self.truth(k) for k in kids]
            if values.count(True) >= need:
                return True
            if values.count(True) + values.count(None) < need:
                return False
            return None
        return evaluate_leaf(self.view, cond, self.scores, self.points).value

    def obstacles(self, cond: rf.Condition) -> list[Obstacle]:
        value = self.truth(cond)
        if value is True:
            return []
        if isinstance(cond, rf.AllOf):
            return [o for c in cond.all for o in self.obstacles(c)]
        if isinstance(cond, rf.AnyOf | rf.AtLeastOf) and not isinstance(cond, rf.Not):
            kids = cond.any if isinstance(cond, rf.AnyOf) else cond.of
            out = [o for c in kids for o in self.obstacles(c)]
            return out
        state: Literal["false", "cannot be determined"] = (
            "false" if value is False else "cannot be determined"
        )
        if isinstance(cond, rf.FindingTest):
            return [
                Obstacle(
                    condition=_describe(cond),
                    state=state,
                    actual=f"finding {cond.finding} was not reached",
                    change=f"reach finding {cond.finding} (ask why not {cond.finding})",
                )
            ]
        if isinstance(cond, rf.Not) and isinstance(cond.not_, rf.FindingTest):
            return [
                Obstacle(
                    condition=_describe(cond),
                    state=state,
                    actual=f"finding {cond.not_.finding} holds"
                    if state == "false"
                    else f"finding {cond.not_.finding} cannot be determined",
                )
            ]
        res = evaluate_leaf(self.view, cond, self.scores, self.points)
        change, actual = _change(cond, res), _actual(res)
        if isinstance(cond, rf.PointsTest):
            score = self.points[cond.points]
            if score.total is None:  # a range: some items cannot be determined
                actual = (
                    f"the {cond.points} total is {score.low:g} to {score.high:g} "
                    f"(missing {', '.join(score.missing)})"
                )
            # The items are what is so; a change is offered only where one
            # would do: a total that falls short, or a missing input.
            actual = f"{actual}; {self.items_of(cond.points)}"
            change = _score_change(cond, res.value, score.total)
            if res.value is None and score.missing:
                change = f"record {', '.join(score.missing)}"
        return [
            Obstacle(
                condition=_describe(cond),
                state=state,
                actual=actual,
                change=change,
            )
        ]

    def items_of(self, score: str) -> str:
        """Which items of a point score counted, which did not, which are unknown."""
        items = self.points[score].items
        scored = [f"{i.id} {i.points:g}" for i in items if i.points]
        unknown = [i.id for i in items if i.points is None]
        nil = [i.id for i in items if i.points == 0]
        parts = [f"scored: {', '.join(scored) or 'none'}"]
        if nil:
            parts.append(f"0 points: {', '.join(nil)}")
        if unknown:
            parts.append(f"cannot be determined: {', '.join(unknown)}")
        return "; ".join(parts)


def _score_change(cond: rf.PointsTest, value: bool | None, total: float | None) -> str:
    """``would hold at a total of at least 3 (now 2)``, for a known total
    that does not meet the cut point."""
    if value is not False or total is None:
        return ""
    for op, words in (
        ("at_least", "at least"),
        ("above", "above"),
        ("at_most", "at most"),
        ("below", "below"),
    ):
        cut = getattr(cond, op)
        if cut is not None:
            return f"would hold at a total of {words} {cut:g} (now {total:g})"
    return ""


def _change(cond: rf.Condition, res: LeafResult) -> str:
    if res.value is None:
        if not res.missing:
            return ""
        why = f" ({'; '.join(res.detail)})" if res.detail else ""
        return "record " + ", ".join(res.missing) + why
    if isinstance(cond, rf.FactComparison) and cond.readings > 1 and res.detail:
        return (
            f"would hold with {cond.readings} {cond.fact} results on separate days "
            f"meeting the cut point ({res.detail[0]})"
        )
    if isinstance(cond, rf.FactComparison):
        words = [
            f"{_WORDS[op]} {t.value:g} {t.unit}".strip()
            for op in _WORDS
            if getattr(cond, op) is not None
            for t in thresholds_of(getattr(cond, op))[:1]
        ]
        if words:
            return f"would hold if {cond.fact} were {' and '.join(words)}"
    if isinstance(cond, rf.ConditionTest):
        return f"would hold if {cond.condition} were on the problem list"
    if isinstance(cond, rf.MedicationTest):
        return f"would hold if the patient took {cond.taking}"
    if isinstance(cond, rf.Not) and isinstance(cond.not_, rf.MedicationTest):
        return f"would hold if the patient did not take {cond.not_.taking}"
    return ""


def why_not(
    kb: KnowledgeBase,
    case: CaseInput,
    target: str,
    as_of: AsOf = None,
    assessment: Assessment | None = None,
) -> WhyNot:
    """Why a named conclusion (finding, diagnosis, recommendation) was not reached.

    ``case`` and ``as_of`` are as :meth:`KnowledgeBase.evaluate` takes them.

    Raises:
        KeyError: If no rule of the knowledge base can reach ``target``.
        InputError: If the input cannot be read.
    """
    from .evaluation import _scores, _view

    producers = [r for r in kb.rules if target in r.produces]
    if not producers:
        raise KeyError(target)
    case = kb._case(case, True)
    as_of = kb._when(case, as_of, datetime.now(UTC))
    result = assessment or kb.evaluate(case, as_of=as_of)
    found = (
        {f.id for f in result.findings}
        | {d.id for d in result.diagnoses}
        | {r.id for r in result.recommendations if r.status == "recommended"}
    )
    undetermined_rules = {u.rule_id for u in result.undetermined}
    unknown = {
        p for r in kb.rules if r.rule.id in undetermined_rules for p in r.produces
    }
    # As the evaluation's last pass: calculations and point-score items read
    # the findings that hold (engine.evaluation); any other reads as absent.
    view = _view(kb, case, as_of, dict.fromkeys(found, True))
    scores = _scores(kb, view)
    points = evaluate_points(view, kb.point_scores, scores)
    examiner = _Examiner(view, scores, points, found, unknown - found)
    from .conclusions import rule_ref as _ref

    attempts = []
    for crule in producers:
        state: Literal["false", "cannot be determined", "fired"]
        if crule.rule.id in result.rules_fired:
            state = "fired"
        elif crule.rule.id in undetermined_rules:
            state = "cannot be determined"
        else:
            state = "false"
        found_obstacles = (
            [] if state == "fired" else examiner.obstacles(crule.rule.when)
        )
        # One line per condition: alternatives repeat a shared part (the score).
        obstacles = list(
            {(o.condition, o.state, o.actual): o for o in found_obstacles}.values()
        )
        smallest = obstacles[0].change if len(obstacles) == 1 else ""
        attempts.append(
            RuleAttempt(
                rule=_ref(crule),
                state=state,
                obstacles=obstacles,
                smallest_change=smallest,
            )
        )
    reached = target in found
    blocked = [
        r for r in result.recommendations if r.id == target and r.status == "blocked"
    ]
    if reached:
        message = f"{target} was reached."
    elif blocked:
        reasons = "; ".join(b.reason for b in blocked[0].blocked_by)
        message = f"{target} is blocked: {reasons}"
    else:
        best = [a.smallest_change for a in attempts if a.smallest_change]
        message = f"{target} was not reached" + (
            f"; the smallest change: {best[0]}" if best else ""
        )
    return WhyNot(id=target, reached=reached, attempts=attempts, message=message)
