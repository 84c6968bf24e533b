"""A case seen at its evaluation time: readings in force, age, calculated facts.

Readings after ``as_of`` do not exist for the evaluation, so a historic record
evaluates the same way whenever it is run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from .catalogue import Catalogue
from .errors import UnitError
from .facts import Case, CodedEntry, Reading
from .formulas import FORMULAS
from .ruleformat import Calculation
from .units import convert

__all__ = ["CaseView", "parse_duration"]

log = logging.getLogger(__name__)

_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(day|days|d|week|weeks|w|month|months|mo|year|years|y)\s*$"
)
_DAYS = {"d": 1.0, "w": 7.0, "mo": 30.4375, "y": 365.25}


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
        """Readings of a fact in force at ``as_of``, optionally only recent ones."""
        values = self.readings.get(fact, [])
        if within is None:
            return values
        start = self.as_of - within
        return [r for r in values if self.time_of(r) >= start]

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
        return any(
            c.concept == name and self._entry_active(c, since)
            for c in self.case.conditions
        )

    def condition_entries(self, name: str) -> list[CodedEntry]:
        """The problem-list entries of a condition concept."""
        return [c for c in self.case.conditions if c.concept == name]

    def taking(self, name: str) -> bool:
        """Whether a medication of the concept is active at ``as_of``."""
        return any(
            m.concept == name and self._entry_active(m, None)
            for m in self.case.medications
        )

    def allergic_to(self, name: str) -> bool:
        """Whether an active allergy to the concept is recorded."""
        return any(
            a.concept == name and self._entry_active(a, None)
            for a in self.case.allergies
        )

    def run_calculations(self, calculations: list[Calculation]) -> None:
        """Add the readings of calculated facts (eGFR from each creatinine)."""
        for calc in calculations:
            if calc.formula == "ckd_epi_2021_creatinine":
                self._ckd_epi(calc)

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
