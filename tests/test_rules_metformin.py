"""Tests for rules/metformin.yaml: metformin by the latest eGFR (spec section 16).

The patient has confirmed diabetes (two A1C >= 6.5 % on separate days) unless
a test says otherwise; eGFR is set by a creatinine found numerically for the
wanted calculated eGFR (60-year-old woman, result 10 days ago).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from casebuilder import (
    NOW,
    Readings,
    case,
    creatinine,
    creatinine_for_egfr,
    has_condition,
    lab,
    recommendation,
    recommendation_statuses,
    taking,
    undetermined,
    undetermined_ids,
)

from engine import Assessment, Case, CodedEntry, KnowledgeBase

METFORMIN_RECOMMENDATIONS = {
    "start_metformin",
    "metformin_contraindicated",
    "metformin_do_not_initiate",
    "metformin_continue_with_caution",
    "metformin_may_initiate_or_continue",
    "obtain_egfr_before_metformin",
}
RENAL_RULES = {
    "metformin_contraindicated",
    "metformin_do_not_initiate",
    "metformin_continue_with_caution",
    "metformin_may_continue_monitor_3_6_months",
    "metformin_may_continue_monitor_yearly",
}
CONTRAINDICATED_REASON = "eGFR below 30 mL/min/1.73 m2 (FDA 2016 contraindication)"
DO_NOT_INITIATE_REASON = "eGFR 30 to 44 mL/min/1.73 m2 (FDA 2016 - do not initiate)"
PARAMETERS = {
    "base": 142,
    "high_exponent": -1.2,
    "age_base": 0.9938,
    "min_age": 18,
    "female": {"kappa": 0.7, "alpha": -0.241, "factor": 1.012},
    "male": {"kappa": 0.9, "alpha": -0.302},
}


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    loaded = KnowledgeBase.load()
    # The coefficients the creatinine search uses are those the engine uses.
    (calculation,) = [
        c for c in loaded.calculations if c.formula == "ckd_epi_2021_creatinine"
    ]
    assert calculation.parameters == PARAMETERS
    return loaded


def diabetes() -> Readings:
    """Two A1C results in the diabetes range on separate days."""
    return lab("hba1c", 7.1, "%", days_ago=[120, 10])


def egfr(value: float, days_ago: float = 10) -> Readings:
    """A creatinine whose calculated eGFR (60-year-old woman) is ``value``."""
    scr = creatinine_for_egfr(value, 60, "female", PARAMETERS)
    return creatinine(scr, days_ago=days_ago)


def patient(*parts: Readings, medications: Iterable[CodedEntry] = ()) -> Case:
    return case(*parts, age=60, sex="female", medications=medications)


def evaluate(kb: KnowledgeBase, c: Case) -> Assessment:
    result = kb.evaluate(c, as_of=NOW)
    assert result.status == "complete", result.problems
    return result


def metformin_recommendations(result: Assessment) -> dict[str, str]:
    return {
        k: v
        for k, v in recommendation_statuses(result).items()
        if k in METFORMIN_RECOMMENDATIONS
    }


ON_METFORMIN = [taking("metformin")]


def test_egfr_below_30_contraindicates_and_blocks_starting(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(25.2)))
    assert metformin_recommendations(result) == {
        "metformin_contraindicated": "recommended",
        "start_metformin": "blocked",
    }
    contraindicated = recommendation(result, "metformin_contraindicated")
    assert (contraindicated.certainty, contraindicated.strength) == (0.95, "strong")
    start = recommendation(result, "start_metformin")
    assert [(b.rule_id, b.reason) for b in start.blocked_by] == [
        ("metformin_contraindicated", CONTRAINDICATED_REASON)
    ]
    # The first-line rule needs eGFR >= 45, so it is not made; the block still
    # shows the clinician why metformin must not be started.
    assert start.certainty == 0.0
    assert start.certainty_method == "not made: blocked"


def test_egfr_below_30_while_taking_it_says_stop(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(20.2), medications=ON_METFORMIN))
    rec = recommendation(result, "metformin_contraindicated")
    assert rec.status == "recommended"
    assert "stop it if taken" in rec.text
    assert "metformin_continue_with_caution" not in recommendation_statuses(result)
    assert "metformin_may_initiate_or_continue" not in recommendation_statuses(result)


def test_block_without_a_made_recommendation_is_still_shown(
    kb: KnowledgeBase,
) -> None:
    # Already taking metformin: the first-line rule does not fire, but the
    # contraindication's block still lists start_metformin as blocked, with
    # certainty 0 (evaluation.py reports blocks of recommendations no rule made).
    result = evaluate(kb, patient(diabetes(), egfr(20.2), medications=ON_METFORMIN))
    start = recommendation(result, "start_metformin")
    assert (start.status, start.certainty, start.evidence.rules) == ("blocked", 0.0, [])
    assert start.certainty_method == "not made: blocked"
    assert "start_metformin_first_line" not in result.rules_fired


def test_egfr_30_to_44_not_taking_do_not_initiate(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(38.2)))
    assert metformin_recommendations(result) == {
        "metformin_do_not_initiate": "recommended",
        "start_metformin": "blocked",
    }
    start = recommendation(result, "start_metformin")
    assert [(b.rule_id, b.reason) for b in start.blocked_by] == [
        ("metformin_do_not_initiate", DO_NOT_INITIATE_REASON)
    ]
    assert recommendation(result, "metformin_do_not_initiate").certainty == 0.9


def test_egfr_30_to_44_taking_continue_with_caution(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(38.2), medications=ON_METFORMIN))
    assert metformin_recommendations(result) == {
        "metformin_continue_with_caution": "recommended"
    }
    rec = recommendation(result, "metformin_continue_with_caution")
    assert "1000 mg/day" in rec.text
    assert "every 3 to 6 months" in rec.text


def test_egfr_exactly_45_may_initiate_or_continue(kb: KnowledgeBase) -> None:
    # Calculated eGFR 45.2, banded as 45: 45 counts as >= 45 [convention].
    result = evaluate(kb, patient(diabetes(), egfr(45.2)))
    assert metformin_recommendations(result) == {
        "metformin_may_initiate_or_continue": "recommended",
        "start_metformin": "recommended",
    }
    rec = recommendation(result, "metformin_may_initiate_or_continue")
    assert [r.rule_id for r in rec.evidence.rules] == [
        "metformin_may_continue_monitor_3_6_months"
    ]
    assert "every 3 to 6 months" in rec.text
    (fact,) = [f for f in rec.evidence.facts if f.name == "egfr"]
    assert fact.value == 45.0


def test_egfr_that_rounds_to_45_may_initiate_or_continue(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(44.7)))
    assert metformin_recommendations(result) == {
        "metformin_may_initiate_or_continue": "recommended",
        "start_metformin": "recommended",
    }


def test_egfr_45_to_59_while_taking_may_continue(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(52.2), medications=ON_METFORMIN))
    assert metformin_recommendations(result) == {
        "metformin_may_initiate_or_continue": "recommended"
    }


@pytest.mark.parametrize("value", [60.2, 95.2])
def test_egfr_60_or_more_may_initiate_or_continue_checked_yearly(
    kb: KnowledgeBase, value: float
) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(value)))
    assert metformin_recommendations(result) == {
        "metformin_may_initiate_or_continue": "recommended",
        "start_metformin": "recommended",
    }
    rec = recommendation(result, "metformin_may_initiate_or_continue")
    assert [r.rule_id for r in rec.evidence.rules] == [
        "metformin_may_continue_monitor_yearly"
    ]
    assert "yearly" in rec.text
    assert (rec.certainty, rec.strength) == (0.85, "moderate")


CONTRAINDICATED = "metformin_contraindicated"
DO_NOT_INITIATE = "metformin_do_not_initiate"
WITH_CAUTION = "metformin_continue_with_caution"
MAY = "metformin_may_initiate_or_continue"


# Each band edge, not taking and taking metformin.
@pytest.mark.parametrize(
    ("value", "not_taking", "on_it"),
    [
        (29.2, CONTRAINDICATED, CONTRAINDICATED),
        (30.2, DO_NOT_INITIATE, WITH_CAUTION),
        (44.2, DO_NOT_INITIATE, WITH_CAUTION),
        (45.2, MAY, MAY),
        (59.2, MAY, MAY),
        (60.2, MAY, MAY),
    ],
)
def test_renal_recommendation_at_each_band_edge(
    kb: KnowledgeBase, value: float, not_taking: str, on_it: str
) -> None:
    naive = evaluate(kb, patient(diabetes(), egfr(value)))
    renal = metformin_recommendations(naive).keys() - {"start_metformin"}
    assert renal == {not_taking}
    treated = evaluate(kb, patient(diabetes(), egfr(value), medications=ON_METFORMIN))
    renal = metformin_recommendations(treated).keys() - {"start_metformin"}
    assert renal == {on_it}
    assert not undetermined_ids(naive) & RENAL_RULES
    assert "obtain_egfr_before_metformin" not in recommendation_statuses(naive)


def test_latest_egfr_decides(kb: KnowledgeBase) -> None:
    readings = patient(diabetes(), egfr(70.2, days_ago=200), egfr(25.2, days_ago=10))
    result = evaluate(kb, readings)
    assert recommendation_statuses(result)["start_metformin"] == "blocked"
    assert "metformin_may_initiate_or_continue" not in recommendation_statuses(result)


def test_no_creatinine_in_12_months_asks_for_egfr(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), egfr(70.2, days_ago=400)))
    rec = recommendation(result, "obtain_egfr_before_metformin")
    assert (rec.status, rec.certainty, rec.strength) == ("recommended", 0.9, "strong")
    for rule_id in RENAL_RULES - {"metformin_continue_with_caution"}:
        assert undetermined(result, rule_id).missing == ["egfr"]
    # Not taking metformin: the continue-with-caution rule is false, not unknown.
    assert "metformin_continue_with_caution" not in undetermined_ids(result)


def test_no_creatinine_at_all_asks_for_egfr_while_taking(kb: KnowledgeBase) -> None:
    result = evaluate(kb, patient(diabetes(), medications=ON_METFORMIN))
    assert metformin_recommendations(result) == {
        "obtain_egfr_before_metformin": "recommended"
    }
    assert undetermined(result, "metformin_continue_with_caution").missing == ["egfr"]


def test_start_metformin_is_not_recommended_before_egfr_is_known(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, patient(diabetes()))
    assert recommendation_statuses(result).get("start_metformin") != "recommended"


@pytest.mark.parametrize("value", [None, 25.2, 38.2, 52.2, 80.2])
def test_not_diabetic_and_not_taking_gets_no_metformin_recommendation(
    kb: KnowledgeBase, value: float | None
) -> None:
    parts = [lab("hba1c", 5.2, "%")] + ([] if value is None else [egfr(value)])
    result = evaluate(kb, patient(*parts))
    assert metformin_recommendations(result) == {}
    assert not undetermined_ids(result) & RENAL_RULES
    assert "start_metformin_first_line" not in undetermined_ids(result)


def test_unconfirmed_diabetes_range_gets_no_metformin_recommendation(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, patient(lab("hba1c", 7.1, "%"), egfr(80.2)))
    assert metformin_recommendations(result) == {}


def test_diabetes_on_the_problem_list_gets_the_renal_rule(kb: KnowledgeBase) -> None:
    # No lab confirmation, so no first-line recommendation, but eGFR 38 still
    # says not to initiate (and shows start_metformin as blocked).
    c = case(egfr(38.2), age=60, conditions=[has_condition("diabetes")])
    result = evaluate(kb, c)
    assert metformin_recommendations(result) == {
        "metformin_do_not_initiate": "recommended",
        "start_metformin": "blocked",
    }


def test_taking_metformin_without_diabetes_gets_the_renal_rule(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, patient(egfr(75.2), medications=ON_METFORMIN))
    assert metformin_recommendations(result) == {
        "metformin_may_initiate_or_continue": "recommended"
    }
