"""Problem-list codes as Synthea writes them reach the rules that need them.

Each case is a FHIR bundle whose only record of the condition is the SNOMED CT
code under test, so a code the catalogue does not map would change the
clinician's answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engine import Assessment, KnowledgeBase
from engine.inputs import read_input_data

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)


def _observation(n: int, loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "effectiveDateTime": "2025-05-01",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def _evaluate(
    kb: KnowledgeBase, codes: list[str], *, sex: str, born: str
) -> Assessment:
    race = {
        "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "extension": [
            {
                "url": "ombCategory",
                "valueCoding": {
                    "system": "urn:oid:2.16.840.1.113883.6.238",
                    "code": "2106-3",
                },
            }
        ],
    }
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": "p1",
            "gender": sex,
            "birthDate": born,
            "extension": [race],
        },
        _observation(1, "2093-3", 213, "mg/dL"),  # total cholesterol
        _observation(2, "2085-9", 50, "mg/dL"),  # HDL cholesterol
        _observation(3, "8480-6", 120, "mm[Hg]"),  # systolic pressure
        _observation(4, "18262-6", 120, "mg/dL"),  # LDL cholesterol
    ]
    resources += [
        {
            "resourceType": "Condition",
            "id": f"c{i}",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "onsetDateTime": "2020-01-01",
        }
        for i, code in enumerate(codes)
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    case = read_input_data(bundle, source="bundle.json", catalogue=kb.catalogue)
    return kb.evaluate(case, as_of=AS_OF)


def _risk(result: Assessment) -> float:
    (band,) = [f for f in result.findings if f.id.startswith("ascvd_risk_")]
    (risk,) = [f for f in band.evidence.facts if f.name == "ascvd_10y_risk"]
    assert isinstance(risk.value, float)
    return risk.value


def test_smokes_tobacco_daily_is_smoking_for_the_pooled_cohort_equations(
    kb: KnowledgeBase,
) -> None:
    # A 55-year-old white man (Goff 2014 inputs): 5.4 % as a non-smoker.
    never = _risk(_evaluate(kb, [], sex="male", born="1970-01-01"))
    daily = _risk(_evaluate(kb, ["449868002"], sex="male", born="1970-01-01"))
    smoker = _risk(_evaluate(kb, ["77176002"], sex="male", born="1970-01-01"))
    assert round(never, 1) == 5.4
    assert daily == smoker > never


@pytest.mark.parametrize(
    "code",
    [
        "368581000119106",  # neuropathy due to type 2 diabetes
        "422034002",  # diabetic retinopathy with type 2 diabetes
        "1551000119108",  # nonproliferative retinopathy due to type 2 diabetes
        "1501000119109",  # proliferative retinopathy due to type 2 diabetes
        "90781000119102",  # microalbuminuria due to type 2 diabetes
        "127013003",  # diabetic renal disease
    ],
)
def test_a_diabetic_complication_puts_the_patient_in_the_diabetes_statin_group(
    kb: KnowledgeBase, code: str
) -> None:
    result = _evaluate(kb, [code], sex="male", born="1970-01-01")
    assert "statin_group_diabetes_40_75" in {f.id for f in result.findings}
    statuses = {r.id: r.status for r in result.recommendations}
    assert statuses.get("statin_moderate_intensity_at_least") == "recommended"


def test_antepartum_eclampsia_is_a_pregnancy_and_blocks_a_statin(
    kb: KnowledgeBase,
) -> None:
    # A 45-year-old woman with type 2 diabetes: a statin unless pregnant.
    plain = _evaluate(kb, ["44054006"], sex="female", born="1980-01-01")
    eclampsia = _evaluate(
        kb, ["44054006", "198992004"], sex="female", born="1980-01-01"
    )
    rec = "statin_moderate_intensity_at_least"
    assert {r.id: r.status for r in plain.recommendations}[rec] == "recommended"
    assert {r.id: r.status for r in eclampsia.recommendations}[rec] == "blocked"
