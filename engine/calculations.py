"""Calculated facts: eGFR, BMI and the 10-year ASCVD risk, added to a case view.

Each calculation is a named formula (engine.formulas) with the coefficients
its rule file states; its result becomes readings of a catalogue fact, which
rules then read like any recorded value. An input that is missing is named in
``view.missing_inputs``, so that a rule which cannot be determined says what
it lacks (spec 0.4).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .caseview import CaseView, parse_duration
from .errors import UnitError
from .facts import Reading
from .formulas import FORMULAS, PooledCohortInputs, bmi_imperial, pooled_cohort_2013
from .ruleformat import Calculation
from .units import convert

__all__ = ["run_calculations"]


def _why(err: Exception) -> str:
    if isinstance(err, OverflowError):
        # An input far outside any plausible range (a typing slip, 1e300).
        return "an input is too far out of range for the formula"
    return str(err)


def run_calculations(view: CaseView, calculations: list[Calculation]) -> None:
    """Add the readings of calculated facts (eGFR from each creatinine)."""
    for calc in calculations:
        if calc.formula == "ckd_epi_2021_creatinine":
            _ckd_epi(view, calc)
        elif calc.formula == "bmi_from_weight_height":
            _bmi(view, calc)
        elif calc.formula == "pooled_cohort_2013":
            _pooled_cohort(view, calc)
        view.forget_selections()  # a calculation adds readings


def _ckd_epi(view: CaseView, calc: Calculation) -> None:
    creatinine = view.readings.get("creatinine", [])
    sex = view.case.sex
    if sex not in ("female", "male"):
        if creatinine:
            # Spec 0.4: name what is missing, not only the fact it feeds.
            view.missing_inputs.setdefault(calc.fact, []).append("sex")
            view.notes.append(
                f"{calc.fact} not calculated: the equation needs sex female or male"
            )
        return
    fact = view.catalogue.quantities["creatinine"]
    formula = FORMULAS[calc.formula]
    min_age = float(calc.parameters.get("min_age", 18))
    derived = []
    for reading in creatinine:
        age = view.age_at(reading.time)
        if age is None or age < min_age:
            view.missing_inputs.setdefault(calc.fact, []).append(
                "age" if age is None else f"age >= {min_age:g} (not applicable)"
            )
            continue
        if not isinstance(reading.value, float):
            continue
        try:
            scr = convert(reading.value, reading.unit or "mg/dL", "mg/dL", fact)
            value = formula(scr, float(age), sex, calc.parameters)
        except (UnitError, ValueError, OverflowError) as err:
            view.notes.append(f"{calc.id}: skipped {reading.source}: {_why(err)}")
            continue
        derived.append(
            Reading(
                value=value,
                unit=view.catalogue.quantities[calc.fact].unit,
                time=reading.time,
                source=f"calculated ({calc.id}) from {reading.source}",
            )
        )
    _add_derived(view, calc.fact, derived)


def _add_derived(view: CaseView, fact: str, derived: list[Reading]) -> None:
    """Merge calculated readings with the recorded ones, in time order."""
    if derived:
        merged = sorted(
            [*view.readings.get(fact, []), *derived],
            key=lambda r: view.time_of(r).timestamp(),
        )
        view.readings[fact] = merged


def _bmi(view: CaseView, calc: Calculation) -> None:
    """BMI from each weight on a day with no recorded BMI.

    A recorded BMI is used as it is; on other days the weight is paired
    with the height reading nearest to it in time, at most
    ``height_within`` away (an adult's height barely changes).
    """
    p = calc.parameters
    weights = [
        r for r in view.readings.get("body_weight", []) if isinstance(r.value, float)
    ]
    heights = [
        r for r in view.readings.get("body_height", []) if isinstance(r.value, float)
    ]
    recorded = view.readings.get(calc.fact, [])
    if not weights or not heights:
        if not recorded:
            # Spec 0.4: name what is missing, not only the fact it feeds.
            view.missing_inputs.setdefault(calc.fact, []).extend(
                name
                for name, found in (
                    ("body_weight", weights),
                    ("body_height", heights),
                )
                if not found
            )
        return
    days = {view.time_of(r).date() for r in recorded}
    within = parse_duration(str(p["height_within"]))
    formula = FORMULAS[calc.formula]
    derived = []
    for weight in weights:
        when = view.time_of(weight)
        if when.date() in days:
            continue
        gap, nearest = min(
            (abs(view.time_of(h) - when), i) for i, h in enumerate(heights)
        )
        height = heights[nearest]
        if gap > within:
            view.missing_inputs.setdefault(calc.fact, []).append(
                f"body_height within {p['height_within']} of the weight"
            )
            continue
        assert isinstance(weight.value, float) and isinstance(height.value, float)
        try:
            if (weight.unit, height.unit) == _IMPERIAL and p["height_exponent"] == 2:
                value = bmi_imperial(weight.value, height.value)
                derived.append(_bmi_reading(view, calc, weight, height, value))
                continue
            kg = convert(
                weight.value,
                weight.unit or "kg",
                str(p["weight_unit"]),
                view.catalogue.quantities["body_weight"],
            )
            metres = convert(
                height.value,
                height.unit or "cm",
                str(p["height_unit"]),
                view.catalogue.quantities["body_height"],
            )
            value = formula(kg, metres, p)
        except (UnitError, ValueError, OverflowError) as err:
            view.notes.append(f"{calc.id}: skipped {weight.source}: {_why(err)}")
            continue
        derived.append(_bmi_reading(view, calc, weight, height, value))
    _add_derived(view, calc.fact, derived)


# Pounds and inches: spec 0.1's 703 x lb / in2, not the exact conversion.
_IMPERIAL = ("[lb_av]", "[in_i]")


def _bmi_reading(
    view: CaseView, calc: Calculation, weight: Reading, height: Reading, value: float
) -> Reading:
    return Reading(
        value=value,
        unit=view.catalogue.quantities[calc.fact].unit,
        time=weight.time,
        source=f"calculated ({calc.id}) from {weight.source} and {height.source}",
    )


def _smoker(
    view: CaseView, p: dict[str, Any], within: timedelta
) -> tuple[bool | None, str]:
    """Smoking now (None: not known), and the record that says so.

    The latest smoking status of the window decides: a smoker's status, a
    non-smoker's, or neither (``unknown``), which leaves it not known. With no
    status in the window, a smoker on the problem list is a smoker, and
    otherwise it is not known (spec 0.4: smoking changes the risk). Without
    ``smoking_status_fact`` the problem list alone decides, absent meaning
    no. A status is dated at each visit; a problem-list entry can stay active
    for years after the patient stopped.
    """
    status = p.get("smoking_status_fact")
    on_list = view.has_condition(str(p["smoker_condition"]))
    if status is None:
        return on_list, ""
    recorded = [r for r in view.select(str(status), within) if isinstance(r.value, str)]
    if recorded:
        latest = recorded[-1]
        said = f"{status} {latest.value} ({latest.source})"
        if latest.value in p.get("smoker_statuses", ["current"]):
            return True, said
        if latest.value in p.get("non_smoker_statuses", ["former", "never"]):
            return False, said
        return None, said
    return (True, f"condition {p['smoker_condition']}") if on_list else (None, "")


def _pooled_cohort(view: CaseView, calc: Calculation) -> None:
    """The 10-year ASCVD risk now, from the latest inputs in the window.

    Not calculated (the missing inputs named, spec 0.4) outside the age
    range, with the excluding condition (clinical ASCVD), or when an input
    is missing. Smoking: see :func:`_smoker`; diabetes from the problem list
    or, once the rules have decided it, the finding named by
    ``diabetes_finding`` (a diabetes the laboratory results confirm).
    """
    p = calc.parameters
    missing: list[str] = []
    age = view.age()
    low, high = float(p["min_age"]), float(p["max_age"])
    if age is None:
        missing.append("age")
    elif not low <= age <= high:
        missing.append(f"age {low:g} to {high:g} (not applicable)")
    excluded = str(p["not_for_condition"])
    if view.has_condition(excluded):
        missing.append(f"no {excluded} (not applicable)")
    sex = view.case.sex
    if sex not in ("female", "male"):
        missing.append("sex")
    races = [r for r in view.readings.get("race", []) if isinstance(r.value, str)]
    groups: dict[str, str] = dict(p["equation_for_race"])
    race = groups.get(str(races[-1].value)) if races else None
    if race is None:
        missing.append("race")
    within = parse_duration(str(p["inputs_within"]))
    latest: dict[str, Reading] = {}
    for name in ("total_cholesterol", "hdl_cholesterol", "systolic_bp"):
        found = [r for r in view.select(name, within) if isinstance(r.value, float)]
        if found:
            latest[name] = found[-1]
        else:
            missing.append(name)
    smoker, smoking_source = _smoker(view, p, within)
    if smoker is None:
        missing.append(str(p["smoking_status_fact"]))
    if missing or age is None or race is None or sex is None or smoker is None:
        view.missing_inputs.setdefault(calc.fact, []).extend(missing)
        return

    diabetes = view.has_condition(str(p["diabetes_condition"]))
    finding = p.get("diabetes_finding")
    by_finding = False
    if finding is not None and not diabetes:
        # Known only after the rules: the evaluation runs this again.
        diabetes = by_finding = view.finding(str(finding))
    units = {
        "total_cholesterol": "mg/dL",
        "hdl_cholesterol": "mg/dL",
        "systolic_bp": "mm[Hg]",
    }
    drugs = p["treated_when_taking"]
    treated_by = [drugs] if isinstance(drugs, str) else [str(d) for d in drugs]
    values: dict[str, float] = {}
    try:
        for name, reading in latest.items():
            assert isinstance(reading.value, float)
            values[name] = convert(
                reading.value,
                reading.unit or units[name],
                units[name],
                view.catalogue.quantities[name],
            )
        inputs = PooledCohortInputs(
            age=float(age),
            sex=sex,
            race=race,
            total_cholesterol=values["total_cholesterol"],
            hdl_cholesterol=values["hdl_cholesterol"],
            systolic_bp=values["systolic_bp"],
            treated=any(view.taking(m) for m in treated_by),
            smoker=smoker,
            diabetes=diabetes,
        )
        value = pooled_cohort_2013(inputs, p)
    except (UnitError, ValueError, OverflowError) as err:
        view.notes.append(f"{calc.id}: not calculated: {_why(err)}")
        return
    # Every input as the equation took it, so that the risk can be checked.
    parts = [
        f"{name} {values[name]:g} {units[name]}"
        + (f" ({reading.source})" if reading.source else "")
        for name, reading in latest.items()
    ]
    parts.append("treated" if inputs.treated else "untreated")
    parts.append(f"{inputs.race} {inputs.sex} equation")
    parts.append(smoking_source or ("smoker" if smoker else "non-smoker"))
    parts.append(
        f"diabetes (finding {finding})"
        if by_finding
        else "diabetes"
        if diabetes
        else "no diabetes"
    )
    sources = ", ".join(parts)
    _add_derived(
        view,
        calc.fact,
        [
            Reading(
                value=value,
                unit=view.catalogue.quantities[calc.fact].unit,
                time=view.as_of,
                source=f"calculated ({calc.id}) from {sources}",
            )
        ],
    )
