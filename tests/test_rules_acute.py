"""Tests for rules/sepsis.yaml (qSOFA, SIRS) and rules/news2.yaml (NEWS2).

Spec sections 6 (qSOFA), 7 (SIRS) and 8 (NEWS2), with 0.3 (temperature rounded
to 0.1 degC before banding), 0.4 (missing inputs) and 0.6 (adults only).

Every observation is given 2.4 hours before the evaluation time, so it lies in
the rules' "latest reading of the last 24 hours" window. Each threshold is
tested at the cut point and one step either side, with every other parameter
held at a value that scores nothing, so the total is the item's points.

Missing inputs: qSOFA and SIRS follow spec 0.4 (known inputs that force the
result decide it); NEWS2 follows spec 8 (any missing parameter: every band rule
cannot be determined, even when the known items already force the band).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pytest
from casebuilder import (
    NOW,
    Readings,
    at,
    case,
    finding_ids,
    has_condition,
    lab,
    recommendation,
    recommendation_statuses,
    undetermined,
    undetermined_ids,
)

from engine import (
    Assessment,
    Case,
    CodedEntry,
    Finding,
    KnowledgeBase,
    Reading,
    RuleFileError,
)

RECENT = 0.1  # days before NOW: 2.4 hours
Value = float | str | None

QSOFA_RULES = {"qsofa_positive", "qsofa_negative", "qsofa_not_applicable"}
QSOFA_FINDINGS = {"qsofa_positive", "qsofa_negative", "qsofa_not_applicable"}
SIRS_RULES = {"sirs_met", "sirs_not_met", "sirs_not_applicable"}
SIRS_FINDINGS = {"sirs", "sirs_criteria_not_met", "sirs_not_applicable"}
NEWS2_BAND_RULES = {
    "news2_score_0",
    "news2_score_1_4",
    "news2_single_parameter_3",
    "news2_score_5_6",
    "news2_score_7_plus",
}
NEWS2_RISKS = {
    "news2_risk_low",
    "news2_risk_low_medium",
    "news2_risk_medium",
    "news2_risk_high",
    "news2_not_applicable",
}
NEWS2_RESPONSES = {
    "routine_monitoring_min_12_hourly",
    "ward_based_response_min_4_6_hourly",
    "urgent_ward_based_response_min_1_hourly",
    "urgent_response_min_1_hourly",
    "emergency_response_continuous_monitoring",
}
INFECTION = has_condition("suspected_infection")
HYPERCAPNIC = has_condition("hypercapnic_respiratory_failure")
OXYGEN = has_condition("supplemental_oxygen")


def evaluate(kb: KnowledgeBase, c: Case) -> Assessment:
    result = kb.evaluate(c, as_of=NOW)
    assert result.status == "complete", result.problems
    return result


def text(fact: str, value: str, days_ago: float = RECENT) -> Readings:
    """A text fact (ACVPU) recorded ``days_ago`` days before NOW."""
    return {fact: (Reading(value=value, time=at(days_ago), source=f"{fact}@test"),)}


def vitals(values: Mapping[str, Value], days_ago: float = RECENT) -> list[Readings]:
    """Observations by short name; a value of None leaves that one out.

    Names: rr, sbp, hr, temp (degC), temp_f (degF), spo2, acvpu, gcs,
    paco2 (mmHg), paco2_kpa, wbc (10*9/L), wbc_k_ul (10*3/uL), bands (%).
    """
    spec = {
        "rr": ("respiratory_rate", "/min"),
        "sbp": ("systolic_bp", "mm[Hg]"),
        "hr": ("heart_rate", "/min"),
        "temp": ("body_temperature", "Cel"),
        "temp_f": ("body_temperature", "[degF]"),
        "spo2": ("spo2", "%"),
        "gcs": ("gcs", "1"),
        "paco2": ("paco2", "mm[Hg]"),
        "paco2_kpa": ("paco2", "kPa"),
        "wbc": ("wbc", "10*9/L"),
        "wbc_k_ul": ("wbc", "10*3/uL"),
        "bands": ("band_neutrophils", "%"),
    }
    out: list[Readings] = []
    for key, value in values.items():
        if value is None:
            continue
        if key == "acvpu":
            assert isinstance(value, str)
            out.append(text("acvpu", value, days_ago))
        else:
            fact, unit = spec[key]
            assert not isinstance(value, str)
            out.append(lab(fact, value, unit, days_ago))
    return out


def score(result: Assessment, sid: str) -> Finding:
    """The point-score finding (the one with components) of this id."""
    found = [f for f in result.findings if f.id == sid and f.components]
    assert len(found) == 1, f"point score {sid}: {finding_ids(result)}"
    return found[0]


def points(result: Assessment, sid: str) -> dict[str, float | None]:
    """Each item's points of a point score."""
    return {c.id: c.points for c in score(result, sid).components}


# --------------------------------------------------------------------------
# qSOFA (spec 6): RR >= 22, SBP <= 100, altered mentation (GCS < 15); >= 2.
# --------------------------------------------------------------------------

QSOFA_NORMAL: dict[str, Value] = {"rr": 16.0, "sbp": 120.0, "gcs": 15.0}


def qsofa_case(
    values: Mapping[str, Value] | None = None,
    *,
    conditions: tuple[CodedEntry, ...] = (INFECTION,),
    age: int | None = 60,
) -> Case:
    merged = {**QSOFA_NORMAL, **(values or {})}
    return case(*vitals(merged), age=age, conditions=conditions)


@pytest.mark.parametrize(
    ("changed", "item", "expected"),
    [
        ({"rr": 21}, "respiratory_rate", 0),
        ({"rr": 22}, "respiratory_rate", 1),
        ({"rr": 23}, "respiratory_rate", 1),
        ({"sbp": 99}, "systolic_bp", 1),
        ({"sbp": 100}, "systolic_bp", 1),
        ({"sbp": 101}, "systolic_bp", 0),
        ({"gcs": 14}, "altered_mentation", 1),
        ({"gcs": 15}, "altered_mentation", 0),
        ({"gcs": 3}, "altered_mentation", 1),
    ],
)
def test_qsofa_each_threshold(
    kb: KnowledgeBase, changed: dict[str, float], item: str, expected: int
) -> None:
    result = evaluate(kb, qsofa_case(changed))
    items = points(result, "qsofa")
    assert items[item] == expected
    assert sum(v or 0 for v in items.values()) == expected
    assert score(result, "qsofa").value == expected
    # One criterion at most: determined negative, never a prompt.
    assert finding_ids(result) & QSOFA_FINDINGS == {"qsofa_negative"}
    assert "assess_for_organ_dysfunction" not in recommendation_statuses(result)
    assert not undetermined_ids(result) & QSOFA_RULES


@pytest.mark.parametrize(
    ("values", "total"),
    [
        ({"rr": 22, "sbp": 100}, 2),
        ({"rr": 22, "gcs": 14}, 2),
        ({"sbp": 100, "gcs": 14}, 2),
        ({"rr": 30, "sbp": 80, "gcs": 9}, 3),
    ],
)
def test_qsofa_two_or_more_is_positive_and_prompts_assessment(
    kb: KnowledgeBase, values: dict[str, float], total: int
) -> None:
    result = evaluate(kb, qsofa_case(values))
    assert score(result, "qsofa").value == total
    assert finding_ids(result) & QSOFA_FINDINGS == {"qsofa_positive"}
    rec = recommendation(result, "assess_for_organ_dysfunction")
    assert rec.status == "recommended"
    assert rec.strength == "strong"
    assert rec.certainty == 0.8
    assert [r.rule_id for r in rec.evidence.rules] == ["qsofa_positive"]
    assert "not a diagnosis of sepsis" in rec.text
    # qSOFA is a prompt: it makes no sepsis diagnosis.
    assert result.diagnoses == []


@pytest.mark.parametrize(
    ("values", "missing_item"),
    [
        ({"rr": 22, "sbp": 100, "gcs": None}, "altered_mentation"),
        ({"rr": None, "sbp": 100, "gcs": 14}, "respiratory_rate"),
        ({"rr": 22, "sbp": None, "gcs": 14}, "systolic_bp"),
    ],
)
def test_qsofa_two_criteria_force_positive_whatever_the_third(
    kb: KnowledgeBase, values: dict[str, float | None], missing_item: str
) -> None:
    # Spec 0.4 example: two criteria present gives positive.
    result = evaluate(kb, qsofa_case(values))
    qsofa = score(result, "qsofa")
    assert qsofa.value is None  # the total itself is not known
    assert qsofa.range == (2.0, 3.0)
    assert points(result, "qsofa")[missing_item] is None
    assert finding_ids(result) & QSOFA_FINDINGS == {"qsofa_positive"}
    assert recommendation(result, "assess_for_organ_dysfunction").status == (
        "recommended"
    )
    assert not undetermined_ids(result) & QSOFA_RULES


@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({"rr": 16, "sbp": 120, "gcs": None}, ["gcs"]),
        ({"rr": None, "sbp": 120, "gcs": 15}, ["respiratory_rate"]),
        ({"rr": 16, "sbp": None, "gcs": 15}, ["systolic_bp"]),
    ],
)
def test_qsofa_two_normal_criteria_force_negative(
    kb: KnowledgeBase, values: dict[str, float | None], missing: list[str]
) -> None:
    result = evaluate(kb, qsofa_case(values))
    qsofa = score(result, "qsofa")
    assert (qsofa.value, qsofa.range, qsofa.missing) == (None, (0.0, 1.0), missing)
    assert finding_ids(result) & QSOFA_FINDINGS == {"qsofa_negative"}


@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({"rr": 22, "sbp": 120, "gcs": None}, ["gcs"]),
        ({"rr": None, "sbp": 100, "gcs": 15}, ["respiratory_rate"]),
        ({"rr": 16, "sbp": None, "gcs": 14}, ["systolic_bp"]),
    ],
)
def test_qsofa_missing_parameter_that_decides_cannot_be_determined(
    kb: KnowledgeBase, values: dict[str, float | None], missing: list[str]
) -> None:
    result = evaluate(kb, qsofa_case(values))
    qsofa = score(result, "qsofa")
    assert (qsofa.value, qsofa.range) == (None, (1.0, 2.0))
    assert not finding_ids(result) & QSOFA_FINDINGS
    for rule_id in ("qsofa_positive", "qsofa_negative"):
        assert undetermined(result, rule_id).missing == missing
    assert "assess_for_organ_dysfunction" not in recommendation_statuses(result)


def test_qsofa_nothing_recorded_cannot_be_determined(kb: KnowledgeBase) -> None:
    c = case(lab("body_weight", 70, "kg", 3), conditions=[INFECTION])
    result = evaluate(kb, c)
    assert undetermined(result, "qsofa_positive").missing == [
        "gcs",
        "respiratory_rate",
        "systolic_bp",
    ]


@pytest.mark.parametrize(
    ("mentation", "conditions", "expected"),
    [
        ({"acvpu": "C"}, (INFECTION,), 1.0),
        ({"acvpu": "V"}, (INFECTION,), 1.0),
        ({"acvpu": "P"}, (INFECTION,), 1.0),
        ({"acvpu": "U"}, (INFECTION,), 1.0),
        ({}, (INFECTION, has_condition("new_confusion")), 1.0),
        ({"acvpu": "A"}, (INFECTION,), None),  # alert does not prove GCS 15
        ({"acvpu": "A", "gcs": 15}, (INFECTION,), 0.0),
    ],
)
def test_qsofa_altered_mentation_from_acvpu_or_new_confusion(
    kb: KnowledgeBase,
    mentation: dict[str, str | float],
    conditions: tuple[CodedEntry, ...],
    expected: float | None,
) -> None:
    values: dict[str, float | str | None] = {"gcs": None, **mentation}
    result = evaluate(kb, qsofa_case(values, conditions=conditions))
    assert points(result, "qsofa")["altered_mentation"] == expected


def test_qsofa_applies_only_with_suspected_infection(kb: KnowledgeBase) -> None:
    result = evaluate(kb, qsofa_case({"rr": 30, "sbp": 80, "gcs": 9}, conditions=()))
    assert "qsofa" not in finding_ids(result)
    assert not finding_ids(result) & QSOFA_FINDINGS
    assert not undetermined_ids(result) & QSOFA_RULES
    # A recorded pneumonia is an infection: qSOFA applies.
    result = evaluate(
        kb, qsofa_case({"rr": 30, "sbp": 80}, conditions=(has_condition("pneumonia"),))
    )
    assert "qsofa_positive" in finding_ids(result)


def test_recorded_sepsis_maps_to_suspected_infection(kb: KnowledgeBase) -> None:
    for code in ("91302008", "770349000"):
        assert "suspected_infection" in kb.catalogue.conditions_for_snomed(code)


def test_qsofa_adults_only(kb: KnowledgeBase) -> None:
    result = evaluate(kb, qsofa_case({"rr": 30, "sbp": 80}, age=17))
    assert finding_ids(result) & QSOFA_FINDINGS == {"qsofa_not_applicable"}
    assert "qsofa" not in finding_ids(result)
    assert "assess_for_organ_dysfunction" not in recommendation_statuses(result)
    result = evaluate(kb, qsofa_case({"rr": 30, "sbp": 80}, age=18))
    assert finding_ids(result) & QSOFA_FINDINGS == {"qsofa_positive"}


def test_qsofa_age_unknown_cannot_be_determined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, qsofa_case({"rr": 30, "sbp": 80}, age=None))
    assert not finding_ids(result) & QSOFA_FINDINGS
    assert "age" in undetermined(result, "qsofa_positive").missing


def test_qsofa_readings_older_than_24_hours_do_not_count(kb: KnowledgeBase) -> None:
    c = case(
        *vitals({"rr": 30, "sbp": 80}, days_ago=1.1),
        *vitals({"gcs": 15}),
        conditions=[INFECTION],
    )
    result = evaluate(kb, c)
    assert undetermined(result, "qsofa_positive").missing == [
        "respiratory_rate",
        "systolic_bp",
    ]


# --------------------------------------------------------------------------
# SIRS (spec 7): >= 2 of T > 38 or < 36; HR > 90; RR > 20 or PaCO2 < 32;
# WBC > 12 or < 4 or bands > 10 %. Every comparison strict.
# --------------------------------------------------------------------------

SIRS_NORMAL: dict[str, Value] = {
    "temp": 37.0,
    "hr": 80.0,
    "rr": 16.0,
    "wbc": 8.0,
}


def sirs_case(
    values: Mapping[str, Value] | None = None, *, age: int | None = 45
) -> Case:
    return case(*vitals({**SIRS_NORMAL, **(values or {})}), age=age)


@pytest.mark.parametrize(
    ("changed", "item", "expected"),
    [
        ({"temp": 38.0}, "temperature", 0),
        ({"temp": 38.1}, "temperature", 1),
        ({"temp": 36.0}, "temperature", 0),
        ({"temp": 35.9}, "temperature", 1),
        ({"hr": 90}, "heart_rate", 0),
        ({"hr": 91}, "heart_rate", 1),
        ({"rr": 20}, "respiratory", 0),
        ({"rr": 21}, "respiratory", 1),
        ({"paco2": 32}, "respiratory", 0),
        ({"paco2": 31.9}, "respiratory", 1),
        ({"wbc": 12}, "white_cells", 0),
        ({"wbc": 12.1}, "white_cells", 1),
        ({"wbc": 4}, "white_cells", 0),
        ({"wbc": 3.9}, "white_cells", 1),
        ({"bands": 10}, "white_cells", 0),
        ({"bands": 10.1}, "white_cells", 1),
    ],
)
def test_sirs_each_strict_threshold(
    kb: KnowledgeBase, changed: dict[str, float], item: str, expected: int
) -> None:
    result = evaluate(kb, sirs_case(changed))
    items = points(result, "sirs_criteria")
    assert items[item] == expected
    assert score(result, "sirs_criteria").value == expected
    assert finding_ids(result) & SIRS_FINDINGS == {"sirs_criteria_not_met"}
    assert not undetermined_ids(result) & SIRS_RULES


@pytest.mark.parametrize(
    ("values", "total", "finding"),
    [
        ({"temp": 38.1, "hr": 91}, 2, "sirs"),
        ({"rr": 21, "wbc": 3.9}, 2, "sirs"),
        ({"temp": 35.9, "paco2": 31.9, "bands": 10.1}, 3, "sirs"),
        ({"temp": 39.5, "hr": 120, "rr": 28, "wbc": 18}, 4, "sirs"),
        ({"hr": 91}, 1, "sirs_criteria_not_met"),
        ({}, 0, "sirs_criteria_not_met"),
    ],
)
def test_sirs_two_or_more_criteria(
    kb: KnowledgeBase, values: dict[str, float], total: int, finding: str
) -> None:
    result = evaluate(kb, sirs_case(values))
    assert score(result, "sirs_criteria").value == total
    assert finding_ids(result) & SIRS_FINDINGS == {finding}
    # SIRS alone is neither a diagnosis nor a recommendation here.
    assert result.diagnoses == []


@pytest.mark.parametrize(
    ("values", "item", "expected"),
    [
        ({"temp": None, "temp_f": 100.4}, "temperature", 0),  # 38.0 degC
        ({"temp": None, "temp_f": 100.6}, "temperature", 1),  # 38.11 -> 38.1
        ({"temp": None, "temp_f": 96.8}, "temperature", 0),  # 36.0 degC
        ({"temp": None, "temp_f": 96.6}, "temperature", 1),  # 35.89 -> 35.9
        ({"paco2_kpa": 4.3}, "respiratory", 0),  # 32.25 mmHg
        ({"paco2_kpa": 4.25}, "respiratory", 1),  # 31.88 mmHg
        ({"wbc": None, "wbc_k_ul": 12.1}, "white_cells", 1),
        ({"wbc": None, "wbc_k_ul": 12.0}, "white_cells", 0),
    ],
)
def test_sirs_units_convert(
    kb: KnowledgeBase, values: dict[str, float | None], item: str, expected: int
) -> None:
    result = evaluate(kb, sirs_case(values))
    assert points(result, "sirs_criteria")[item] == expected


@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({"temp": None, "hr": 91}, ["body_temperature"]),
        ({"hr": None, "rr": 21}, ["heart_rate"]),
        ({"rr": None, "hr": 91}, ["respiratory_rate"]),
        ({"wbc": None, "hr": 91}, ["wbc"]),
    ],
)
def test_sirs_missing_parameter_that_decides_cannot_be_determined(
    kb: KnowledgeBase, values: dict[str, float | None], missing: list[str]
) -> None:
    result = evaluate(kb, sirs_case(values))
    sirs = score(result, "sirs_criteria")
    assert (sirs.value, sirs.range, sirs.missing) == (None, (1.0, 2.0), missing)
    assert not finding_ids(result) & SIRS_FINDINGS
    for rule_id in ("sirs_met", "sirs_not_met"):
        assert undetermined(result, rule_id).missing == missing


def test_sirs_two_criteria_force_the_result_with_the_others_missing(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, sirs_case({"temp": 38.5, "hr": 100, "rr": None, "wbc": None}))
    sirs = score(result, "sirs_criteria")
    assert (sirs.value, sirs.range) == (None, (2.0, 4.0))
    assert finding_ids(result) & SIRS_FINDINGS == {"sirs"}


def test_sirs_paco2_and_bands_not_measured_count_as_not_met(
    kb: KnowledgeBase,
) -> None:
    # [convention] the alternatives need not be measured: RR and WBC decide.
    result = evaluate(kb, sirs_case({"hr": 91}))
    assert points(result, "sirs_criteria") == {
        "temperature": 0.0,
        "heart_rate": 1.0,
        "respiratory": 0.0,
        "white_cells": 0.0,
    }
    # ... but they rescue a missing RR or WBC when abnormal.
    result = evaluate(
        kb, sirs_case({"rr": None, "paco2": 30, "wbc": None, "bands": 12, "hr": 91})
    )
    assert score(result, "sirs_criteria").value == 3
    assert "sirs" in finding_ids(result)
    # ... and a normal one does not stand in for the missing primary.
    result = evaluate(kb, sirs_case({"rr": None, "paco2": 40}))
    assert points(result, "sirs_criteria")["respiratory"] is None


def test_sirs_adults_only_and_only_when_observed(kb: KnowledgeBase) -> None:
    result = evaluate(kb, sirs_case({"temp": 39, "hr": 130}, age=17))
    assert finding_ids(result) & SIRS_FINDINGS == {"sirs_not_applicable"}
    assert "sirs_criteria" not in finding_ids(result)
    # No SIRS parameter in the last 24 hours: SIRS is not assessed at all.
    old = case(*vitals(SIRS_NORMAL, days_ago=2))
    result = evaluate(kb, old)
    assert "sirs_criteria" not in finding_ids(result)
    assert not finding_ids(result) & SIRS_FINDINGS
    assert not undetermined_ids(result) & SIRS_RULES


# --------------------------------------------------------------------------
# NEWS2 (spec 8, RCP 2017 Charts 1 and 4).
# --------------------------------------------------------------------------

NEWS2_NORMAL: dict[str, Value] = {
    "rr": 16.0,
    "spo2": 97.0,
    "sbp": 125.0,
    "hr": 70.0,
    "acvpu": "A",
    "temp": 37.0,
}
NEWS2_FACTS = {
    "rr": "respiratory_rate",
    "spo2": "spo2",
    "sbp": "systolic_bp",
    "hr": "heart_rate",
    "acvpu": "acvpu",
    "temp": "body_temperature",
}


def news2_case(
    values: Mapping[str, Value] | None = None,
    *,
    conditions: tuple[CodedEntry, ...] = (),
    age: int | None = 60,
) -> Case:
    merged = {**NEWS2_NORMAL, **(values or {})}
    return case(*vitals(merged), age=age, conditions=conditions)


def news2_outcome(result: Assessment) -> tuple[set[str], dict[str, str]]:
    """The NEWS2 risk findings and the NEWS2 responses with their status."""
    responses = {
        k: v for k, v in recommendation_statuses(result).items() if k in NEWS2_RESPONSES
    }
    return finding_ids(result) & NEWS2_RISKS, responses


def test_news2_all_normal_scores_0_with_every_component(kb: KnowledgeBase) -> None:
    result = evaluate(kb, news2_case())
    news2 = score(result, "news2")
    assert (news2.value, news2.range, news2.missing) == (0.0, (0.0, 0.0), [])
    assert points(result, "news2") == {
        "respiratory_rate": 0.0,
        "spo2_scale_1": 0.0,
        "spo2_scale_2_on_air": 0.0,
        "spo2_scale_2_on_oxygen": 0.0,
        "air_or_oxygen": 0.0,
        "systolic_bp": 0.0,
        "pulse": 0.0,
        "consciousness": 0.0,
        "temperature": 0.0,
    }


@pytest.mark.parametrize(
    ("key", "item", "value", "expected"),
    [
        # Respiration rate: <= 8: 3, 9-11: 1, 12-20: 0, 21-24: 2, >= 25: 3
        ("rr", "respiratory_rate", 8, 3),
        ("rr", "respiratory_rate", 9, 1),
        ("rr", "respiratory_rate", 11, 1),
        ("rr", "respiratory_rate", 12, 0),
        ("rr", "respiratory_rate", 20, 0),
        ("rr", "respiratory_rate", 21, 2),
        ("rr", "respiratory_rate", 24, 2),
        ("rr", "respiratory_rate", 25, 3),
        # SpO2 scale 1: <= 91: 3, 92-93: 2, 94-95: 1, >= 96: 0
        ("spo2", "spo2_scale_1", 91, 3),
        ("spo2", "spo2_scale_1", 92, 2),
        ("spo2", "spo2_scale_1", 93, 2),
        ("spo2", "spo2_scale_1", 94, 1),
        ("spo2", "spo2_scale_1", 95, 1),
        ("spo2", "spo2_scale_1", 96, 0),
        ("spo2", "spo2_scale_1", 100, 0),
        # Systolic BP: <= 90: 3, 91-100: 2, 101-110: 1, 111-219: 0, >= 220: 3
        ("sbp", "systolic_bp", 90, 3),
        ("sbp", "systolic_bp", 91, 2),
        ("sbp", "systolic_bp", 100, 2),
        ("sbp", "systolic_bp", 101, 1),
        ("sbp", "systolic_bp", 110, 1),
        ("sbp", "systolic_bp", 111, 0),
        ("sbp", "systolic_bp", 219, 0),
        ("sbp", "systolic_bp", 220, 3),
        # Pulse: <= 40: 3, 41-50: 1, 51-90: 0, 91-110: 1, 111-130: 2, >= 131: 3
        ("hr", "pulse", 40, 3),
        ("hr", "pulse", 41, 1),
        ("hr", "pulse", 50, 1),
        ("hr", "pulse", 51, 0),
        ("hr", "pulse", 90, 0),
        ("hr", "pulse", 91, 1),
        ("hr", "pulse", 110, 1),
        ("hr", "pulse", 111, 2),
        ("hr", "pulse", 130, 2),
        ("hr", "pulse", 131, 3),
        # ACVPU: A: 0, C/V/P/U: 3
        ("acvpu", "consciousness", "A", 0),
        ("acvpu", "consciousness", "C", 3),
        ("acvpu", "consciousness", "V", 3),
        ("acvpu", "consciousness", "P", 3),
        ("acvpu", "consciousness", "U", 3),
        # Temperature: <= 35.0: 3, 35.1-36.0: 1, 36.1-38.0: 0, 38.1-39.0: 1,
        # >= 39.1: 2
        ("temp", "temperature", 35.0, 3),
        ("temp", "temperature", 35.1, 1),
        ("temp", "temperature", 36.0, 1),
        ("temp", "temperature", 36.1, 0),
        ("temp", "temperature", 38.0, 0),
        ("temp", "temperature", 38.1, 1),
        ("temp", "temperature", 39.0, 1),
        ("temp", "temperature", 39.1, 2),
        ("temp", "temperature", 36.04, 1),  # rounds to 36.0 first (spec 0.3)
        ("temp", "temperature", 36.05, 0),  # rounds half-up to 36.1
    ],
)
def test_news2_every_band_edge_scale_1(
    kb: KnowledgeBase, key: str, item: str, value: float | str, expected: int
) -> None:
    result = evaluate(kb, news2_case({key: value}))
    items = points(result, "news2")
    assert items[item] == expected
    assert score(result, "news2").value == expected
    assert not undetermined_ids(result) & NEWS2_BAND_RULES


@pytest.mark.parametrize(
    ("value", "on_oxygen", "item", "expected"),
    [
        # Scale 2, on air: <= 83: 3, 84-85: 2, 86-87: 1, >= 88: 0 (>= 93 too)
        (83, False, "spo2_scale_2_on_air", 3),
        (84, False, "spo2_scale_2_on_air", 2),
        (85, False, "spo2_scale_2_on_air", 2),
        (86, False, "spo2_scale_2_on_air", 1),
        (87, False, "spo2_scale_2_on_air", 1),
        (88, False, "spo2_scale_2_on_air", 0),
        (92, False, "spo2_scale_2_on_air", 0),
        (93, False, "spo2_scale_2_on_air", 0),
        (97, False, "spo2_scale_2_on_air", 0),
        (100, False, "spo2_scale_2_on_air", 0),
        # Scale 2, on oxygen: 88-92: 0, 93-94: 1, 95-96: 2, >= 97: 3
        (83, True, "spo2_scale_2_on_oxygen", 3),
        (84, True, "spo2_scale_2_on_oxygen", 2),
        (85, True, "spo2_scale_2_on_oxygen", 2),
        (86, True, "spo2_scale_2_on_oxygen", 1),
        (87, True, "spo2_scale_2_on_oxygen", 1),
        (88, True, "spo2_scale_2_on_oxygen", 0),
        (92, True, "spo2_scale_2_on_oxygen", 0),
        (93, True, "spo2_scale_2_on_oxygen", 1),
        (94, True, "spo2_scale_2_on_oxygen", 1),
        (95, True, "spo2_scale_2_on_oxygen", 2),
        (96, True, "spo2_scale_2_on_oxygen", 2),
        (97, True, "spo2_scale_2_on_oxygen", 3),
        (100, True, "spo2_scale_2_on_oxygen", 3),
    ],
)
def test_news2_every_band_edge_scale_2(
    kb: KnowledgeBase, value: float, on_oxygen: bool, item: str, expected: int
) -> None:
    conditions = (HYPERCAPNIC, OXYGEN) if on_oxygen else (HYPERCAPNIC,)
    result = evaluate(kb, news2_case({"spo2": value}, conditions=conditions))
    items = points(result, "news2")
    assert items[item] == expected
    assert items["spo2_scale_1"] == 0.0  # does not apply on scale 2
    other = "spo2_scale_2_on_air" if on_oxygen else "spo2_scale_2_on_oxygen"
    assert items[other] == 0.0
    assert items["air_or_oxygen"] == (2.0 if on_oxygen else 0.0)
    assert score(result, "news2").value == expected + (2 if on_oxygen else 0)


@pytest.mark.parametrize(
    ("value", "on_oxygen", "expected_total"),
    [
        (88, False, 3),  # 88 % without documented hypercapnia: scale 1, 3 points
        (92, False, 2),
        (97, True, 2),  # on oxygen, scale 1: SpO2 0 + oxygen 2
    ],
)
def test_news2_scale_2_only_with_documented_hypercapnic_failure(
    kb: KnowledgeBase, value: float, on_oxygen: bool, expected_total: int
) -> None:
    conditions = (OXYGEN,) if on_oxygen else ()
    result = evaluate(kb, news2_case({"spo2": value}, conditions=conditions))
    items = points(result, "news2")
    assert items["spo2_scale_2_on_air"] == items["spo2_scale_2_on_oxygen"] == 0.0
    assert score(result, "news2").value == expected_total


def test_news2_oxygen_scores_2(kb: KnowledgeBase) -> None:
    result = evaluate(kb, news2_case(conditions=(OXYGEN,)))
    assert points(result, "news2")["air_or_oxygen"] == 2.0
    assert score(result, "news2").value == 2.0


@pytest.mark.parametrize(
    ("values", "conditions", "total", "risk", "response", "rule"),
    [
        (
            {},
            (),
            0,
            "news2_risk_low",
            "routine_monitoring_min_12_hourly",
            "news2_score_0",
        ),
        (
            {"hr": 91},
            (),
            1,
            "news2_risk_low",
            "ward_based_response_min_4_6_hourly",
            "news2_score_1_4",
        ),
        (
            {"rr": 21, "sbp": 101, "hr": 91},
            (),
            4,
            "news2_risk_low",
            "ward_based_response_min_4_6_hourly",
            "news2_score_1_4",
        ),
        (
            {"rr": 25},
            (),
            3,
            "news2_risk_low_medium",
            "urgent_ward_based_response_min_1_hourly",
            "news2_single_parameter_3",
        ),
        (
            {"acvpu": "C", "hr": 91},
            (),
            4,
            "news2_risk_low_medium",
            "urgent_ward_based_response_min_1_hourly",
            "news2_single_parameter_3",
        ),
        (
            # a single 3 with a total of 5 is medium, not low-medium
            {"spo2": 91, "sbp": 100},
            (),
            5,
            "news2_risk_medium",
            "urgent_response_min_1_hourly",
            "news2_score_5_6",
        ),
        (
            {"hr": 111, "temp": 39.1, "sbp": 110},
            (),
            5,
            "news2_risk_medium",
            "urgent_response_min_1_hourly",
            "news2_score_5_6",
        ),
        (
            {"spo2": 94, "hr": 111},
            (OXYGEN,),
            5,
            "news2_risk_medium",
            "urgent_response_min_1_hourly",
            "news2_score_5_6",
        ),
        (
            {"rr": 21, "hr": 111, "sbp": 100},
            (),
            6,
            "news2_risk_medium",
            "urgent_response_min_1_hourly",
            "news2_score_5_6",
        ),
        (
            {"rr": 25, "sbp": 90, "temp": 38.1},
            (),
            7,
            "news2_risk_high",
            "emergency_response_continuous_monitoring",
            "news2_score_7_plus",
        ),
        (
            {"rr": 30, "spo2": 85, "sbp": 80, "hr": 140, "acvpu": "U", "temp": 34},
            (OXYGEN,),
            20,
            "news2_risk_high",
            "emergency_response_continuous_monitoring",
            "news2_score_7_plus",
        ),
    ],
)
def test_news2_total_bands_and_responses(
    kb: KnowledgeBase,
    values: dict[str, float | str],
    conditions: tuple[CodedEntry, ...],
    total: int,
    risk: str,
    response: str,
    rule: str,
) -> None:
    result = evaluate(kb, news2_case(values, conditions=conditions))
    assert score(result, "news2").value == total
    assert news2_outcome(result) == ({risk}, {response: "recommended"})
    assert [r.rule_id for r in recommendation(result, response).evidence.rules] == [
        rule
    ]
    assert set(result.rules_fired) & NEWS2_BAND_RULES == {rule}
    assert not undetermined_ids(result) & NEWS2_BAND_RULES


@pytest.mark.parametrize("key", sorted(NEWS2_FACTS))
def test_news2_any_missing_parameter_cannot_be_determined(
    kb: KnowledgeBase, key: str
) -> None:
    result = evaluate(kb, news2_case({key: None}))
    news2 = score(result, "news2")
    assert news2.value is None  # never a partial sum
    assert news2.missing == [NEWS2_FACTS[key]]
    assert news2_outcome(result) == (set(), {})
    assert undetermined_ids(result) >= NEWS2_BAND_RULES
    for rule_id in NEWS2_BAND_RULES:
        assert undetermined(result, rule_id).missing == [NEWS2_FACTS[key]]


@pytest.mark.parametrize(
    ("values", "known_range"),
    [
        # known items already 9 (>= 7 whatever ACVPU is): still undetermined
        ({"rr": 30, "sbp": 85, "hr": 140, "acvpu": None}, (9.0, 12.0)),
        # known items 0, temperature missing: could be at most 3, still undetermined
        ({"temp": None}, (0.0, 3.0)),
        # a 3 known with the total possibly 5: undetermined
        ({"rr": 25, "spo2": None}, (3.0, 6.0)),
    ],
)
def test_news2_missing_parameter_is_not_decided_by_the_known_items(
    kb: KnowledgeBase, values: dict[str, float | None], known_range: tuple[float, float]
) -> None:
    # Spec 8 over the 0.4 convention: any missing parameter -> cannot be
    # determined, even when the known items would force the band.
    result = evaluate(kb, news2_case(values))
    news2 = score(result, "news2")
    assert (news2.value, news2.range) == (None, known_range)
    assert news2_outcome(result) == (set(), {})
    assert undetermined_ids(result) >= NEWS2_BAND_RULES


def test_news2_reading_older_than_24_hours_is_missing(kb: KnowledgeBase) -> None:
    c = case(
        *vitals({**NEWS2_NORMAL, "sbp": None}),
        *vitals({"sbp": 125}, days_ago=1.05),
    )
    result = evaluate(kb, c)
    assert undetermined(result, "news2_score_0").missing == ["systolic_bp"]


def test_news2_no_observations_in_24_hours_is_not_scored(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(*vitals(NEWS2_NORMAL, days_ago=2)))
    assert "news2" not in finding_ids(result)
    assert news2_outcome(result) == (set(), {})
    assert not undetermined_ids(result) & NEWS2_BAND_RULES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (95.0, 3),  # 35.0 degC
        (95.2, 1),  # 35.11 -> 35.1
        (96.8, 1),  # 36.0
        (97.0, 0),  # 36.11 -> 36.1
        (100.4, 0),  # 38.0
        (100.6, 1),  # 38.11 -> 38.1
        (102.2, 1),  # 39.0
        (102.4, 2),  # 39.11 -> 39.1
    ],
)
def test_news2_temperature_in_fahrenheit_converts(
    kb: KnowledgeBase, value: float, expected: int
) -> None:
    result = evaluate(kb, news2_case({"temp": None, "temp_f": value}))
    assert points(result, "news2")["temperature"] == expected


@pytest.mark.parametrize(
    ("age", "conditions", "applies"),
    [
        (16, (), True),
        (15, (), False),
        (30, (has_condition("pregnancy"),), False),
        (90, (), True),
    ],
)
def test_news2_adults_not_pregnant(
    kb: KnowledgeBase, age: int, conditions: tuple[CodedEntry, ...], applies: bool
) -> None:
    result = evaluate(kb, news2_case({"rr": 25}, age=age, conditions=conditions))
    if applies:
        assert "news2" in finding_ids(result)
        assert news2_outcome(result)[0] == {"news2_risk_low_medium"}
    else:
        assert "news2" not in finding_ids(result)
        assert news2_outcome(result) == ({"news2_not_applicable"}, {})
        assert not undetermined_ids(result) & NEWS2_BAND_RULES


def test_news2_age_unknown_cannot_be_determined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, news2_case(age=None))
    assert score(result, "news2").value == 0.0
    assert news2_outcome(result) == (set(), {})
    assert "age" in undetermined(result, "news2_score_0").missing


def test_news2_response_evidence_names_the_facts(kb: KnowledgeBase) -> None:
    result = evaluate(kb, news2_case({"rr": 25, "sbp": 90, "temp": 38.1}))
    rec = recommendation(result, "emergency_response_continuous_monitoring")
    assert rec.strength == "strong"
    names = {f.name for f in rec.evidence.facts}
    assert {"points:news2", "respiratory_rate", "acvpu", "body_temperature"} <= names
    used = [f for f in rec.evidence.facts if f.name == "points:news2"]
    assert [f.value for f in used] == [7.0]


# --------------------------------------------------------------------------
# Engine behaviour these rules depend on, and limitations found.
# --------------------------------------------------------------------------

_POINTS_RULESET = """ruleset:
  id: probe
  title: Probe
  version: 0.0.1
  source: test
point_scores:
  - id: probe_score
    title: Probe score
    items:
      - {id: rr, points: 1, when: {fact: respiratory_rate, at_least: 22 /min}}
      - {id: sbp, points: 1, when: {fact: systolic_bp, at_most: 100 mmHg}}
rules:
  - id: probe_guarded
    title: guarded by determined true
    when:
      all:
        - {points: probe_score, determined: true}
        - {points: probe_score, at_least: 1}
    then: [{finding: probe_high, display: Probe high}]
"""


def test_a_determined_true_guard_makes_a_rule_false_not_undetermined(
    tmp_path: Path,
) -> None:
    # Why news2.yaml does not guard with `{points: news2, determined: true}`:
    # with an item missing that guard is false (two-valued), so the rule is
    # false and is not listed as undetermined. The rules pair a guard on the
    # recorded parameters with `not: guard` instead.
    (tmp_path / "probe.yaml").write_text(_POINTS_RULESET, encoding="utf-8")
    probe = KnowledgeBase.load(tmp_path)
    result = probe.evaluate(case(*vitals({"rr": 30})), as_of=NOW)
    assert "probe_high" not in finding_ids(result)
    assert "probe_guarded" not in undetermined_ids(result)


def test_banded_item_reading_without_unit_uses_the_canonical_unit(
    kb: KnowledgeBase,
) -> None:
    unitless = {"respiratory_rate": (Reading(value=16.0, unit=None, time=at(RECENT)),)}
    c = case(unitless, *vitals({**NEWS2_NORMAL, "rr": None}))
    result = evaluate(kb, c)
    assert points(result, "news2")["respiratory_rate"] == 0.0


def test_a_finding_with_a_point_score_id_is_refused(tmp_path: Path) -> None:
    body = _POINTS_RULESET.replace("finding: probe_high", "finding: probe_score")
    (tmp_path / "probe.yaml").write_text(body, encoding="utf-8")
    with pytest.raises(RuleFileError):
        KnowledgeBase.load(tmp_path)


def test_rich_view_shows_a_fahrenheit_unit(kb: KnowledgeBase) -> None:
    from rich.console import Console

    from cli import render

    result = evaluate(kb, sirs_case({"temp": None, "temp_f": 102.0, "hr": 100}))
    out = io.StringIO()
    render(result, Console(file=out, width=200))
    assert "body_temperature 102 [degF]" in out.getvalue()
