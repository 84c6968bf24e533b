"""The facts of one patient case, as read from a FHIR bundle or a case file.

A :class:`Case` is what every input reader produces and what the evaluator
consumes. It keeps every reading with its unit and time (not only the latest
value), so rules can ask for the latest value, a mean over a window or the
number of results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator

__all__ = ["Case", "CodedEntry", "Reading", "Sex", "aware", "first_few", "last_entry"]

Sex = Literal["female", "male", "other", "unknown"]


class Reading(BaseModel):
    """One recorded value of a fact.

    Attributes:
        value: The number (quantities) or text (coded facts) as recorded.
        unit: The UCUM unit as it arrived (normalised spelling), or None.
        time: When it was observed (effective time), or None if not recorded.
        source: Where it came from: ``Observation/<id>`` or ``case file``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A NaN or infinite value would compare false with every cut point and
    # hide conclusions silently: refused when the Reading is made.
    value: FiniteFloat | str | bool
    unit: str | None = None
    time: datetime | None = None
    source: str = ""


class CodedEntry(BaseModel):
    """A condition, medication or allergy on the record.

    Attributes:
        concept: The catalogue name it maps to (``hypertension``), or None if
            the code is not one the knowledge base knows.
        system: Code system URI (SNOMED CT, RxNorm) or ``local`` for a name.
        code: The code, or the name typed in a case file.
        display: Human-readable text.
        onset: When it started, if known.
        end: When it ended (abatement, medication stopped), if known.
        active: Whether the record says it is current.
        source: ``Condition/<id>`` and the like.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    concept: str | None
    system: str
    code: str
    display: str = ""
    onset: datetime | None = None
    end: datetime | None = None
    active: bool = True
    source: str = ""


class Case(BaseModel):
    """Everything the engine knows about one patient for one evaluation.

    Attributes:
        case_id: A stable id of the case (FHIR Patient.id or the file name).
            Never logged above DEBUG.
        source: The input file or label, for messages.
        birth_date: Date of birth, if known (its first day when the record
            gives only the month or the year).
        birth_date_latest: The last day the birth date can be when the record
            gives only its month or year (FHIR allows ``1959``); None when
            the day is known. An age that differs across that span is
            counted from ``birth_date``, and conclusions resting on it are
            named as uncertain.
        age: Age in whole years when given directly (case files); otherwise
            computed from ``birth_date`` at the evaluation time.
        sex: Administrative sex as the rules use it.
        readings: Fact name to its readings, put oldest first (undated
            readings count as current, after every dated one; a time without
            an offset is taken as UTC).
        conditions: Conditions on the record.
        medications: Medications on the record.
        allergies: Allergies and intolerances on the record.
        last_recorded: The latest time of any dated entry (for ``as_of``
            defaults on historic records).
        notes: Things the reader skipped or doubted (unknown units, codes),
            shown to the user as data-quality notes.
        problems: Facts the reader left out whole because one of their
            values could not be read (a unit that is not UCUM): rules that
            need them cannot be determined, and an assessment is partial.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    source: str = ""
    birth_date: date | None = None
    birth_date_latest: date | None = None
    age: int | None = Field(default=None, ge=0)
    sex: Sex | None = None
    deceased: datetime | None = None
    readings: dict[str, tuple[Reading, ...]] = Field(default_factory=dict)
    conditions: tuple[CodedEntry, ...] = ()
    medications: tuple[CodedEntry, ...] = ()
    allergies: tuple[CodedEntry, ...] = ()
    last_recorded: datetime | None = None
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @field_validator("deceased", "last_recorded")
    @classmethod
    def _utc_unless_said(cls, when: datetime | None) -> datetime | None:
        # A time without an offset is UTC, as everywhere else.
        return None if when is None else aware(when)

    @field_validator("readings")
    @classmethod
    def _oldest_first(
        cls, readings: dict[str, tuple[Reading, ...]]
    ) -> dict[str, tuple[Reading, ...]]:
        # The evaluator reads the last reading as the latest, and skips the
        # readings after the evaluation time by looking at the last dated one.
        return {
            name: tuple(sorted(values, key=_when)) for name, values in readings.items()
        }

    def last_time(self) -> datetime | None:
        """The time ``--as-of last`` means: the last entry, while alive.

        For a patient who died inside the record, a second before the death.
        A case built without ``last_recorded`` (by an application) takes the
        latest dated reading or entry; as the readers do, a date later than
        now is not taken (a data error).
        """
        last = self.last_recorded
        if last is None:
            entries = (*self.conditions, *self.medications, *self.allergies)
            last = last_entry(self.readings, entries, datetime.now(UTC))[0]
        if self.deceased is not None and (last is None or last >= self.deceased):
            return self.deceased - timedelta(seconds=1)
        return last

    def without_conditions(self) -> Case:
        """Return a copy with the recorded conditions left out.

        Used to compare the engine's conclusions with the record's own
        problem list without letting the list feed the rules.
        """
        return self.model_copy(update={"conditions": ()})


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _when(reading: Reading) -> tuple[bool, datetime]:
    t = reading.time
    if t is None:
        return True, _EARLIEST
    return False, aware(t)


def aware(t: datetime) -> datetime:
    """The time as given, or as UTC when it has no offset."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def evaluation_time(when: datetime | date) -> datetime:
    """An evaluation time: a datetime as given (UTC when it has no offset); a
    date alone is the end of that day, 23:59:59 UTC, so that the day's own
    readings count."""
    if isinstance(when, datetime):
        return aware(when)
    return datetime.combine(when, time(23, 59, 59), tzinfo=UTC)


def first_few(names: Sequence[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: a list named in a message without flooding it."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def last_entry(
    readings: Mapping[str, Sequence[Reading]],
    entries: Iterable[CodedEntry],
    now: datetime,
) -> tuple[datetime | None, str | None]:
    """The latest date of a record's readings and entries (onset, end) that is
    not later than ``now``, and a note naming the ones dated later, if any.

    A date in the future is a data error (a typo, a test record). Such an entry
    is kept, but ``as_of="last"`` is found without it (an evaluation in 2099
    would age the patient by decades), and no evaluation before its date uses
    it. The note names the entries (``Observation/x``, ``case file line 7``),
    not their dates, which may identify the patient.
    """
    dated = [(r.time, r.source) for values in readings.values() for r in values]
    dated += [(t, e.source) for e in entries for t in (e.onset, e.end)]
    last: datetime | None = None
    later: dict[str, None] = {}
    for t, source in dated:
        if t is None:
            continue
        t = aware(t)
        if t > now:
            later[source] = None
        elif last is None or t > last:
            last = t
    if not later:
        return last, None
    names = list(later)
    one = len(names) == 1
    return last, (
        f"{len(names)} entr{'y is' if one else 'ies are'} dated later than the time "
        f"the record was read ({first_few(names)}; a data error?): the "
        f"last entry (as of last) is found without {'it' if one else 'them'}, and "
        f"no evaluation before {'its' if one else 'their'} date uses "
        f"{'it' if one else 'them'}"
    )
