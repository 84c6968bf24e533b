"""Conclusions of one evaluated case: findings, diagnoses, recommendations.

The rules that held become diagnoses, recommendations and findings, each with
its evidence (the alternative of the rule that held, the facts it used, the
findings it chained on, the scores it read) and its certainty (rules combined,
evidence against, a model score on the log-odds scale). Rules that could not
be decided are listed with the facts they lacked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from .certainty import (
    combine_for_and_against,
    disagrees,
    independent,
    update_with_score,
)
from .compiler import CompiledRule, Literal
from .errors import UnitError
from .facts import Case, aware
from .points import SCORE_FACT_PREFIX
from .truth import LeafSource
from .units import convert

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .knowledge import KnowledgeBase
    from .points import Points

__all__ = ["after_death", "assemble", "rule_ref"]


def rule_ref(crule: CompiledRule) -> RuleRef:
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


def assemble(
    kb: KnowledgeBase,
    case: Case,
    view: CaseView,
    leaves: LeafSource,
    scores: dict[str, Score],
    points: Points,
    reached: list[int],
    status: dict[int, bool | None],
    found: dict[str, bool | None],
    lacking: dict[int, list[str]],
    problems: Callable[[], list[str]],
) -> Assessment:
    """The assessment of one case whose rules have been decided and chained.

    Args:
        kb: The knowledge base.
        case: The case.
        view: The case at its evaluation time.
        leaves: Leaf results (read on demand: a rule that cannot be
            determined reads all of its leaves to name what it lacked).
        scores: Model scores.
        points: Point scores (read on demand, like leaves).
        reached: Rules that held and fired, in dependency order.
        status: Each rule's three-valued value.
        found: Each finding's three-valued value.
        lacking: For each rule that cannot be determined, the facts it lacks.
        problems: Called last, once every leaf read here has been evaluated:
            what went wrong while evaluating.
    """
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
            rules=[rule_ref(crule)],
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
                        independent(
                            [
                                (s.certainty, _entries(e, findings))
                                for s, _, e in support
                            ]
                        ),
                        contra,
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
            independent([(s.certainty, _entries(e, findings)) for s, _, e in rsupport]),
            [c for c, _, _ in contra_rules],
        )
        method = "rules combined: 1 - prod(1 - c), rules sharing evidence counted once"
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
            recorded = view.allergy_named(rspec.drug)
            if recorded != rspec.drug:
                recorded = f"{recorded} ({rspec.drug})"
            blocked.append(
                Block(rule_id="allergy", reason=f"recorded allergy to {recorded}")
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
            miss = sorted(set(lacking[ri]))
            details = [
                d
                for i in crule.leaf_indices
                if leaves.value(i) is None
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

    problem_list = [*case.problems, *problems()]
    point_findings = _point_findings(kb, points)
    problem_list += _resting_on_doubts(
        view, [*diagnoses, *point_findings, *findings.values(), *recommendations]
    )
    state = "complete" if not problem_list else "partial"
    if not view.readings and not case.conditions and not case.medications:
        state = "not_evaluable"
        problem_list.append("the case holds no readings, conditions or medications")
    notes = [*case.notes, *view.notes, *disagreements]
    if case.sex == "male" and view.has_condition("pregnancy"):
        # Believed, not dropped: a pregnancy is possible whatever the recorded
        # sex, and believing it is the safe side (ACE inhibitors, statins).
        notes.append(
            "a pregnancy is recorded for a patient whose recorded sex is male; "
            "it is taken as recorded: check the record"
        )
    for s in scores.values():
        if s.out_of_range and s.value is not None:
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
        problems=problem_list,
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
        findings=[*point_findings, *findings.values()],
        recommendations=recommendations,
        scores=list(scores.values()),
        undetermined=undetermined,
        rules_fired=[kb.rules[ri].rule.id for ri in reached],
        notes=notes,
        knowledge_base=kb.info,
    )


def _held_conjunct(
    crule: CompiledRule,
    leaves: LeafSource,
    found: Mapping[str, bool | None],
) -> frozenset[Literal]:
    """The first alternative (DNF conjunct) of a reached rule whose parts all hold."""
    for conj in crule.conjuncts:
        ok = True
        for kind, key, want in conj:
            if kind == "L":
                ok = leaves.value(int(key)) is want
            else:
                ok = (found.get(str(key)) is True) == want
            if not ok:
                break
        if ok:
            return conj
    return frozenset()


def after_death(kb: KnowledgeBase, case: Case, view: CaseView) -> Assessment:
    """A patient who died before the evaluation time gets no conclusions."""
    assert case.deceased is not None
    when = aware(case.deceased)
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


def _point_findings(kb: KnowledgeBase, points: Points) -> list[Finding]:
    """Each reported point score as a finding, with the items behind its total."""
    out = []
    for ps in kb.point_scores:
        if not points.reported(ps.id):
            continue
        pid, result = ps.id, points[ps.id]
        if not result.reported:  # its items could not be evaluated
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


def _resting_on_doubts(
    view: CaseView, conclusions: Sequence[Diagnosis | Finding | Recommendation]
) -> list[str]:
    """A problem for each doubtful value that conclusions rest on, naming
    them: those that use it, and those that rest on them through findings and
    point scores (CHA2DS2-VASc counting a diabetes the value confirmed, and
    the anticoagulation advice that reads the score).

    A value is doubtful when it is outside its fact's plausible range (a
    systolic of 1400 typed for 140). The value is used as recorded, since a
    range cannot tell an error from a rare extreme (a glucose of 1600 mg/dL
    in a hyperosmolar state); the conclusions are made, and the assessment is
    partial until someone checks the record.
    """
    doubts = [
        {d for u in _facts_of(c) if (d := _implausible(view, u)) is not None}
        for c in conclusions
    ]
    findings = {c.id for c in conclusions if isinstance(c, Finding)}
    reads = [
        (
            set(c.evidence.findings)
            | {u.name.removeprefix(SCORE_FACT_PREFIX) for u in _facts_of(c)}
        )
        & findings
        for c in conclusions
    ]
    # Through findings, to a fixed point: a finding's doubts pass to readers.
    passed: dict[str, set[str]] = {}
    changed = True
    while changed:
        changed = False
        for c, own, read in zip(conclusions, doubts, reads, strict=True):
            got = own.union(*(passed.get(f, set()) for f in read))
            if got != own:
                own |= got
                changed = True
            if isinstance(c, Finding) and passed.get(c.id) != own:
                passed[c.id] = set(own)
                changed = True
    resting: dict[str, list[str]] = {}
    for c, own in zip(conclusions, doubts, strict=True):
        for shown in sorted(own):
            resting.setdefault(shown, []).append(c.id)
    return [
        f"{shown}: check the record before acting on {', '.join(dict.fromkeys(ids))}"
        for shown, ids in resting.items()
    ]


def _entries(ev: Evidence, findings: dict[str, Finding]) -> set[str]:
    """The recorded entries (readings, results) a conclusion's evidence rests
    on, through the findings it reads: what two rules' evidence can share.
    The patient's age and sex are context, not an entry."""
    out: set[str] = set()
    seen: set[str] = set()
    todo = [ev]
    while todo:
        e = todo.pop()
        for u in e.facts:
            if u.source and u.source != "Patient":
                out.update(u.source.split(", "))
        for f in e.findings:
            if f in findings and f not in seen:
                seen.add(f)
                todo.append(findings[f].evidence)
    return out


def _facts_of(c: Diagnosis | Finding | Recommendation) -> list[FactUsed]:
    """The facts a conclusion shows, with a point score's items' facts."""
    items = (
        [u for part in c.components for u in part.facts]
        if isinstance(c, Finding)
        else []
    )
    return [*c.evidence.facts, *items]


def _implausible(view: CaseView, used: FactUsed) -> str | None:
    """``systolic_bp 1400 mm[Hg] is outside the plausible range ...``, or None.

    (An age from a birth date without its day is checked whole, by a second
    evaluation: engine.evaluation._age_doubts.)
    """
    fact = view.catalogue.quantities.get(used.name)
    value = used.value
    if (
        fact is None
        or fact.plausible is None
        or isinstance(value, bool)
        or not isinstance(value, float | int)
    ):
        return None
    unit = used.unit or fact.unit
    low, high = fact.plausible
    try:
        canonical = (
            value if unit == fact.unit else convert(value, unit, fact.unit, fact)
        )
    except UnitError:
        return None
    if low <= canonical <= high:
        return None
    return (
        f"{used.name} {value:g} {unit} is outside the plausible range "
        f"{low:g}-{high:g} {fact.unit}"
    )
