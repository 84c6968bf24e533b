"""Read a FHIR R4 Bundle into a :class:`~engine.facts.Case`.

Only the resource types the engine uses are validated (Patient, Observation,
Condition, MedicationRequest, MedicationStatement, Medication and
AllergyIntolerance), each against a small pydantic schema of just the elements
read (:mod:`engine.resources`). Everything else in the bundle (Claims, EOBs,
Encounters) is skipped without being looked at, because it is most of the bytes
and none of the facts; so is an Observation whose codes feed no catalogue fact.

Every problem with the input raises :class:`~engine.errors.InputError` naming
the entry and the field, so the user can find it in the file. Nothing that
identifies the patient (names, addresses) is ever read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from .catalogue import Catalogue, QuantityFact, default_catalogue
from .errors import InputError, UnitError
from .facts import Case, CodedEntry, Reading, Sex
from .resources import (
    OBSERVATION,
    AllergyIntolerance,
    CodeableConcept,
    Coding,
    CodingData,
    Condition,
    Medication,
    MedicationUse,
    Observation,
    ObservationData,
    Patient,
    Period,
    QuantityData,
)
from .units import convert, normalise_unit, same_dimension

__all__ = ["accept_unit", "parse_datetime", "plausibility_note", "read_bundle"]

logger = logging.getLogger(__name__)

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM: Final = "http://unitsofmeasure.org"

_SKIPPED_OBSERVATION: Final = frozenset({"entered-in-error", "cancelled"})
_SKIPPED_MEDICATION: Final = frozenset({"entered-in-error", "cancelled", "not-taken"})
# on-hold counts as current: the prescription stands and the prescriber means to
# resume it, so a rule must not suggest starting the drug again.
_ACTIVE_MEDICATION: Final = frozenset({"active", "on-hold"})
_SKIPPED_VERIFICATION: Final = frozenset({"entered-in-error", "refuted"})
_CLINICAL_STATUS: Final = dict.fromkeys(("active", "recurrence", "relapse"), True) | (
    dict.fromkeys(("inactive", "remission", "resolved"), False)
)
_SEX: Final[dict[str, Sex]] = {s: s for s in ("male", "female", "other", "unknown")}
_READ_TYPES: Final = (
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
)

# --- shared helpers (the case-file reader uses them too) ---------------------

_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?"
)
_ANNOTATION = re.compile(r"/?\{[^}]*\}")


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
    return "", f"`{unit}` is not a unit of {fact} (accepted: {listing})"


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
        f"{low:g}-{high:g} {fact.unit}; kept as recorded"
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


_M = TypeVar("_M", bound=BaseModel)


# --- the reader --------------------------------------------------------------


class _BundleReader:
    """State while reading one bundle; one instance per bundle."""

    def __init__(self, source: str, catalogue: Catalogue) -> None:
        self.source = source
        self.catalogue = catalogue
        self.readings: dict[str, list[Reading]] = {}
        self.conditions: list[CodedEntry] = []
        self.medications: list[CodedEntry] = []
        self.allergies: list[CodedEntry] = []
        self.notes: list[str] = []
        self.unit_notes: dict[str, int] = {}
        self.media: dict[str, tuple[int, dict[str, Any]]] = {}
        self.medication_names: dict[tuple[str, str], list[str]] = {}
        self.latest: datetime | None = None

    def fail(self, where: str, reason: str, hint: str = "") -> InputError:
        return InputError(source=self.source, where=where, reason=reason, hint=hint)

    def validate(self, model: type[_M], resource: dict[str, Any], label: str) -> _M:
        try:
            return model.model_validate(resource)
        except ValidationError as err:
            raise self.invalid(err, resource, label) from None

    def invalid(
        self, err: ValidationError, resource: dict[str, Any], label: str
    ) -> InputError:
        """The located error for the first problem pydantic found."""
        first = err.errors()[0]
        found = (
            "" if first["type"] == "missing" else f" (found {_kind(first['input'])})"
        )
        return self.fail(
            f"{label} {_field_path(first['loc'])}",
            f"{first['msg']}{found}",
            "check the element against the FHIR R4 definition of "
            f"{resource.get('resourceType')}",
        )

    def validate_observation(
        self, resource: dict[str, Any], label: str
    ) -> ObservationData:
        try:
            return OBSERVATION.validate_python(resource)
        except ValidationError as err:
            fast = err
        # The model words the error as it always has (see engine.resources);
        # it refuses whatever the fast schema refuses, so this raises.
        self.validate(Observation, resource, label)
        raise self.invalid(fast, resource, label)

    def time(self, value: str | None, where: str) -> datetime | None:
        if value is None:
            return None
        try:
            return parse_datetime(value)
        except ValueError as err:
            raise self.fail(
                where,
                f"malformed date: {err}",
                "write YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz",
            ) from None

    def first_time(
        self, label: str, *candidates: tuple[str, str | None]
    ) -> datetime | None:
        """Parse the first recorded of several time elements, in FHIR's order."""
        for field, value in candidates:
            if value is not None:
                return self.time(value, f"{label} {field}")
        return None

    def seen(self, *times: datetime | None) -> None:
        for t in times:
            if t is not None and (self.latest is None or t > self.latest):
                self.latest = t

    # Observations --------------------------------------------------------

    def observation(self, resource: dict[str, Any], label: str) -> None:
        """Read an Observation that :meth:`may_feed_a_fact` let through."""
        obs = self.validate_observation(resource, label)
        if obs.get("status") in _SKIPPED_OBSERVATION:
            return
        rid = obs.get("id")
        source = f"Observation/{rid}" if rid else label
        parts = [("", obs["code"], obs.get("valueQuantity"))]
        parts += [
            (f"component[{i}].", c["code"], c.get("valueQuantity"))
            for i, c in enumerate(obs.get("component", ()))
        ]
        when: datetime | None = None
        timed = False
        for prefix, code, quantity in parts:
            if quantity is None or quantity.get("value") is None:
                continue
            facts = dict.fromkeys(self.loinc_facts(code.get("coding", ())))
            if not facts:
                continue
            if not timed:
                when, timed = self.observation_time(obs, label), True
            for name in facts:
                self.reading(name, quantity, when, source, f"{label} {prefix}")

    def may_feed_a_fact(self, resource: dict[str, Any]) -> bool:
        """Whether an Observation may hold a value of a catalogue fact.

        Most Observations in a record (survey answers, panels of facts the
        knowledge base does not use) feed no fact, and validating them is most
        of the work of reading a bundle. This looks only at the codes, in the
        raw JSON, and says False only when every code is well-formed and none
        is a LOINC code of a fact; anything else (a code of a fact, or a code
        element of an unexpected shape) is validated in full, so a malformed
        Observation that could feed a fact still gets its located error.
        """
        codes = [resource.get("code")]
        components = resource.get("component")
        if components is not None:
            if not isinstance(components, list):
                return True
            for component in components:
                if not isinstance(component, dict):
                    return True
                codes.append(component.get("code"))
        by_loinc = self.catalogue.fact_for_loinc
        for code in codes:
            if not isinstance(code, dict):
                return True
            coding = code.get("coding")
            if coding is None:
                continue
            if not isinstance(coding, list):
                return True
            for item in coding:
                if not isinstance(item, dict):
                    return True
                system, value = item.get("system"), item.get("code")
                if not isinstance(system, str | None) or not isinstance(
                    value, str | None
                ):
                    return True
                if system == LOINC and value and by_loinc(value) is not None:
                    return True
        return False

    def loinc_facts(self, coding: Iterable[CodingData]) -> Iterator[str]:
        for item in coding:
            code = item.get("code")
            if code and item.get("system") == LOINC:
                fact = self.catalogue.fact_for_loinc(code)
                if fact is not None:
                    yield fact

    def observation_time(self, obs: ObservationData, label: str) -> datetime | None:
        period = obs.get("effectivePeriod")
        return self.first_time(
            label,
            ("effectiveDateTime", obs.get("effectiveDateTime")),
            ("effectivePeriod.start", period.get("start") if period else None),
            ("effectiveInstant", obs.get("effectiveInstant")),
            ("issued", obs.get("issued")),
        )

    def reading(
        self,
        name: str,
        quantity: QuantityData,
        when: datetime | None,
        source: str,
        where: str,
    ) -> None:
        fact = self.catalogue.quantities[name]
        recorded = quantity.get("value")
        assert recorded is not None  # checked by the caller
        comparator = quantity.get("comparator")
        if comparator:
            # "<30 mg/g" is a bound, not a value; reading it as 30 would invent one.
            self.notes.append(
                f"{name} recorded as {comparator}{recorded:g} "
                f"({source}) is a bound, not a value; not read"
            )
            return
        raw, field = quantity.get("code"), "code"
        if not raw or quantity.get("system") not in (None, UCUM):
            raw, field = quantity.get("unit"), "unit"
        try:
            unit, note = accept_unit(raw, fact)
        except UnitError as err:
            raise self.fail(
                f"{where}valueQuantity.{field}",
                str(err),
                f"record the value in one of: {', '.join(fact.units)}",
            ) from None
        if note:
            self.unit_notes[note] = self.unit_notes.get(note, 0) + 1
        value = float(recorded)
        try:
            doubt = plausibility_note(fact, value, unit, source)
        except UnitError as err:
            raise self.fail(f"{where}valueQuantity.{field}", str(err)) from None
        if doubt:
            self.notes.append(doubt)
        self.readings.setdefault(name, []).append(
            Reading(value=value, unit=unit, time=when, source=source)
        )
        self.seen(when)

    # Conditions ----------------------------------------------------------

    def status(
        self, concept: CodeableConcept | None, where: str, known: dict[str, bool]
    ) -> bool | None:
        if concept is None or not concept.coding:
            return None
        for coding in concept.coding:
            if coding.code in known:
                return known[coding.code]
        codes = ", ".join(f"`{c.code}`" for c in concept.coding)
        raise self.fail(
            where,
            f"clinical status {codes} is not a FHIR R4 clinical status",
            f"use one of: {', '.join(known)}",
        )

    @staticmethod
    def refuted(concept: CodeableConcept | None) -> bool:
        return concept is not None and any(
            c.code in _SKIPPED_VERIFICATION for c in concept.coding
        )

    def condition(self, resource: dict[str, Any], label: str) -> None:
        cond = self.validate(Condition, resource, label)
        if cond.code is None or self.refuted(cond.verification_status):
            return
        onset = self.first_time(
            label,
            ("onsetDateTime", cond.onset_date_time),
            ("onsetPeriod.start", _start(cond.onset_period)),
        )
        end = self.first_time(
            label,
            ("abatementDateTime", cond.abatement_date_time),
            ("abatementPeriod.end", _end(cond.abatement_period)),
        )
        active = self.status(
            cond.clinical_status, f"{label} clinicalStatus", _CLINICAL_STATUS
        )
        if active is None:
            # R4 con-4: an abated condition is inactive, resolved or in remission.
            active = end is None
        source = f"Condition/{cond.id}" if cond.id else label
        found: set[str] = set()
        for coding in cond.code.coding:
            if coding.system != SNOMED or not coding.code:
                continue
            for concept in self.catalogue.conditions_for_snomed(coding.code):
                if concept in found:
                    continue
                found.add(concept)
                self.conditions.append(
                    CodedEntry(
                        concept=concept,
                        system=SNOMED,
                        code=coding.code,
                        display=coding.display or cond.code.text or "",
                        onset=onset,
                        end=end,
                        active=active,
                        source=source,
                    )
                )
        if found:
            self.seen(onset, end)

    # Medications ---------------------------------------------------------

    def medication_code(self, use: MedicationUse, label: str) -> CodeableConcept | None:
        if use.medication_codeable_concept is not None:
            return use.medication_codeable_concept
        ref = use.medication_reference.reference if use.medication_reference else None
        if not ref:
            return None
        if ref.startswith("#"):
            raw = next((c for c in use.contained if c.get("id") == ref[1:]), None)
            where = f"{label} contained {ref}"
        elif ref in self.media:
            index, raw = self.media[ref]
            where = _label("Medication", raw, index)
        else:
            raw = None
        if raw is None:
            self.notes.append(
                f"{label}: medicationReference `{ref}` is not in the bundle; "
                "the medication was not read"
            )
            return None
        return self.validate(Medication, raw, where).code

    def medications_for(self, code: str, text: str) -> list[str]:
        # A record names the same few drugs again and again (every refill),
        # and each catalogue look-up tries every ingredient of every drug.
        key = (code, text)
        found = self.medication_names.get(key)
        if found is None:
            found = self.medication_names[key] = self.catalogue.medications_for(
                code, text
            )
        return found

    def concepts(self, code: CodeableConcept) -> list[tuple[str, Coding | None]]:
        """Return (concept, coding it came from) pairs for a drug code."""
        found: dict[str, Coding | None] = {}
        for coding in code.coding:
            rx = coding.code if coding.system == RXNORM and coding.code else ""
            text = coding.display or code.text or ""
            for concept in self.medications_for(rx, text):
                found.setdefault(concept, coding)
        if code.text:
            for concept in self.medications_for("", code.text):
                found.setdefault(concept, code.coding[0] if code.coding else None)
        return list(found.items())

    def medication_use(self, resource: dict[str, Any], label: str) -> None:
        use = self.validate(MedicationUse, resource, label)
        if use.status in _SKIPPED_MEDICATION:
            return
        code = self.medication_code(use, label)
        if code is None:
            return
        onset = self.first_time(
            label,
            ("authoredOn", use.authored_on),
            ("effectiveDateTime", use.effective_date_time),
            ("effectivePeriod.start", _start(use.effective_period)),
            ("dateAsserted", use.date_asserted),
        )
        end = self.first_time(
            label, ("effectivePeriod.end", _end(use.effective_period))
        )
        kind = resource["resourceType"]
        source = f"{kind}/{use.id}" if use.id else label
        active = use.status in _ACTIVE_MEDICATION
        entries = [
            _coded(concept, coding, code, (onset, end, active), source)
            for concept, coding in self.concepts(code)
        ]
        self.medications.extend(entries)
        if entries:
            self.seen(onset, end)

    # Allergies -----------------------------------------------------------

    def allergy(self, resource: dict[str, Any], label: str) -> None:
        item = self.validate(AllergyIntolerance, resource, label)
        if item.code is None or self.refuted(item.verification_status):
            return
        if not item.code.coding and not item.code.text:
            return
        onset = self.first_time(
            label,
            ("onsetDateTime", item.onset_date_time),
            ("recordedDate", item.recorded_date),
        )
        active = self.status(
            item.clinical_status, f"{label} clinicalStatus", _CLINICAL_STATUS
        )
        source = f"AllergyIntolerance/{item.id}" if item.id else label
        pairs: list[tuple[str | None, Coding | None]] = [*self.concepts(item.code)]
        if not pairs:
            first = next((c for c in item.code.coding if c.code), None)
            pairs = [(None, first)]
        span = (onset, None, True if active is None else active)
        for concept, coding in pairs:
            self.allergies.append(_coded(concept, coding, item.code, span, source))


def _coded(
    concept: str | None,
    coding: Coding | None,
    code: CodeableConcept,
    span: tuple[datetime | None, datetime | None, bool],
    source: str,
) -> CodedEntry:
    if coding is not None and coding.code:
        system, value = coding.system or "", coding.code
        display = coding.display or code.text or ""
    else:
        # Text only: recorded as a local name, as a case file would.
        system, value, display = "local", code.text or "", code.text or ""
    return CodedEntry(
        concept=concept,
        system=system,
        code=value,
        display=display,
        onset=span[0],
        end=span[1],
        active=span[2],
        source=source,
    )


def _start(period: Period | None) -> str | None:
    return period.start if period is not None else None


def _end(period: Period | None) -> str | None:
    return period.end if period is not None else None


def _label(kind: str, resource: dict[str, Any], index: int) -> str:
    rid = resource.get("id")
    name = f"{kind}/{rid}" if isinstance(rid, str) and rid else kind
    return f"{name} (entry {index})"


def read_bundle(
    data: dict[str, Any], *, source: str, catalogue: Catalogue | None = None
) -> Case:
    """Read a FHIR R4 Bundle (already parsed from JSON) into a Case.

    Args:
        data: The Bundle as a JSON object.
        source: The file name or label, used in messages and ``Case.source``.
        catalogue: The fact catalogue; the shipped one by default.

    Returns:
        The case: readings of known LOINC facts (oldest first), conditions and
        medications the catalogue knows, every allergy, and data-quality notes.

    Raises:
        InputError: If the bundle is malformed, holds no or several Patients,
            a value has a unit its fact does not accept, or a date is bad.
    """
    reader = _BundleReader(source, catalogue or default_catalogue())
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        got = data.get("resourceType") if isinstance(data, dict) else None
        raise reader.fail(
            "resourceType",
            f"expected a Bundle, got {got or _kind(data)}",
            "export the patient record as a FHIR R4 Bundle",
        )
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise reader.fail(
            "Bundle.entry", f"`entry` must be a list, got {_kind(entries)}"
        )
    buckets: dict[str, list[tuple[int, dict[str, Any]]]] = {t: [] for t in _READ_TYPES}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise reader.fail(
                f"Bundle.entry[{index}]",
                f"an entry must be an object, got {_kind(entry)}",
            )
        resource = entry.get("resource")
        if resource is None:
            continue  # a transaction's DELETE entry carries no resource
        if not isinstance(resource, dict):
            raise reader.fail(
                f"Bundle.entry[{index}].resource",
                f"a resource must be an object, got {_kind(resource)}",
            )
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or not kind:
            raise reader.fail(
                f"Bundle.entry[{index}].resource.resourceType",
                "the resource has no resourceType",
                'every resource names its type, e.g. "resourceType": "Observation"',
            )
        bucket = buckets.get(kind)
        if bucket is not None:
            bucket.append((index, resource))
        elif kind == "Medication":
            full_url, rid = entry.get("fullUrl"), resource.get("id")
            if isinstance(full_url, str):
                reader.media[full_url] = (index, resource)
            if isinstance(rid, str):
                reader.media[f"Medication/{rid}"] = (index, resource)

    for kind, bucket in buckets.items():
        buckets[kind] = _current_versions(bucket, reader)
    patients = buckets["Patient"]
    if not patients:
        raise reader.fail(
            "Bundle.entry",
            "the bundle holds no Patient resource",
            "export the whole patient record, including the Patient resource",
        )
    if len(patients) > 1:
        indices = ", ".join(str(i) for i, _ in patients)
        raise reader.fail(
            "Bundle.entry",
            f"the bundle holds {len(patients)} Patient resources (entries {indices})",
            "give one patient's record per bundle",
        )
    index, raw_patient = patients[0]
    label = _label("Patient", raw_patient, index)
    patient = reader.validate(Patient, raw_patient, label)
    if not patient.id:
        raise reader.fail(
            f"{label} id", "the Patient has no id", "give the Patient an id"
        )
    sex: Sex | None = None
    if patient.gender is not None:
        if patient.gender not in _SEX:
            raise reader.fail(
                f"{label} gender",
                f"gender `{patient.gender}` is not a FHIR administrative gender",
                "use male, female, other or unknown",
            )
        sex = _SEX[patient.gender]
    born = reader.time(patient.birth_date, f"{label} birthDate")
    deceased = reader.time(patient.deceased_date_time, f"{label} deceasedDateTime")
    if deceased is None and patient.deceased_boolean:
        reader.notes.append("the patient is recorded as deceased, without a date")

    for kind, handler in (
        ("Observation", reader.observation),
        ("Condition", reader.condition),
        ("MedicationRequest", reader.medication_use),
        ("MedicationStatement", reader.medication_use),
        ("AllergyIntolerance", reader.allergy),
    ):
        for index, resource in buckets[kind]:
            # Checked before the label is made: most Observations stop here.
            if kind == "Observation" and not reader.may_feed_a_fact(resource):
                continue
            handler(resource, _label(kind, resource, index))

    reader.notes.extend(
        f"{note} ({count} value{'s' if count > 1 else ''})"
        for note, count in reader.unit_notes.items()
    )
    readings = {
        name: tuple(sorted(values, key=_reading_order))
        for name, values in reader.readings.items()
    }
    logger.debug(
        "read bundle %s: %d readings, %d conditions, %d medications",
        patient.id,
        sum(len(v) for v in readings.values()),
        len(reader.conditions),
        len(reader.medications),
    )
    race = _us_core_race(raw_patient)
    if race is not None and "race" in reader.catalogue.texts:
        readings["race"] = (Reading(value=race, source=f"{label} us-core-race"),)
    return Case(
        case_id=patient.id,
        source=source,
        birth_date=born.date() if born else None,
        sex=sex,
        deceased=deceased,
        readings=readings,
        conditions=tuple(reader.conditions),
        medications=tuple(reader.medications),
        allergies=tuple(reader.allergies),
        last_recorded=reader.latest,
        notes=tuple(reader.notes),
    )


_US_CORE_RACE: Final = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
# OMB race categories (urn:oid:2.16.840.1.113883.6.238) as the pooled cohort
# equations group them; any other recorded category is "other".
_OMB_RACE: Final = {"2106-3": "white", "2054-5": "african_american"}


def _us_core_race(patient: dict[str, Any]) -> str | None:
    """The race the US Core race extension records, or None when absent."""
    for ext in patient.get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != _US_CORE_RACE:
            continue
        for part in ext.get("extension") or []:
            if isinstance(part, dict) and part.get("url") == "ombCategory":
                coding = part.get("valueCoding") or {}
                code = coding.get("code") if isinstance(coding, dict) else None
                if isinstance(code, str):
                    return _OMB_RACE.get(code, "other")
    return None


_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)


def _version_key(resource: dict[str, Any]) -> tuple[int, str]:
    meta = resource.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    version = str(meta.get("versionId", ""))
    number = int(version) if version.isdigit() else -1
    return number, str(meta.get("lastUpdated", ""))


def _current_versions(
    bucket: list[tuple[int, dict[str, Any]]], reader: _BundleReader
) -> list[tuple[int, dict[str, Any]]]:
    """Keep one version of each resource: the highest versionId, else the latest.

    A history bundle can hold a resource's earlier versions (the original of an
    amended result); only the current one counts.
    """
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    order: list[str] = []
    for index, resource in bucket:
        rid = resource.get("id")
        key = str(rid) if isinstance(rid, str) and rid else f"#{index}"
        if key not in latest:
            order.append(key)
            latest[key] = (index, resource)
            continue
        kept = latest[key]
        if _version_key(resource) >= _version_key(kept[1]):
            latest[key] = (index, resource)
        kind = resource.get("resourceType")
        reader.notes.append(f"{kind}/{key}: an earlier version was left out")
    return [latest[k] for k in order]


def _reading_order(reading: Reading) -> tuple[bool, datetime]:
    # Undated readings count as current, so they sort after every dated one.
    return (reading.time is None, reading.time or _EARLIEST)
