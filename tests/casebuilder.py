"""Build cases from compact arguments, and read assessments back by id.

Every time is given as days before :data:`NOW`, the evaluation time the rule
tests use, so a test reads like the chart: ``bp(142, 85, days_ago=[40, 10])``.
Reading helpers return a ``{fact: readings}`` mapping; :func:`case` merges any
number of them into one :class:`engine.Case`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from engine import Assessment, Case, CodedEntry, Reading, Recommendation, Undetermined
from engine.formulas import ckd_epi_2021_creatinine

__all__ = [
    "NOW",
    "Readings",
    "at",
    "birth_date_for",
    "bp",
    "case",
    "creatinine",
    "creatinine_for_egfr",
    "diagnosis",
    "diagnosis_ids",
    "finding_ids",
    "has_condition",
    "lab",
    "recommendation",
    "recommendation_statuses",
    "taking",
    "undetermined",
    "us_core_race",
    "undetermined_ids",
]

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
"""The evaluation time (``as_of``) of every rule test."""

Readings = dict[str, tuple[Reading, ...]]
DaysAgo = float | Sequence[float]


def at(days_ago: float) -> datetime:
    """The time ``days_ago`` days before :data:`NOW`."""
    return NOW - timedelta(days=days_ago)


def _days(days_ago: DaysAgo) -> list[float]:
    return [float(days_ago)] if isinstance(days_ago, int | float) else list(days_ago)


def _values(value: float | Sequence[float], count: int) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)] * count
    values = [float(v) for v in value]
    if len(values) != count:
        raise ValueError(f"{len(values)} values for {count} times")
    return values


def lab(
    fact: str,
    value: float | Sequence[float],
    unit: str,
    days_ago: DaysAgo = 10,
) -> Readings:
    """Readings of one fact: one value for every time, or one value per time.

    ``lab("hba1c", [6.6, 6.8], "%", days_ago=[100, 10])`` is two results.
    """
    times = _days(days_ago)
    values = _values(value, len(times))
    readings = [
        Reading(value=v, unit=unit, time=at(d), source=f"{fact}@-{d:g}d")
        for v, d in zip(values, times, strict=True)
    ]
    readings.sort(key=lambda r: r.time or NOW)
    return {fact: tuple(readings)}


def bp(
    sbp: float | Sequence[float] | None,
    dbp: float | Sequence[float] | None,
    days_ago: DaysAgo = (30, 10),
) -> Readings:
    """Blood pressure readings; ``None`` leaves that pressure out.

    By default two readings on two separate days, both with the same values,
    so their mean is the value given.
    """
    out: Readings = {}
    if sbp is not None:
        out |= lab("systolic_bp", sbp, "mm[Hg]", days_ago)
    if dbp is not None:
        out |= lab("diastolic_bp", dbp, "mm[Hg]", days_ago)
    return out


def creatinine(
    value: float | Sequence[float], unit: str = "mg/dL", days_ago: DaysAgo = 10
) -> Readings:
    """Serum creatinine results (eGFR is calculated from them by the kidney rules)."""
    return lab("creatinine", value, unit, days_ago)


def birth_date_for(age: int) -> date:
    """A birth date that makes the patient ``age`` years old at :data:`NOW`.

    The birthday falls half a year before NOW, so the patient is the same age
    at every reading of the last six months (eGFR uses age at the reading).
    """
    return date(NOW.year - age - 1, 12, 1)


def taking(drug: str) -> CodedEntry:
    """An active medication of a catalogue concept, as a case file names it."""
    return CodedEntry(concept=drug, system="local", code=drug)


def has_condition(condition: str) -> CodedEntry:
    """An active problem-list entry of a catalogue concept."""
    return CodedEntry(concept=condition, system="local", code=condition)


def case(
    *parts: Mapping[str, tuple[Reading, ...]],
    age: int | None = 60,
    sex: str | None = "female",
    birth_date: date | None = None,
    conditions: Iterable[CodedEntry] = (),
    medications: Iterable[CodedEntry] = (),
    case_id: str = "t",
) -> Case:
    """A case from reading mappings; readings of the same fact are merged.

    The age becomes a birth date (:func:`birth_date_for`) unless ``birth_date``
    is given; ``age=None`` and no birth date leaves the age unknown.
    """
    merged: dict[str, list[Reading]] = {}
    for part in parts:
        for fact, readings in part.items():
            merged.setdefault(fact, []).extend(readings)
    by_fact = {
        fact: tuple(sorted(values, key=lambda r: r.time or NOW))
        for fact, values in merged.items()
    }
    if birth_date is None and age is not None:
        birth_date = birth_date_for(age)
    fields: dict[str, Any] = {
        "case_id": case_id,
        "birth_date": birth_date,
        "sex": sex,
        "readings": by_fact,
        "conditions": tuple(conditions),
        "medications": tuple(medications),
    }
    return Case(**fields)


def creatinine_for_egfr(
    egfr: float, age: float, sex: str, parameters: Mapping[str, Any]
) -> float:
    """The creatinine (mg/dL) whose CKD-EPI 2021 eGFR is ``egfr``, by bisection.

    eGFR falls as creatinine rises, so the interval halves towards the one
    value; the result is within 1e-9 mg/dL of it.
    """
    low, high = 0.05, 30.0
    for _ in range(200):
        mid = (low + high) / 2
        if ckd_epi_2021_creatinine(mid, age, sex, parameters) > egfr:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def finding_ids(result: Assessment) -> set[str]:
    """The ids of the findings of an assessment."""
    return {f.id for f in result.findings}


def diagnosis_ids(result: Assessment) -> set[str]:
    """The ids of the diagnoses of an assessment."""
    return {d.id for d in result.diagnoses}


def diagnosis(result: Assessment, did: str) -> Any:
    """The one diagnosis with this id (fails the test when absent)."""
    found = [d for d in result.diagnoses if d.id == did]
    assert len(found) == 1, f"diagnosis {did}: {diagnosis_ids(result)}"
    return found[0]


def recommendation_statuses(result: Assessment) -> dict[str, str]:
    """Recommendation id to its status ('recommended' or 'blocked')."""
    return {r.id: r.status for r in result.recommendations}


def recommendation(result: Assessment, rid: str) -> Recommendation:
    """The one recommendation with this id (fails the test when absent)."""
    found = [r for r in result.recommendations if r.id == rid]
    assert len(found) == 1, f"recommendation {rid}: {recommendation_statuses(result)}"
    return found[0]


def undetermined_ids(result: Assessment) -> set[str]:
    """The ids of the rules that could not be determined."""
    return {u.rule_id for u in result.undetermined}


def undetermined(result: Assessment, rule_id: str) -> Undetermined:
    """The undetermined entry of one rule (fails the test when absent)."""
    found = [u for u in result.undetermined if u.rule_id == rule_id]
    assert len(found) == 1, f"{rule_id} not undetermined: {undetermined_ids(result)}"
    return found[0]


def us_core_race(omb_code: str) -> dict[str, Any]:
    """A FHIR Patient's US Core race extension with one OMB category."""
    return {
        "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "extension": [
            {
                "url": "ombCategory",
                "valueCoding": {
                    "system": "urn:oid:2.16.840.1.113883.6.238",
                    "code": omb_code,
                },
            }
        ],
    }
