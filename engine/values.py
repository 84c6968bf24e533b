"""Checks of recorded values shared by the FHIR and case-file readers.

Dates (FHIR date, dateTime and instant, partial dates included), units (is a
unit one its fact accepts, and in which UCUM spelling is it kept) and plausible
ranges (a value kept as recorded, with a note, when it is out of range).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from .catalogue import QuantityFact
from .errors import UnitError
from .units import convert, normalise_unit, same_dimension

__all__ = ["accept_unit", "is_count", "parse_datetime", "plausibility_note"]

_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?"
)
_ANNOTATION = re.compile(r"/?\{[^}]*\}")


def latest_day(text: str) -> date | None:
    """The last day a FHIR date given to the year or month may be
    (``1959`` ends on 1959-12-31); None for a full date or a dateTime."""
    match = _DATE.fullmatch(text)
    if not match or match.group(3):
        return None
    year, month = int(match.group(1)), match.group(2)
    if month is None:
        return date(year, 12, 31)
    first_of_next = date(year + int(month) // 12, int(month) % 12 + 1, 1)
    return first_of_next - timedelta(days=1)


@lru_cache(maxsize=8192)
def parse_datetime(text: str) -> datetime:
    """Parse a FHIR date, dateTime or instant into an aware datetime.

    A partial date (``2019``, ``2019-05``, ``2019-05-04``) becomes its first
    instant in UTC; a time without an offset is taken as UTC.

    Args:
        text: The value as written.

    Returns:
        The instant, always timezone-aware.

    Raises:
        ValueError: If the text is not a FHIR date or dateTime.
    """
    match = _DATE.fullmatch(text)
    try:
        if match:
            year, month, day = match.groups()
            return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        if _DATETIME.fullmatch(text):
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError as err:  # 2019-02-30, 2019-13: the shape is right, the day not
        raise ValueError(f"`{text}` is not a valid date ({err})") from None
    raise ValueError(f"`{text}` is not a date (YYYY-MM-DD) or dateTime")


@lru_cache(maxsize=1024)
def _unit_verdict(unit: str, fact: str, accepted: tuple[str, ...]) -> tuple[str, str]:
    listing = ", ".join(accepted)
    if not unit:
        return "", f"the value has no unit; {fact} is recorded in {listing}"
    try:
        if any(same_dimension(unit, a) for a in accepted):
            return unit, ""
    except UnitError:
        return "", f"`{unit}` is not a UCUM unit ({fact} is recorded in {listing})"
    # eGFR is defined per 1.73 m2 by its LOINC code; a lab (and Synthea) that
    # writes plain mL/min reports the same number with the annotation left off.
    for a in accepted:
        if _ANNOTATION.sub("", a) == unit:
            return a, f"{fact} recorded in `{unit}` was read as `{a}`"
    # UCUM annotations ({...}) do not change a unit's meaning: `%{HbA1c}` is %.
    bare = _ANNOTATION.sub("", unit)
    if bare in ("", "1") and "1" in accepted:
        return "1", ""  # `{score}` alone is UCUM's way to write a score's unit 1
    if bare != unit and bare in accepted:
        return bare, f"{fact} recorded in `{unit}` was read as `{bare}`"
    return "", f"`{unit}` is not a unit of {fact} (accepted: {listing})"


def is_count(unit: str) -> bool:
    """Whether a unit is UCUM's 1 (a count or score), annotated or not."""
    return _ANNOTATION.sub("", unit) in ("", "1")


def accept_unit(unit: str | None, fact: QuantityFact) -> tuple[str, str]:
    """Check a unit against the units a fact accepts.

    Args:
        unit: The unit as recorded (any accepted spelling), or None.
        fact: The fact the value is for.

    Returns:
        The normalised UCUM unit to record, and a data-quality note (empty
        unless the unit was read as another, e.g. eGFR ``mL/min``).

    Raises:
        UnitError: If the unit is missing, not UCUM, or of another dimension;
            the message names the unit, the fact and the accepted units.
    """
    normal = normalise_unit(unit) if unit else ""
    recorded, message = _unit_verdict(normal, fact.name, fact.units)
    if not recorded:
        raise UnitError(message)
    return recorded, message


def plausibility_note(
    fact: QuantityFact, value: float, unit: str, label: str
) -> str | None:
    """Return a note when a value lies outside the fact's plausible range.

    Args:
        fact: The fact.
        value: The value as recorded.
        unit: Its (accepted) unit.
        label: Where the value came from, for the note.

    Returns:
        The note, or None when the value is plausible or no range is known.

    Raises:
        UnitError: If the value cannot be converted to the canonical unit.
    """
    if fact.plausible is None:
        return None
    low, high = fact.plausible
    canonical = convert(value, unit, fact.unit, fact)
    if low <= canonical <= high:
        return None
    return (
        f"{fact.name} {value:g} {unit} ({label}) is outside the plausible range "
        f"{low:g}-{high:g} {fact.unit}; kept as recorded (any conclusion "
        "resting on it is named under problems)"
    )
