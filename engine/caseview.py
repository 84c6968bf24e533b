"""A case seen at its evaluation time: readings in force, age, calculated facts.

Readings after ``as_of`` do not exist for the evaluation, so a historic record
evaluates the same way whenever it is run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from .catalogue import Catalogue
from .errors import UnitError
from .facts import Case, CodedEntry, Reading
from .formulas import FORMULAS, PooledCohortInputs, pooled_cohort_2013
from .ruleformat import Calculation
from .units import convert

__all__ = ["CaseView", "parse_duration"]

log = logging.getLogger(__name__)

_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(day|days|d|week|weeks|w|month|months|mo|year|years|y)\s*$"
)
_DAYS = {"d": 1.0, "w": 7.0, "mo": 30.4375, "y": 365.25}


@lru_cache(maxsize=1024)
def parse_duration(text: str) -> timedelta:
    """Parse ``12 months``, ``90 days``, ``2 years`` into a timedelta.

    A month is 30.4375 days and a year 365.25 days (their mean lengths).

    Raises:
        ValueError: If the text is not a number and one of day(s), week(s),
            month(s), year(s).
    """
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError(
            f"`{text}` is not a duration; write a number and days, weeks, "
            "months or years, e.g. `12 months`"
        )
    unit = match.group(2)
    key = (
        "mo"
        if unit.startswith("mo")
        else "y"
        if unit.startswith("y")
        else "w"
        if unit.startswith("w")
        else "d"
    )
    return timedelta(days=float(match.group(1)) * _DAYS[key])


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _age_on(birth: date, when: date) -> int:
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


@dataclass
class CaseView:
    """One case at one evaluation time."""

    case: Case
    as_of: datetime
    catalogue: Catalogue
    readings: dict[str, list[Reading]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing_inputs: dict[str, list[str]] = field(default_factory=dict)
    _selected: dict[tuple[str, timedelta], list[Reading]] = field(
        default_factory=dict, repr=False
    )
    # Parts of conditions that many rules share (a fact's numbers in a window,
    # a mean), worked out once per case; emptied when a calculation adds
    # readings.
    cache: dict[tuple[object, ...], object] = field(default_factory=dict, repr=False)
    # Findings the rules decided, for calculations that read one (empty until
    # the rules have run), and the findings a calculation would have read.
    findings: dict[str, bool | None] = field(default_factory=dict)
    reads_findings: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.as_of = _aware(self.as_of)
        for name, values in self.case.readings.items():
            kept = [r for r in values if r.time is None or _aware(r.time) <= self.as_of]
            if kept:
                self.readings[name] = kept
        if self.case.sex is not None:
            self.readings["sex"] = [
                Reading(value=self.case.sex, time=self.as_of, source="Patient")
            ]
        age = self.age()
        if age is not None:
            self.readings["age"] = [
                Reading(value=float(age), unit="a", time=self.as_of, source="Patient")
            ]

    def age(self) -> int | None:
        """Age in whole years at the evaluation time."""
        if self.case.age is not None:
            return self.case.age
        if self.case.birth_date is None:
            return None
        return _age_on(self.case.birth_date, self.as_of.date())

    def age_at(self, when: datetime | None) -> int | None:
        """Age in whole years at a given time (the reading's, for formulas)."""
        if self.case.birth_date is None:
            return self.case.age
        return _age_on(self.case.birth_date, (when or self.as_of).date())

    def time_of(self, reading: Reading) -> datetime:
        """A reading's time; undated readings count as current."""
        return _aware(reading.time) if reading.time else self.as_of

    def select(self, fact: str, within: timedelta | None) -> list[Reading]:
        """Readings of a fact in force at ``as_of``, optionally only recent ones.

        Many conditions ask for the same fact and window: the answer is kept
        (the readings do not change once the calculations have run).
        """
        values = self.readings.get(fact, [])
        if within is None:
            return values
        key = (fact, within)
        found = self._selected.get(key)
        if found is None:
            start = self.as_of - within
            found = [r for r in values if self.time_of(r) >= start]
            self._selected[key] = found
        return found

    def numbers(self, fact: str, within: timedelta | None) -> list[Reading]:
        """The numeric readings of :meth:`select` (a text result is left out)."""
        key = ("numbers", fact, within)
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = [
                r for r in self.select(fact, within) if isinstance(r.value, float)
            ]
        return found  # type: ignore[return-value]

    def _entry_active(self, entry: CodedEntry, since: timedelta | None) -> bool:
        onset = _aware(entry.onset) if entry.onset else None
        end = _aware(entry.end) if entry.end else None
        if onset and onset > self.as_of:
            return False
        if end is not None:
            if end <= self.as_of:
                return False
        elif not entry.active:
            return False
        if since is not None:
            return onset is not None and onset <= self.as_of - since
        return True

    def has_condition(self, name: str, since: timedelta | None = None) -> bool:
        """Whether the problem list holds the condition at ``as_of``."""
        if since is None:
            return name in self._active("conditions", self.case.conditions)
        return any(
            self._is_a(c.concept, name) and self._entry_active(c, since)
            for c in self.case.conditions
        )

    def _is_a(self, concept: str | None, name: str) -> bool:
        """A concept is itself and what it implies (type 2 diabetes is diabetes)."""
        if concept is None:
            return False
        if concept == name:
            return True
        known = self.catalogue.conditions.get(concept)
        return known is not None and name in known.implies

    def condition_entries(self, name: str) -> list[CodedEntry]:
        """The problem-list entries of a condition concept."""
        return [c for c in self.case.conditions if c.concept == name]

    def taking(self, name: str) -> bool:
        """Whether a medication of the concept is active at ``as_of``."""
        return name in self._active("medications", self.case.medications)

    def allergic_to(self, name: str) -> bool:
        """Whether an active allergy to the concept is recorded."""
        return name in self._active("allergies", self.case.allergies)

    def _active(self, kind: str, entries: Sequence[CodedEntry]) -> set[str]:
        # A record can list hundreds of prescriptions, and many rules ask
        # about a drug: which concepts are active is worked out once.
        key = ("active", kind)
        cached = self.cache.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        found: set[str] = set()
        for e in entries:
            if e.concept is not None and self._entry_active(e, None):
                found.add(e.concept)
                if kind == "conditions":  # type 2 diabetes is diabetes
                    known = self.catalogue.conditions.get(e.concept)
                    found.update(known.implies if known else ())
        self.cache[key] = found
        return found

    def run_calculations(self, calculations: list[Calculation]) -> None:
        """Add the readings of calculated facts (eGFR from each creatinine)."""
        for calc in calculations:
            if calc.formula == "ckd_epi_2021_creatinine":
                self._ckd_epi(calc)
            elif calc.formula == "bmi_from_weight_height":
                self._bmi(calc)
            elif calc.formula == "pooled_cohort_2013":
                self._pooled_cohort(calc)
            self._selected.clear()  # a calculation adds readings
            self.cache.clear()

    def _ckd_epi(self, calc: Calculation) -> None:
        creatinine = self.readings.get("creatinine", [])
        sex = self.case.sex
        if sex not in ("female", "male"):
            if creatinine:
                # Spec 0.4: name what is missing, not only the fact it feeds.
                self.missing_inputs.setdefault(calc.fact, []).append("sex")
                self.notes.append(
                    f"{calc.fact} not calculated: the equation needs sex female or male"
                )
            return
        fact = self.catalogue.quantities["creatinine"]
        formula = FORMULAS[calc.formula]
        min_age = float(calc.parameters.get("min_age", 18))
        derived = []
        for reading in creatinine:
            age = self.age_at(reading.time)
            if age is None or age < min_age:
                self.missing_inputs.setdefault(calc.fact, []).append(
                    "age" if age is None else f"age >= {min_age:g} (not applicable)"
                )
                continue
            if not isinstance(reading.value, float):
                continue
            try:
                scr = convert(reading.value, reading.unit or "mg/dL", "mg/dL", fact)
                value = formula(scr, float(age), sex, calc.parameters)
            except (UnitError, ValueError) as err:
                self.notes.append(f"{calc.id}: skipped {reading.source}: {err}")
                continue
            derived.append(
                Reading(
                    value=value,
                    unit=self.catalogue.quantities[calc.fact].unit,
                    time=reading.time,
                    source=f"calculated ({calc.id}) from {reading.source}",
                )
            )
        if derived:
            reported = self.readings.get(calc.fact, [])
            merged = sorted(
                [*reported, *derived], key=lambda r: self.time_of(r).timestamp()
            )
            self.readings[calc.fact] = merged

    def _add_derived(self, fact: str, derived: list[Reading]) -> None:
        """Merge calculated readings with the recorded ones, in time order."""
        if derived:
            merged = sorted(
                [*self.readings.get(fact, []), *derived],
                key=lambda r: self.time_of(r).timestamp(),
            )
            self.readings[fact] = merged

    def _bmi(self, calc: Calculation) -> None:
        """BMI from each weight on a day with no recorded BMI.

        A recorded BMI is used as it is; on other days the weight is paired
        with the height reading nearest to it in time, at most
        ``height_within`` away (an adult's height barely changes).
        """
        p = calc.parameters
        weights = [
            r
            for r in self.readings.get("body_weight", [])
            if isinstance(r.value, float)
        ]
        heights = [
            r
            for r in self.readings.get("body_height", [])
            if isinstance(r.value, float)
        ]
        recorded = self.readings.get(calc.fact, [])
        if not weights or not heights:
            if not recorded:
                # Spec 0.4: name what is missing, not only the fact it feeds.
                self.missing_inputs.setdefault(calc.fact, []).extend(
                    name
                    for name, found in (
                        ("body_weight", weights),
                        ("body_height", heights),
                    )
                    if not found
                )
            return
        days = {self.time_of(r).date() for r in recorded}
        within = parse_duration(str(p["height_within"]))
        formula = FORMULAS[calc.formula]
        derived = []
        for weight in weights:
            when = self.time_of(weight)
            if when.date() in days:
                continue
            gap, nearest = min(
                (abs(self.time_of(h) - when), i) for i, h in enumerate(heights)
            )
            height = heights[nearest]
            if gap > within:
                self.missing_inputs.setdefault(calc.fact, []).append(
                    f"body_height within {p['height_within']} of the weight"
                )
                continue
            assert isinstance(weight.value, float) and isinstance(height.value, float)
            try:
                kg = convert(
                    weight.value,
                    weight.unit or "kg",
                    str(p["weight_unit"]),
                    self.catalogue.quantities["body_weight"],
                )
                metres = convert(
                    height.value,
                    height.unit or "cm",
                    str(p["height_unit"]),
                    self.catalogue.quantities["body_height"],
                )
                value = formula(kg, metres, p)
            except (UnitError, ValueError) as err:
                self.notes.append(f"{calc.id}: skipped {weight.source}: {err}")
                continue
            derived.append(
                Reading(
                    value=value,
                    unit=self.catalogue.quantities[calc.fact].unit,
                    time=weight.time,
                    source=f"calculated ({calc.id}) from {weight.source} and "
                    f"{height.source}",
                )
            )
        self._add_derived(calc.fact, derived)

    def _smoker(self, p: dict[str, Any]) -> tuple[bool, str]:
        """Smoking now, and the source that says so when it is a status.

        The latest smoking status decides; without one, the problem list. A
        status is dated and recorded at each visit; a problem-list entry often
        stays active for years after the patient stopped.
        """
        status = p.get("smoking_status_fact")
        if status is not None:
            readings = self.readings.get(str(status), [])
            recorded = [r for r in readings if isinstance(r.value, str)]
            if recorded:
                latest = recorded[-1]
                smoker = latest.value in p.get("smoker_statuses", ["current"])
                return smoker, f"{status} {latest.value} ({latest.source})"
        return self.has_condition(str(p["smoker_condition"])), ""

    def _pooled_cohort(self, calc: Calculation) -> None:
        """The 10-year ASCVD risk now, from the latest inputs in the window.

        Not calculated (the missing inputs named, spec 0.4) outside the age
        range, with the excluding condition (clinical ASCVD), or when an input
        is missing. Smoking comes from the problem list; diabetes from the
        problem list or, once the rules have decided it, the finding named by
        ``diabetes_finding`` (a diabetes the laboratory results confirm).
        """
        p = calc.parameters
        missing: list[str] = []
        age = self.age()
        low, high = float(p["min_age"]), float(p["max_age"])
        if age is None:
            missing.append("age")
        elif not low <= age <= high:
            missing.append(f"age {low:g} to {high:g} (not applicable)")
        excluded = str(p["not_for_condition"])
        if self.has_condition(excluded):
            missing.append(f"no {excluded} (not applicable)")
        sex = self.case.sex
        if sex not in ("female", "male"):
            missing.append("sex")
        races = [r for r in self.readings.get("race", []) if isinstance(r.value, str)]
        groups: dict[str, str] = dict(p["equation_for_race"])
        race = groups.get(str(races[-1].value)) if races else None
        if race is None:
            missing.append("race")
        within = parse_duration(str(p["inputs_within"]))
        latest: dict[str, Reading] = {}
        for name in ("total_cholesterol", "hdl_cholesterol", "systolic_bp"):
            found = [r for r in self.select(name, within) if isinstance(r.value, float)]
            if found:
                latest[name] = found[-1]
            else:
                missing.append(name)
        if missing or age is None or race is None or sex is None:
            self.missing_inputs.setdefault(calc.fact, []).extend(missing)
            return

        smoker, smoking_source = self._smoker(p)
        diabetes = self.has_condition(str(p["diabetes_condition"]))
        finding = p.get("diabetes_finding")
        by_finding = False
        if finding is not None and not diabetes:
            # Known only after the rules: the evaluation runs this again.
            self.reads_findings.add(str(finding))
            diabetes = by_finding = self.findings.get(str(finding)) is True
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
                    self.catalogue.quantities[name],
                )
            inputs = PooledCohortInputs(
                age=float(age),
                sex=sex,
                race=race,
                total_cholesterol=values["total_cholesterol"],
                hdl_cholesterol=values["hdl_cholesterol"],
                systolic_bp=values["systolic_bp"],
                treated=any(self.taking(m) for m in treated_by),
                smoker=smoker,
                diabetes=diabetes,
            )
            value = pooled_cohort_2013(inputs, p)
        except (UnitError, ValueError) as err:
            self.notes.append(f"{calc.id}: not calculated: {err}")
            return
        sources = ", ".join(r.source for r in latest.values() if r.source)
        if smoking_source:
            sources += f", {smoking_source}"
        if by_finding:
            sources += f", finding {finding}"
        self._add_derived(
            calc.fact,
            [
                Reading(
                    value=value,
                    unit=self.catalogue.quantities[calc.fact].unit,
                    time=self.as_of,
                    source=f"calculated ({calc.id}) from {sources}",
                )
            ],
        )
