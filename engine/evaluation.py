"""Evaluating one case: facts to leaves, leaves through the matcher, results out.

Steps: (1) the case seen at ``as_of`` with calculated facts; (2) model scores;
(3) every leaf decided in three values; (4) decided leaves asserted into a
fresh durable-rules session, which chains the findings; (5) a three-valued pass
over the rules in dependency order names what could not be determined, and
cross-checks the matcher (a disagreement makes the assessment partial);
(6) conclusions with their evidence and certainty. :func:`evaluate_cases` does
step (2) once per model for a whole chunk of cases, then the rest case by case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from . import ruleformat as rf
from .assessment import (
    Assessment,
    Block,
    Component,
    Diagnosis,
    Evidence,
    FactUsed,
    Finding,
    PatientSummary,
    Recommendation,
    RuleRef,
    Score,
    Undetermined,
)
from .caseview import CaseView
from .certainty import combine_for_and_against, disagrees, update_with_score
from .compiler import And, AtLeast, CompiledRule, Expr, Find, Leaf, Not, Or
from .errors import EvaluationError, UnitError
from .facts import Case
from .leaves import LeafResult, evaluate_leaf
from .points import PointResult, evaluate_points
from .units import convert

if TYPE_CHECKING:
    from .knowledge import KnowledgeBase
    from .scoring import ModelScore, ScoringModel

__all__ = ["evaluate_case", "evaluate_cases"]

log = logging.getLogger(__name__)


def _truth(
    expr: Expr, leaves: dict[int, LeafResult], found: dict[str, bool | None]
) -> bool | None:
    if isinstance(expr, Leaf):
        return leaves[expr.index].value
    if isinstance(expr, Find):
        return found.get(expr.id, False)
    if isinstance(expr, Not):
        v = _truth(expr.child, leaves, found)
        return None if v is None else not v
    values = [_truth(c, leaves, found) for c in expr.children]
    k = len(values) if isinstance(expr, And) else 1 if isinstance(expr, Or) else expr.k
    true = values.count(True)
    unknown = values.count(None)
    if true >= k:
        return True
    if true + unknown < k:
        return False
    return None


def _missing(
    expr: Expr,
    leaves: dict[int, LeafResult],
    found: dict[str, bool | None],
    finding_missing: dict[str, list[str]],
) -> list[str]:
    if isinstance(expr, Leaf):
        res = leaves[expr.index]
        return res.missing if res.value is None else []
    if isinstance(expr, Find):
        return finding_missing.get(expr.id, []) if found.get(expr.id) is None else []
    if isinstance(expr, Not):
        return _missing(expr.child, leaves, found, finding_missing)
    assert isinstance(expr, And | Or | AtLeast)
    out: list[str] = []
    for c in expr.children:
        out += _missing(c, leaves, found, finding_missing)
    return out


def _row(
    kb: KnowledgeBase, view: CaseView, name: str, model: ScoringModel
) -> dict[str, float | None]:
    """One model's input row for one case: each fact's latest value, in its unit."""
    row: dict[str, float | None] = {}
    for feature in model.card.features:
        for fact_name in feature.facts():
            readings = view.select(fact_name, None)
            r = readings[-1] if readings else None
            if r is None or not isinstance(r.value, float):
                row[fact_name] = None
                continue
            try:
                row[fact_name] = convert(
                    r.value,
                    r.unit or feature.unit,
                    feature.unit,
                    kb.catalogue.quantities[fact_name],
                )
            except UnitError as err:
                view.notes.append(f"score {name}: {err}")
                row[fact_name] = None
    return row


def _score(name: str, s: ModelScore) -> Score:
    return Score(
        name=name,
        model_id=s.model_id,
        model_version=s.model_version,
        value=s.value,
        missing=[*s.missing, *s.invalid],
        out_of_range=s.out_of_range,
        inputs=s.inputs,
        contributions=s.contributions,
    )


def _scores(kb: KnowledgeBase, view: CaseView) -> dict[str, Score]:
    return {
        name: _score(name, model.score_many([_row(kb, view, name, model)])[0])
        for name, model in kb.models.items()
    }


def _ref(crule: CompiledRule) -> RuleRef:
    return RuleRef(
        rule_id=crule.rule.id,
        ruleset=crule.ruleset.id,
        ruleset_version=crule.ruleset.version,
        title=crule.rule.title,
        source=crule.source,
        file=crule.file,
        line=crule.line,
    )


def _dedupe(facts: list[FactUsed]) -> list[FactUsed]:
    seen = set()
    out = []
    for f in facts:
        key = (f.name, f.aggregate, str(f.value), f.time)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


_equal_leaves: WeakKeyDictionary[KnowledgeBase, list[int]] = WeakKeyDictionary()


def _first_equal(kb: KnowledgeBase) -> list[int]:
    """For each leaf, the first leaf with an equal condition (often itself).

    Rules repeat conditions (the same blood-pressure mean in every band), and a
    leaf's result depends only on its condition and the case: each distinct
    one is evaluated once per case.
    """
    found = _equal_leaves.get(kb)
    if found is None:
        first: dict[tuple[str, str], int] = {}
        found = [
            first.setdefault((type(c).__name__, c.model_dump_json()), i)
            for i, c in enumerate(kb.leaves)
        ]
        _equal_leaves[kb] = found
    return found


def _view(kb: KnowledgeBase, case: Case, as_of: datetime) -> CaseView:
    view = CaseView(case, as_of, kb.catalogue)
    view.run_calculations(kb.calculations)
    return view


def evaluate_case(kb: KnowledgeBase, case: Case, as_of: datetime) -> Assessment:
    """Evaluate one case against a loaded knowledge base."""
    view = _view(kb, case, as_of)
    return _run(kb, case, view, as_of, _scores(kb, view))


def evaluate_cases(
    kb: KnowledgeBase, cases: Sequence[Case], as_of: datetime | Sequence[datetime]
) -> list[Assessment]:
    """Evaluate a chunk of cases; each model scores the whole chunk in one call.

    A model's ``predict_proba`` has a fixed cost far above its cost per row,
    so a chunk of cases shares it. The assessments are those of
    :func:`evaluate_case`, except that a score may differ from the one-case
    score in the last bit of its floating-point value (a matrix product over
    many rows rounds differently from one over a single row).

    Args:
        kb: The knowledge base.
        cases: The cases.
        as_of: One evaluation time for all cases, or one per case.

    Returns:
        One assessment per case, in order.

    Raises:
        EvaluationError: If ``as_of`` gives a number of times other than the
            number of cases.
    """
    times = [as_of] * len(cases) if isinstance(as_of, datetime) else list(as_of)
    if len(times) != len(cases):
        raise EvaluationError(
            f"as_of: expected one time per case ({len(cases)}), got {len(times)}"
        )
    views = [_view(kb, case, when) for case, when in zip(cases, times, strict=True)]
    scores: list[dict[str, Score]] = [{} for _ in cases]
    for name, model in kb.models.items():
        rows = [_row(kb, view, name, model) for view in views]
        for out, s in zip(scores, model.score_many(rows), strict=True):
            out[name] = _score(name, s)
    return [
        _run(kb, case, view, when, found)
        for case, view, when, found in zip(cases, views, times, scores, strict=True)
    ]


def _run(
    kb: KnowledgeBase,
    case: Case,
    view: CaseView,
    as_of: datetime,
    scores: dict[str, Score],
) -> Assessment:
    """Steps (3) to (6) for one case whose view and scores are ready."""
    if case.deceased is not None and view.as_of >= _aware(case.deceased):
        return _after_death(kb, case, view)
    problems: list[str] = []
    try:
        points = evaluate_points(view, kb.point_scores, scores)
    except UnitError as err:
        problems.append(f"point scores could not be evaluated: {err}")
        points = evaluate_points(view, [], scores)
        kb_points = {p.id for p in kb.point_scores}
        points.update(_unknown_points(kb, kb_points, str(err)))
    leaves: dict[int, LeafResult] = {}
    failed: dict[int, str] = {}
    for i, first in enumerate(_first_equal(kb)):
        if first != i:  # the same condition as an earlier leaf: the same result
            leaves[i] = leaves[first]
            if first in failed:
                problems.append(failed[first])
            continue
        try:
            leaves[i] = evaluate_leaf(view, kb.leaves[i], scores, points)
        except UnitError as err:
            failed[i] = f"a condition could not be evaluated: {err}"
            problems.append(failed[i])
            leaves[i] = LeafResult(None, detail=[str(err)])
    facts = [
        {"t": "leaf", "k": i, "v": res.value}
        for i, res in leaves.items()
        if res.value is not None and (i, res.value) in kb.used_leaves
    ]

    # Three-valued pass, in dependency order: what holds, what cannot be known.
    found: dict[str, bool | None] = {}
    finding_missing: dict[str, list[str]] = {}
    status: dict[int, bool | None] = {}
    for ri in kb.order:
        crule = kb.rules[ri]
        value = _truth(crule.expr, leaves, found)
        status[ri] = value
        for f in crule.produces:
            if value is True:
                found[f] = True
            elif value is None and found.get(f) is not True:
                found[f] = None
                miss = _missing(crule.expr, leaves, found, finding_missing)
                finding_missing[f] = sorted({*finding_missing.get(f, []), *miss})
            else:
                found.setdefault(f, False)

    # The matcher chains the findings. Before each stratum's gates, findings
    # settled below it that cannot be determined are asserted as unknown, so
    # that "not F" does not fire on an F that might hold.
    with kb.matcher.session() as session:
        kb.matcher.assert_facts(session, facts)
        for k, gates in enumerate(kb.gates):
            unknown = [
                {"t": "finding", "f": f, "u": True}
                for f, settled_below in kb.settled_below(k)
                if settled_below and found.get(f, False) is None
            ]
            kb.matcher.assert_facts(session, unknown)
            kb.matcher.assert_facts(session, [{"t": "gate", "g": g} for g in gates])
    problems += session.errors
    if session.capped:
        problems.append("the firing cap was reached; the chaining was stopped")
    fired: dict[int, int] = {}
    for ri, ci in session.fired:
        fired.setdefault(ri, ci)
    for ri in kb.order:
        if (status[ri] is True) != (ri in fired):
            problems.append(
                f"rule {kb.rules[ri].rule.id}: the matcher and the three-valued "
                "check disagree; its result is not reported"
            )
    reached = [ri for ri in kb.order if status[ri] is True and ri in fired]
    return _assemble(
        kb,
        case,
        view,
        as_of,
        leaves,
        scores,
        points,
        reached,
        status,
        found,
        finding_missing,
        problems,
    )


def _assemble(
    kb: KnowledgeBase,
    case: Case,
    view: CaseView,
    as_of: datetime,
    leaves: dict[int, LeafResult],
    scores: dict[str, Score],
    points: dict[str, PointResult],
    reached: list[int],
    status: dict[int, bool | None],
    found: dict[str, bool | None],
    finding_missing: dict[str, list[str]],
    problems: list[str],
) -> Assessment:
    findings: dict[str, Finding] = {}
    diag_support: dict[str, list[tuple[rf.DiagnosisSpec, CompiledRule, Evidence]]] = {}
    rec_support: dict[
        str, list[tuple[rf.RecommendationSpec, CompiledRule, Evidence]]
    ] = {}
    blocks: dict[str, list[Block]] = {}
    against: dict[str, list[tuple[float, str, str]]] = {}
    disagreements: list[str] = []
    for ri in reached:
        crule = kb.rules[ri]
        # The evidence is the alternative of the rule that held, not every
        # branch it has: "diabetes: False" must not back a diabetes conclusion.
        held = _held_conjunct(crule, leaves, found)
        used = [
            f
            for kind, key, _want in sorted(held, key=str)
            if kind == "L"
            for f in leaves[int(key)].facts
        ]
        ev = Evidence(
            rules=[_ref(crule)],
            facts=_dedupe(used),
            findings=sorted(
                str(key) for kind, key, want in held if kind == "F" and want
            ),
            scores=sorted({f.name[6:] for f in used if f.name.startswith("score:")}),
        )
        for action in crule.rule.then:
            if isinstance(action, rf.FindingAction) and action.finding not in findings:
                findings[action.finding] = Finding(
                    id=action.finding, display=action.display, evidence=ev
                )
            elif isinstance(action, rf.DiagnosisAction):
                diag_support.setdefault(action.diagnosis.id, []).append(
                    (action.diagnosis, crule, ev)
                )
            elif isinstance(action, rf.RecommendationAction):
                rec_support.setdefault(action.recommendation.id, []).append(
                    (action.recommendation, crule, ev)
                )
            elif isinstance(action, rf.BlockAction):
                blocks.setdefault(action.block.recommendation, []).append(
                    Block(rule_id=crule.rule.id, reason=action.block.reason)
                )
            elif isinstance(action, rf.AgainstAction):
                against.setdefault(action.against.conclusion, []).append(
                    (action.against.certainty, crule.rule.id, action.against.reason)
                )

    diagnoses = []
    for did, support in diag_support.items():
        spec = support[0][0]
        contra = [c for c, _, _ in against.get(did, [])]
        diagnoses.append(
            Diagnosis(
                id=did,
                display=spec.display,
                code=spec.snomed,
                certainty=round(
                    combine_for_and_against(
                        (s.certainty for s, _, _ in support), contra
                    ),
                    4,
                ),
                evidence=_merge([e for _, _, e in support]),
            )
        )
    recommendations = []
    for rid, rsupport in rec_support.items():
        rspec = rsupport[0][0]
        contra_rules = against.get(rid, [])
        certainty = combine_for_and_against(
            (s.certainty for s, _, _ in rsupport), [c for c, _, _ in contra_rules]
        )
        method = "rules combined: 1 - prod(1 - c)"
        if contra_rules:
            method += "; lowered by evidence against: " + "; ".join(
                f"{rule} ({reason})" for _, rule, reason in contra_rules
            )
        disagreement = False
        if rspec.adjusted_by:
            score = scores.get(rspec.adjusted_by)
            model = kb.models.get(rspec.adjusted_by)
            if score is not None and score.value is not None and model is not None:
                prior = model.card.held_out.prevalence_train
                disagreement = disagrees(certainty, score.value, prior)
                certainty = update_with_score(certainty, score.value, prior)
                method += (
                    f"; updated by score {rspec.adjusted_by}={score.value:.3f} "
                    f"against prior {prior:.3f} on the log-odds scale"
                )
            else:
                method += f"; score {rspec.adjusted_by} not available, not updated"
        if disagreement:
            method += "; the rule and the model disagree strongly"
            disagreements.append(
                f"{rid}: the rules support it but model {rspec.adjusted_by} argues "
                "strongly against it; review both"
            )
        blocked = blocks.pop(rid, [])
        if rspec.drug is not None and view.allergic_to(rspec.drug):
            blocked.append(
                Block(rule_id="allergy", reason=f"recorded allergy to {rspec.drug}")
            )
        recommendations.append(
            Recommendation(
                id=rid,
                text=rspec.text,
                strength=rspec.strength,
                certainty=round(certainty, 4),
                status="blocked" if blocked else "recommended",
                blocked_by=blocked,
                evidence=_merge([e for _, _, e in rsupport]),
                certainty_method=method,
                disagreement=disagreement,
            )
        )
    for rid, blocked in blocks.items():
        text = _recommendation_text(kb, rid)
        recommendations.append(
            Recommendation(
                id=rid,
                text=text[0],
                strength=text[1],
                certainty=0.0,
                status="blocked",
                blocked_by=blocked,
                evidence=Evidence(rules=[]),
                certainty_method="not made: blocked",
            )
        )

    undetermined = []
    for ri in kb.order:
        if status[ri] is None:
            crule = kb.rules[ri]
            miss = sorted(set(_missing(crule.expr, leaves, found, finding_missing)))
            details = [
                d
                for i in crule.leaf_indices
                if leaves[i].value is None
                for d in leaves[i].detail
            ]
            undetermined.append(
                Undetermined(
                    rule_id=crule.rule.id,
                    ruleset=crule.ruleset.id,
                    title=crule.rule.title,
                    missing=miss,
                    reason="; ".join(dict.fromkeys(details))
                    or "depends on findings that cannot be determined",
                )
            )

    state = "complete" if not problems else "partial"
    if not view.readings and not case.conditions and not case.medications:
        state = "not_evaluable"
        problems = [*problems, "the case holds no readings, conditions or medications"]
    notes = [*case.notes, *view.notes, *disagreements]
    for s in scores.values():
        if s.out_of_range:
            notes.append(
                f"score {s.name}: outside the training range: "
                f"{', '.join(s.out_of_range)}"
            )
    age = view.age()
    return Assessment(
        case_id=case.case_id,
        source=case.source,
        as_of=view.as_of,
        status=state,
        problems=problems,
        patient=PatientSummary(
            age=age,
            sex=case.sex,
            readings=sum(len(v) for v in view.readings.values()),
            conditions=sorted(
                {
                    c.concept
                    for c in case.conditions
                    if c.concept and view.has_condition(c.concept)
                }
            ),
            medications=sorted(
                {
                    m.concept
                    for m in case.medications
                    if m.concept and view.taking(m.concept)
                }
            ),
        ),
        diagnoses=sorted(diagnoses, key=lambda d: -d.certainty),
        findings=[*_point_findings(points), *findings.values()],
        recommendations=recommendations,
        scores=list(scores.values()),
        undetermined=undetermined,
        rules_fired=[kb.rules[ri].rule.id for ri in reached],
        notes=notes,
        knowledge_base=kb.info,
    )


def _held_conjunct(
    crule: CompiledRule,
    leaves: dict[int, LeafResult],
    found: dict[str, bool | None],
) -> frozenset[tuple[str, str | int, bool]]:
    """The first alternative (DNF conjunct) of a reached rule whose parts all hold."""
    for conj in crule.conjuncts:
        ok = True
        for kind, key, want in conj:
            if kind == "L":
                ok = leaves[int(key)].value is want
            else:
                ok = (found.get(str(key)) is True) == want
            if not ok:
                break
        if ok:
            return conj
    return frozenset()


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _after_death(kb: KnowledgeBase, case: Case, view: CaseView) -> Assessment:
    """A patient who died before the evaluation time gets no conclusions."""
    assert case.deceased is not None
    when = _aware(case.deceased)
    return Assessment(
        case_id=case.case_id,
        source=case.source,
        as_of=view.as_of,
        status="not_evaluable",
        problems=[
            f"the record says the patient died on {when.date()}; nothing is "
            "evaluated after death (evaluate as of an earlier time, e.g. "
            "`--as-of last`)"
        ],
        patient=PatientSummary(age=view.age_at(when), sex=case.sex, readings=0),
        notes=list(case.notes),
        knowledge_base=kb.info,
    )


def _unknown_points(
    kb: KnowledgeBase, ids: set[str], reason: str
) -> dict[str, PointResult]:
    """Point scores that failed to evaluate: every item unknown, none reported."""
    from .points import ItemResult

    out = {}
    for ps in kb.point_scores:
        if ps.id in ids:
            items = [
                ItemResult(i.id, i.title or i.id, None, -1e9, 1e9, detail=reason)
                for i in ps.items
            ]
            out[ps.id] = PointResult(ps, items, reported=False)
    return out


def _point_findings(points: dict[str, PointResult]) -> list[Finding]:
    """Each point score as a finding, with the items behind its total."""
    out = []
    for pid, result in points.items():
        if not result.reported:
            continue
        score = result.score
        out.append(
            Finding(
                id=pid,
                display=score.title,
                value=result.total,
                range=(result.low, result.high),
                missing=result.missing,
                components=[
                    Component(
                        id=i.id,
                        title=i.title,
                        points=i.points,
                        facts=i.facts,
                        missing=i.missing,
                    )
                    for i in result.items
                ],
                evidence=Evidence(
                    rules=[],
                    facts=_dedupe([f for i in result.items for f in i.facts]),
                ),
            )
        )
    return out


def _merge(evidence: list[Evidence]) -> Evidence:
    rules = {r.rule_id: r for e in evidence for r in e.rules}
    return Evidence(
        rules=list(rules.values()),
        facts=_dedupe([f for e in evidence for f in e.facts]),
        findings=sorted({f for e in evidence for f in e.findings}),
        scores=sorted({s for e in evidence for s in e.scores}),
    )


def _recommendation_text(kb: KnowledgeBase, rid: str) -> tuple[str, str]:
    for crule in kb.rules:
        for action in crule.rule.then:
            if (
                isinstance(action, rf.RecommendationAction)
                and action.recommendation.id == rid
            ):
                return action.recommendation.text, action.recommendation.strength
    return rid, "n/a"
