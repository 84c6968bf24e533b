"""Read the resources of one FHIR R4 bundle into facts, one resource at a time.

:class:`ResourceReader` validates each resource it is given against its schema
in :mod:`engine.resources` and keeps what the catalogue knows: readings of
LOINC facts, conditions by SNOMED CT, medications by RxNorm or product name,
and allergies. :mod:`engine.fhir` walks the bundle and hands it the resources.
Every problem raises :class:`~engine.errors.InputError` naming the resource and
the element.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from .catalogue import Catalogue
from .errors import InputError, UnitError
from .facts import CodedEntry, Reading, last_entry
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
    Period,
    QuantityData,
)
from .values import accept_unit, is_count, parse_datetime, plausibility_note

__all__ = ["ResourceReader", "kind_of", "label_of"]

_M = TypeVar("_M", bound=BaseModel)

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
# MedicationRequest intents that prescribe nothing (yet): not read as taken.
_NOT_AN_ORDER: Final = frozenset({"proposal", "plan", "option"})
_CLINICAL_STATUS: Final = dict.fromkeys(("active", "recurrence", "relapse"), True) | (
    dict.fromkeys(("inactive", "remission", "resolved"), False)
)


def kind_of(value: object) -> str:
    """A JSON value's kind in words, for messages (``a string``)."""
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


class ResourceReader:
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
        self.unusable: dict[str, str] = {}  # fact: why it is left out
        self.doubts: list[str] = []  # read, but the assessment is partial
        self.elsewhere: list[str] = []  # resources about another patient
        self.patient_urls: dict[int, str] = {}  # entry index: fullUrl
        self.newest_first = False  # a history bundle lists versions so
        self.patient_refs: frozenset[str] = frozenset()
        self.patient_id = ""
        self.preliminary: list[str] = []  # results that may still change
        self.media: dict[str, tuple[int, dict[str, Any]]] = {}
        self.latest: datetime | None = None
        self.read_at = datetime.now(UTC)
        self._quantity_codes, self._text_codes = catalogue.loinc_codes()
        self._units: dict[tuple[str | None, str], tuple[str, str]] = {}

    def cannot_use(self, name: str, where: str, reason: str) -> None:
        """Leave a fact out whole: one of its values cannot be read.

        Its other readings are left out too: without the one that failed, the
        latest reading or a mean could be wrong, where a fact left out makes
        the rules that need it cannot be determined.
        """
        self.unusable.setdefault(name, f"{name} not used: {where.strip()}: {reason}")

    def about_someone_else(self, reference: str | None, source: str) -> bool:
        """True (and the resource named) when a resource's subject is given
        and is not this bundle's Patient: it is left out, not merged into
        this patient's record."""
        if not reference or reference in self.patient_refs:
            return False
        unversioned = reference.split("/_history/")[0]
        if unversioned in self.patient_refs or unversioned.endswith(
            f"/Patient/{self.patient_id}"
        ):
            return False  # a version of this Patient, or its absolute URL
        self.elsewhere.append(source)
        return True

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
            "" if first["type"] == "missing" else f" (found {kind_of(first['input'])})"
        )
        return self.fail(
            f"{label} {_field_path(first['loc'])}".rstrip(),
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

    def time(
        self, value: str | None, where: str, *, identifying: bool = False
    ) -> datetime | None:
        """Parse a date element; ``identifying`` keeps its value out of messages.

        A Patient's birth and death dates identify the patient: a message about
        them (which may reach a log or a batch's error record) names the
        element, never the value.
        """
        if value is None:
            return None
        try:
            return parse_datetime(value)
        except ValueError as err:
            reason = "malformed date" if identifying else f"malformed date: {err}"
            raise self.fail(
                where,
                reason,
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

    def last_entry(self) -> tuple[datetime | None, str | None]:
        """The latest date seen that is not later than the time of reading,
        and a note naming the entries dated later (see facts.last_entry)."""
        if self.latest is None or self.latest <= self.read_at:
            return self.latest, None  # checked once here: most records stop
        entries = (*self.conditions, *self.medications)
        return last_entry(self.readings, entries, self.read_at)

    # Observations --------------------------------------------------------

    def observation(self, resource: dict[str, Any], label: str) -> None:
        """Read an Observation that :meth:`may_feed_a_fact` let through."""
        self.read_observation(self.validate_observation(resource, label), label)

    def read_observation(self, obs: ObservationData, label: str) -> None:
        """Read an Observation already valid against the fast schema."""
        if obs.get("status") in _SKIPPED_OBSERVATION:
            return
        rid = obs.get("id")
        source = f"Observation/{rid}" if rid else label
        subject = obs.get("subject")
        if subject and self.about_someone_else(subject.get("reference"), source):
            return
        if obs.get("status") == "preliminary":
            self.preliminary.append(source)
        coded = self.text_facts(obs["code"].get("coding", ()))
        if coded:
            self.coded_value(coded, obs, source, label)
        parts = [("", obs["code"], self.top_value(obs, source))]
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
                if when is None:
                    # An undated value may be older or newer than the others:
                    # neither the latest nor a mean can be taken with it.
                    self.cannot_use(
                        name,
                        source,
                        "the Observation has no date (effective[x] or issued)",
                    )
                    continue
                self.reading(name, quantity, when, source, f"{label} {prefix}")

    def top_value(self, obs: ObservationData, source: str) -> QuantityData | None:
        """The Observation's own value as a quantity, when it has one.

        A valueInteger is a quantity of a count or score (a GCS of 14, unit
        "1"); a number given as text (valueString "7.5 %"), or an integer of
        a measured fact, leaves the fact out whole (see :meth:`cannot_use`).
        """
        quantity = obs.get("valueQuantity")
        if quantity is not None:
            return quantity
        integer, text = obs.get("valueInteger"), obs.get("valueString")
        concept = obs.get("valueCodeableConcept")
        if integer is None and text is None and concept is None:
            return None
        if integer is not None:
            given, element = f"the integer {integer}", "valueInteger"
        elif text is not None:
            given, element = "text", "valueString"
        else:
            given, element = "a coded concept", "valueCodeableConcept"
        for name in dict.fromkeys(self.loinc_facts(obs["code"].get("coding", ()))):
            unit = self.catalogue.quantities[name].unit
            if integer is not None and is_count(unit):
                return {"value": integer, "code": unit, "system": UCUM}
            # Left out whole, as for a unit that cannot be read: an older
            # reading must not stand in as the latest.
            self.cannot_use(
                name,
                f"{source} {element}",
                f"the value is given as {given}, not as a quantity with a unit",
            )
        return None

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
        texts = self.catalogue.text_fact_for_loinc
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
                if system == LOINC and value and texts(value) is not None:
                    return True
        return False

    def feeds_a_fact(self, obs: ObservationData) -> bool:
        """:meth:`may_feed_a_fact` for an Observation already validated."""
        # Most of a record's Observations stop here: set look-ups only.
        quantity, text = self._quantity_codes, self._text_codes
        for item in obs["code"].get("coding", ()):
            code = item.get("code")
            if (code in quantity or code in text) and item.get("system") == LOINC:
                return True
        for component in obs.get("component", ()):
            for item in component["code"].get("coding", ()):
                if item.get("code") in quantity and item.get("system") == LOINC:
                    return True
        return False

    def text_facts(self, coding: Iterable[CodingData]) -> list[str]:
        """Text facts an Observation's code records as a coded value."""
        by_loinc = self.catalogue.text_fact_for_loinc
        return [
            fact
            for item in coding
            if item.get("system") == LOINC
            and (code := item.get("code"))
            and (fact := by_loinc(code)) is not None
        ]

    def coded_value(
        self, facts: list[str], obs: ObservationData, source: str, label: str
    ) -> None:
        """Read a text fact from an Observation's coded value (smoking status)."""
        concept = obs.get("valueCodeableConcept")
        when = self.observation_time(obs, label)
        for name in dict.fromkeys(facts):
            fact = self.catalogue.texts[name]
            # SNOMED CT (US Core) or a LOINC answer code (LA...), as sent.
            tables = {
                SNOMED: ("SNOMED CT", fact.snomed),
                LOINC: ("LOINC", fact.answers),
            }
            codes = [
                (tables[system], str(c.get("code")))
                for c in (concept or {}).get("coding", ())
                if (system := c.get("system")) in tables
            ]
            values = {table[c] for (_, table), c in codes if c in table}
            if len(values) != 1:
                # Not a value of the fact, or codings that disagree: unread,
                # and said so (the code is a terminology code, not patient data).
                listed = ", ".join(f"{system} {c}" for (system, _), c in codes)
                if not codes:
                    shown = "no SNOMED CT or LOINC answer coded value"
                elif values:
                    shown = (
                        f"{listed} give different values ({', '.join(sorted(values))})"
                    )
                else:
                    shown = (
                        f"{listed} is not one of the values {', '.join(fact.values)}"
                    )
                self.notes.append(f"{name} ({source}): {shown}; not read")
                continue
            self.readings.setdefault(name, []).append(
                Reading(value=values.pop(), time=when, source=source)
            )
            self.seen(when)

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
            ("effectivePeriod.end", period.get("end") if period else None),
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
            # "<30 mg/g" is a bound, not a value: reading it as 30 would invent
            # one, and skipping it would let an older value stand as the latest.
            self.cannot_use(
                name,
                f"{where}valueQuantity.comparator",
                f"recorded as {comparator}{recorded:g}, a bound, not a value",
            )
            return
        raw, field = quantity.get("code"), "code"
        if not raw or quantity.get("system") not in (None, UCUM):
            raw, field = quantity.get("unit"), "unit"
        # A record writes each fact in the same unit again and again.
        verdict = self._units.get((raw, name))
        if verdict is None:
            try:
                verdict = self._units[raw, name] = accept_unit(raw, fact)
            except UnitError as err:
                hint = f"record the value in one of: {', '.join(fact.units)}"
                self.cannot_use(name, f"{where}valueQuantity.{field}", f"{err}; {hint}")
                return
        unit, note = verdict
        if note:
            self.unit_notes[note] = self.unit_notes.get(note, 0) + 1
        value = float(recorded)
        try:
            doubt = plausibility_note(fact, value, unit, source)
        except UnitError as err:
            self.cannot_use(name, f"{where}valueQuantity.{field}", str(err))
            return
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
        self.doubts.append(
            f"{where}: {codes} is not a FHIR R4 clinical status "
            f"({', '.join(known)}); read as if none were recorded"
        )
        return None

    @staticmethod
    def refuted(concept: CodeableConcept | None) -> bool:
        return concept is not None and any(
            c.code in _SKIPPED_VERIFICATION for c in concept.coding
        )

    def condition(self, resource: dict[str, Any], label: str) -> None:
        cond = self.validate(Condition, resource, label)
        if cond.code is None or self.refuted(cond.verification_status):
            return
        source = f"Condition/{cond.id}" if cond.id else label
        if cond.subject and self.about_someone_else(cond.subject.reference, source):
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
            # R4 con-4: an abated condition is inactive, resolved or in
            # remission, whatever form its abatement takes.
            active = end is None and not (
                cond.abatement_boolean
                or cond.abatement_string
                or cond.abatement_age
                or cond.abatement_range
            )
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
            where = label_of("Medication", raw, index)
        else:
            raw = None
        if raw is None:
            self.notes.append(
                f"{label}: medicationReference `{ref}` is not among the "
                "resources given; the medication was not read"
            )
            return None
        return self.validate(Medication, raw, where).code

    def concepts(self, code: CodeableConcept) -> list[tuple[str, Coding | None]]:
        """Return (concept, coding it came from) pairs for a drug code."""
        found: dict[str, Coding | None] = {}
        for coding in code.coding:
            rx = coding.code if coding.system == RXNORM and coding.code else ""
            text = coding.display or code.text or ""
            for concept in self.catalogue.medications_for(rx, text):
                found.setdefault(concept, coding)
        if code.text:
            for concept in self.catalogue.medications_for("", code.text):
                found.setdefault(concept, code.coding[0] if code.coding else None)
        return list(found.items())

    def medication_use(self, resource: dict[str, Any], label: str) -> None:
        use = self.validate(MedicationUse, resource, label)
        if use.status in _SKIPPED_MEDICATION:
            return
        kind = resource["resourceType"]
        source = f"{kind}/{use.id}" if use.id else label
        if use.subject and self.about_someone_else(use.subject.reference, source):
            return
        if use.do_not_perform or use.intent in _NOT_AN_ORDER:
            said = "an order not to give it" if use.do_not_perform else use.intent
            self.notes.append(f"{source} is {said}: not read as taken")
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
        source = f"AllergyIntolerance/{item.id}" if item.id else label
        if item.patient and self.about_someone_else(item.patient.reference, source):
            return
        onset = self.first_time(
            label,
            ("onsetDateTime", item.onset_date_time),
            ("recordedDate", item.recorded_date),
        )
        active = self.status(
            item.clinical_status, f"{label} clinicalStatus", _CLINICAL_STATUS
        )
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


def label_of(kind: str, resource: dict[str, Any], index: int) -> str:
    """How messages name a resource: ``Observation/abc (entry 4)``."""
    rid = resource.get("id")
    name = f"{kind}/{rid}" if isinstance(rid, str) and rid else kind
    return f"{name} (entry {index})"
