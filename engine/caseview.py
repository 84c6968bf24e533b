"""A case seen at its evaluation time: readings in force, age, problem list.

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

from .catalogue import Catalogue
from .facts import Case, CodedEntry, Reading, aware
from .nearest import suggest
from .values import is_count

__all__ = ["CaseView", "parse_duration"]

log = logging.getLogger(__name__)

_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(day|days|d|week|weeks|w|month|months|mo|year|years|y)\s*$"
)
# An evaluation time up to a day ahead is today somewhere on Earth.
_TODAY = timedelta(days=1)
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
        self.as_of = aware(self.as_of)
        if self.as_of > datetime.now(UTC) + _TODAY:
            # Most likely a typed date gone wrong (2062 for 2026): ages and
            # look-back windows are counted to it, so results go stale.
            self.notes.append(
                f"the evaluation time {self.as_of.date().isoformat()} is in the "
                "future: ages and look-back windows are counted to it"
            )
        later = 0
        quantities, texts = self.catalogue.quantities, self.catalogue.texts
        for name, values in self.case.readings.items():
            if name not in quantities and name not in texts:
                self._unknown_fact(name)
                continue
            if name in texts:
                values = self._known_words(name, values)
            elif name in quantities and not all(
                isinstance(r.value, float) for r in values
            ):
                # A Case built by an application may hold anything; the
                # readers give numbers only.
                self.notes.append(f"{name}: readings that are not numbers not used")
            elif name in quantities and not is_count(quantities[name].unit):
                bare = sum(1 for r in values if not r.unit)
                if bare:  # the readers never give one; an application may
                    self.notes.append(
                        f"{name}: {bare} reading{'s' if bare > 1 else ''} without "
                        f"a unit read in {quantities[name].unit}, the catalogue's unit"
                    )
            # Oldest first (Case.readings), undated last: when the latest
            # dated reading is not after as_of, none is.
            last = next((r.time for r in reversed(values) if r.time), None)
            if last is None or aware(last) <= self.as_of:
                kept = list(values)
            else:
                kept = [
                    r for r in values if r.time is None or aware(r.time) <= self.as_of
                ]
                later += len(values) - len(kept)
            if kept:
                self.readings[name] = kept
        if later:
            self.notes.append(
                f"{later} reading{'s' if later > 1 else ''} dated after the "
                "evaluation time not used"
            )
        if self.case.sex is not None:
            self.readings["sex"] = [
                Reading(value=self.case.sex, time=self.as_of, source="Patient")
            ]
        age = self.age()
        if age is not None:
            self.readings["age"] = [
                Reading(value=float(age), unit="a", time=self.as_of, source="Patient")
            ]

    def _known_words(self, name: str, values: Sequence[Reading]) -> tuple[Reading, ...]:
        """A text fact's readings in the catalogue's spelling (``Never`` is
        ``never``); a word it does not know is left out and noted. The readers
        give the catalogue's words; an application may not."""
        words = {w.casefold(): w for w in self.catalogue.texts[name].values}
        kept = []
        for r in values:
            word = (
                words.get(str(r.value).casefold()) if isinstance(r.value, str) else None
            )
            if word is None:
                self.notes.append(
                    f"{name}: `{r.value}` is not one of {', '.join(words.values())}; "
                    "not used"
                )
            elif word == r.value:
                kept.append(r)
            else:
                kept.append(r.model_copy(update={"value": word}))
        return tuple(kept)

    def _unknown_fact(self, name: str) -> None:
        hint = suggest(name, [*self.catalogue.quantities, *self.catalogue.texts])
        self.notes.append(
            f"readings of `{name}` not used: not a fact the knowledge base knows"
            + (f"; {hint}" if hint else "")
        )

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

    def finding(self, name: str) -> bool:
        """Whether a finding of the rules holds, for a calculation or a
        point-score item; one that cannot be determined reads as absent, as
        a measurement that was not made does in those.

        Findings are decided after calculations and leaves, so the first
        pass reads every finding as absent and records the read; when one
        it read holds, the evaluation runs again with the findings known
        (:func:`engine.evaluation.evaluate_case`).
        """
        self.reads_findings.add(name)
        return self.findings.get(name) is True

    def time_of(self, reading: Reading) -> datetime:
        """A reading's time; undated readings count as current."""
        return aware(reading.time) if reading.time else self.as_of

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
        onset = aware(entry.onset) if entry.onset else None
        end = aware(entry.end) if entry.end else None
        if onset and onset > self.as_of:
            return False
        if end is not None:
            if end <= self.as_of:
                return False
        elif not entry.active:
            return False
        if end is None and onset is not None and self._outlasted(entry, onset):
            return False
        if since is not None:
            return onset is not None and onset <= self.as_of - since
        return True

    def _outlasted(self, entry: CodedEntry, onset: datetime) -> bool:
        """An open entry older than its condition can last: a record never closed."""
        known = self.catalogue.conditions.get(entry.concept or "")
        if known is None or known.lasts_at_most is None:
            return False
        if onset >= self.as_of - parse_duration(known.lasts_at_most):
            return False
        note = (
            f"{known.name} ({entry.source}) began more than "
            f"{known.lasts_at_most} before the evaluation and has no end: "
            "not taken as current"
        )
        if note not in self.notes:
            self.notes.append(note)
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

    def allergy_named(self, name: str) -> str:
        """How the record names its active allergies to a concept: ``apixaban``
        for the class ``doac``, or the concept itself."""
        named = [
            e.display or e.code
            for e in self.case.allergies
            if e.concept == name and self._entry_active(e, None)
        ]
        return ", ".join(dict.fromkeys(named)) or name

    def forget_selections(self) -> None:
        """Drop what was worked out from the readings (they have changed)."""
        self._selected.clear()
        self.cache.clear()

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
