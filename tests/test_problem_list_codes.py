"""Codes as Synthea and US Core write them reach the rules that need them.

Each case is a FHIR bundle whose only record of the condition (or of smoking)
is the code under test, so a code the catalogue does not map would change the
clinician's answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from casebuilder import us_core_race

from engine import Assessment, KnowledgeBase
from engine.facts import Case
from engine.inputs import read_input, read_input_data

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


def _smoking_status(
    n: int, code: str, when: str, *also: tuple[str, str]
) -> dict[str, Any]:
    system = LOINC if code.startswith("LA") else SNOMED
    codings = [{"system": system, "code": code}]
    codings += [{"system": s, "code": c} for s, c in also]
    return {
        "resourceType": "Observation",
        "id": f"s{n}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "72166-2"}]},
        "effectiveDateTime": when,
        "valueCodeableConcept": {"coding": codings},
    }


def _bundle(
    codes: list[str],
    *,
    sex: str,
    born: str,
    extra: list[dict[str, Any]],
    onset: str = "2020-01-01",
) -> dict[str, Any]:
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": "p1",
            "gender": sex,
            "birthDate": born,
            "extension": [us_core_race("2106-3")],  # white
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
            "onsetDateTime": onset,
        }
        for i, code in enumerate(codes)
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in [*resources, *extra]],
    }


def _evaluate(
    kb: KnowledgeBase,
    codes: list[str],
    *,
    sex: str,
    born: str,
    extra: list[dict[str, Any]] | None = None,
    onset: str = "2020-01-01",
) -> Assessment:
    bundle = _bundle(codes, sex=sex, born=born, extra=extra or [], onset=onset)
    case = read_input_data(bundle, source="bundle.json", catalogue=kb.catalogue)
    return kb.evaluate(case, as_of=AS_OF)


def _risk_used(result: Assessment) -> Any:
    (band,) = [f for f in result.findings if f.id.startswith("ascvd_risk_")]
    (risk,) = [f for f in band.evidence.facts if f.name == "ascvd_10y_risk"]
    return risk


def _risk(result: Assessment) -> float:
    value = _risk_used(result).value
    assert isinstance(value, float)
    return value


def test_smokes_tobacco_daily_is_smoking_for_the_pooled_cohort_equations(
    kb: KnowledgeBase,
) -> None:
    # A 55-year-old white man (Goff 2014 inputs): 5.4 % as a non-smoker.
    never_smoked = [_smoking_status(1, "266919005", "2025-05-01")]
    never = _risk(_evaluate(kb, [], sex="male", born="1970-01-01", extra=never_smoked))
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
        kb,
        ["44054006", "198992004"],
        sex="female",
        born="1980-01-01",
        onset="2025-03-01",
    )
    rec = "statin_moderate_intensity_at_least"
    assert {r.id: r.status for r in plain.recommendations}[rec] == "recommended"
    assert {r.id: r.status for r in eclampsia.recommendations}[rec] == "blocked"


def test_current_smoking_status_is_smoking_for_the_pooled_cohort_equations(
    kb: KnowledgeBase,
) -> None:
    smoker = _risk(_evaluate(kb, ["77176002"], sex="male", born="1970-01-01"))
    for code in ("449868002", "428041000124106"):  # every day, some days
        status = [_smoking_status(1, code, "2025-05-01")]
        result = _evaluate(kb, [], sex="male", born="1970-01-01", extra=status)
        assert _risk(result) == smoker
        assert "smoking_status current (Observation/s1)" in _risk_used(result).source


def test_the_latest_smoking_status_outweighs_an_old_problem_list_entry(
    kb: KnowledgeBase,
) -> None:
    # As in Synthea's records: "Smokes tobacco daily" active since youth, and
    # every visit since records "Never smoker".
    never_smoked = [_smoking_status(1, "266919005", "2025-05-01")]
    never = _risk(_evaluate(kb, [], sex="male", born="1970-01-01", extra=never_smoked))
    statuses = [
        _smoking_status(1, "449868002", "2019-05-01"),
        _smoking_status(2, "8517006", "2025-05-01"),  # former smoker, latest
    ]
    both = _evaluate(kb, ["449868002"], sex="male", born="1970-01-01", extra=statuses)
    assert _risk(both) == never


def test_an_unmapped_smoking_status_is_noted_and_the_problem_list_decides(
    kb: KnowledgeBase,
) -> None:
    bundle = _bundle(
        ["77176002"],
        sex="male",
        born="1970-01-01",
        extra=[_smoking_status(1, "999999", "2025-05-01")],
    )
    case = read_input_data(bundle, source="bundle.json", catalogue=kb.catalogue)
    assert "smoking_status" not in case.readings
    assert (
        "smoking_status (Observation/s1): SNOMED CT 999999 is not one of the "
        "values current, former, never, unknown; not read"
    ) in case.notes
    smoker = _risk(_evaluate(kb, ["77176002"], sex="male", born="1970-01-01"))
    assert _risk(kb.evaluate(case, as_of=AS_OF)) == smoker


def test_smoking_status_reads_the_same_from_a_bundle_file(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    bundle = _bundle(
        [],
        sex="male",
        born="1970-01-01",
        extra=[_smoking_status(1, "266919005", "2025-05-01")],
    )
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    from_file: Case = read_input(path, catalogue=kb.catalogue)
    from_data = read_input_data(bundle, source=str(path), catalogue=kb.catalogue)
    assert [r.value for r in from_file.readings["smoking_status"]] == ["never"]
    assert from_file == from_data


def test_a_case_file_takes_smoking_status(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "case.yaml"
    path.write_text(
        "patient: {age: 55, sex: male}\n"
        "facts:\n"
        "  race: white\n"
        "  smoking_status: current\n"
        "  total_cholesterol: 213 mg/dL @ 2025-05-01\n"
        "  hdl_cholesterol: 50 mg/dL @ 2025-05-01\n"
        "  systolic_bp: 120 mmHg @ 2025-05-01\n"
    )
    smoker = _risk(_evaluate(kb, ["77176002"], sex="male", born="1970-01-01"))
    assert _risk(kb.evaluate(path, as_of=AS_OF)) == pytest.approx(smoker, abs=1e-6)


def _risk_missing(result: Assessment) -> list[str]:
    (rule,) = [u for u in result.undetermined if u.rule_id == "ascvd_risk_low"]
    return rule.missing


@pytest.mark.parametrize(
    ("statuses", "codes"),
    [
        ([], []),  # nothing recorded about smoking
        ([("266927001", "2025-05-01")], []),  # unknown if ever smoked
        ([("266927001", "2025-05-01")], ["77176002"]),  # unknown beats the list
        ([("449868002", "2023-05-01")], []),  # a smoker two years ago
    ],
)
def test_smoking_not_known_now_leaves_the_risk_undetermined(
    kb: KnowledgeBase, statuses: list[tuple[str, str]], codes: list[str]
) -> None:
    # Spec 0.4: smoking changes the risk (5.4 % against 10.0 % here).
    extra = [_smoking_status(i, c, when) for i, (c, when) in enumerate(statuses)]
    result = _evaluate(kb, codes, sex="male", born="1970-01-01", extra=extra)
    assert not [f for f in result.findings if f.id.startswith("ascvd_risk_")]
    assert "smoking_status" in _risk_missing(result)


@pytest.mark.parametrize(
    ("first", "second", "listed"),
    [
        (
            "449868002",
            (SNOMED, "266919005"),
            "SNOMED CT 449868002, SNOMED CT 266919005",
        ),
        ("LA18978-9", (SNOMED, "449868002"), "LOINC LA18978-9, SNOMED CT 449868002"),
    ],
)
def test_codings_that_disagree_are_noted_and_not_read(
    kb: KnowledgeBase, first: str, second: tuple[str, str], listed: str
) -> None:
    # Within SNOMED CT, or across SNOMED CT and LOINC's answer list.
    status = _smoking_status(1, first, "2025-05-01", second)
    bundle = _bundle([], sex="male", born="1970-01-01", extra=[status])
    case = read_input_data(bundle, source="bundle.json", catalogue=kb.catalogue)
    assert "smoking_status" not in case.readings
    assert (
        f"smoking_status (Observation/s1): {listed} give different values "
        "(current, never); not read"
    ) in case.notes


@pytest.mark.parametrize(
    ("onset", "pregnant"), [("1995-06-01", False), ("2025-01-15", True)]
)
def test_a_pregnancy_never_closed_does_not_block_an_ace_inhibitor(
    kb: KnowledgeBase, onset: str, pregnant: bool
) -> None:
    # A woman of 60 with diabetes, hypertension and UACR 410 mg/g: an ACE
    # inhibitor or ARB is strongly recommended unless she is pregnant.
    uacr = _observation(9, "14959-1", 410, "mg/g")
    result = _evaluate(
        kb,
        ["44054006", "38341003", "72892002"],
        sex="female",
        born="1965-01-01" if not pregnant else "1990-01-01",
        extra=[uacr],
        onset=onset,
    )
    status = {r.id: r.status for r in result.recommendations}
    assert status["acei_arb_strongly_recommended"] == (
        "blocked" if pregnant else "recommended"
    )
    stale = [n for n in result.notes if n.startswith("pregnancy (Condition/c2)")]
    assert stale == (
        []
        if pregnant
        else [
            "pregnancy (Condition/c2) began more than 10 months before the "
            "evaluation and has no end: not taken as current"
        ]
    )


@pytest.mark.parametrize(
    ("answer", "snomed"),
    [
        ("LA18976-3", "449868002"),  # current every day smoker
        ("LA18977-1", "428041000124106"),  # current some day smoker
        ("LA15920-4", "8517006"),  # former smoker
        ("LA18978-9", "266919005"),  # never smoker
    ],
)
def test_a_loinc_answer_code_reads_as_its_snomed_ct_twin(
    kb: KnowledgeBase, answer: str, snomed: str
) -> None:
    # Some systems code the status with LOINC's answer list, not SNOMED CT:
    # the 10-year risk must be the same either way.
    def risk(code: str) -> float:
        status = [_smoking_status(1, code, "2025-05-01")]
        return _risk(_evaluate(kb, [], sex="male", born="1970-01-01", extra=status))

    assert risk(answer) == risk(snomed)
