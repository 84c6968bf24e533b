"""Tests for rules/kidney.yaml: eGFR by CKD-EPI 2021, G and A categories, CKD.

Spec sections 3, 4 and 0.3: eGFR is calculated from each creatinine with the
age at that result and the sex, rounded half-up to a whole number before
banding; CKD needs eGFR < 60 or ACR >= 30 mg/g lasting more than 3 months, and
a shorter run cannot be determined yet.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from casebuilder import (
    NOW,
    at,
    case,
    creatinine,
    creatinine_for_egfr,
    diagnosis,
    diagnosis_ids,
    finding_ids,
    lab,
    undetermined,
    undetermined_ids,
)
from ruamel.yaml import YAML

from engine import Assessment, Case, FactUsed, KnowledgeBase
from engine.formulas import ckd_epi_2021_creatinine

KIDNEY_RULES = Path(__file__).resolve().parents[1] / "rules" / "kidney.yaml"
CKD_SNOMED = "709044004"
GFR_FINDINGS = {
    "gfr_category_g1",
    "gfr_category_g2",
    "gfr_category_g3a",
    "gfr_category_g3b",
    "gfr_category_g4",
    "gfr_category_g5",
}
GFR_RULES = {"gfr_g1", "gfr_g2", "gfr_g3a", "gfr_g3b", "gfr_g4", "gfr_g5"}
ACR_FINDINGS = {"albuminuria_a1", "albuminuria_a2", "albuminuria_a3"}


def _parameters() -> dict[str, Any]:
    document = YAML(typ="safe").load(KIDNEY_RULES.read_text("utf-8"))
    (calculation,) = [
        c for c in document["calculations"] if c["id"] == "egfr_ckd_epi_2021"
    ]
    assert calculation["formula"] == "ckd_epi_2021_creatinine"
    params: dict[str, Any] = calculation["parameters"]
    return params


PARAMETERS = _parameters()


def evaluate(kb: KnowledgeBase, c: Case) -> Assessment:
    result = kb.evaluate(c, as_of=NOW)
    assert result.status == "complete", result.problems
    return result


def gfr_finding(result: Assessment) -> tuple[str, FactUsed]:
    """The one GFR category found, and the eGFR it was banded on."""
    (finding,) = [f for f in result.findings if f.id in GFR_FINDINGS]
    (fact,) = [f for f in finding.evidence.facts if f.name == "egfr"]
    return finding.id, fact


def acr_findings(result: Assessment) -> set[str]:
    return finding_ids(result) & ACR_FINDINGS


# --- CKD-EPI 2021 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sex", "age", "scr", "expected"),
    [("female", 50, 0.6, 109.28), ("male", 80, 2.0, 33.12)],
)
def test_formula_gives_the_spec_check_values(
    sex: str, age: int, scr: float, expected: float
) -> None:
    assert round(ckd_epi_2021_creatinine(scr, age, sex, PARAMETERS), 2) == expected


def test_rule_file_holds_the_published_coefficients() -> None:
    assert PARAMETERS == {
        "base": 142,
        "high_exponent": -1.2,
        "age_base": 0.9938,
        "min_age": 18,
        "female": {"kappa": 0.7, "alpha": -0.241, "factor": 1.012},
        "male": {"kappa": 0.9, "alpha": -0.302},
    }


@pytest.mark.parametrize(
    ("sex", "age", "scr", "unit", "egfr", "category"),
    [
        ("female", 50, 0.6, "mg/dL", 109.0, "gfr_category_g1"),
        ("male", 80, 2.0, "mg/dL", 33.0, "gfr_category_g3b"),
        ("female", 50, 53.04, "umol/L", 109.0, "gfr_category_g1"),
        ("male", 80, 176.8, "umol/L", 33.0, "gfr_category_g3b"),
    ],
)
def test_engine_egfr_matches_the_spec_check_values(
    kb: KnowledgeBase,
    sex: str,
    age: int,
    scr: float,
    unit: str,
    egfr: float,
    category: str,
) -> None:
    result = evaluate(kb, case(creatinine(scr, unit), age=age, sex=sex))
    found, fact = gfr_finding(result)
    assert (found, fact.value, fact.unit) == (category, egfr, "mL/min/{1.73_m2}")
    assert fact.time == at(10)
    assert fact.source.startswith("calculated (egfr_ckd_epi_2021)")


def test_creatinine_in_umol_per_litre_gives_the_same_egfr(kb: KnowledgeBase) -> None:
    in_mg = evaluate(kb, case(creatinine(1.5, "mg/dL"), age=70, sex="male"))
    in_umol = evaluate(kb, case(creatinine(132.6, "umol/L"), age=70, sex="male"))
    (mg_category, mg_egfr), (umol_category, umol_egfr) = map(
        gfr_finding, (in_mg, in_umol)
    )
    assert mg_category == umol_category == "gfr_category_g3a"
    assert mg_egfr.value == umol_egfr.value == 50.0


def test_egfr_uses_the_age_at_the_creatinine_result(kb: KnowledgeBase) -> None:
    # A creatinine whose eGFR rounds to 46 at 79 and to 45 at 80; the patient
    # was 79 when it was taken (day 100) and is 80 now.
    scr = creatinine_for_egfr(45.6, 79, "male", PARAMETERS)
    assert round(ckd_epi_2021_creatinine(scr, 80, "male", PARAMETERS)) == 45
    birth = date(1945, 5, 1)  # 80 since 2025-05-01, 79 on 2025-02-21
    result = evaluate(
        kb, case(creatinine(scr, days_ago=100), birth_date=birth, sex="male")
    )
    assert result.patient.age == 80
    assert gfr_finding(result)[1].value == 46.0


# --- GFR categories ---------------------------------------------------------

# (rounded eGFR, category). Every boundary from both sides.
BOUNDARIES = [
    (90, "gfr_category_g1"),
    (89, "gfr_category_g2"),
    (60, "gfr_category_g2"),
    (59, "gfr_category_g3a"),
    (45, "gfr_category_g3a"),
    (44, "gfr_category_g3b"),
    (30, "gfr_category_g3b"),
    (29, "gfr_category_g4"),
    (15, "gfr_category_g4"),
    (14, "gfr_category_g5"),
]


@pytest.mark.parametrize(("egfr", "category"), BOUNDARIES)
def test_gfr_category_at_each_boundary(
    kb: KnowledgeBase, egfr: int, category: str
) -> None:
    # Calculated eGFR egfr + 0.2: rounds to egfr and is not below it.
    scr = creatinine_for_egfr(egfr + 0.2, 60, "female", PARAMETERS)
    result = evaluate(kb, case(creatinine(scr), age=60, sex="female"))
    found, fact = gfr_finding(result)
    assert (found, fact.value) == (category, float(egfr))
    assert not undetermined_ids(result) & GFR_RULES


@pytest.mark.parametrize(
    ("egfr", "category"),
    [
        (90, "gfr_category_g1"),
        (60, "gfr_category_g2"),
        (45, "gfr_category_g3a"),
        (30, "gfr_category_g3b"),
        (15, "gfr_category_g4"),
    ],
)
def test_egfr_is_rounded_before_banding(
    kb: KnowledgeBase, egfr: int, category: str
) -> None:
    # Calculated eGFR egfr - 0.3 rounds half-up to egfr.
    scr = creatinine_for_egfr(egfr - 0.3, 60, "female", PARAMETERS)
    result = evaluate(kb, case(creatinine(scr), age=60, sex="female"))
    found, fact = gfr_finding(result)
    assert fact.value == float(egfr)
    assert found == category


def test_gfr_category_uses_the_latest_egfr(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb, case(creatinine([2.5, 0.8], days_ago=[120, 10]), age=60, sex="female")
    )
    assert gfr_finding(result)[0] == "gfr_category_g2"


def test_creatinine_older_than_12_months_gives_no_category(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, case(creatinine(1.0, days_ago=400), age=60))
    assert finding_ids(result) & GFR_FINDINGS == set()
    assert undetermined(result, "gfr_g2").missing == ["egfr"]


# --- Albuminuria --------------------------------------------------------------


@pytest.mark.parametrize(
    ("acr", "unit", "category"),
    [
        (29, "mg/g", "albuminuria_a1"),
        (30, "mg/g", "albuminuria_a2"),
        (300, "mg/g", "albuminuria_a2"),
        (301, "mg/g", "albuminuria_a3"),
        (2.9, "mg/mmol", "albuminuria_a1"),
        (3, "mg/mmol", "albuminuria_a2"),
        (30, "mg/mmol", "albuminuria_a2"),
        (30.1, "mg/mmol", "albuminuria_a3"),
    ],
)
def test_albuminuria_category_at_each_boundary(
    kb: KnowledgeBase, acr: float, unit: str, category: str
) -> None:
    result = evaluate(kb, case(lab("acr", acr, unit)))
    assert acr_findings(result) == {category}


# --- CKD ----------------------------------------------------------------------


def low_egfr(days_ago: list[float]) -> Case:
    """A 60-year-old woman with creatinine 1.3 (eGFR about 47) on each day."""
    return case(creatinine(1.3, days_ago=days_ago), age=60, sex="female")


def test_egfr_below_60_for_more_than_3_months_is_ckd(kb: KnowledgeBase) -> None:
    result = evaluate(kb, low_egfr([110, 10]))
    dx = diagnosis(result, "chronic_kidney_disease")
    assert (dx.code, dx.certainty) == (CKD_SNOMED, 0.9)
    assert [r.rule_id for r in dx.evidence.rules] == ["ckd_by_egfr"]
    assert {f.time for f in dx.evidence.facts if f.name == "egfr"} == {
        at(110),
        at(10),
    }
    assert "ckd" in finding_ids(result)
    assert "ckd_by_egfr" not in undetermined_ids(result)


def test_egfr_below_60_for_30_days_cannot_be_determined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, low_egfr([40, 10]))
    assert "chronic_kidney_disease" not in diagnosis_ids(result)
    assert "ckd" not in finding_ids(result)
    assert "ckd_by_egfr" not in result.rules_fired
    entry = undetermined(result, "ckd_by_egfr")
    assert entry.missing == ["egfr (duration)"]
    assert "30 days" in entry.reason
    # The G category itself is known.
    assert gfr_finding(result)[0] == "gfr_category_g3a"


def test_single_low_egfr_cannot_be_determined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, low_egfr([10]))
    assert "chronic_kidney_disease" not in diagnosis_ids(result)
    assert "ckd_by_egfr" in undetermined_ids(result)


@pytest.mark.parametrize(("days_apart", "is_ckd"), [(91, False), (92, True)])
def test_three_months_is_exceeded_after_91_days(
    kb: KnowledgeBase, days_apart: int, is_ckd: bool
) -> None:
    # 3 months is 91.31 days (a month is 30.44 days).
    result = evaluate(kb, low_egfr([10 + days_apart, 10]))
    assert ("chronic_kidney_disease" in diagnosis_ids(result)) is is_ckd
    assert ("ckd_by_egfr" in undetermined_ids(result)) is not is_ckd


def test_latest_egfr_of_60_or_more_is_not_ckd(kb: KnowledgeBase) -> None:
    readings = creatinine([1.3, 1.3, 0.9], days_ago=[300, 150, 10])
    result = evaluate(kb, case(readings, age=60, sex="female"))
    assert "chronic_kidney_disease" not in diagnosis_ids(result)
    assert "ckd" not in finding_ids(result)
    assert "ckd_by_egfr" not in undetermined_ids(result)
    assert gfr_finding(result)[0] == "gfr_category_g2"


def test_egfr_that_rounds_to_60_is_not_ckd(kb: KnowledgeBase) -> None:
    scr = creatinine_for_egfr(59.7, 60, "female", PARAMETERS)
    readings = creatinine(scr, days_ago=[120, 10])
    result = evaluate(kb, case(readings, age=60, sex="female"))
    assert gfr_finding(result)[1].value == 60.0
    assert "chronic_kidney_disease" not in diagnosis_ids(result)


def test_normal_egfr_between_low_ones_restarts_the_run(kb: KnowledgeBase) -> None:
    readings = creatinine([1.3, 0.9, 1.3], days_ago=[300, 150, 10])
    result = evaluate(kb, case(readings, age=60, sex="female"))
    assert "chronic_kidney_disease" not in diagnosis_ids(result)
    assert undetermined(result, "ckd_by_egfr").missing == ["egfr (duration)"]


def test_acr_30_or_more_for_more_than_3_months_is_ckd(kb: KnowledgeBase) -> None:
    readings = lab("acr", [45, 60], "mg/g", days_ago=[130, 10])
    result = evaluate(kb, case(readings, creatinine(0.8), age=60))
    dx = diagnosis(result, "chronic_kidney_disease")
    assert (dx.code, dx.certainty) == (CKD_SNOMED, 0.85)
    assert [r.rule_id for r in dx.evidence.rules] == ["ckd_by_albuminuria"]
    assert finding_ids(result) >= {"albuminuria_a2", "gfr_category_g2", "ckd"}


def test_acr_30_or_more_for_30_days_cannot_be_determined(kb: KnowledgeBase) -> None:
    readings = lab("acr", [4.0, 5.0], "mg/mmol", days_ago=[40, 10])
    result = evaluate(kb, case(readings))
    assert "chronic_kidney_disease" not in diagnosis_ids(result)
    assert undetermined(result, "ckd_by_albuminuria").missing == ["acr (duration)"]


def test_low_egfr_and_albuminuria_both_support_ckd(kb: KnowledgeBase) -> None:
    readings = case(
        creatinine(1.3, days_ago=[120, 10]),
        lab("acr", [45, 60], "mg/g", days_ago=[130, 10]),
        age=60,
    )
    dx = diagnosis(evaluate(kb, readings), "chronic_kidney_disease")
    assert {r.rule_id for r in dx.evidence.rules} == {
        "ckd_by_egfr",
        "ckd_by_albuminuria",
    }
    assert dx.certainty == pytest.approx(1 - 0.1 * 0.15)


def test_g2_with_a1_is_not_ckd(kb: KnowledgeBase) -> None:
    readings = case(
        creatinine(0.9, days_ago=[200, 10]),
        lab("acr", [10, 12], "mg/g", days_ago=[200, 10]),
        age=60,
    )
    result = evaluate(kb, readings)
    assert finding_ids(result) == {"gfr_category_g2", "albuminuria_a1"}
    assert "chronic_kidney_disease" not in diagnosis_ids(result)
    assert not {"ckd_by_egfr", "ckd_by_albuminuria"} & undetermined_ids(result)


# --- When eGFR cannot be calculated ---------------------------------------------


def test_no_egfr_under_18(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(creatinine(0.6), age=17))
    assert finding_ids(result) & GFR_FINDINGS == set()
    for rule_id in GFR_RULES:
        assert undetermined(result, rule_id).missing == [
            "age >= 18 (not applicable)",
            "egfr",
        ]


def test_no_egfr_from_a_creatinine_taken_before_18(kb: KnowledgeBase) -> None:
    # 18 at the evaluation (since 2025-05-01) but 17 when the blood was taken.
    birth = date(2007, 5, 1)
    before = evaluate(kb, case(creatinine(0.6, days_ago=100), birth_date=birth))
    assert before.patient.age == 18
    assert finding_ids(before) & GFR_FINDINGS == set()
    after = evaluate(kb, case(creatinine(0.6, days_ago=10), birth_date=birth))
    assert gfr_finding(after)[0] == "gfr_category_g1"


@pytest.mark.parametrize("sex", [None, "other", "unknown"])
def test_no_egfr_without_female_or_male_sex(kb: KnowledgeBase, sex: str | None) -> None:
    result = evaluate(kb, case(creatinine(1.3, days_ago=[120, 10]), sex=sex))
    assert finding_ids(result) & GFR_FINDINGS == set()
    assert "chronic_kidney_disease" not in diagnosis_ids(result)
    assert undetermined(result, "gfr_g3a").missing == ["egfr", "sex"]
    assert "ckd_by_egfr" in undetermined_ids(result)


def test_missing_sex_is_named_as_what_is_missing(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(creatinine(1.3), sex=None))
    entry = undetermined(result, "gfr_g3a")
    named = [*entry.missing, entry.reason, *result.notes]
    assert any("sex" in text for text in named)
