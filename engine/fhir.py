"""Read a FHIR R4 Bundle into a :class:`~engine.facts.Case`.

Only the resource types the engine uses are validated (Patient, Observation,
Condition, MedicationRequest, MedicationStatement, Medication and
AllergyIntolerance), each against a small pydantic schema of just the elements
read (:mod:`engine.resources`). Everything else in the bundle (Claims, EOBs,
Encounters) is skipped without being looked at, because it is most of the bytes
and none of the facts; so is an Observation whose codes feed no catalogue fact.

A bundle file is read faster by :func:`read_bundle_json`, from its bytes: one
pydantic-core pass parses them and validates what is read, and builds nothing
of what is skipped. It gives up on anything unusual, and the caller then reads
the file with :func:`read_bundle`, which is the authority on what a bundle may
hold and how its problems are worded.

Every problem with the input raises :class:`~engine.errors.InputError` naming
the entry and the field, so the user can find it in the file. Nothing that
identifies the patient (names, addresses) is ever read.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final, cast

from pydantic import ValidationError

from .catalogue import Catalogue, default_catalogue
from .errors import InputError
from .facts import Case, Reading, Sex, first_few
from .resourcereader import ResourceReader, kind_of, label_of
from .resources import BUNDLE, ObservationData, Patient
from .values import accept_unit, latest_day, parse_datetime, plausibility_note

__all__ = [
    "accept_unit",
    "parse_datetime",
    "plausibility_note",
    "read_bundle",
    "read_bundle_json",
]

logger = logging.getLogger(__name__)

_SEX: Final[dict[str, Sex]] = {s: s for s in ("male", "female", "other", "unknown")}
_READ_TYPES: Final = (
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
)


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
    reader = ResourceReader(source, catalogue or default_catalogue())
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        got = data.get("resourceType") if isinstance(data, dict) else None
        raise reader.fail(
            "resourceType",
            f"expected a Bundle, got {got or kind_of(data)}",
            "export the patient record as a FHIR R4 Bundle",
        )
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise reader.fail(
            "Bundle.entry", f"`entry` must be a list, got {kind_of(entries)}"
        )
    buckets = _buckets()
    reader.newest_first = data.get("type") == "history"
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise reader.fail(
                f"Bundle.entry[{index}]",
                f"an entry must be an object, got {kind_of(entry)}",
            )
        resource = entry.get("resource")
        if resource is None:
            continue  # a transaction's DELETE entry carries no resource
        if not isinstance(resource, dict):
            raise reader.fail(
                f"Bundle.entry[{index}].resource",
                f"a resource must be an object, got {kind_of(resource)}",
            )
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or not kind:
            raise reader.fail(
                f"Bundle.entry[{index}].resource.resourceType",
                "the resource has no resourceType",
                'every resource names its type, e.g. "resourceType": "Observation"',
            )
        # Inline, not a function: it runs for each of thousands of entries.
        bucket = buckets.get(kind)
        if bucket is not None:
            bucket.append((index, resource))
            if kind == "Patient":
                _keep_patient(reader, index, entry.get("fullUrl"))
        elif kind == "Medication":
            _keep_medication(reader, index, entry.get("fullUrl"), resource)
    return _read(reader, buckets, validated=False)


def read_bundle_json(
    raw: bytes, *, source: str, catalogue: Catalogue | None = None
) -> Case | None:
    """Read a FHIR R4 Bundle straight from its JSON bytes, or give up.

    The fast way to read a bundle file: pydantic-core parses and validates the
    bytes in one pass against :data:`~engine.resources.BUNDLE`, so the
    resources skipped are never built as Python objects. It refuses some
    bundles :func:`read_bundle` accepts and reads nothing it would refuse;
    for a bundle it accepts, the case is the one :func:`read_bundle` gives.

    Args:
        raw: The file's bytes, UTF-8 without a byte-order mark.
        source: The file name or label, used in ``Case.source``.
        catalogue: The fact catalogue; the shipped one by default.

    Returns:
        The case, or None when the bytes are not a bundle this schema reads
        or the bundle has any problem: the caller then reads it with
        :func:`read_bundle`, whose messages locate the problem.
    """
    try:
        bundle = BUNDLE.validate_json(raw)
    except ValidationError:
        return None
    reader = ResourceReader(source, catalogue or default_catalogue())
    reader.newest_first = bundle.get("type") == "history"
    buckets = _buckets()
    for index, entry in enumerate(bundle.get("entry") or ()):
        resource = entry.get("resource")
        if resource is None:
            continue
        kind = resource["resourceType"]
        bucket = buckets.get(kind)
        if bucket is not None:
            bucket.append((index, resource))
            if kind == "Patient":
                _keep_patient(reader, index, entry.get("fullUrl"))
        elif kind == "Medication":
            _keep_medication(reader, index, entry.get("fullUrl"), resource)
    try:
        return _read(reader, buckets, validated=True)
    except InputError:
        # Reported as read_bundle words it, from the same JSON read again.
        return None


def _buckets() -> dict[str, list[tuple[int, dict[str, Any]]]]:
    return {kind: [] for kind in _READ_TYPES}


def _keep_patient(reader: ResourceReader, index: int, full_url: object) -> None:
    # Other resources may name the Patient by its entry's fullUrl.
    if isinstance(full_url, str):
        reader.patient_urls[index] = full_url


def _keep_medication(
    reader: ResourceReader, index: int, full_url: object, resource: dict[str, Any]
) -> None:
    # Read only when a MedicationRequest or Statement refers to it.
    rid = resource.get("id")
    if isinstance(full_url, str):
        reader.media[full_url] = (index, resource)
    if isinstance(rid, str):
        reader.media[f"Medication/{rid}"] = (index, resource)


def _read(
    reader: ResourceReader,
    buckets: dict[str, list[tuple[int, dict[str, Any]]]],
    *,
    validated: bool,
) -> Case:
    """Read the resources, bucketed by type, into a Case: both ways share this.

    ``validated`` says the Observations were already validated against the
    fast Observation schema (by :data:`~engine.resources.BUNDLE`).
    """
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
    label = label_of("Patient", raw_patient, index)
    patient = reader.validate(Patient, raw_patient, label)
    if not patient.id:
        raise reader.fail(
            f"{label} id", "the Patient has no id", "give the Patient an id"
        )
    # What the other resources call this Patient: Patient/id, its fullUrl.
    reader.patient_id = patient.id
    reader.patient_refs = frozenset(
        {f"Patient/{patient.id}", *reader.patient_urls.values()}
    )
    sex: Sex | None = None
    if patient.gender is not None:
        if patient.gender not in _SEX:
            raise reader.fail(
                f"{label} gender",
                # The value is not repeated: it identifies the patient.
                "the gender is not a FHIR administrative gender",
                "use male, female, other or unknown",
            )
        sex = _SEX[patient.gender]
    born = reader.time(patient.birth_date, f"{label} birthDate", identifying=True)
    deceased = reader.time(
        patient.deceased_date_time, f"{label} deceasedDateTime", identifying=True
    )
    if deceased is None and patient.deceased_boolean:
        reader.notes.append("the patient is recorded as deceased, without a date")

    # Checked before the label is made: most Observations stop here.
    if validated:
        # BUNDLE gave them as ObservationData: validating again would only
        # repeat the work, and their codes are known to be well-formed.
        for index, resource in buckets["Observation"]:
            obs = cast(ObservationData, resource)
            if reader.feeds_a_fact(obs):
                reader.read_observation(obs, label_of("Observation", resource, index))
    else:
        for index, resource in buckets["Observation"]:
            if reader.may_feed_a_fact(resource):
                reader.observation(resource, label_of("Observation", resource, index))
    for kind, handler in (
        ("Condition", reader.condition),
        ("MedicationRequest", reader.medication_use),
        ("MedicationStatement", reader.medication_use),
        ("AllergyIntolerance", reader.allergy),
    ):
        for index, resource in buckets[kind]:
            handler(resource, label_of(kind, resource, index))

    reader.notes.extend(
        f"{note} ({count} value{'s' if count > 1 else ''})"
        for note, count in reader.unit_notes.items()
    )
    if reader.preliminary:
        n = len(reader.preliminary)
        reader.notes.append(
            f"{n} preliminary result{'s' if n > 1 else ''} read as recorded "
            f"(status preliminary: may still change): {first_few(reader.preliminary)}"
        )
    last, later = reader.last_entry()
    if later:
        reader.notes.append(later)
    readings = {
        name: tuple(values)
        for name, values in reader.readings.items()
        if name not in reader.unusable
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
        source=reader.source,
        birth_date=born.date() if born else None,
        birth_date_latest=latest_day(patient.birth_date)
        if patient.birth_date
        else None,
        sex=sex,
        deceased=deceased,
        readings=readings,
        conditions=tuple(reader.conditions),
        medications=tuple(reader.medications),
        allergies=tuple(reader.allergies),
        last_recorded=last,
        notes=tuple(reader.notes),
        problems=(*reader.unusable.values(), *reader.doubts, *_elsewhere(reader)),
    )


def _elsewhere(reader: ResourceReader) -> list[str]:
    if not reader.elsewhere:
        return []
    n = len(reader.elsewhere)
    return [
        f"{n} resource{'s' if n > 1 else ''} of the bundle "
        f"{'are' if n > 1 else 'is'} about another patient than its Patient "
        f"(Patient/{reader.patient_id}) and {'were' if n > 1 else 'was'} left "
        f"out: {first_few(reader.elsewhere)}; check the export"
    ]


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


_UNDATED = datetime.min.replace(tzinfo=UTC)


def _version_key(resource: dict[str, Any], rank: int) -> tuple[int, datetime, int]:
    """A version's place: its numeric versionId, then its lastUpdated time
    (compared as times: their offsets may differ), then its place in the
    bundle (``rank``: later is newer, but newest first in a history bundle)."""
    meta = resource.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    version = str(meta.get("versionId", ""))
    number = int(version) if version.isdigit() else -1
    try:
        updated = parse_datetime(str(meta["lastUpdated"]))
    except (KeyError, ValueError):
        updated = _UNDATED
    return number, updated, rank


def _current_versions(
    bucket: list[tuple[int, dict[str, Any]]], reader: ResourceReader
) -> list[tuple[int, dict[str, Any]]]:
    """Keep one version of each resource: the highest versionId, else the latest.

    A history bundle can hold a resource's earlier versions (the original of an
    amended result); only the current one counts.
    """
    ids = [resource.get("id") for _index, resource in bucket]
    if len(set(ids)) == len(ids) and all(isinstance(i, str) and i for i in ids):
        return bucket  # one version of each: the usual case, checked cheaply
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
        sign = -1 if reader.newest_first else 1
        if _version_key(resource, sign * index) > _version_key(kept[1], sign * kept[0]):
            latest[key] = (index, resource)
        kind = resource.get("resourceType")
        reader.notes.append(f"{kind}/{key}: an earlier version was left out")
    return [latest[k] for k in order]
