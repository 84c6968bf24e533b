"""The parts of FHIR R4 the bundle reader validates, as pydantic schemas.

One model per resource type read, with just the elements the knowledge base
uses; every other element is ignored, and names and addresses are deliberately
absent from :class:`Patient`.

Observations are most of the resources read, so they have a second schema of
the same elements as TypedDicts (:data:`OBSERVATION`): pydantic validates it
in about half the time, because it builds plain dicts instead of five model
instances per Observation. Both schemas accept the same JSON; the models stay
the authority for the wording of errors (pydantic words a nested model's type
error with the model's name), so an Observation the fast schema refuses is
validated again with :class:`Observation` to report it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, NotRequired

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict

__all__ = [
    "OBSERVATION",
    "AllergyIntolerance",
    "CodeableConcept",
    "Coding",
    "CodingData",
    "Condition",
    "Medication",
    "MedicationUse",
    "Observation",
    "ObservationData",
    "Patient",
    "Period",
    "QuantityData",
    "Reference",
]

# Strict: FHIR JSON numbers are numbers; "142" is a malformed bundle, not 142.
# Python's json accepts NaN and Infinity, which FHIR does not.
Number = Annotated[float, Strict(), AllowInfNan(False)]
Flag = Annotated[bool, Strict()]

# --- models ------------------------------------------------------------------
# Lists default through default_factory: a `= []` default is deep-copied for
# every element read, a measurable share of reading a bundle.


class _Element(BaseModel):
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel)


class Coding(_Element):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(_Element):
    coding: list[Coding] = Field(default_factory=list)
    text: str | None = None


class Quantity(_Element):
    value: Number | None = None
    comparator: str | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None


class Period(_Element):
    start: str | None = None
    end: str | None = None


class Reference(_Element):
    reference: str | None = None


class Component(_Element):
    code: CodeableConcept
    value_quantity: Quantity | None = None


class Observation(_Element):
    id: str | None = None
    status: str | None = None
    code: CodeableConcept
    effective_date_time: str | None = None
    effective_period: Period | None = None
    effective_instant: str | None = None
    issued: str | None = None
    value_quantity: Quantity | None = None
    component: list[Component] = Field(default_factory=list)


class Patient(_Element):
    id: str | None = None
    gender: str | None = None
    birth_date: str | None = None
    deceased_date_time: str | None = None
    deceased_boolean: Flag | None = None


class Condition(_Element):
    id: str | None = None
    code: CodeableConcept | None = None
    clinical_status: CodeableConcept | None = None
    verification_status: CodeableConcept | None = None
    onset_date_time: str | None = None
    onset_period: Period | None = None
    abatement_date_time: str | None = None
    abatement_period: Period | None = None


class Medication(_Element):
    id: str | None = None
    code: CodeableConcept | None = None


class MedicationUse(_Element):
    id: str | None = None
    status: str | None = None
    medication_codeable_concept: CodeableConcept | None = None
    medication_reference: Reference | None = None
    authored_on: str | None = None
    effective_date_time: str | None = None
    effective_period: Period | None = None
    date_asserted: str | None = None
    contained: list[dict[str, Any]] = Field(default_factory=list)


class AllergyIntolerance(_Element):
    id: str | None = None
    code: CodeableConcept | None = None
    clinical_status: CodeableConcept | None = None
    verification_status: CodeableConcept | None = None
    onset_date_time: str | None = None
    recorded_date: str | None = None


# --- the fast Observation schema ---------------------------------------------
# The same elements as the models above, keyed as in the JSON. An element
# absent from the input is absent from the dict (the models default it).
# tests/test_resources.py checks that both schemas name the same elements.


class CodingData(TypedDict):
    system: NotRequired[str | None]
    code: NotRequired[str | None]
    display: NotRequired[str | None]


class ConceptData(TypedDict):
    coding: NotRequired[list[CodingData]]
    text: NotRequired[str | None]


class QuantityData(TypedDict):
    value: NotRequired[Number | None]
    comparator: NotRequired[str | None]
    unit: NotRequired[str | None]
    system: NotRequired[str | None]
    code: NotRequired[str | None]


class PeriodData(TypedDict):
    start: NotRequired[str | None]
    end: NotRequired[str | None]


# The keys are FHIR's camelCase element names, as in the JSON.
class ComponentData(TypedDict):
    code: ConceptData
    valueQuantity: NotRequired[QuantityData | None]


class ObservationData(TypedDict):
    id: NotRequired[str | None]
    status: NotRequired[str | None]
    code: ConceptData
    effectiveDateTime: NotRequired[str | None]
    effectivePeriod: NotRequired[PeriodData | None]
    effectiveInstant: NotRequired[str | None]
    issued: NotRequired[str | None]
    valueQuantity: NotRequired[QuantityData | None]
    component: NotRequired[list[ComponentData]]


OBSERVATION: Final = TypeAdapter(ObservationData)
"""Validates one Observation into :data:`ObservationData` (extra ignored)."""
