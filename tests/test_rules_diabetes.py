"""Tests for rules/diabetes.yaml: ADA diabetes and prediabetes from lab results.

Spec section 2 and 0.2: cut points are compared in the unit the result
arrived in; diabetes needs two abnormal results (two tests, or one test on two
separate days); one abnormal result is ``diabetes_range_unconfirmed`` with a
repeat of that test; results of the last 24 months count (our convention).
"""

from __future__ import annotations

import pytest
from casebuilder import (
    NOW,
    Readings,
    case,
    diagnosis,
    diagnosis_ids,
    finding_ids,
    lab,
    recommendation,
    recommendation_statuses,
    undetermined,
    undetermined_ids,
)

from engine import Assessment, Case, KnowledgeBase

DIABETES_SNOMED = "73211009"
PREDIABETES_SNOMED = "714628002"
RANGE_FINDING = {
    "hba1c": "hba1c_diabetes_range",
    "fasting_glucose": "fpg_diabetes_range",
    "ogtt_2h_glucose": "ogtt_diabetes_range",
}
REPEAT = {
    "hba1c": "repeat_hba1c_to_confirm",
    "fasting_glucose": "repeat_fpg_to_confirm",
    "ogtt_2h_glucose": "repeat_ogtt_to_confirm",
}
GLYCAEMIC_STATES = {
    "diabetes_confirmed",
    "diabetes_range_unconfirmed",
    "prediabetes",
    "glycaemia_normal",
}


def evaluate(kb: KnowledgeBase, c: Case) -> Assessment:
    result = kb.evaluate(c, as_of=NOW)
    assert result.status == "complete", result.problems
    return result


def glycaemic_state(result: Assessment) -> set[str]:
    return finding_ids(result) & GLYCAEMIC_STATES


def glucose_recommendations(result: Assessment) -> dict[str, str]:
    statuses = recommendation_statuses(result)
    wanted = {*REPEAT.values(), "order_diagnostic_glucose_test"}
    return {k: v for k, v in statuses.items() if k in wanted}


# One result each, at and just below the diabetes cut point, in both units.
# 6.5 % is 47.5 mmol/mol and 11.1 mmol/L is 199.98 mg/dL: only a comparison in
# the unit the result arrived in puts them in the diabetes range (spec 0.2).
@pytest.mark.parametrize(
    ("fact", "value", "unit", "in_range"),
    [
        ("hba1c", 6.4, "%", False),
        ("hba1c", 6.5, "%", True),
        ("hba1c", 47, "mmol/mol", False),
        ("hba1c", 48, "mmol/mol", True),
        ("fasting_glucose", 125, "mg/dL", False),
        ("fasting_glucose", 126, "mg/dL", True),
        ("fasting_glucose", 6.9, "mmol/L", False),
        ("fasting_glucose", 7.0, "mmol/L", True),
        ("ogtt_2h_glucose", 199, "mg/dL", False),
        ("ogtt_2h_glucose", 200, "mg/dL", True),
        ("ogtt_2h_glucose", 11.0, "mmol/L", False),
        ("ogtt_2h_glucose", 11.1, "mmol/L", True),
    ],
)
def test_diabetes_cut_point_in_the_unit_of_the_result(
    kb: KnowledgeBase, fact: str, value: float, unit: str, in_range: bool
) -> None:
    result = evaluate(kb, case(lab(fact, value, unit)))
    if in_range:
        assert RANGE_FINDING[fact] in finding_ids(result)
        assert glycaemic_state(result) == {"diabetes_range_unconfirmed"}
        assert glucose_recommendations(result) == {REPEAT[fact]: "recommended"}
    else:
        # Just below the diabetes cut point is the top of the prediabetes band.
        assert RANGE_FINDING[fact] not in finding_ids(result)
        assert glycaemic_state(result) == {"prediabetes"}
        assert glucose_recommendations(result) == {}
    assert "diabetes" not in diagnosis_ids(result)


def test_range_evidence_keeps_the_unit_the_result_arrived_in(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, case(lab("hba1c", 48, "mmol/mol")))
    (finding,) = [f for f in result.findings if f.id == "hba1c_diabetes_range"]
    (fact,) = finding.evidence.facts
    assert (fact.name, fact.value, fact.unit) == ("hba1c", 48.0, "mmol/mol")


@pytest.mark.parametrize(
    "tests",
    [
        [("hba1c", 6.7, "%"), ("fasting_glucose", 130, "mg/dL")],
        [("fasting_glucose", 7.2, "mmol/L"), ("ogtt_2h_glucose", 11.1, "mmol/L")],
        [("hba1c", 48, "mmol/mol"), ("ogtt_2h_glucose", 210, "mg/dL")],
    ],
)
def test_two_different_tests_in_range_confirm_diabetes(
    kb: KnowledgeBase, tests: list[tuple[str, float, str]]
) -> None:
    # Both from the same day (one sample) is enough for two different tests.
    parts = [lab(fact, value, unit, days_ago=10) for fact, value, unit in tests]
    result = evaluate(kb, case(*parts))
    dx = diagnosis(result, "diabetes")
    assert (dx.code, dx.certainty) == (DIABETES_SNOMED, 0.95)
    assert [r.rule_id for r in dx.evidence.rules] == ["diabetes_two_tests"]
    assert glycaemic_state(result) == {"diabetes_confirmed"}
    assert glucose_recommendations(result) == {}


@pytest.mark.parametrize(
    ("fact", "value", "unit"),
    [
        ("hba1c", 6.6, "%"),
        ("hba1c", 50, "mmol/mol"),
        ("fasting_glucose", 130, "mg/dL"),
        ("fasting_glucose", 7.0, "mmol/L"),
        ("ogtt_2h_glucose", 200, "mg/dL"),
        ("ogtt_2h_glucose", 11.1, "mmol/L"),
    ],
)
def test_same_test_on_two_separate_days_confirms_diabetes(
    kb: KnowledgeBase, fact: str, value: float, unit: str
) -> None:
    result = evaluate(kb, case(lab(fact, value, unit, days_ago=[90, 10])))
    dx = diagnosis(result, "diabetes")
    assert (dx.code, dx.certainty) == (DIABETES_SNOMED, 0.95)
    assert [r.rule_id for r in dx.evidence.rules] == ["diabetes_repeated_test"]
    assert glycaemic_state(result) == {"diabetes_confirmed"}
    assert glucose_recommendations(result) == {}


def test_repeat_in_the_other_unit_confirms_diabetes(kb: KnowledgeBase) -> None:
    readings = case(
        lab("hba1c", 6.6, "%", days_ago=90), lab("hba1c", 48, "mmol/mol", days_ago=10)
    )
    result = evaluate(kb, readings)
    assert diagnosis(result, "diabetes").code == DIABETES_SNOMED


def test_same_test_twice_on_the_same_day_does_not_confirm(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(lab("hba1c", 6.8, "%", days_ago=[10, 10.2])))
    assert "diabetes" not in diagnosis_ids(result)
    assert glycaemic_state(result) == {"diabetes_range_unconfirmed"}
    assert glucose_recommendations(result) == {"repeat_hba1c_to_confirm": "recommended"}


def test_two_confirmations_from_the_same_results_count_once(
    kb: KnowledgeBase,
) -> None:
    # Two tests in range, each on two days: both rules support the diagnosis,
    # but both read the same four results, so the certainty is one rule's
    # (docs/certainty.md), not 1 - 0.05 x 0.05.
    readings = case(
        lab("hba1c", 7.0, "%", days_ago=[90, 10]),
        lab("fasting_glucose", 140, "mg/dL", days_ago=[90, 10]),
    )
    dx = diagnosis(evaluate(kb, readings), "diabetes")
    assert {r.rule_id for r in dx.evidence.rules} == {
        "diabetes_two_tests",
        "diabetes_repeated_test",
    }
    assert dx.certainty == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("fact", "value", "unit"),
    [
        ("hba1c", 6.9, "%"),
        ("fasting_glucose", 140, "mg/dL"),
        ("ogtt_2h_glucose", 12.0, "mmol/L"),
    ],
)
def test_one_abnormal_result_asks_to_repeat_that_test(
    kb: KnowledgeBase, fact: str, value: float, unit: str
) -> None:
    result = evaluate(kb, case(lab(fact, value, unit)))
    assert glycaemic_state(result) == {"diabetes_range_unconfirmed"}
    rec = recommendation(result, REPEAT[fact])
    assert (rec.status, rec.certainty, rec.strength) == ("recommended", 0.9, "strong")
    assert glucose_recommendations(result) == {REPEAT[fact]: "recommended"}
    assert not diagnosis_ids(result)


def test_disagreeing_tests_repeat_the_one_above_its_cut_point(
    kb: KnowledgeBase,
) -> None:
    # A1C in the diabetes range, fasting glucose only in the prediabetes range.
    readings = case(lab("hba1c", 6.8, "%"), lab("fasting_glucose", 110, "mg/dL"))
    result = evaluate(kb, readings)
    assert glycaemic_state(result) == {"diabetes_range_unconfirmed"}
    assert glucose_recommendations(result) == {"repeat_hba1c_to_confirm": "recommended"}
    assert not diagnosis_ids(result)


@pytest.mark.parametrize(
    ("fact", "value", "unit", "state"),
    [
        ("hba1c", 5.7, "%", "prediabetes"),
        ("hba1c", 5.6, "%", "glycaemia_normal"),
        ("hba1c", 39, "mmol/mol", "prediabetes"),
        ("hba1c", 38, "mmol/mol", "glycaemia_normal"),
        ("fasting_glucose", 100, "mg/dL", "prediabetes"),
        ("fasting_glucose", 99, "mg/dL", "glycaemia_normal"),
        ("fasting_glucose", 5.6, "mmol/L", "prediabetes"),
        ("fasting_glucose", 5.5, "mmol/L", "glycaemia_normal"),
        ("ogtt_2h_glucose", 140, "mg/dL", "prediabetes"),
        ("ogtt_2h_glucose", 139, "mg/dL", "glycaemia_normal"),
        ("ogtt_2h_glucose", 7.8, "mmol/L", "prediabetes"),
        ("ogtt_2h_glucose", 7.7, "mmol/L", "glycaemia_normal"),
    ],
)
def test_prediabetes_lower_cut_point(
    kb: KnowledgeBase, fact: str, value: float, unit: str, state: str
) -> None:
    result = evaluate(kb, case(lab(fact, value, unit)))
    assert glycaemic_state(result) == {state}
    if state == "prediabetes":
        dx = diagnosis(result, "prediabetes")
        assert (dx.code, dx.certainty) == (PREDIABETES_SNOMED, 0.85)
    else:
        assert not diagnosis_ids(result)
    assert glucose_recommendations(result) == {}


def test_one_prediabetes_result_among_normal_ones_is_prediabetes(
    kb: KnowledgeBase,
) -> None:
    readings = case(
        lab("hba1c", 5.4, "%"),
        lab("fasting_glucose", 92, "mg/dL"),
        lab("ogtt_2h_glucose", 150, "mg/dL"),
    )
    result = evaluate(kb, readings)
    assert glycaemic_state(result) == {"prediabetes"}
    assert diagnosis_ids(result) == {"prediabetes"}


def test_no_prediabetes_when_one_result_is_in_the_diabetes_range(
    kb: KnowledgeBase,
) -> None:
    readings = case(lab("hba1c", 6.0, "%"), lab("fasting_glucose", 130, "mg/dL"))
    result = evaluate(kb, readings)
    assert "prediabetes" not in diagnosis_ids(result)
    assert glycaemic_state(result) == {"diabetes_range_unconfirmed"}
    assert glucose_recommendations(result) == {"repeat_fpg_to_confirm": "recommended"}


def test_no_prediabetes_when_diabetes_is_confirmed(kb: KnowledgeBase) -> None:
    readings = case(
        lab("hba1c", 6.0, "%"), lab("fasting_glucose", 130, "mg/dL", days_ago=[90, 10])
    )
    result = evaluate(kb, readings)
    assert diagnosis_ids(result) == {"diabetes"}
    assert glycaemic_state(result) == {"diabetes_confirmed"}


def test_all_results_normal_is_glycaemia_normal(kb: KnowledgeBase) -> None:
    readings = case(
        lab("hba1c", 5.2, "%"),
        lab("fasting_glucose", 88, "mg/dL"),
        lab("ogtt_2h_glucose", 110, "mg/dL"),
    )
    result = evaluate(kb, readings)
    assert glycaemic_state(result) == {"glycaemia_normal"}
    assert not diagnosis_ids(result)
    assert glucose_recommendations(result) == {}
    assert not {"glycaemic_tests_available", "glycaemia_normal", "prediabetes"} & (
        undetermined_ids(result)
    )


def test_no_glycaemic_test_cannot_be_determined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(lab("systolic_bp", 120, "mm[Hg]")))
    assert glycaemic_state(result) == set()
    assert not diagnosis_ids(result)
    expected_missing = ["fasting_glucose", "hba1c", "ogtt_2h_glucose"]
    for rule_id in ("glycaemic_tests_available", "glycaemia_normal"):
        assert undetermined(result, rule_id).missing == expected_missing
    assert "no hba1c within 24 months" in (
        undetermined(result, "glycaemic_tests_available").reason
    )


def test_results_older_than_24_months_do_not_count(kb: KnowledgeBase) -> None:
    # The 800-day-old A1C would have confirmed the recent one.
    result = evaluate(kb, case(lab("hba1c", 7.0, "%", days_ago=[800, 10])))
    assert "diabetes" not in diagnosis_ids(result)
    assert glycaemic_state(result) == {"diabetes_range_unconfirmed"}


def test_only_results_older_than_24_months_cannot_be_determined(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, case(lab("hba1c", 7.0, "%", days_ago=[800, 760])))
    assert glycaemic_state(result) == set()
    assert "glycaemic_tests_available" in undetermined_ids(result)


def test_results_within_24_months_confirm(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(lab("hba1c", 7.0, "%", days_ago=[700, 10])))
    assert diagnosis_ids(result) == {"diabetes"}


def random_glucose(value: float, unit: str = "mg/dL") -> Readings:
    return lab("random_glucose", value, unit)


@pytest.mark.parametrize(
    ("value", "unit"), [(250, "mg/dL"), (200, "mg/dL"), (13.9, "mmol/L")]
)
def test_high_random_glucose_is_not_diagnostic(
    kb: KnowledgeBase, value: float, unit: str
) -> None:
    result = evaluate(kb, case(random_glucose(value, unit)))
    assert "random_glucose_not_diagnostic" in finding_ids(result)
    assert not diagnosis_ids(result)
    assert glycaemic_state(result) == set()
    rec = recommendation(result, "order_diagnostic_glucose_test")
    assert (rec.status, rec.certainty) == ("recommended", 0.8)


def test_random_glucose_below_200_says_nothing(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(random_glucose(199)))
    assert "random_glucose_not_diagnostic" not in finding_ids(result)
    # Nothing about glucose; with no lipids on record at this age, the statin
    # ruleset asks for them.
    assert recommendation_statuses(result) == {"obtain_lipid_panel": "recommended"}


def test_high_random_glucose_with_confirmed_diabetes_asks_no_test(
    kb: KnowledgeBase,
) -> None:
    readings = case(random_glucose(250), lab("hba1c", 7.5, "%", days_ago=[90, 10]))
    result = evaluate(kb, readings)
    assert diagnosis_ids(result) == {"diabetes"}
    assert "random_glucose_not_diagnostic" not in finding_ids(result)
    assert "order_diagnostic_glucose_test" not in recommendation_statuses(result)


def test_high_random_glucose_with_normal_tests_is_still_not_diagnosis(
    kb: KnowledgeBase,
) -> None:
    readings = case(random_glucose(250), lab("hba1c", 5.3, "%"))
    result = evaluate(kb, readings)
    assert glycaemic_state(result) == {"glycaemia_normal"}
    assert "random_glucose_not_diagnostic" in finding_ids(result)
    assert not diagnosis_ids(result)
