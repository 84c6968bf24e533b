"""Evaluating one case: facts to leaves, leaves through the matcher, results out.

Steps: (1) the case seen at ``as_of`` with calculated facts; (2) model scores;
(3) a three-valued pass over the rules in dependency order decides each rule
and finding, evaluating the leaves (finding-free conditions) the rules read,
and names what cannot be determined; (4) the decided leaves are asserted into
a fresh durable-rules session, which chains the findings, and the pass
cross-checks the matcher (a disagreement makes the assessment partial);
(5) conclusions with their evidence and certainty (:mod:`engine.conclusions`).
:func:`evaluate_cases` does step (2) once per model for a whole chunk of
cases, then the rest case by case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from .assessment import Assessment, Score
from .calculations import run_calculations
from .caseview import CaseView
from .conclusions import after_death, assemble
from .decisions import Decider, decider
from .errors import EvaluationError, InputError, UnitError
from .facts import Case, aware
from .leaves import LeafResult, condition_key, evaluate_leaf
from .points import Points
from .truth import missing, truth
from .units import convert

if TYPE_CHECKING:
    from .knowledge import KnowledgeBase
    from .scoring import ModelScore, ScoringModel

__all__ = ["evaluate_case", "evaluate_cases"]

log = logging.getLogger(__name__)


def _row(
    kb: KnowledgeBase, view: CaseView, name: str, model: ScoringModel
) -> tuple[dict[str, float | None], dict[str, datetime]]:
    """One model's input row for one case: each fact's latest value, in its
    unit; and each feature's time, the oldest of its facts' latest readings.

    A model takes the latest value however old it is; an input older than
    _STALE (the 12 months the rules allow laboratory results) is noted, so
    that a score from old results is not read as current.
    """
    row: dict[str, float | None] = {}
    times: dict[str, datetime] = {}
    stale: list[str] = []
    for feature in model.card.features:
        for fact_name in feature.facts():
            readings = view.select(fact_name, None)
            r = readings[-1] if readings else None
            if r is None or not isinstance(r.value, float):
                row[fact_name] = None
                continue
            if r.time is not None:
                when = view.time_of(r)
                if feature.name not in times or when < times[feature.name]:
                    times[feature.name] = when
                if when < view.as_of - _STALE:
                    stale.append(fact_name)
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
    if stale:
        view.notes.append(
            f"score {name}: inputs more than 12 months before the evaluation "
            f"time: {', '.join(dict.fromkeys(stale))}"
        )
    return row, times


# [convention] The rules read laboratory results within 12 months.
_STALE = timedelta(days=365)
_OLDEST = 130  # years: the top of the catalogue's plausible range for age


def _score(name: str, s: ModelScore, times: dict[str, datetime]) -> Score:
    return Score(
        input_times={k: t for k, t in times.items() if k in s.inputs},
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
    out = {}
    for name, model in kb.models.items():
        row, times = _row(kb, view, name, model)
        out[name] = _score(name, model.score_many([row])[0], times)
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
        first: dict[str, int] = {}
        found = [first.setdefault(condition_key(c), i) for i, c in enumerate(kb.leaves)]
        _equal_leaves[kb] = found
    return found


_deciders: WeakKeyDictionary[KnowledgeBase, list[Decider]] = WeakKeyDictionary()


def _leaf_deciders(kb: KnowledgeBase) -> list[Decider]:
    """Each leaf's compiled decider, in leaf order."""
    found = _deciders.get(kb)
    if found is None:
        found = _deciders[kb] = [decider(c) for c in kb.leaves]
    return found


# A conjunct's leaf literals, filed under its first one.
_Conjuncts = dict[tuple[int, bool], list[tuple[tuple[int, bool], ...]]]
_leaf_parts: WeakKeyDictionary[KnowledgeBase, _Conjuncts] = WeakKeyDictionary()


def _conjunct_leaves(kb: KnowledgeBase) -> _Conjuncts:
    """Every matcher conjunct's leaf literals, filed under its first literal."""
    found = _leaf_parts.get(kb)
    if found is None:
        found = {}
        for crule in kb.rules:
            for conj in crule.conjuncts:
                lits = tuple(
                    sorted((int(k), want) for kind, k, want in conj if kind == "L")
                )
                if lits:
                    found.setdefault(lits[0], []).append(lits)
        _leaf_parts[kb] = found
    return found


def _live_leaf_facts(kb: KnowledgeBase, leaves: _Leaves) -> list[dict[str, object]]:
    """The leaf facts that complete the leaf part of some matcher conjunct.

    A conjunct fires only when every one of its leaf facts is there, so a leaf
    fact whose every conjunct has some other leaf literal that does not hold
    can complete nothing: leaving it out changes no firing, and each fact the
    matcher does not see saves a call into it. The matcher still chains every
    finding and every negation, and the cross-check still sees every
    conjunct that could fire.
    """
    decided = dict(leaves.decided())
    live: set[tuple[int, bool]] = set()
    index = _conjunct_leaves(kb)
    for first in decided.items():
        for lits in index.get(first, ()):
            if all(decided.get(i) is want for i, want in lits):
                live.update(lits)
    return [{"t": "leaf", "k": i, "v": v} for i, v in sorted(live)]


def _view(
    kb: KnowledgeBase,
    case: Case,
    as_of: datetime,
    findings: dict[str, bool | None] | None = None,
) -> CaseView:
    if case.birth_date is not None and aware(as_of).date() < case.birth_date:
        # Neither date is repeated: the birth date identifies the patient.
        born_later = case.birth_date > datetime.now(UTC).date()
        raise InputError(
            case.source or case.case_id,
            "birth date",
            "the birth date is in the future"
            if born_later
            else "the evaluation time is before the patient's birth date",
            "check the record's birth date"
            if born_later
            else "check the record's birth date, or evaluate at a later time (--as-of)",
        )
    view = CaseView(case, as_of, kb.catalogue, findings=findings or {})
    age = view.age()
    if age is not None and age > _OLDEST:
        # The catalogue's plausible range for age; the date is not repeated.
        raise InputError(
            case.source or case.case_id,
            "birth date",
            f"the patient would be {age} years old at the evaluation time",
            "check the evaluation time (--as-of) and the record's birth date",
        )
    run_calculations(view, kb.calculations)
    return view


def evaluate_case(kb: KnowledgeBase, case: Case, as_of: datetime) -> Assessment:
    """Evaluate one case against a loaded knowledge base."""
    view = _view(kb, case, as_of)
    return _age_doubts(kb, case, view, _run(kb, case, view, _scores(kb, view)))


def _age_doubts(
    kb: KnowledgeBase, case: Case, view: CaseView, result: Assessment
) -> Assessment:
    """Name the conclusions a birth date without its day leaves in doubt.

    The age is counted from the first day the birth date allows (1 January
    for ``1959``). The case is evaluated again as born on the last day
    (31 December); the conclusions that differ between the two (a statin
    indication at 75, CHA2DS2-VASc's point at 65, an eGFR and so the
    metformin advice) are named, and the assessment is partial. A rare case:
    most records give the day.
    """
    latest = case.birth_date_latest
    if latest is None or latest == case.birth_date or result.status == "not_evaluable":
        return result
    later = case.model_copy(update={"birth_date": latest, "birth_date_latest": None})
    try:
        other = evaluate_case(kb, later, view.as_of)
    except InputError:  # born after the evaluation time on that day
        return result
    here, there = _conclusions(result), _conclusions(other)
    if here == there:
        return result
    only_here = sorted(dict.fromkeys(c[1] for c in here - there))
    only_there = sorted(dict.fromkeys(c[1] for c in there - here))
    ages = (result.patient.age, other.patient.age)
    counted = f" ({ages[0]} a)" if ages[0] is not None else ""
    then = f" (age {ages[1]} a)" if ages[1] != ages[0] else ""
    parts = []
    if only_here:
        parts.append(f"not made then, or made otherwise: {', '.join(only_here)}")
    if only_there:
        parts.append(f"made then: {', '.join(only_there)}")
    problem = (
        "the birth date is recorded as a year or month only, and the age is "
        f"counted from its first day{counted}; born on its last day{then}, "
        f"the conclusions would differ ({'; '.join(parts)}): check the birth "
        "date before acting on them"
    )
    return result.model_copy(
        update={"status": "partial", "problems": [*result.problems, problem]}
    )


def _conclusions(result: Assessment) -> set[tuple[str, str, object]]:
    """What a clinician acts on: diagnoses, findings with their values,
    recommendations with their status."""
    return (
        {("diagnosis", d.id, None) for d in result.diagnoses}
        | {("finding", f.id, f.value) for f in result.findings}
        | {("recommendation", r.id, r.status) for r in result.recommendations}
    )


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
    views, scores = prepare_chunk(kb, cases, times)
    return [
        _age_doubts(kb, case, view, _run(kb, case, view, found))
        for case, view, found in zip(cases, views, scores, strict=True)
    ]


def prepare_chunk(
    kb: KnowledgeBase, cases: Sequence[Case], times: Sequence[datetime]
) -> tuple[list[CaseView], list[dict[str, Score]]]:
    """Steps (1) and (2) for a chunk: each case's view, then every model's
    scores for the whole chunk in one call per model."""
    views = [_view(kb, case, when) for case, when in zip(cases, times, strict=True)]
    scores: list[dict[str, Score]] = [{} for _ in cases]
    for name, model in kb.models.items():
        made = [_row(kb, view, name, model) for view in views]
        rows = [row for row, _ in made]
        for out, (_, read_at), s in zip(
            scores, made, model.score_many(rows), strict=True
        ):
            out[name] = _score(name, s, read_at)
    return views, scores


class _Leaves:
    """A case's leaves, each evaluated the first time a rule reads it.

    The three-valued pass short-circuits (:func:`engine.truth.truth`) and
    reads only values (:mod:`engine.decisions`, which stops a combination at
    its first deciding part): a rule whose guard is false ("has
    atrial fibrillation") never reads its other leaves, and for most rules of
    most cases that is most of the work. The full result, with the facts used
    and what was missing, is built only for the leaves a conclusion shows or a
    rule that cannot be determined names.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        view: CaseView,
        scores: dict[str, Score],
        points: Points,
    ) -> None:
        self._first = _first_equal(kb)
        self._conditions = kb.leaves
        self._deciders = _leaf_deciders(kb)
        self._view, self._scores, self._points = view, scores, points
        self._values: dict[int, bool | None] = {}
        self._results: dict[int, LeafResult] = {}
        self._failed: dict[int, str] = {}

    def value(self, i: int) -> bool | None:
        """The leaf's value: True, False or None (cannot be determined)."""
        first = self._first[i]
        if first in self._values:
            return self._values[first]
        try:
            value = self._deciders[first](self._view, self._scores, self._points)
        except UnitError as err:
            self._failed[first] = f"a condition could not be evaluated: {err}"
            self._results[first] = LeafResult(None, detail=[str(err)])
            value = None
        self._values[first] = value
        return value

    def __getitem__(self, i: int) -> LeafResult:
        """The leaf's full result (the same value, with its evidence)."""
        first = self._first[i]
        result = self._results.get(first)
        if result is None:
            value = self.value(first)
            try:
                result = evaluate_leaf(
                    self._view, self._conditions[first], self._scores, self._points
                )
            except UnitError as err:
                # A part the value did not need failed: the value stands.
                self._failed[first] = f"a condition could not be evaluated: {err}"
                result = LeafResult(value, detail=[str(err)])
            self._results[first] = result
        return result

    def decided(self) -> list[tuple[int, bool]]:
        """Every leaf read so far whose value is known, in leaf order."""
        return sorted(
            (i, v)
            for i, first in enumerate(self._first)
            if (v := self._values.get(first)) is not None
        )

    def problems(self) -> list[str]:
        """Conditions that could not be evaluated, in leaf order."""
        return [self._failed[first] for first in self._first if first in self._failed]


def _run(
    kb: KnowledgeBase,
    case: Case,
    view: CaseView,
    scores: dict[str, Score],
) -> Assessment:
    """Steps (3) to (5) for one case whose view and scores are ready."""
    if case.deceased is not None and view.as_of >= aware(case.deceased):
        return after_death(kb, case, view)
    points = Points(view, kb.point_scores, scores)
    leaves = _Leaves(kb, view, scores, points)

    # Three-valued pass, in dependency order: what holds, what cannot be known.
    # Leaves are evaluated as the rules read them.
    found: dict[str, bool | None] = {}
    finding_missing: dict[str, list[str]] = {}
    status: dict[int, bool | None] = {}
    lacking: dict[int, list[str]] = {}  # what each undecided rule lacks
    for ri in kb.order:
        crule = kb.rules[ri]
        value = truth(crule.expr, leaves, found)
        status[ri] = value
        if value is None:
            lacking[ri] = missing(crule.expr, leaves, found, finding_missing)
        for f in crule.produces:
            if value is True:
                found[f] = True
            elif value is None and found.get(f) is not True:
                found[f] = None
                finding_missing[f] = sorted({*finding_missing.get(f, []), *lacking[ri]})
            else:
                found.setdefault(f, False)

    # A calculation or a point-score item that reads a finding (the pooled
    # cohort equations and CHA2DS2-VASc read a diabetes the laboratory rules
    # confirm) ran before the rules decided it, reading it as absent. If the
    # finding holds, the case is evaluated again with it known: the finding
    # does not rest on what read it (engine.checks), so the second pass
    # decides it the same way.
    if (
        not view.findings
        and view.reads_findings
        and any(found.get(f) is True for f in view.reads_findings)
    ):
        known = {f: found.get(f) for f in view.reads_findings}
        again = _view(kb, case, view.as_of, known)
        fed = {calc.fact for calc in kb.calculations if calc.findings()}
        if any(
            fed.intersection(feature.facts())
            for model in kb.models.values()
            for feature in model.card.features
        ):
            scores = _scores(kb, again)
        return _run(kb, case, again, scores)

    # The matcher chains the findings from the decided leaves that can complete
    # a conjunct (see _live_leaf_facts). Before each stratum's gates, findings
    # settled below it that cannot be determined are asserted as unknown, so
    # that "not F" does not fire on an F that might hold.
    facts = _live_leaf_facts(kb, leaves)
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
    matcher_problems = list(session.errors)
    if session.capped:
        matcher_problems.append("the firing cap was reached; the chaining was stopped")
    fired: dict[int, int] = {}
    for ri, ci in session.fired:
        fired.setdefault(ri, ci)
    for ri in kb.order:
        if (status[ri] is True) != (ri in fired):
            matcher_problems.append(
                f"rule {kb.rules[ri].rule.id}: the matcher and the three-valued "
                "check disagree; its result is not reported"
            )
    reached = [ri for ri in kb.order if status[ri] is True and ri in fired]
    if log.isEnabledFor(logging.DEBUG):  # rule ids only: nothing about the patient
        log.debug(
            "rules fired: %s; %d cannot be determined",
            ", ".join(kb.rules[ri].rule.id for ri in reached) or "none",
            sum(1 for v in status.values() if v is None),
        )
    return assemble(
        kb,
        case,
        view,
        leaves,
        scores,
        points,
        reached,
        status,
        found,
        lacking,
        lambda: [*points.problems(), *leaves.problems(), *matcher_problems],
    )
