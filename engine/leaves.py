"""Three-valued evaluation of the fact-level parts of a rule's ``when``.

A *leaf* is a subtree of a condition that mentions no finding: comparisons of
facts and scores, problem-list, medication and allergy tests, and their
all/any/not/at-least combinations. A leaf is true, false or unknown (None);
unknown is not false: it names the facts that were missing. durable-rules
cannot say "unknown" (an absent attribute is silence), so it is computed here
and only decided leaves reach the matcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from statistics import fmean
from typing import TYPE_CHECKING

from . import ruleformat as rf
from .assessment import FactUsed, Score
from .caseview import CaseView, parse_duration
from .catalogue import QuantityFact
from .cutpoints import (
    OPERATORS,
    Cuts,
    compare_value,
    cuts_of,
    in_unit,
    meets_cuts,
    round_for_banding,
    text_matches,
    thresholds_of,
)
from .facts import Reading
from .memo import ByIdentity

if TYPE_CHECKING:
    from .points import PointResult

__all__ = [
    "LeafResult",
    "compare_fact",
    "condition_key",
    "evaluate_leaf",
    "value_for_band",
]


@dataclass
class LeafResult:
    """The truth of a leaf, with what it used and what it lacked."""

    value: bool | None
    facts: list[FactUsed] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)


def _days(view: CaseView, readings: list[Reading]) -> int:
    return len({view.time_of(r).date() for r in readings})


def _text_comparison(view: CaseView, cond: rf.FactComparison) -> LeafResult:
    within = parse_duration(cond.within) if cond.within else None
    readings = [r for r in view.select(cond.fact, within) if isinstance(r.value, str)]
    if not readings:
        detail = [f"no {cond.fact}" + (f" within {cond.within}" if cond.within else "")]
        if cond.if_missing is not None:
            return LeafResult(cond.if_missing, detail=detail)
        return LeafResult(None, missing=[cond.fact], detail=detail)
    latest = readings[-1]
    assert isinstance(latest.value, str)
    ok = text_matches(latest.value, cond.equals, cond.one_of)
    return LeafResult(ok, facts=[_used(view, cond.fact, latest, "latest")])


def _canonical_unit(view: CaseView, name: str) -> str:
    fact = view.catalogue.quantities.get(name)
    return fact.unit if fact is not None else ""


def value_for_band(
    view: CaseView, item: rf.PointItem
) -> tuple[float | str, str, FactUsed] | None:
    """The value a banded point-score item reads: latest or an aggregate."""
    assert item.fact is not None
    within = parse_duration(item.within) if item.within else None
    readings = view.select(item.fact, within)
    if not readings:
        return None
    if item.fact in view.catalogue.texts or item.value == "latest":
        r = readings[-1]
        return (
            r.value if not isinstance(r.value, bool) else str(r.value),
            r.unit or _canonical_unit(view, item.fact),
            _used(view, item.fact, r, "latest"),
        )
    fact = view.catalogue.quantities[item.fact]
    values = [
        in_unit(r, fact.unit, fact) for r in readings if isinstance(r.value, float)
    ]
    agg = (
        fmean(values)
        if item.value == "mean"
        else (min(values) if item.value == "min" else max(values))
    )
    agg = round_for_banding(agg, fact, fact.unit)
    used = FactUsed(
        name=item.fact,
        value=agg,
        unit=fact.unit,
        time=view.time_of(readings[-1]),
        aggregate=item.value,
        readings=len(values),
    )
    return agg, fact.unit, used


def compare_fact(
    view: CaseView, cond: rf.FactComparison, evidence: bool = True
) -> LeafResult:
    """A fact compared with cut points; without ``evidence``, the value alone."""
    if cond.fact in view.catalogue.texts:
        return _text_comparison(view, cond)
    fact = view.catalogue.quantities[cond.fact]
    within = parse_duration(cond.within) if cond.within else None
    readings = view.numbers(cond.fact, within)
    if not readings:
        if not evidence:
            return LeafResult(cond.if_missing)
        window = f" within {cond.within}" if cond.within else ""
        detail = [f"no {cond.fact}{window}"]
        if cond.if_missing is not None:
            return LeafResult(cond.if_missing, detail=detail)
        inputs = sorted(set(view.missing_inputs.get(cond.fact, [])))
        return LeafResult(None, missing=[cond.fact, *inputs], detail=detail)
    cuts = cuts_of(cond, fact)
    if not cuts:
        latest = readings[-1]
        if not evidence:
            return LeafResult(True)
        return LeafResult(True, facts=[_used(view, cond.fact, latest, "latest")])

    if cond.lasting_more_than:
        return _lasting(view, cond, fact, readings)

    if cond.readings > 1:
        passing = [
            r
            for r in readings
            if meets_cuts(r.value, r.unit or fact.unit, cuts, fact, None)  # type: ignore[arg-type]
        ]
        days = _days(view, passing)
        if not evidence:
            return LeafResult(days >= cond.readings)
        used = [_used(view, cond.fact, r, "latest") for r in passing]
        text = (
            f"{days} of {cond.readings} {cond.fact} results on separate days "
            "meet the cut point"
        )
        return LeafResult(days >= cond.readings, facts=used, detail=[text])

    shown: list[str] | None = [] if evidence else None
    if cond.value == "latest":
        chosen = readings[-1]
        ok = meets_cuts(chosen.value, chosen.unit or fact.unit, cuts, fact, shown)  # type: ignore[arg-type]
        if not evidence:
            return LeafResult(ok)
        return LeafResult(
            ok, facts=[_used(view, cond.fact, chosen, "latest")], detail=shown or []
        )

    if _days(view, readings) < cond.min_readings:
        if not evidence:
            return LeafResult(cond.if_missing)
        window = f" within {cond.within}" if cond.within else ""
        if cond.if_missing is not None:  # too few readings is as good as none
            return LeafResult(
                cond.if_missing,
                detail=[f"fewer than {cond.min_readings} {cond.fact} readings{window}"],
            )
        return LeafResult(
            None,
            missing=[cond.fact],
            detail=[
                f"{cond.value} of {cond.fact} needs {cond.min_readings} readings on "
                f"separate days{window}; found {_days(view, readings)}"
            ],
        )
    units = {r.unit or fact.unit for r in readings}
    if len(units) > 1 and cond.value in ("max", "min"):
        return _extreme_in_own_units(view, cond, fact, readings, cuts, evidence)
    first_cut = next(
        (thresholds_of(getattr(cond, op))[0] for op in OPERATORS if getattr(cond, op)),
        None,
    )
    unit = (
        units.pop() if len(units) == 1 else (first_cut.unit if first_cut else fact.unit)
    )
    agg = _aggregate(view, cond.fact, within, cond.value, unit, readings, fact)
    ok = meets_cuts(agg, unit, cuts, fact, shown)
    if not evidence:
        return LeafResult(ok)
    summary = FactUsed(
        name=cond.fact,
        value=agg,
        unit=unit,
        time=view.time_of(readings[-1]),
        aggregate=cond.value,
        readings=len(readings),
        source=", ".join(dict.fromkeys(r.source for r in readings[-5:] if r.source)),
        age_days=(view.as_of - view.time_of(readings[-1])).days,
    )
    return LeafResult(ok, facts=[summary], detail=shown or [])


def _extreme_in_own_units(
    view: CaseView,
    cond: rf.FactComparison,
    fact: QuantityFact,
    readings: list[Reading],
    cuts: Cuts,
    evidence: bool,
) -> LeafResult:
    """The highest or lowest of readings in several units, against cut points.

    Spec 0.2 compares each value with the cut point of the unit it arrived
    in, and the paired cut points are not exact conversions of each other
    (4.9 mmol/L of LDL-C is 189.5 mg/dL, not 190). Converting every reading to
    one unit before taking the highest would lose that. So, without
    converting: the highest reading meets a lower cut point ("at least 190
    mg/dL or 4.9 mmol/L") when some reading meets it in its own unit, and an
    upper cut point when every reading does; the other way round for the
    lowest.
    """
    highest = cond.value == "max"
    ok = True
    shown: list[str] = []
    chosen: list[Reading] = []
    for test, sign, given in cuts:
        lower = sign in (">", ">=")
        one = [(test, sign, given)]
        meets = [
            meets_cuts(r.value, r.unit or fact.unit, one, fact, None)  # type: ignore[arg-type]
            for r in readings
        ]
        # "Some reading" for a lower cut of the highest (an upper of the
        # lowest), "every reading" otherwise; readings are oldest first, and
        # the latest one that decides is the one shown.
        some = lower == highest
        holds = any(meets) if some else all(meets)
        ok = ok and holds
        if not evidence:
            if not ok:
                return LeafResult(False)
            continue
        deciding = [r for r, m in zip(readings, meets, strict=True) if m is some]
        r = deciding[-1] if deciding else readings[-1]
        meets_cuts(r.value, r.unit or fact.unit, one, fact, shown)  # type: ignore[arg-type]
        if all(r is not c for c in chosen):
            chosen.append(r)
    if not evidence:
        return LeafResult(ok)
    facts = [
        _used(view, cond.fact, r, cond.value).model_copy(
            update={"readings": len(readings)}
        )
        for r in chosen
    ]
    detail = [
        f"{cond.value} of {len(readings)} {cond.fact} readings in "
        f"{len({r.unit or fact.unit for r in readings})} units: each compared "
        "with the cut point of its own unit",
        *shown,
    ]
    return LeafResult(ok, facts=facts, detail=detail)


def _aggregate(
    view: CaseView,
    name: str,
    within: timedelta | None,
    how: str,
    unit: str,
    readings: list[Reading],
    fact: QuantityFact,
) -> float:
    """The mean, least or greatest of the readings in ``unit``, rounded.

    Kept per case: every band of a blood-pressure rule reads the same mean.
    """
    key = ("aggregate", name, within, how, unit)
    found = view.cache.get(key)
    if found is None:
        values = [in_unit(r, unit, fact) for r in readings]
        agg = (
            fmean(values)
            if how == "mean"
            else (min(values) if how == "min" else max(values))
        )
        found = view.cache[key] = round_for_banding(agg, fact, unit)
    assert isinstance(found, float)
    return found


def _lasting(
    view: CaseView, cond: rf.FactComparison, fact: QuantityFact, readings: list[Reading]
) -> LeafResult:
    """The latest reading passes, and the run of passing ones spans long enough.

    A run that is still too short cannot be determined yet (KDIGO: CKD needs
    more than 3 months; spec section 4), which is not the same as false.
    """
    assert cond.lasting_more_than is not None
    needed = parse_duration(cond.lasting_more_than)
    run: list[Reading] = []
    for r in reversed(readings):
        ok, _shown = compare_value(r.value, r.unit or fact.unit, cond, fact)  # type: ignore[arg-type]
        if not ok:
            break
        run.append(r)
    if not run or run[0] is not readings[-1]:
        return LeafResult(False, facts=[_used(view, cond.fact, readings[-1], "latest")])
    span = view.time_of(run[0]) - view.time_of(run[-1])
    used = [_used(view, cond.fact, r, "latest") for r in (run[0], run[-1])]
    if span > needed:
        text = (
            f"{cond.fact} in range for {span.days} days "
            f"(more than {cond.lasting_more_than})"
        )
        return LeafResult(True, facts=used, detail=[text])
    text = (
        f"{cond.fact} in range for {span.days} days so far; needs more than "
        f"{cond.lasting_more_than}"
    )
    return LeafResult(
        None, facts=used, missing=[f"{cond.fact} (duration)"], detail=[text]
    )


def _used(view: CaseView, name: str, r: Reading, aggregate: str) -> FactUsed:
    value = r.value
    fact = view.catalogue.quantities.get(name)
    if (
        fact is not None
        and isinstance(value, float)
        and (r.unit or fact.unit) == fact.unit
    ):
        value = round_for_banding(value, fact, fact.unit)
    return FactUsed(
        name=name,
        value=value,
        unit=r.unit,
        time=view.time_of(r),
        aggregate=aggregate,
        source=r.source,
        age_days=(view.as_of - view.time_of(r)).days,
    )


def _score(scores: dict[str, Score], cond: rf.ScoreTest) -> LeafResult:
    score = scores.get(cond.score)
    if score is None or score.value is None:
        missing = list(score.missing) if score else [cond.score]
        return LeafResult(
            None, missing=missing, detail=[f"score {cond.score} not available"]
        )
    ok = True
    for op, (test, _sign) in OPERATORS.items():
        cut = getattr(cond, op)
        if cut is not None:
            ok = ok and test(score.value, float(cut))
    used = FactUsed(name=f"score:{cond.score}", value=round(score.value, 4), unit=None)
    return LeafResult(ok, facts=[used])


def _combine_all(parts: list[LeafResult]) -> LeafResult:
    out = LeafResult(True)
    for p in parts:
        out.facts += p.facts
        out.detail += p.detail
        if p.value is False:
            out.value = False
        elif p.value is None and out.value is not False:
            out.value = None
    if out.value is None:
        out.missing = sorted({m for p in parts if p.value is None for m in p.missing})
    if out.value is False:
        out.missing = []
    return out


def _combine_at_least(k: int, parts: list[LeafResult]) -> LeafResult:
    true = sum(1 for p in parts if p.value is True)
    unknown = sum(1 for p in parts if p.value is None)
    value: bool | None
    if true >= k:
        # Spec 0.4 [convention]: known inputs that already force the result
        # decide it, whatever the missing ones would be.
        value = True
    elif true + unknown < k:
        value = False
    else:
        value = None
    out = LeafResult(value)
    for p in parts:
        if p.value is True:
            out.facts += p.facts
        out.detail += p.detail
    if value is None:
        out.missing = sorted({m for p in parts if p.value is None for m in p.missing})
    return out


def evaluate_leaf(
    view: CaseView,
    cond: rf.Condition,
    scores: dict[str, Score],
    points: dict[str, PointResult] | None = None,
) -> LeafResult:
    """Evaluate a finding-free condition in three values.

    The same condition stands in many rules (an "adult" test, a ruleset's
    scope): its result is kept per case under its content. A result is only
    read, never changed, by what combines it.

    Raises:
        UnitError: If a reading's unit cannot be converted for the comparison.
    """
    key = ("evaluated", condition_key(cond))
    found = view.cache.get(key)
    if found is None:
        found = view.cache[key] = _evaluate(view, cond, scores, points)
    assert isinstance(found, LeafResult)
    return found


def _evaluate(
    view: CaseView,
    cond: rf.Condition,
    scores: dict[str, Score],
    points: dict[str, PointResult] | None,
) -> LeafResult:
    if isinstance(cond, rf.FactComparison):
        return compare_fact(view, cond)
    if isinstance(cond, rf.PointsTest):
        from .points import points_leaf

        return points_leaf(cond, points if points is not None else {})
    if isinstance(cond, rf.ScoreTest):
        return _score(scores, cond)
    if isinstance(cond, rf.ConditionTest):
        since = parse_duration(cond.for_more_than) if cond.for_more_than else None
        ok = view.has_condition(cond.condition, since)
        return LeafResult(ok, facts=[FactUsed(name=cond.condition, value=ok)])
    if isinstance(cond, rf.MedicationTest):
        ok = view.taking(cond.taking)
        return LeafResult(ok, facts=[FactUsed(name=f"taking:{cond.taking}", value=ok)])
    if isinstance(cond, rf.AllergyTest):
        ok = view.allergic_to(cond.allergic_to)
        name = f"allergic_to:{cond.allergic_to}"
        return LeafResult(ok, facts=[FactUsed(name=name, value=ok)])
    if isinstance(cond, rf.FindingTest):  # in a point-score item only
        found = view.finding(cond.finding)
        return LeafResult(found, facts=[FactUsed(name=cond.finding, value=found)])
    if isinstance(cond, rf.AllOf):
        return _combine_all([evaluate_leaf(view, c, scores, points) for c in cond.all])
    if isinstance(cond, rf.AnyOf):
        parts = [evaluate_leaf(view, c, scores, points) for c in cond.any]
        return _combine_at_least(1, parts)
    if isinstance(cond, rf.AtLeastOf):
        parts = [evaluate_leaf(view, c, scores, points) for c in cond.of]
        return _combine_at_least(cond.at_least, parts)
    if isinstance(cond, rf.Not):
        inner = evaluate_leaf(view, cond.not_, scores, points)
        flipped = None if inner.value is None else not inner.value
        return LeafResult(flipped, inner.facts, inner.missing, inner.detail)
    raise TypeError(f"not a fact-level condition: {type(cond).__name__}")


_keys: ByIdentity[rf.Condition, str] = ByIdentity()


def condition_key(cond: rf.Condition) -> str:
    """The condition's content, as text (worked out once per condition)."""
    return _keys.get(cond, lambda c: f"{type(c).__name__} {c.model_dump_json()}")
