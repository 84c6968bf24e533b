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

:data:`BUNDLE` reads a whole bundle's JSON bytes at once: the resource types
read, each as the reader expects it, and only the type of every other one.
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
from pydantic_core import SchemaValidator, core_schema
from typing_extensions import TypedDict

__all__ = [
    "BUNDLE",
    "OBSERVATION",
    "AllergyIntolerance",
    "BundleObservationData",
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
    subject: Reference | None = None
    code: CodeableConcept
    effective_date_time: str | None = None
    effective_period: Period | None = None
    effective_instant: str | None = None
    issued: str | None = None
    value_quantity: Quantity | None = None
    value_codeable_concept: CodeableConcept | None = None
    value_integer: int | None = None
    value_string: str | None = None
    component: list[Component] = Field(default_factory=list)


class Patient(_Element):
    id: str | None = None
    gender: str | None = None
    birth_date: str | None = None
    deceased_date_time: str | None = None
    deceased_boolean: Flag | None = None


class Condition(_Element):
    id: str | None = None
    subject: Reference | None = None
    code: CodeableConcept | None = None
    clinical_status: CodeableConcept | None = None
    verification_status: CodeableConcept | None = None
    onset_date_time: str | None = None
    onset_period: Period | None = None
    abatement_date_time: str | None = None
    abatement_period: Period | None = None
    # Any other abatement says the condition abated, when, in a way not read.
    abatement_age: dict[str, Any] | None = None
    abatement_range: dict[str, Any] | None = None
    abatement_string: str | None = None
    abatement_boolean: Flag | None = None


class Medication(_Element):
    id: str | None = None
    code: CodeableConcept | None = None


class MedicationUse(_Element):
    id: str | None = None
    status: str | None = None
    subject: Reference | None = None
    intent: str | None = None  # MedicationRequest only
    do_not_perform: Flag | None = None  # MedicationRequest only
    medication_codeable_concept: CodeableConcept | None = None
    medication_reference: Reference | None = None
    authored_on: str | None = None
    effective_date_time: str | None = None
    effective_period: Period | None = None
    date_asserted: str | None = None
    contained: list[dict[str, Any]] = Field(default_factory=list)


class AllergyIntolerance(_Element):
    id: str | None = None
    patient: Reference | None = None
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


class ReferenceData(TypedDict):
    reference: NotRequired[str | None]


class ObservationData(TypedDict):
    id: NotRequired[str | None]
    status: NotRequired[str | None]
    subject: NotRequired[ReferenceData | None]
    code: ConceptData
    effectiveDateTime: NotRequired[str | None]
    effectivePeriod: NotRequired[PeriodData | None]
    effectiveInstant: NotRequired[str | None]
    issued: NotRequired[str | None]
    valueQuantity: NotRequired[QuantityData | None]
    valueCodeableConcept: NotRequired[ConceptData | None]
    # Read for a count or score (a GCS of 14); for a measured fact, noted.
    valueInteger: NotRequired[int | None]
    valueString: NotRequired[str | None]
    component: NotRequired[list[ComponentData]]


OBSERVATION: Final = TypeAdapter(ObservationData)
"""Validates one Observation into :data:`ObservationData` (extra ignored)."""


# --- the bundle as JSON -------------------------------------------------------
# pydantic-core parses the bundle's bytes and validates them in one pass
# (engine.fhir.read_bundle_json): the Claims and Encounters it skips never
# become Python objects, so they are neither built nor freed as after orjson
# (pydantic-core still parses them). Anything this schema refuses is read
# again the usual way, so it may refuse more than the usual reader (a
# resource type missing from the list below, a malformed Observation that
# feeds no fact), never less.


class MetaData(TypedDict):
    # Only these two pick an amended resource's current version. Strict
    # strings: a number here would read differently from orjson's (a big
    # integer becomes an int, not a float), so it goes the usual way.
    versionId: NotRequired[str]
    lastUpdated: NotRequired[str]


class BundleObservationData(ObservationData):
    """An Observation as :data:`BUNDLE` gives it: validated, with its type and meta."""

    resourceType: str
    meta: NotRequired[MetaData]


# FHIR R4 (4.0.1) resource types. The bundle schema reads only the type of
# these; a type not listed (another FHIR version's, or a typo) fails the
# schema, and the bundle is read the usual way, which skips any type it does
# not read.
_R4_TYPES: Final = """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment
    AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct
    BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry
    ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression
    CodeSystem Communication CommunicationRequest CompartmentDefinition
    Composition ConceptMap Condition Consent Contract Coverage
    CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
    DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis
    Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare
    EventDefinition Evidence EvidenceVariable ExampleScenario
    ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group
    GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide
    InsurancePlan Invoice Library Linkage List Location Measure MeasureReport
    Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication
    MedicinalProductIndication MedicinalProductIngredient
    MedicinalProductInteraction MedicinalProductManufactured
    MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader
    MolecularSequence NamingSystem NutritionOrder Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation Parameters Patient PaymentNotice
    PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole
    Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson
    RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy
    ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule
    SearchParameter ServiceRequest Slot Specimen SpecimenDefinition
    StructureDefinition StructureMap Subscription Substance
    SubstanceNucleicAcid SubstancePolymer SubstanceProtein
    SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification SupplyDelivery SupplyRequest Task
    TerminologyCapabilities TestReport TestScript ValueSet VerificationResult
    VisionPrescription
""".split()

# Read as plain dicts, as orjson would give them, apart from meta.
_PLAIN_TYPES: Final = (
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Medication",
)


def _bundle_schema() -> core_schema.CoreSchema:
    kind = core_schema.typed_dict_field(core_schema.str_schema())
    skipped = core_schema.typed_dict_schema({"resourceType": kind})
    plain = core_schema.typed_dict_schema(
        {
            "resourceType": kind,
            "meta": core_schema.typed_dict_field(
                TypeAdapter(MetaData).core_schema, required=False
            ),
        },
        extra_behavior="allow",
    )
    # The Patient keeps only what the Patient model and the race extension
    # read, so names and addresses are never built as Python objects.
    patient = core_schema.typed_dict_schema(
        {
            "resourceType": kind,
            "meta": plain["fields"]["meta"],
            **dict.fromkeys(
                [*(f.alias or n for n, f in Patient.model_fields.items()), "extension"],
                core_schema.typed_dict_field(core_schema.any_schema(), required=False),
            ),
        }
    )
    choices: dict[Any, core_schema.CoreSchema] = dict.fromkeys(_R4_TYPES, skipped)
    choices |= dict.fromkeys(_PLAIN_TYPES, plain)
    choices["Patient"] = patient
    choices["Observation"] = TypeAdapter(BundleObservationData).core_schema
    # Tagged: only resourceType is looked up to pick the schema, and an
    # Observation that fails its own is not then tried as a skipped type.
    resource = core_schema.tagged_union_schema(choices, discriminator="resourceType")
    entry = core_schema.typed_dict_schema(
        {
            "fullUrl": core_schema.typed_dict_field(
                core_schema.any_schema(), required=False
            ),
            "resource": core_schema.typed_dict_field(
                core_schema.nullable_schema(resource), required=False
            ),
        }
    )
    return core_schema.typed_dict_schema(
        {
            "resourceType": core_schema.typed_dict_field(
                core_schema.literal_schema(["Bundle"])
            ),
            "type": core_schema.typed_dict_field(
                core_schema.any_schema(), required=False
            ),
            "entry": core_schema.typed_dict_field(
                core_schema.nullable_schema(core_schema.list_schema(entry)),
                required=False,
            ),
        }
    )


BUNDLE: Final = SchemaValidator(_bundle_schema())
"""Parses a Bundle's JSON bytes into dicts of the resources read.

Observations are :class:`BundleObservationData`; the Patient has only the
elements :class:`Patient` and the race extension read; the other types read
are plain dicts; ``meta`` is validated in all three; every other resource is
just its ``resourceType``. Raises :class:`pydantic_core.ValidationError` for
anything else, including some JSON the usual reader accepts (lone
surrogates, nesting deeper than pydantic-core's limit).
"""
