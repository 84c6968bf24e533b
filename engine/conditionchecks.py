"""Checks of one rule condition: facts, cut points and their units, text
values, findings, point scores and models it names.
"""

from __future__ import annotations

from typing import Any

from . import ruleformat as rf
from .caseview import parse_duration
from .catalogue import Catalogue
from .cutpoints import parse_threshold
from .errors import Problem, UnitError
from .nearest import suggest
from .sites import RuleSite, site_problem, walk
from .units import convert, same_dimension

__all__ = ["check_comparison", "check_when"]


# One cut point in two units (126 mg/dL, 7.0 mmol/L) is the same value
# converted, give or take the rounding of the guideline's pair: KDIGO's
# 30 mg/g and 3 mg/mmol differ by 13 %. A pair further apart than this
# (2.26 mg/dL beside 20 umol/L, ten times off) is a slip.
_PAIR = 1.25


_OPS = ("above", "at_least", "below", "at_most")


def check_comparison(
    site: RuleSite, cond: rf.FactComparison, raw: Any, cat: Catalogue
) -> list[Problem]:
    out = []
    fact = cat.quantities.get(cond.fact)
    if cond.fact in cat.texts:
        return _check_text(site, cond, raw, cat)
    if fact is not None and (cond.equals is not None or cond.one_of is not None):
        key = "equals" if cond.equals is not None else "one_of"
        return [
            site_problem(
                site,
                site.at(raw, key),
                f"{cond.fact} is a measured number; `{key}` is for text facts",
                "compare it with above, at_least, below or at_most",
                "not-text",
            )
        ]
    if fact is None:
        kind = cat.kind_of(cond.fact)
        msg = f"unknown fact `{cond.fact}`"
        code = "unknown-fact"
        if kind == "condition":
            msg = (
                f"`{cond.fact}` is a problem-list condition (yes or no), not a "
                "measured fact; it cannot be compared with a number"
            )
            hint = f"write `condition: {cond.fact}`"
            code = "not-a-number"
        elif kind == "medication":
            msg = (
                f"`{cond.fact}` is a medication (taken or not), not a measured "
                "fact; it cannot be compared with a number"
            )
            hint = f"write `taking: {cond.fact}`"
            code = "not-a-number"
        else:
            hint = suggest(cond.fact, list(cat.quantities))
        return [site_problem(site, site.at(raw, "fact"), msg, hint, code)]
    if cond.within:
        try:
            parse_duration(cond.within)
        except ValueError as err:
            out.append(
                site_problem(site, site.at(raw, "within"), str(err), "", "duration")
            )
    for op in _OPS:
        value = getattr(cond, op)
        if value is None:
            continue
        pair: list[tuple[float, str, float]] = []  # value, unit, canonical value
        for item in value if isinstance(value, list) else [value]:
            try:
                cut = parse_threshold(item)
            except ValueError as err:
                out.append(
                    site_problem(
                        site,
                        site.at(raw, op),
                        str(err),
                        f"write e.g. `{op}: 140 {fact.unit}`",
                        "threshold",
                    )
                )
                continue
            if not cut.unit and fact.unit == "1":
                continue  # a count or score: a plain number is its own unit
            if not cut.unit:
                out.append(
                    site_problem(
                        site,
                        site.at(raw, op),
                        f"the threshold {cut.value:g} for {cond.fact} has no unit",
                        f"write `{cut.value:g} {fact.unit}`",
                        "unit-missing",
                    )
                )
                continue
            try:
                ok = any(same_dimension(cut.unit, u) for u in fact.units)
            except UnitError:
                out.append(
                    site_problem(
                        site,
                        site.at(raw, op),
                        f"unknown unit `{cut.unit}` for {cond.fact}",
                        f"use one of: {', '.join(fact.units)}",
                        "unit-unknown",
                    )
                )
                continue
            if not ok:
                out.append(
                    site_problem(
                        site,
                        site.at(raw, op),
                        f"`{cut.unit}` is not a unit of {cond.fact} ({fact.meaning})",
                        f"use one of: {', '.join(fact.units)}",
                        "unit-dimension",
                    )
                )
                continue
            try:
                canonical = convert(cut.value, cut.unit, fact.unit, fact)
            except UnitError:
                continue  # no conversion known: the unit is compared as it is
            pair.append((cut.value, cut.unit, canonical))
            if fact.plausible:
                lo, hi = fact.plausible
                if not lo <= canonical <= hi:
                    shown = (
                        f"{cut.value:g} {cut.unit}"
                        if cut.unit == fact.unit
                        else f"{cut.value:g} {cut.unit} ({canonical:.3g} {fact.unit})"
                    )
                    out.append(
                        site_problem(
                            site,
                            site.at(raw, op),
                            f"{shown} is outside the plausible range of "
                            f"{cond.fact} ({lo:g} to {hi:g} {fact.unit})",
                            "check the number and its unit",
                            "implausible",
                        )
                    )
        values = [c for *_, c in pair]
        if len(values) > 1 and min(values) > 0 and max(values) / min(values) > _PAIR:
            said = ", ".join(f"{v:g} {u} is {c:.3g} {fact.unit}" for v, u, c in pair)
            out.append(
                site_problem(
                    site,
                    site.at(raw, op),
                    f"the cut points of `{op}` disagree: {said}",
                    "give each unit the same cut point, converted (spec 0.2)",
                    "unit-pair",
                )
            )
    return out


def _check_text(
    site: RuleSite, cond: rf.FactComparison, raw: Any, cat: Catalogue
) -> list[Problem]:
    text = cat.texts[cond.fact]
    out = []
    for op in _OPS:
        if getattr(cond, op) is not None:
            out.append(
                site_problem(
                    site,
                    site.at(raw, op),
                    f"{cond.fact} is a text fact ({', '.join(text.values)}); it "
                    "cannot be compared with a number",
                    f"write `equals: {text.values[0]}` or `one_of: [...]`",
                    "not-a-number",
                )
            )
    wanted = [cond.equals] if cond.equals is not None else list(cond.one_of or [])
    allowed = {v.casefold() for v in text.values}
    for value in wanted:
        if value.casefold() not in allowed:
            key = "equals" if cond.equals is not None else "one_of"
            out.append(
                site_problem(
                    site,
                    site.at(raw, key),
                    f"`{value}` is not a value of {cond.fact}",
                    f"use one of: {', '.join(text.values)}",
                    "text-value",
                )
            )
    return out


def check_when(
    site: RuleSite,
    cat: Catalogue,
    models: set[str],
    produced: set[str],
    points: set[str],
    root: tuple[rf.Condition, Any] | None = None,
) -> list[Problem]:
    out: list[Problem] = []
    cond0, raw0 = root or (site.rule.when, site.raw["when"])
    for cond, raw in walk(cond0, raw0):
        if isinstance(cond, rf.PointsTest) and cond.points not in points:
            out.append(
                site_problem(
                    site,
                    site.at(raw, "points"),
                    f"unknown point score `{cond.points}`; defined: "
                    f"{', '.join(sorted(points)) or 'none'}",
                    suggest(cond.points, sorted(points)),
                    "unknown-points",
                )
            )
        if isinstance(cond, rf.FactComparison):
            out += check_comparison(site, cond, raw, cat)
        for kind, key, known, noun in (
            (rf.ConditionTest, "condition", cat.conditions, "condition"),
            (rf.MedicationTest, "taking", cat.medications, "medication"),
            (rf.AllergyTest, "allergic_to", cat.medications, "medication"),
        ):
            name = getattr(cond, key) if isinstance(cond, kind) else None
            if name is not None and name not in known:
                out.append(
                    site_problem(
                        site,
                        site.at(raw, key),
                        f"unknown {noun} `{name}`",
                        suggest(name, list(known)),
                        f"unknown-{noun}",
                    )
                )
        if isinstance(cond, rf.ScoreTest) and cond.score not in models:
            out.append(
                site_problem(
                    site,
                    site.at(raw, "score"),
                    f"unknown score `{cond.score}`; loaded models: "
                    f"{', '.join(sorted(models)) or 'none'}",
                    suggest(cond.score, sorted(models)),
                    "unknown-score",
                )
            )
        elif isinstance(cond, rf.FindingTest) and cond.finding not in produced:
            out.append(
                site_problem(
                    site,
                    site.at(raw, "finding"),
                    f"finding `{cond.finding}` is tested but no rule asserts it",
                    suggest(cond.finding, sorted(produced)),
                    "finding-never-asserted",
                )
            )
        for op in _OPS:
            if isinstance(cond, rf.ScoreTest) and getattr(cond, op) is not None:
                v = float(getattr(cond, op))
                if not 0.0 <= v <= 1.0:
                    out.append(
                        site_problem(
                            site,
                            site.at(raw, op),
                            f"a score is a probability; {v:g} is outside 0 to 1",
                            "write a number between 0 and 1",
                            "implausible",
                        )
                    )
    return out
