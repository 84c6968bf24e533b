"""Tests for rules/blood_pressure.yaml: ACC/AHA categories from mean readings.

Spec section 1: the category comes from the mean of at least two readings on
separate days (of the last 12 months, our convention); when systolic and
diastolic fall in different categories the higher one applies; the crisis
flag (SBP > 180 and/or DBP > 120, both strict) sits on top of stage 2.
"""

from __future__ import annotations

import pytest
from casebuilder import (
    NOW,
    bp,
    case,
    diagnosis,
    diagnosis_ids,
    finding_ids,
    recommendation,
    recommendation_statuses,
    undetermined,
    undetermined_ids,
)

from engine import Assessment, Case, KnowledgeBase

BP_FINDINGS = {
    "bp_normal",
    "bp_elevated",
    "stage_1_hypertension",
    "stage_2_hypertension",
    "hypertensive_crisis",
}
BP_RULES = {"bp_normal", "bp_elevated", "bp_stage_1", "bp_stage_2", "bp_crisis"}
HYPERTENSION_SNOMED = "38341003"


def evaluate(kb: KnowledgeBase, c: Case) -> Assessment:
    result = kb.evaluate(c, as_of=NOW)
    assert result.status == "complete", result.problems
    return result


def bp_findings(result: Assessment) -> set[str]:
    return finding_ids(result) & BP_FINDINGS


# Each threshold, at and just around it, with the other pressure out of the way.
@pytest.mark.parametrize(
    ("sbp", "dbp", "expected"),
    [
        (119, 70, {"bp_normal"}),
        (120, 70, {"bp_elevated"}),
        (129, 70, {"bp_elevated"}),
        (130, 70, {"stage_1_hypertension"}),
        (139, 70, {"stage_1_hypertension"}),
        (140, 70, {"stage_2_hypertension"}),
        (110, 79, {"bp_normal"}),
        (110, 80, {"stage_1_hypertension"}),
        (110, 89, {"stage_1_hypertension"}),
        (110, 90, {"stage_2_hypertension"}),
        (180, 100, {"stage_2_hypertension"}),
        (181, 100, {"stage_2_hypertension", "hypertensive_crisis"}),
        (150, 120, {"stage_2_hypertension"}),
        (150, 121, {"stage_2_hypertension", "hypertensive_crisis"}),
    ],
)
def test_category_at_each_threshold(
    kb: KnowledgeBase, sbp: float, dbp: float, expected: set[str]
) -> None:
    result = evaluate(kb, case(bp(sbp, dbp)))
    assert bp_findings(result) == expected
    assert not undetermined_ids(result) & BP_RULES


@pytest.mark.parametrize(
    ("sbp", "dbp", "expected"),
    [
        (125, 85, {"stage_1_hypertension"}),  # elevated SBP, stage 1 DBP
        (135, 95, {"stage_2_hypertension"}),  # stage 1 SBP, stage 2 DBP
        (115, 85, {"stage_1_hypertension"}),  # normal SBP, stage 1 DBP
        (125, 79, {"bp_elevated"}),  # elevated SBP, normal DBP
        (145, 75, {"stage_2_hypertension"}),  # stage 2 SBP, normal DBP
        (118, 92, {"stage_2_hypertension"}),  # normal SBP, stage 2 DBP
        (130, 121, {"stage_2_hypertension", "hypertensive_crisis"}),
    ],
)
def test_higher_category_of_systolic_and_diastolic_wins(
    kb: KnowledgeBase, sbp: float, dbp: float, expected: set[str]
) -> None:
    result = evaluate(kb, case(bp(sbp, dbp)))
    assert bp_findings(result) == expected


def test_stage_2_by_diastolic_is_not_also_stage_1(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(135, 95)))
    assert "bp_stage_1" not in result.rules_fired
    assert "bp_stage_2" in result.rules_fired
    assert diagnosis(result, "hypertension").certainty == 0.9


@pytest.mark.parametrize(
    ("sbp", "dbp", "expected"),
    [
        ([138, 142], [70, 70], {"stage_2_hypertension"}),  # mean 140
        ([136, 142], [70, 70], {"stage_1_hypertension"}),  # mean 139
        ([119, 120], [70, 70], {"bp_normal"}),  # mean 119.5: bands are half-open
        ([129, 130], [70, 70], {"bp_elevated"}),  # mean 129.5
        ([139, 140], [70, 70], {"stage_1_hypertension"}),  # mean 139.5
        ([110, 110], [79, 80], {"bp_normal"}),  # DBP mean 79.5
        ([110, 110], [89, 90], {"stage_1_hypertension"}),  # DBP mean 89.5
        ([150, 212], [80, 80], {"stage_2_hypertension", "hypertensive_crisis"}),
        ([170, 190], [80, 80], {"stage_2_hypertension"}),  # mean 180, not > 180
    ],
)
def test_category_comes_from_the_mean_of_the_readings(
    kb: KnowledgeBase, sbp: list[float], dbp: list[float], expected: set[str]
) -> None:
    result = evaluate(kb, case(bp(sbp, dbp, days_ago=[40, 5])))
    assert bp_findings(result) == expected


def test_mean_is_the_value_shown_as_evidence(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp([138, 142], [70, 70], days_ago=[40, 5])))
    (fact,) = [
        f
        for f in diagnosis(result, "hypertension").evidence.facts
        if f.name == "systolic_bp"
    ]
    assert (fact.value, fact.unit, fact.aggregate, fact.readings) == (
        140.0,
        "mm[Hg]",
        "mean",
        2,
    )


def test_three_readings_on_two_days_are_all_averaged(kb: KnowledgeBase) -> None:
    # 128, 130 and 135: mean 131 -> stage 1 (the 135 alone is not needed).
    readings = bp([128, 130, 135], [70, 70, 70], days_ago=[40, 5, 5.1])
    result = evaluate(kb, case(readings))
    assert bp_findings(result) == {"stage_1_hypertension"}


@pytest.mark.parametrize(
    ("sbp", "dbp", "code", "certainty"),
    [(135, 70, HYPERTENSION_SNOMED, 0.7), (150, 95, HYPERTENSION_SNOMED, 0.9)],
)
def test_hypertension_diagnosis_code_and_certainty(
    kb: KnowledgeBase, sbp: float, dbp: float, code: str, certainty: float
) -> None:
    result = evaluate(kb, case(bp(sbp, dbp)))
    dx = diagnosis(result, "hypertension")
    assert (dx.code, dx.system, dx.certainty) == (
        code,
        "http://snomed.info/sct",
        certainty,
    )


@pytest.mark.parametrize(("sbp", "dbp"), [(119, 79), (125, 75)])
def test_normal_and_elevated_are_not_hypertension(
    kb: KnowledgeBase, sbp: float, dbp: float
) -> None:
    result = evaluate(kb, case(bp(sbp, dbp)))
    assert "hypertension" not in diagnosis_ids(result)


def test_elevated_gets_lifestyle_therapy_only(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(125, 75)))
    rec = recommendation(result, "bp_lifestyle_therapy_only")
    assert (rec.status, rec.certainty, rec.strength) == ("recommended", 0.9, "strong")
    assert recommendation_statuses(result) == {
        "bp_lifestyle_therapy_only": "recommended",
        # No lipids on record at this age: the statin ruleset asks for them.
        "obtain_lipid_panel": "recommended",
    }


@pytest.mark.parametrize(("sbp", "dbp"), [(119, 79), (135, 85), (150, 95)])
def test_lifestyle_only_is_not_recommended_outside_elevated(
    kb: KnowledgeBase, sbp: float, dbp: float
) -> None:
    result = evaluate(kb, case(bp(sbp, dbp)))
    assert "bp_lifestyle_therapy_only" not in recommendation_statuses(result)


def test_crisis_asks_for_urgent_target_organ_assessment(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(185, 110)))
    assert bp_findings(result) == {"stage_2_hypertension", "hypertensive_crisis"}
    rec = recommendation(result, "assess_target_organ_damage_urgently")
    assert (rec.status, rec.certainty, rec.strength) == ("recommended", 0.95, "strong")
    assert [r.rule_id for r in rec.evidence.rules] == ["bp_crisis"]
    assert "stage_2_hypertension" in rec.evidence.findings
    # The crisis does not add a second hypertension diagnosis or raise it.
    assert diagnosis(result, "hypertension").certainty == 0.9


def test_stage_2_below_crisis_has_no_urgent_recommendation(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(180, 120)))
    assert "hypertensive_crisis" not in finding_ids(result)
    assert "assess_target_organ_damage_urgently" not in recommendation_statuses(result)


def test_one_reading_only_cannot_be_categorised(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(150, 95, days_ago=10)))
    assert bp_findings(result) == set()
    assert "hypertension" not in diagnosis_ids(result)
    assert undetermined_ids(result) >= BP_RULES
    for rule_id in BP_RULES:
        assert undetermined(result, rule_id).missing == ["diastolic_bp", "systolic_bp"]
    assert "found 1" in undetermined(result, "bp_stage_2").reason


def test_two_readings_on_the_same_day_cannot_be_categorised(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, case(bp(150, 95, days_ago=[10, 10.2])))
    assert bp_findings(result) == set()
    assert undetermined_ids(result) >= BP_RULES


def test_readings_older_than_12_months_do_not_count(kb: KnowledgeBase) -> None:
    # Only the recent reading is in the window: one reading, no category.
    result = evaluate(kb, case(bp(150, 95, days_ago=[400, 10])))
    assert bp_findings(result) == set()
    assert undetermined(result, "bp_stage_2").missing == [
        "diastolic_bp",
        "systolic_bp",
    ]


def test_old_high_reading_does_not_enter_the_mean(kb: KnowledgeBase) -> None:
    readings = case(bp(200, 130, days_ago=400), bp(115, 75, days_ago=[40, 5]))
    result = evaluate(kb, readings)
    assert bp_findings(result) == {"bp_normal"}
    (normal,) = [f for f in result.findings if f.id == "bp_normal"]
    (fact,) = [f for f in normal.evidence.facts if f.name == "systolic_bp"]
    assert (fact.value, fact.readings) == (115.0, 2)


def test_reading_within_12_months_counts(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(150, 95, days_ago=[360, 10])))
    assert bp_findings(result) == {"stage_2_hypertension"}


def test_systolic_alone_at_140_reaches_stage_2(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(150, None)))
    assert bp_findings(result) == {"stage_2_hypertension"}
    assert diagnosis(result, "hypertension").certainty == 0.9
    # Whether the diastolic is above 120 is unknown, and SBP 150 is no crisis.
    assert undetermined(result, "bp_crisis").missing == ["diastolic_bp"]
    assert "bp_stage_1" not in undetermined_ids(result)


def test_systolic_alone_in_stage_1_range_cannot_decide_stage_1(
    kb: KnowledgeBase,
) -> None:
    # A diastolic >= 90 would make it stage 2, so stage 1 is not known.
    result = evaluate(kb, case(bp(135, None)))
    assert bp_findings(result) == set()
    assert "hypertension" not in diagnosis_ids(result)
    assert undetermined(result, "bp_stage_1").missing == ["diastolic_bp"]
    assert undetermined(result, "bp_stage_2").missing == ["diastolic_bp"]
    # Normal and elevated are ruled out by the systolic alone.
    assert not {"bp_normal", "bp_elevated"} & undetermined_ids(result)


def test_systolic_alone_above_180_is_a_crisis(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(190, None)))
    assert bp_findings(result) == {"stage_2_hypertension", "hypertensive_crisis"}
    assert recommendation_statuses(result) == {
        "assess_target_organ_damage_urgently": "recommended",
        # The latest reading is in the crisis range too: repeat it now.
        "repeat_bp_now_crisis_range": "recommended",
        # No lipids on record at this age: the statin ruleset asks for them.
        "obtain_lipid_panel": "recommended",
    }


def test_a_child_gets_no_adult_category(kb: KnowledgeBase) -> None:
    # Children's categories are percentiles (AAP 2017): spec 0.6, adults only.
    result = evaluate(kb, case(bp(150, 95), age=10))
    assert bp_findings(result) == set()
    assert "bp_not_applicable" in finding_ids(result)
    assert "hypertension" not in {d.id for d in result.diagnoses}
    assert "bp_lifestyle_therapy_only" not in recommendation_statuses(result)


def test_an_unknown_age_leaves_the_category_undetermined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(bp(150, 95), age=None))
    assert bp_findings(result) == set()
    assert "age" in undetermined(result, "bp_stage_2").missing
