"""Whole-patient tests: every ruleset at once, with the full expected conclusion.

Each patient lists every diagnosis (with code and certainty), every finding,
every recommendation (with status), every rule fired and every rule that could
not be determined, so a rule that starts or stops firing anywhere shows up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from casebuilder import (
    NOW,
    bp,
    case,
    creatinine,
    has_condition,
    lab,
    recommendation_statuses,
    taking,
    undetermined_ids,
)

from engine import Assessment, Case, KnowledgeBase

ALBUMINURIA_UNKNOWN = {
    "albuminuria_a1",
    "albuminuria_a2",
    "albuminuria_a3",
    "ckd_by_albuminuria",
}
# No BMI, weight or height: every adult BMI category cannot be determined.
BMI_UNKNOWN = {
    "bmi_underweight",
    "bmi_healthy_weight",
    "bmi_overweight",
    "bmi_obesity_class_1",
    "bmi_obesity_class_2",
    "bmi_obesity_class_3",
}
# Age 40-79 without lipids or race: no 10-year ASCVD risk, no risk band.
PCE_UNKNOWN = {
    "ascvd_risk_low",
    "ascvd_risk_borderline",
    "ascvd_risk_intermediate",
    "ascvd_risk_high",
}
# Age 40-75 without LDL-C: the LDL-C >= 190 statin group, and so every later
# group and its recommendation, cannot be determined.
STATIN_UNKNOWN = {
    "statin_group_ldl_190",
    "statin_group_risk_high",
    "statin_group_risk_intermediate",
    "statin_group_risk_borderline",
    "statin_group_risk_low",
    "statin_high_intensity_start",
    "statin_risk_discussion_start",
    "statin_risk_enhancers_start",
    "statin_lifestyle_not_taking",
}
STATIN_UNKNOWN_DIABETES = STATIN_UNKNOWN | {
    "statin_group_diabetes_40_75",
    "statin_moderate_at_least_start",
}
PREVENTION_UNKNOWN = BMI_UNKNOWN | PCE_UNKNOWN | STATIN_UNKNOWN


@dataclass(frozen=True)
class Patient:
    """A case and the conclusion a clinician would expect for it."""

    case: Case
    diagnoses: dict[str, tuple[str, float]]
    findings: set[str]
    recommendations: dict[str, str]
    rules_fired: set[str]
    undetermined: set[str]
    medications: list[str] = field(default_factory=list)


PATIENTS = {
    # 67-year-old woman on metformin: BP 150/87 (mean of two days), A1C 7.0
    # then 7.2, eGFR 45 then 43 over 190 days (G3b, CKD).
    "woman_67_stage2_diabetes_g3b_on_metformin": Patient(
        case=case(
            bp([152, 148], [88, 86], days_ago=[60, 10]),
            lab("hba1c", [7.0, 7.2], "%", days_ago=[200, 10]),
            creatinine([1.3, 1.35], days_ago=[200, 10]),
            age=67,
            sex="female",
            medications=[taking("metformin")],
        ),
        diagnoses={
            "diabetes": ("73211009", 0.95),
            "hypertension": ("38341003", 0.9),
            "chronic_kidney_disease": ("709044004", 0.9),
        },
        findings={
            "stage_2_hypertension",
            "glycaemic_tests_available",
            "hba1c_diabetes_range",
            "diabetes_confirmed",
            "gfr_category_g3b",
            "ckd",
            "acei_arb_row_strongly_recommended",
        },
        recommendations={
            # No lipids on record: the statin decision asks for them.
            "obtain_lipid_panel": "recommended",
            "metformin_continue_with_caution": "recommended",
            # Diabetes, stage 2 hypertension and eGFR 43 (below 60).
            "acei_arb_strongly_recommended": "recommended",
        },
        rules_fired={
            "statin_obtain_lipid_panel",
            "bp_stage_2",
            "glycaemic_tests_available",
            "hba1c_diabetes_range",
            "diabetes_repeated_test",
            "gfr_g3b",
            "ckd_by_egfr",
            "metformin_continue_with_caution",
            "acei_arb_strongly_recommended",
        },
        # No ACR; the progression model lacks BMI, lipids and random glucose.
        undetermined=ALBUMINURIA_UNKNOWN
        | {"diabetes_progression_follow_up"}
        | BMI_UNKNOWN
        | PCE_UNKNOWN
        | STATIN_UNKNOWN_DIABETES,
        medications=["metformin"],
    ),
    # 58-year-old man: BP mean 131/85 (stage 1), A1C 6.0 % and FPG 105
    # (prediabetes), ACR 45 then 60 mg/g over 120 days with eGFR 78 (CKD by
    # albuminuria, G2 A2), no medication.
    "man_58_stage1_prediabetes_a2_ckd": Patient(
        case=case(
            bp([134, 128], [84, 86], days_ago=[30, 10]),
            lab("hba1c", 6.0, "%"),
            lab("fasting_glucose", 105, "mg/dL"),
            lab("acr", [45, 60], "mg/g", days_ago=[130, 10]),
            creatinine(1.1),
            age=58,
            sex="male",
        ),
        diagnoses={
            "hypertension": ("38341003", 0.7),
            "prediabetes": ("714628002", 0.85),
            "chronic_kidney_disease": ("709044004", 0.85),
        },
        findings={
            "stage_1_hypertension",
            "glycaemic_tests_available",
            "prediabetes",
            "gfr_category_g2",
            "albuminuria_a2",
            "ckd",
        },
        recommendations={
            # No lipids on record: the statin decision asks for them.
            "obtain_lipid_panel": "recommended",
        },
        rules_fired={
            "statin_obtain_lipid_panel",
            "bp_stage_1",
            "glycaemic_tests_available",
            "prediabetes",
            "gfr_g2",
            "albuminuria_a2",
            "ckd_by_albuminuria",
        },
        undetermined={"random_glucose_not_diagnostic"} | PREVENTION_UNKNOWN,
    ),
    # 45-year-old woman: BP mean 186/111 (crisis), one FPG of 130, a random
    # glucose of 250, eGFR about 22 twice 30 days apart (G4, CKD not yet
    # determinable), no medication and no problem list.
    "woman_45_crisis_unconfirmed_fpg_g4_30_days": Patient(
        case=case(
            bp([185, 187], [110, 112], days_ago=[8, 2]),
            lab("fasting_glucose", 130, "mg/dL", days_ago=5),
            lab("random_glucose", 250, "mg/dL", days_ago=20),
            creatinine(2.6, days_ago=[40, 10]),
            age=45,
            sex="female",
        ),
        diagnoses={"hypertension": ("38341003", 0.9)},
        findings={
            "stage_2_hypertension",
            "hypertensive_crisis",
            "bp_reading_in_crisis_range",
            "glycaemic_tests_available",
            "fpg_diabetes_range",
            "diabetes_range_unconfirmed",
            "random_glucose_not_diagnostic",
            "gfr_category_g4",
        },
        recommendations={
            # No lipids on record: the statin decision asks for them.
            "obtain_lipid_panel": "recommended",
            "assess_target_organ_damage_urgently": "recommended",
            "repeat_bp_now_crisis_range": "recommended",
            "repeat_fpg_to_confirm": "recommended",
            "order_diagnostic_glucose_test": "recommended",
        },
        rules_fired={
            "statin_obtain_lipid_panel",
            "bp_stage_2",
            "bp_crisis",
            "bp_single_reading_crisis_range",
            "glycaemic_tests_available",
            "fpg_diabetes_range",
            "diabetes_unconfirmed_fpg",
            "random_glucose_not_diagnostic",
            "gfr_g4",
        },
        undetermined=ALBUMINURIA_UNKNOWN | {"ckd_by_egfr"} | PREVENTION_UNKNOWN,
    ),
    # 74-year-old man with diabetes on the problem list, on metformin, no
    # glycaemic test: BP 125/77 (elevated), eGFR about 28 then 25 over 140
    # days (G4, CKD), one ACR of 350 mg/g (A3, its duration unknown).
    "man_74_listed_diabetes_elevated_g4_ckd_on_metformin": Patient(
        case=case(
            bp([124, 126], [76, 78], days_ago=[90, 20]),
            creatinine([2.4, 2.6], days_ago=[150, 10]),
            lab("acr", 350, "mg/g", days_ago=10),
            age=74,
            sex="male",
            conditions=[has_condition("diabetes")],
            medications=[taking("metformin")],
        ),
        diagnoses={"chronic_kidney_disease": ("709044004", 0.9)},
        findings={"bp_elevated", "gfr_category_g4", "albuminuria_a3", "ckd"},
        recommendations={
            # No lipids on record: the statin decision asks for them.
            "obtain_lipid_panel": "recommended",
            "bp_lifestyle_therapy_only": "recommended",
            "metformin_contraindicated": "recommended",
            # Blocked although not made: the patient already takes it.
            "start_metformin": "blocked",
            # Listed diabetes and no A1C at all. Normotensive with eGFR
            # below 60: no ACE inhibitor/ARB row applies.
            "obtain_hba1c": "recommended",
        },
        rules_fired={
            "statin_obtain_lipid_panel",
            "bp_elevated",
            "gfr_g4",
            "albuminuria_a3",
            "ckd_by_egfr",
            "metformin_contraindicated",
            "care_gap_hba1c",
        },
        # Listed diabetes: the diagnostic glycaemic rules (normal, random
        # glucose) do not apply, so only "any test available" is open.
        undetermined={
            "glycaemic_tests_available",
            "diabetes_progression_follow_up",
            "ckd_by_albuminuria",
        }
        | BMI_UNKNOWN
        | PCE_UNKNOWN
        | STATIN_UNKNOWN_DIABETES,
        medications=["metformin"],
    ),
}


@pytest.fixture(scope="module")
def results(kb: KnowledgeBase) -> dict[str, Assessment]:
    return {name: kb.evaluate(p.case, as_of=NOW) for name, p in PATIENTS.items()}


NAMES = list(PATIENTS)


@pytest.mark.parametrize("name", NAMES)
def test_assessment_is_complete(results: dict[str, Assessment], name: str) -> None:
    result = results[name]
    assert result.status == "complete"
    assert result.problems == []


@pytest.mark.parametrize("name", NAMES)
def test_diagnoses_codes_and_certainties(
    results: dict[str, Assessment], name: str
) -> None:
    got = {d.id: (d.code, d.certainty) for d in results[name].diagnoses}
    assert got == PATIENTS[name].diagnoses


@pytest.mark.parametrize("name", NAMES)
def test_diagnoses_are_ordered_by_certainty(
    results: dict[str, Assessment], name: str
) -> None:
    certainties = [d.certainty for d in results[name].diagnoses]
    assert certainties == sorted(certainties, reverse=True)


@pytest.mark.parametrize("name", NAMES)
def test_findings(results: dict[str, Assessment], name: str) -> None:
    ids = [f.id for f in results[name].findings]
    assert len(ids) == len(set(ids))
    assert set(ids) == PATIENTS[name].findings


@pytest.mark.parametrize("name", NAMES)
def test_recommendations_and_their_status(
    results: dict[str, Assessment], name: str
) -> None:
    ids = [r.id for r in results[name].recommendations]
    assert len(ids) == len(set(ids))
    assert recommendation_statuses(results[name]) == PATIENTS[name].recommendations


@pytest.mark.parametrize("name", NAMES)
def test_rules_fired(results: dict[str, Assessment], name: str) -> None:
    fired = results[name].rules_fired
    assert len(fired) == len(set(fired))
    assert set(fired) == PATIENTS[name].rules_fired


@pytest.mark.parametrize("name", NAMES)
def test_rules_that_cannot_be_determined(
    results: dict[str, Assessment], name: str
) -> None:
    assert undetermined_ids(results[name]) == PATIENTS[name].undetermined
    # A rule is either fired or undetermined, never both.
    assert not undetermined_ids(results[name]) & set(results[name].rules_fired)


@pytest.mark.parametrize("name", NAMES)
def test_patient_summary(results: dict[str, Assessment], name: str) -> None:
    patient = PATIENTS[name]
    summary = results[name].patient
    expected_age = NOW.year - patient.case.birth_date.year - 1  # type: ignore[union-attr]
    assert (summary.age, summary.sex, summary.medications) == (
        expected_age,
        patient.case.sex,
        patient.medications,
    )


def test_blocked_recommendation_names_the_blocking_rule(
    results: dict[str, Assessment],
) -> None:
    result = results["man_74_listed_diabetes_elevated_g4_ckd_on_metformin"]
    (start,) = [r for r in result.recommendations if r.id == "start_metformin"]
    assert [b.rule_id for b in start.blocked_by] == ["metformin_contraindicated"]


def test_ckd_evidence_spans_more_than_3_months(
    results: dict[str, Assessment],
) -> None:
    result = results["woman_67_stage2_diabetes_g3b_on_metformin"]
    (ckd,) = [d for d in result.diagnoses if d.id == "chronic_kidney_disease"]
    egfrs = sorted(
        (f.time, f.value) for f in ckd.evidence.facts if f.name == "egfr" and f.time
    )
    assert [v for _, v in egfrs] == [45.0, 43.0]
    assert (egfrs[-1][0] - egfrs[0][0]).days == 190
