"""Tests for the prevention rulesets: BMI, 10-year ASCVD risk, statins, ACEi/ARB
and the A1C care gap (clinical-criteria-spec sections 0, 12, 13, 14 and 15).

Every threshold is tested at and around its edge. The pooled cohort equations
are recomputed here, independently of engine/formulas.py, from the spec's
coefficient table typed in below; the Goff 2014 worked example (3.0 % for an
African-American woman) is the published check value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from casebuilder import (
    NOW,
    Readings,
    at,
    bp,
    case,
    creatinine,
    creatinine_for_egfr,
    finding_ids,
    has_condition,
    lab,
    recommendation,
    recommendation_statuses,
    taking,
    undetermined,
    undetermined_ids,
    us_core_race,
)
from ruamel.yaml import YAML

from engine import Assessment, Case, CodedEntry, KnowledgeBase, Reading
from engine.calculations import run_calculations
from engine.caseview import CaseView
from engine.formulas import required_parameters
from engine.inputs import read_input_data

RULES = Path(__file__).resolve().parents[1] / "rules"


def _calculation(ruleset: str, calc_id: str) -> dict[str, Any]:
    document = YAML(typ="safe").load((RULES / f"{ruleset}.yaml").read_text("utf-8"))
    (found,) = [c for c in document["calculations"] if c["id"] == calc_id]
    calc: dict[str, Any] = found
    return calc


KIDNEY = _calculation("kidney", "egfr_ckd_epi_2021")["parameters"]
PCE = _calculation("ascvd_risk", "pooled_cohort_2013")
BMI = _calculation("bmi", "bmi_from_weight_height")


def evaluate(kb: KnowledgeBase, c: Case) -> Assessment:
    result = kb.evaluate(c, as_of=NOW)
    assert result.status == "complete", result.problems
    return result


def text_fact(name: str, value: str) -> Readings:
    return {name: (Reading(value=value, time=at(10), source=f"{name}@-10d"),)}


def with_allergy(c: Case, concept: str) -> Case:
    entry = CodedEntry(concept=concept, system="local", code=concept)
    return c.model_copy(update={"allergies": (entry,)})


def egfr(value: float, age: int = 60, sex: str = "female") -> Readings:
    """A creatinine whose CKD-EPI 2021 eGFR rounds to ``value``."""
    return creatinine(creatinine_for_egfr(value + 0.2, age, sex, KIDNEY))


# --- BMI (spec section 12) -----------------------------------------------

BMI_CATEGORIES = {
    "underweight",
    "healthy_weight",
    "overweight",
    "obesity_class_1",
    "obesity_class_2",
    "obesity_class_3",
}


def bmi_category(result: Assessment) -> tuple[str, float]:
    """The one BMI category found, and the (rounded) BMI it was banded on."""
    (finding,) = [f for f in result.findings if f.id in BMI_CATEGORIES]
    (fact,) = [f for f in finding.evidence.facts if f.name == "bmi"]
    assert isinstance(fact.value, float)
    return finding.id, fact.value


@pytest.mark.parametrize(
    ("value", "category", "banded_on"),
    [
        (18.4, "underweight", 18.4),
        (18.44, "underweight", 18.4),
        (18.45, "healthy_weight", 18.5),
        (18.5, "healthy_weight", 18.5),
        (24.9, "healthy_weight", 24.9),
        (24.94, "healthy_weight", 24.9),
        (24.95, "overweight", 25.0),
        (25.0, "overweight", 25.0),
        (29.9, "overweight", 29.9),
        (30.0, "obesity_class_1", 30.0),
        (34.9, "obesity_class_1", 34.9),
        (35.0, "obesity_class_2", 35.0),
        (39.9, "obesity_class_2", 39.9),
        (40.0, "obesity_class_3", 40.0),
        (55.0, "obesity_class_3", 55.0),
    ],
)
def test_bmi_category_at_and_around_each_edge_after_rounding(
    kb: KnowledgeBase, value: float, category: str, banded_on: float
) -> None:
    result = evaluate(kb, case(lab("bmi", value, "kg/m2"), age=45))
    assert bmi_category(result) == (category, banded_on)
    assert not finding_ids(result) & {"bmi_asian_increased_risk", "bmi_asian_high_risk"}


def test_bmi_categories_start_at_age_20(kb: KnowledgeBase) -> None:
    adult = evaluate(kb, case(lab("bmi", 31, "kg/m2"), age=20))
    assert bmi_category(adult) == ("obesity_class_1", 31.0)
    assert "bmi_not_applicable" not in finding_ids(adult)

    young = evaluate(kb, case(lab("bmi", 31, "kg/m2"), age=19))
    assert finding_ids(young) & (BMI_CATEGORIES | {"bmi_not_applicable"}) == {
        "bmi_not_applicable"
    }
    assert not undetermined_ids(young) & {"bmi_obesity_class_1", "bmi_not_applicable"}


def test_no_not_applicable_finding_for_a_child_without_a_bmi(kb: KnowledgeBase) -> None:
    result = evaluate(kb, case(lab("hba1c", 5.2, "%"), age=12))
    assert "bmi_not_applicable" not in finding_ids(result)
    assert "bmi_not_applicable" not in undetermined_ids(result)


@pytest.mark.parametrize(("pounds", "inches"), [(200, 70), (150, 65), (250, 72)])
def test_imperial_bmi_matches_703_lb_per_square_inch(
    kb: KnowledgeBase, pounds: float, inches: float
) -> None:
    imperial = round(703 * pounds / inches**2, 1)
    metric = round((pounds * 0.45359237) / (inches * 0.0254) ** 2, 1)
    assert imperial == metric  # the chosen values are not on a rounding edge

    by_imperial = evaluate(
        kb,
        case(
            lab("body_weight", pounds, "[lb_av]"),
            lab("body_height", inches, "[in_i]"),
            age=50,
        ),
    )
    by_metric = evaluate(
        kb,
        case(
            lab("body_weight", pounds * 0.45359237, "kg"),
            lab("body_height", inches * 2.54, "cm"),
            age=50,
        ),
    )
    assert bmi_category(by_imperial)[1] == imperial
    assert bmi_category(by_metric) == bmi_category(by_imperial)


def test_calculated_bmi_names_its_inputs(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb, case(lab("body_weight", 90, "kg"), lab("body_height", 150, "cm"), age=50)
    )
    (finding,) = [f for f in result.findings if f.id == "obesity_class_3"]
    (fact,) = [f for f in finding.evidence.facts if f.name == "bmi"]
    assert fact.value == 40.0
    assert fact.source == (
        "calculated (bmi_from_weight_height) from body_weight@-10d and body_height@-10d"
    )


def test_recorded_bmi_wins_on_its_day_and_weights_fill_the_other_days(
    kb: KnowledgeBase,
) -> None:
    same_day = case(
        lab("bmi", 22.0, "kg/m2", days_ago=10),
        lab("body_weight", 90, "kg", days_ago=10),
        lab("body_height", 150, "cm", days_ago=10),
        age=50,
    )
    assert bmi_category(evaluate(kb, same_day)) == ("healthy_weight", 22.0)

    later_weight = case(
        lab("bmi", 22.0, "kg/m2", days_ago=100),
        lab("body_weight", 90, "kg", days_ago=10),
        lab("body_height", 150, "cm", days_ago=100),
        age=50,
    )
    assert bmi_category(evaluate(kb, later_weight)) == ("obesity_class_3", 40.0)


def test_bmi_without_height_cannot_be_determined_and_names_it(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, case(lab("body_weight", 70, "kg"), age=40))
    assert not finding_ids(result) & BMI_CATEGORIES
    for rule_id in ("bmi_underweight", "bmi_healthy_weight", "bmi_obesity_class_3"):
        assert undetermined(result, rule_id).missing == ["bmi", "body_height"]


def test_height_more_than_5_years_from_the_weight_is_not_paired(
    kb: KnowledgeBase,
) -> None:
    assert BMI["parameters"]["height_within"] == "5 years"
    result = evaluate(
        kb,
        case(
            lab("body_weight", 70, "kg", days_ago=10),
            lab("body_height", 170, "cm", days_ago=6 * 365),
            age=40,
        ),
    )
    assert undetermined(result, "bmi_healthy_weight").missing == [
        "bmi",
        "body_height within 5 years of the weight",
    ]


@pytest.mark.parametrize(
    ("value", "action_point"),
    [
        (22.9, None),
        (23.0, "bmi_asian_increased_risk"),
        (27.4, "bmi_asian_increased_risk"),
        (27.5, "bmi_asian_high_risk"),
        (32.0, "bmi_asian_high_risk"),
    ],
)
def test_asian_action_points_only_when_the_fact_says_asian(
    kb: KnowledgeBase, value: float, action_point: str | None
) -> None:
    asian = evaluate(
        kb,
        case(lab("bmi", value, "kg/m2"), text_fact("bmi_action_points", "asian")),
    )
    found = finding_ids(asian) & {"bmi_asian_increased_risk", "bmi_asian_high_risk"}
    assert found == ({action_point} if action_point else set())
    # The standard category stays.
    assert bmi_category(asian)[1] == value

    for other in (
        case(lab("bmi", value, "kg/m2")),
        case(
            lab("bmi", value, "kg/m2"), text_fact("bmi_action_points", "international")
        ),
    ):
        assert not finding_ids(evaluate(kb, other)) & {
            "bmi_asian_increased_risk",
            "bmi_asian_high_risk",
        }


# --- Pooled cohort equations (spec section 13) ---------------------------

# The spec's table, blank cells left out: (term, coefficient) per group.
SPEC_TABLE: dict[str, dict[str, float]] = {
    "white_female": {
        "ln_age": -29.799,
        "ln_age_sq": 4.884,
        "ln_tc": 13.540,
        "ln_age_ln_tc": -3.114,
        "ln_hdl": -13.578,
        "ln_age_ln_hdl": 3.149,
        "ln_sbp_treated": 2.019,
        "ln_sbp_untreated": 1.957,
        "smoker": 7.574,
        "ln_age_smoker": -1.665,
        "diabetes": 0.661,
    },
    "african_american_female": {
        "ln_age": 17.114,
        "ln_tc": 0.940,
        "ln_hdl": -18.920,
        "ln_age_ln_hdl": 4.475,
        "ln_sbp_treated": 29.291,
        "ln_age_ln_sbp_treated": -6.432,
        "ln_sbp_untreated": 27.820,
        "ln_age_ln_sbp_untreated": -6.087,
        "smoker": 0.691,
        "diabetes": 0.874,
    },
    "white_male": {
        "ln_age": 12.344,
        "ln_tc": 11.853,
        "ln_age_ln_tc": -2.664,
        "ln_hdl": -7.990,
        "ln_age_ln_hdl": 1.769,
        "ln_sbp_treated": 1.797,
        "ln_sbp_untreated": 1.764,
        "smoker": 7.837,
        "ln_age_smoker": -1.795,
        "diabetes": 0.658,
    },
    "african_american_male": {
        "ln_age": 2.469,
        "ln_tc": 0.302,
        "ln_hdl": -0.307,
        "ln_sbp_treated": 1.916,
        "ln_sbp_untreated": 1.809,
        "smoker": 0.549,
        "diabetes": 0.645,
    },
}
SPEC_MEAN_AND_S0 = {
    "white_female": (-29.18, 0.9665),
    "african_american_female": (86.61, 0.9533),
    "white_male": (61.18, 0.9144),
    "african_american_male": (19.54, 0.8954),
}
# Rule-file key for each of the spec table's rows (as typed above).
RULE_FILE_KEY = {
    "ln_age": "ln_age",
    "ln_age_sq": "ln_age_squared",
    "ln_tc": "ln_tc",
    "ln_age_ln_tc": "ln_age_x_ln_tc",
    "ln_hdl": "ln_hdl",
    "ln_age_ln_hdl": "ln_age_x_ln_hdl",
    "ln_sbp_treated": "ln_sbp_treated",
    "ln_age_ln_sbp_treated": "ln_age_x_ln_sbp_treated",
    "ln_sbp_untreated": "ln_sbp_untreated",
    "ln_age_ln_sbp_untreated": "ln_age_x_ln_sbp_untreated",
    "smoker": "smoker",
    "ln_age_smoker": "ln_age_x_smoker",
    "diabetes": "diabetes",
}
GOFF = {"age": 55, "tc": 213.0, "hdl": 50.0, "sbp": 120.0}


def spec_risk(
    group: str,
    age: float,
    tc: float,
    hdl: float,
    sbp: float,
    *,
    treated: bool = False,
    smoker: bool = False,
    diabetes: bool = False,
) -> float:
    """10-year risk (%) from the spec's table, written out term by term."""
    la, lt, lh, ls = math.log(age), math.log(tc), math.log(hdl), math.log(sbp)
    sbp_kind = "treated" if treated else "untreated"
    values = {
        "ln_age": la,
        "ln_age_sq": la * la,
        "ln_tc": lt,
        "ln_age_ln_tc": la * lt,
        "ln_hdl": lh,
        "ln_age_ln_hdl": la * lh,
        f"ln_sbp_{sbp_kind}": ls,
        f"ln_age_ln_sbp_{sbp_kind}": la * ls,
        "smoker": float(smoker),
        "ln_age_smoker": la * float(smoker),
        "diabetes": float(diabetes),
    }
    total = sum(c * values.get(term, 0.0) for term, c in SPEC_TABLE[group].items())
    mean, s0 = SPEC_MEAN_AND_S0[group]
    return 100 * (1 - s0 ** math.exp(total - mean))


def pce_case(
    sex: str,
    race: str | None,
    *,
    age: int = 55,
    tc: float = 213,
    hdl: float = 50,
    sbp: float = 120,
    unit: str = "mg/dL",
    conditions: Iterable[CodedEntry] = (),
    medications: Iterable[CodedEntry] = (),
    extra: Iterable[Readings] = (),
    smoking: str | None = "never",
) -> Case:
    parts: list[Readings] = [
        lab("total_cholesterol", tc, unit),
        lab("hdl_cholesterol", hdl, unit),
        lab("systolic_bp", sbp, "mm[Hg]"),
        *extra,
    ]
    if race is not None:
        parts.append(text_fact("race", race))
    if smoking is not None:
        parts.append(text_fact("smoking_status", smoking))
    return case(
        *parts, age=age, sex=sex, conditions=conditions, medications=medications
    )


def engine_risk(kb: KnowledgeBase, c: Case) -> float | None:
    """The risk the engine calculates for the case now, unrounded."""
    view = CaseView(c, NOW, kb.catalogue)
    run_calculations(view, kb.calculations)
    readings = view.readings.get("ascvd_10y_risk", [])
    if not readings:
        return None
    value = readings[-1].value
    assert isinstance(value, float)
    return value


def risk_band(result: Assessment) -> set[str]:
    return finding_ids(result) & {
        "ascvd_risk_low",
        "ascvd_risk_borderline",
        "ascvd_risk_intermediate",
        "ascvd_risk_high",
    }


def test_rule_file_holds_the_spec_coefficient_table() -> None:
    parameters = PCE["parameters"]
    for group, row in SPEC_TABLE.items():
        in_file = parameters[group]
        expected = {RULE_FILE_KEY[t]: c for t, c in row.items()}
        for term, value in in_file.items():
            if term == "mean":
                assert value == SPEC_MEAN_AND_S0[group][0]
            elif term == "baseline_survival":
                assert value == SPEC_MEAN_AND_S0[group][1]
            else:
                assert value == expected.get(term, 0), (group, term)
        assert set(expected) <= set(in_file)
    assert parameters["equation_for_race"] == {
        "white": "white",
        "african_american": "african_american",
        "other": "white",
    }
    assert (parameters["min_age"], parameters["max_age"]) == (40, 79)


@pytest.mark.parametrize(
    ("ruleset", "calc"),
    [("ascvd_risk", PCE), ("bmi", BMI)],
)
def test_rule_files_give_every_parameter_the_formula_needs(
    ruleset: str, calc: dict[str, Any]
) -> None:
    needed = required_parameters(calc["formula"])
    assert needed, ruleset
    for table, keys in needed.items():
        held: Mapping[str, Any] = (
            calc["parameters"][table] if table else calc["parameters"]
        )
        assert set(keys) <= set(held), (ruleset, table)


def test_goff_worked_example_african_american_woman_is_3_0_percent(
    kb: KnowledgeBase,
) -> None:
    assert round(spec_risk("african_american_female", **GOFF), 1) == 3.0
    value = engine_risk(kb, pce_case("female", "african_american"))
    assert value is not None and round(value, 1) == 3.0
    assert risk_band(evaluate(kb, pce_case("female", "african_american"))) == {
        "ascvd_risk_low"
    }


@pytest.mark.parametrize(
    ("sex", "race", "group", "pinned", "band"),
    [
        ("female", "white", "white_female", 2.1, "ascvd_risk_low"),
        (
            "female",
            "african_american",
            "african_american_female",
            3.0,
            "ascvd_risk_low",
        ),
        ("male", "white", "white_male", 5.4, "ascvd_risk_borderline"),
        (
            "male",
            "african_american",
            "african_american_male",
            6.1,
            "ascvd_risk_borderline",
        ),
        ("female", "other", "white_female", 2.1, "ascvd_risk_low"),
        ("male", "other", "white_male", 5.4, "ascvd_risk_borderline"),
    ],
)
def test_goff_inputs_in_every_group_match_the_spec_table(
    kb: KnowledgeBase, sex: str, race: str, group: str, pinned: float, band: str
) -> None:
    expected = spec_risk(group, **GOFF)
    assert round(expected, 1) == pinned
    c = pce_case(sex, race)
    value = engine_risk(kb, c)
    assert value is not None
    assert value == pytest.approx(expected, abs=1e-9)
    assert risk_band(evaluate(kb, c)) == {band}


def test_si_lipids_give_the_same_risk(kb: KnowledgeBase) -> None:
    mg = engine_risk(kb, pce_case("male", "white"))
    mmol = engine_risk(
        kb, pce_case("male", "white", tc=213 / 38.67, hdl=50 / 38.67, unit="mmol/L")
    )
    assert mg is not None and mmol == pytest.approx(mg, abs=1e-9)


@pytest.mark.parametrize(
    ("group", "sex", "race"),
    [
        ("white_female", "female", "white"),
        ("african_american_female", "female", "african_american"),
        ("white_male", "male", "white"),
        ("african_american_male", "male", "african_american"),
    ],
)
@pytest.mark.parametrize(
    ("drug", "smoker", "diabetes"),
    [
        ("antihypertensive", False, False),
        ("ace_inhibitor", False, False),
        (None, True, False),
        (None, False, True),
        ("arb", True, True),
    ],
)
def test_treated_sbp_smoker_and_diabetes_terms(
    kb: KnowledgeBase,
    group: str,
    sex: str,
    race: str,
    drug: str | None,
    smoker: bool,
    diabetes: bool,
) -> None:
    conditions = [has_condition("current_smoker")] if smoker else []
    if diabetes:
        conditions.append(has_condition("diabetes"))
    c = pce_case(
        sex,
        race,
        age=62,
        tc=240,
        hdl=42,
        sbp=148,
        conditions=conditions,
        medications=[taking(drug)] if drug else [],
        # No smoking status: the problem list decides.
        smoking=None if smoker else "never",
    )
    expected = spec_risk(
        group,
        62,
        240,
        42,
        148,
        treated=drug is not None,
        smoker=smoker,
        diabetes=diabetes,
    )
    assert engine_risk(kb, c) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("risk", "band"),
    [
        (4.99, "ascvd_risk_low"),
        (5.0, "ascvd_risk_borderline"),
        (7.49, "ascvd_risk_borderline"),
        (7.5, "ascvd_risk_intermediate"),
        (19.99, "ascvd_risk_intermediate"),
        (20.0, "ascvd_risk_high"),
    ],
)
def test_risk_band_edges(kb: KnowledgeBase, risk: float, band: str) -> None:
    result = evaluate(kb, case(lab("ascvd_10y_risk", risk, "%"), age=60))
    assert risk_band(result) == {band}


@pytest.mark.parametrize(
    ("age", "calculated"), [(39, False), (40, True), (79, True), (80, False)]
)
def test_equations_apply_from_40_to_79(
    kb: KnowledgeBase, age: int, calculated: bool
) -> None:
    c = pce_case("male", "white", age=age)
    assert (engine_risk(kb, c) is not None) is calculated
    result = evaluate(kb, c)
    assert ("pce_not_applicable" in finding_ids(result)) is not calculated
    assert bool(risk_band(result)) is calculated
    assert not undetermined_ids(result) & {"ascvd_risk_low", "pce_not_applicable"}


def test_clinical_ascvd_is_not_applicable(kb: KnowledgeBase) -> None:
    c = pce_case("male", "white", conditions=[has_condition("ascvd")])
    assert engine_risk(kb, c) is None
    result = evaluate(kb, c)
    assert "pce_not_applicable" in finding_ids(result)
    assert not risk_band(result)


@pytest.mark.parametrize(
    ("sex", "race", "drop", "named"),
    [
        ("male", None, None, "race"),
        ("other", "white", None, "sex"),
        ("male", "white", "hdl_cholesterol", "hdl_cholesterol"),
        ("male", "white", "total_cholesterol", "total_cholesterol"),
        ("male", "white", "systolic_bp", "systolic_bp"),
    ],
)
def test_missing_input_cannot_be_determined_and_is_named(
    kb: KnowledgeBase, sex: str, race: str | None, drop: str | None, named: str
) -> None:
    c = pce_case(sex, race)
    if drop is not None:
        kept = {k: v for k, v in c.readings.items() if k != drop}
        c = c.model_copy(update={"readings": kept})
    result = evaluate(kb, c)
    assert not risk_band(result)
    for rule_id in ("ascvd_risk_low", "ascvd_risk_high"):
        assert undetermined(result, rule_id).missing == sorted(
            ["ascvd_10y_risk", named]
        )


def test_old_lipids_are_not_used(kb: KnowledgeBase) -> None:
    c = case(
        lab("total_cholesterol", 213, "mg/dL", days_ago=400),
        lab("hdl_cholesterol", 50, "mg/dL", days_ago=10),
        lab("systolic_bp", 120, "mm[Hg]", days_ago=10),
        text_fact("race", "white"),
        age=55,
        sex="male",
    )
    assert engine_risk(kb, c) is None
    assert (
        "total_cholesterol" in undetermined(evaluate(kb, c), "ascvd_risk_low").missing
    )


def test_lab_confirmed_diabetes_feeds_the_pooled_cohort_equations(
    kb: KnowledgeBase,
) -> None:
    c = pce_case(
        "male",
        "white",
        extra=[lab("hba1c", [7.0, 7.2], "%", days_ago=[100, 10])],
    )
    result = evaluate(kb, c)
    assert "diabetes_confirmed" in finding_ids(result)
    expected = spec_risk("white_male", **GOFF, diabetes=True)
    without = spec_risk("white_male", **GOFF, diabetes=False)
    # 10.1 % with the diabetes term, 5.4 % without: a different band.
    assert (round(expected, 1), round(without, 1)) == (10.1, 5.4)
    assert risk_band(result) == {"ascvd_risk_intermediate"}
    (band,) = [f for f in result.findings if f.id == "ascvd_risk_intermediate"]
    (risk,) = [f for f in band.evidence.facts if f.name == "ascvd_10y_risk"]
    assert risk.value == pytest.approx(expected, abs=1e-6)
    assert "finding diabetes_confirmed" in risk.source


def test_diabetes_on_the_problem_list_needs_no_second_pass(
    kb: KnowledgeBase,
) -> None:
    c = pce_case("male", "white", conditions=[has_condition("diabetes")])
    result = evaluate(kb, c)
    (band,) = [f for f in result.findings if f.id in risk_band(result)]
    (risk,) = [f for f in band.evidence.facts if f.name == "ascvd_10y_risk"]
    expected = spec_risk("white_male", **GOFF, diabetes=True)
    assert risk.value == pytest.approx(expected, abs=1e-6)
    assert "finding" not in risk.source


def test_one_hba1c_in_range_is_not_diabetes_for_the_equations(
    kb: KnowledgeBase,
) -> None:
    # One result in the diabetes range needs confirming (ADA): not diabetes.
    c = pce_case("male", "white", extra=[lab("hba1c", 7.0, "%", days_ago=10)])
    result = evaluate(kb, c)
    assert "diabetes_confirmed" not in finding_ids(result)
    assert risk_band(result) == {"ascvd_risk_borderline"}


def test_fhir_us_core_race_feeds_the_pooled_cohort_equations(
    kb: KnowledgeBase,
) -> None:
    def observation(n: int, loinc: str, value: float, unit: str) -> dict[str, Any]:
        return {
            "resource": {
                "resourceType": "Observation",
                "id": f"o{n}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                "effectiveDateTime": "2025-05-20",
                "valueQuantity": {
                    "value": value,
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        }

    race = us_core_race("2054-5")  # Black or African American
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "p",
                    "gender": "female",
                    "birthDate": "1969-12-01",
                    "extension": [race],
                }
            },
            observation(1, "2093-3", 213, "mg/dL"),
            observation(2, "2085-9", 50, "mg/dL"),
            observation(3, "8480-6", 120, "mm[Hg]"),
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o4",
                    "status": "final",
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": "72166-2"}]
                    },
                    "effectiveDateTime": "2025-05-20",
                    "valueCodeableConcept": {
                        "coding": [
                            {"system": "http://snomed.info/sct", "code": "266919005"}
                        ]
                    },
                }
            },
        ],
    }
    record = read_input_data(bundle, source="<bundle>", catalogue=kb.catalogue)
    assert {"total_cholesterol", "hdl_cholesterol", "systolic_bp"} <= set(
        record.readings
    )
    assert "race" in record.readings
    assert risk_band(evaluate(kb, record)) == {"ascvd_risk_low"}


# --- Statins (spec section 14) -------------------------------------------

STATIN_RECOMMENDATIONS = {
    "statin_high_intensity",
    "statin_moderate_intensity_at_least",
    "statin_shared_decision_may_initiate",
    "statin_moderate_intensity_after_risk_discussion",
    "statin_moderate_intensity_may_be_considered_if_risk_enhancers",
    "lifestyle_emphasis_no_statin_by_risk",
}
STATIN_GROUPS = {
    "statin_group_clinical_ascvd",
    "statin_group_ldl_190",
    "statin_group_diabetes_40_75",
    "statin_group_diabetes_over_75",
    "statin_group_diabetes_20_39",
    "statin_group_risk_high",
    "statin_group_risk_intermediate",
    "statin_group_risk_borderline",
    "statin_group_risk_low",
}


def statin_case(
    age: int,
    *,
    ldl: float | None = 120,
    ldl_unit: str = "mg/dL",
    risk: float | None = None,
    conditions: Iterable[str] = (),
    statin: bool = False,
    extra: Iterable[Readings] = (),
) -> Case:
    parts: list[Readings] = [*extra]
    if ldl is not None:
        parts.append(lab("ldl_cholesterol", ldl, ldl_unit))
    if risk is not None:
        parts.append(lab("ascvd_10y_risk", risk, "%"))
    return case(
        *parts,
        age=age,
        conditions=[has_condition(c) for c in conditions],
        medications=[taking("statin")] if statin else [],
    )


def statin_outcome(result: Assessment) -> tuple[set[str], dict[str, str]]:
    recs = {
        k: v
        for k, v in recommendation_statuses(result).items()
        if k in STATIN_RECOMMENDATIONS
    }
    return finding_ids(result) & STATIN_GROUPS, recs


def test_clinical_ascvd_beats_every_later_group(kb: KnowledgeBase) -> None:
    c = statin_case(
        60, ldl=250, risk=25, conditions=["ascvd", "diabetes"], statin=False
    )
    groups, recs = statin_outcome(evaluate(kb, c))
    assert groups == {"statin_group_clinical_ascvd"}
    assert recs == {"statin_high_intensity": "recommended"}


@pytest.mark.parametrize(
    ("age", "ldl", "unit", "in_group"),
    [
        (19, 190, "mg/dL", False),
        (20, 190, "mg/dL", True),
        (50, 189, "mg/dL", False),
        (50, 189.5, "mg/dL", False),
        (75, 190, "mg/dL", True),
        (76, 190, "mg/dL", False),
        (20, 4.9, "mmol/L", True),
        (75, 4.9, "mmol/L", True),
        (50, 4.8, "mmol/L", False),
    ],
)
def test_ldl_190_group_by_age_and_native_unit(
    kb: KnowledgeBase, age: int, ldl: float, unit: str, in_group: bool
) -> None:
    # 4.9 mmol/L is 189.5 mg/dL: each value meets the cut point of its own unit.
    groups, recs = statin_outcome(
        evaluate(kb, statin_case(age, ldl=ldl, ldl_unit=unit, risk=3))
    )
    assert ("statin_group_ldl_190" in groups) is in_group
    if in_group:
        assert groups == {"statin_group_ldl_190"}
        assert recs == {"statin_high_intensity": "recommended"}
    else:
        assert "statin_high_intensity" not in recs


def test_ldl_190_beats_diabetes_and_risk(kb: KnowledgeBase) -> None:
    groups, recs = statin_outcome(
        evaluate(kb, statin_case(60, ldl=200, risk=12, conditions=["diabetes"]))
    )
    assert groups == {"statin_group_ldl_190"}
    assert recs == {"statin_high_intensity": "recommended"}


def test_highest_ldl_on_record_counts_after_a_statin_lowered_it(
    kb: KnowledgeBase,
) -> None:
    c = statin_case(
        50,
        ldl=None,
        statin=True,
        extra=[lab("ldl_cholesterol", [210, 95], "mg/dL", days_ago=[900, 10])],
    )
    result = evaluate(kb, c)
    assert statin_outcome(result) == (
        {"statin_group_ldl_190"},
        {"statin_high_intensity": "recommended"},
    )
    assert "statin_high_intensity_continue" in result.rules_fired


def test_ldl_any_reading_native_unit_mixed_units(kb: KnowledgeBase) -> None:
    c = statin_case(
        50,
        ldl=None,
        extra=[
            lab("ldl_cholesterol", 4.9, "mmol/L", days_ago=700),
            lab("ldl_cholesterol", 120, "mg/dL", days_ago=10),
        ],
    )
    groups, _ = statin_outcome(evaluate(kb, c))
    assert groups == {"statin_group_ldl_190"}


@pytest.mark.parametrize(
    ("readings", "shown"),
    [
        # 189.8 mg/dL is the higher value once converted (4.9 mmol/L is
        # 189.5 mg/dL), but only the mmol/L result meets its own cut point.
        ([(4.9, "mmol/L", 700), (189.8, "mg/dL", 10)], (4.9, "mmol/L")),
        ([(189.8, "mg/dL", 700), (4.9, "mmol/L", 10)], (4.9, "mmol/L")),
        ([(190, "mg/dL", 700), (3.0, "mmol/L", 10)], (190, "mg/dL")),
        ([(4.8, "mmol/L", 700), (189, "mg/dL", 10)], None),
        ([(4.89, "mmol/L", 700), (189.9, "mg/dL", 10)], None),
    ],
)
def test_ldl_highest_of_mixed_units_meets_the_cut_point_of_its_own_unit(
    kb: KnowledgeBase,
    readings: list[tuple[float, str, int]],
    shown: tuple[float, str] | None,
) -> None:
    c = statin_case(
        50,
        ldl=None,
        extra=[lab("ldl_cholesterol", v, u, days_ago=d) for v, u, d in readings],
    )
    result = evaluate(kb, c)
    groups, _ = statin_outcome(result)
    assert groups == ({"statin_group_ldl_190"} if shown else set())
    if shown:
        (group,) = [f for f in result.findings if f.id == "statin_group_ldl_190"]
        (used,) = [f for f in group.evidence.facts if f.name == "ldl_cholesterol"]
        # The evidence is the reading that met its cut point, in its own unit.
        assert (used.value, used.unit, used.aggregate) == (*shown, "max")
        assert used.readings == 2


@pytest.mark.parametrize(
    ("age", "group", "rec"),
    [
        (19, None, None),
        (20, "statin_group_diabetes_20_39", None),
        (39, "statin_group_diabetes_20_39", None),
        (40, "statin_group_diabetes_40_75", "statin_moderate_intensity_at_least"),
        (75, "statin_group_diabetes_40_75", "statin_moderate_intensity_at_least"),
        (76, "statin_group_diabetes_over_75", "statin_shared_decision_may_initiate"),
        (85, "statin_group_diabetes_over_75", "statin_shared_decision_may_initiate"),
    ],
)
def test_diabetes_group_by_age_beats_the_risk_bands(
    kb: KnowledgeBase, age: int, group: str | None, rec: str | None
) -> None:
    # A 10-year risk of 25 % would give high intensity to a non-diabetic.
    result = evaluate(kb, statin_case(age, risk=25, conditions=["diabetes"]))
    groups, recs = statin_outcome(result)
    assert groups == ({group} if group else set())
    assert recs == ({rec: "recommended"} if rec else {})


def test_lab_confirmed_diabetes_counts_for_statins(kb: KnowledgeBase) -> None:
    c = statin_case(55, extra=[lab("hba1c", [6.8, 7.0], "%", days_ago=[100, 10])])
    groups, recs = statin_outcome(evaluate(kb, c))
    assert groups == {"statin_group_diabetes_40_75"}
    assert recs == {"statin_moderate_intensity_at_least": "recommended"}


@pytest.mark.parametrize(
    ("risk", "group", "rec"),
    [
        (25.0, "statin_group_risk_high", "statin_high_intensity"),
        (20.0, "statin_group_risk_high", "statin_high_intensity"),
        (
            19.99,
            "statin_group_risk_intermediate",
            "statin_moderate_intensity_after_risk_discussion",
        ),
        (
            7.5,
            "statin_group_risk_intermediate",
            "statin_moderate_intensity_after_risk_discussion",
        ),
        (
            7.49,
            "statin_group_risk_borderline",
            "statin_moderate_intensity_may_be_considered_if_risk_enhancers",
        ),
        (
            5.0,
            "statin_group_risk_borderline",
            "statin_moderate_intensity_may_be_considered_if_risk_enhancers",
        ),
        (4.99, "statin_group_risk_low", "lifestyle_emphasis_no_statin_by_risk"),
    ],
)
@pytest.mark.parametrize("age", [40, 75])
def test_primary_prevention_by_risk_at_40_to_75(
    kb: KnowledgeBase, age: int, risk: float, group: str, rec: str
) -> None:
    groups, recs = statin_outcome(evaluate(kb, statin_case(age, risk=risk)))
    assert groups == {group}
    assert recs == {rec: "recommended"}


@pytest.mark.parametrize("age", [39, 76])
def test_no_risk_band_statin_output_outside_40_to_75(
    kb: KnowledgeBase, age: int
) -> None:
    assert statin_outcome(evaluate(kb, statin_case(age, risk=25))) == (set(), {})


BORDERLINE = "statin_moderate_intensity_may_be_considered_if_risk_enhancers"


def test_pce_calculated_risk_drives_the_statin_band(kb: KnowledgeBase) -> None:
    # White man, Goff inputs: 5.4 % - borderline.
    c = pce_case("male", "white", extra=[lab("ldl_cholesterol", 130, "mg/dL")])
    assert statin_outcome(evaluate(kb, c)) == (
        {"statin_group_risk_borderline"},
        {BORDERLINE: "recommended"},
    )


@pytest.mark.parametrize(
    ("kwargs", "rec", "start_rule", "continue_rule"),
    [
        (
            {"age": 60, "conditions": ["ascvd"]},
            "statin_high_intensity",
            "statin_high_intensity_start",
            "statin_high_intensity_continue",
        ),
        (
            {"age": 60, "conditions": ["diabetes"]},
            "statin_moderate_intensity_at_least",
            "statin_moderate_at_least_start",
            "statin_moderate_at_least_continue",
        ),
        (
            {"age": 80, "conditions": ["diabetes"]},
            "statin_shared_decision_may_initiate",
            "statin_shared_decision_start",
            "statin_shared_decision_continue",
        ),
        (
            {"age": 60, "risk": 10},
            "statin_moderate_intensity_after_risk_discussion",
            "statin_risk_discussion_start",
            "statin_risk_discussion_continue",
        ),
        (
            {"age": 60, "risk": 6},
            "statin_moderate_intensity_may_be_considered_if_risk_enhancers",
            "statin_risk_enhancers_start",
            "statin_risk_enhancers_continue",
        ),
        (
            {"age": 60, "risk": 3},
            "lifestyle_emphasis_no_statin_by_risk",
            "statin_lifestyle_not_taking",
            "statin_lifestyle_taking",
        ),
    ],
)
def test_taking_a_statin_changes_the_wording_not_the_recommendation(
    kb: KnowledgeBase,
    kwargs: dict[str, Any],
    rec: str,
    start_rule: str,
    continue_rule: str,
) -> None:
    new = evaluate(kb, statin_case(**kwargs))
    on = evaluate(kb, statin_case(**kwargs, statin=True))
    assert statin_outcome(new)[1] == statin_outcome(on)[1] == {rec: "recommended"}
    assert start_rule in new.rules_fired and continue_rule not in new.rules_fired
    assert continue_rule in on.rules_fired and start_rule not in on.rules_fired
    start_text, continue_text = (
        recommendation(new, rec).text,
        recommendation(on, rec).text,
    )
    assert start_text != continue_text
    assert "continu" in continue_text.lower() or "on a statin" in continue_text
    assert "continu" not in start_text.lower()


def test_statin_allergy_blocks_the_statin_recommendation(kb: KnowledgeBase) -> None:
    result = evaluate(kb, with_allergy(statin_case(60, conditions=["ascvd"]), "statin"))
    rec = recommendation(result, "statin_high_intensity")
    assert rec.status == "blocked"
    assert [b.reason for b in rec.blocked_by] == ["recorded allergy to statin"]


def test_pregnancy_blocks_the_statin_recommendation(kb: KnowledgeBase) -> None:
    result = evaluate(kb, statin_case(30, ldl=230, conditions=["pregnancy"]))
    rec = recommendation(result, "statin_high_intensity")
    assert rec.status == "blocked"
    assert [b.reason for b in rec.blocked_by] == [
        "Pregnancy - statins are stopped in pregnancy"
    ]
    assert statin_outcome(result)[1] == {"statin_high_intensity": "blocked"}


def test_missing_ldl_makes_the_later_groups_undetermined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, statin_case(50, ldl=None, conditions=["diabetes"]))
    assert statin_outcome(result) == (set(), {})
    assert undetermined(result, "statin_group_ldl_190").missing == ["ldl_cholesterol"]
    assert undetermined(result, "statin_group_diabetes_40_75").missing == [
        "ldl_cholesterol"
    ]


def test_missing_risk_inputs_are_named(kb: KnowledgeBase) -> None:
    result = evaluate(kb, statin_case(60))
    assert statin_outcome(result) == (set(), {})
    missing = undetermined(result, "statin_group_risk_low").missing
    assert missing == [
        "ascvd_10y_risk",
        "hdl_cholesterol",
        "race",
        "smoking_status",
        "systolic_bp",
        "total_cholesterol",
    ]


# --- ACE inhibitor / ARB (spec section 15) -------------------------------

ACEI_ROWS = {
    "acei_arb_strongly_recommended",
    "acei_arb_recommended",
    "acei_arb_not_recommended_for_primary_prevention_of_ckd",
}
MONITOR = "Monitor creatinine and K+"


def acei_case(
    *,
    acr: float | None,
    acr_unit: str = "mg/g",
    egfr_value: float | None = 90,
    hypertension: bool = True,
    diabetes: bool = True,
    bp_readings: Readings | None = None,
    conditions: Iterable[str] = (),
    drugs: Iterable[str] = (),
) -> Case:
    parts: list[Readings] = []
    if acr is not None:
        parts.append(lab("acr", acr, acr_unit))
    if egfr_value is not None:
        parts.append(egfr(egfr_value))
    parts.append(bp_readings if bp_readings is not None else bp(118, 76))
    names = list(conditions)
    if hypertension:
        names.append("hypertension")
    if diabetes:
        names.append("diabetes")
    return case(
        *parts,
        age=60,
        sex="female",
        conditions=[has_condition(n) for n in names],
        medications=[taking(d) for d in drugs],
    )


def acei_rows(result: Assessment) -> dict[str, str]:
    return {k: v for k, v in recommendation_statuses(result).items() if k in ACEI_ROWS}


@pytest.mark.parametrize(
    ("acr", "unit", "egfr_value", "expected"),
    [
        (300, "mg/g", 90, "acei_arb_strongly_recommended"),
        (299, "mg/g", 90, "acei_arb_recommended"),
        (30, "mg/g", 90, "acei_arb_recommended"),
        (29, "mg/g", 90, None),
        (29, "mg/g", 59, "acei_arb_strongly_recommended"),
        (29, "mg/g", 60, None),
        (100, "mg/g", 59, "acei_arb_strongly_recommended"),
        # In mg/mmol, KDIGO's own cut points (3 and 30), as the kidney rules
        # compare it: 3.3 mg/mmol is A2 there, though 29.2 mg/g converted.
        (30, "mg/mmol", 90, "acei_arb_strongly_recommended"),
        (29.9, "mg/mmol", 90, "acei_arb_recommended"),
        (3.3, "mg/mmol", 90, "acei_arb_recommended"),
        (3, "mg/mmol", 90, "acei_arb_recommended"),
        (2.9, "mg/mmol", 90, None),
    ],
)
def test_hypertension_rows_in_order(
    kb: KnowledgeBase, acr: float, unit: str, egfr_value: float, expected: str | None
) -> None:
    result = evaluate(kb, acei_case(acr=acr, acr_unit=unit, egfr_value=egfr_value))
    assert acei_rows(result) == ({expected: "recommended"} if expected else {})
    if expected:
        assert MONITOR in recommendation(result, expected).text


def test_acr_300_is_strong_here_and_a2_in_kdigo(kb: KnowledgeBase) -> None:
    result = evaluate(kb, acei_case(acr=300))
    assert "albuminuria_a2" in finding_ids(result)
    assert acei_rows(result) == {"acei_arb_strongly_recommended": "recommended"}


def test_hypertension_from_blood_pressure_readings(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb, acei_case(acr=50, hypertension=False, bp_readings=bp(134, 82))
    )
    assert "stage_1_hypertension" in finding_ids(result)
    assert acei_rows(result) == {"acei_arb_recommended": "recommended"}


@pytest.mark.parametrize(
    ("acr", "egfr_value", "drugs", "made"),
    [
        (29, 60, (), True),
        (10, 95, (), True),
        (30, 90, (), False),
        (10, 59, (), False),
        (10, 90, ("antihypertensive",), False),
    ],
)
def test_normotensive_row(
    kb: KnowledgeBase,
    acr: float,
    egfr_value: float,
    drugs: tuple[str, ...],
    made: bool,
) -> None:
    result = evaluate(
        kb,
        acei_case(acr=acr, egfr_value=egfr_value, hypertension=False, drugs=drugs),
    )
    row = "acei_arb_not_recommended_for_primary_prevention_of_ckd"
    assert acei_rows(result) == ({row: "recommended"} if made else {})


def test_no_row_without_diabetes(kb: KnowledgeBase) -> None:
    for acr in (10, 100, 400):
        result = evaluate(kb, acei_case(acr=acr, diabetes=False))
        assert acei_rows(result) == {}


def test_pregnancy_contraindicates_and_blocks_with_the_reason(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, acei_case(acr=400, conditions=["pregnancy"]))
    assert recommendation(result, "acei_arb_contraindicated_pregnancy").status == (
        "recommended"
    )
    reason = "Pregnancy - ACE inhibitors and ARBs are contraindicated (fetotoxic)"
    for rid in ("acei_arb_strongly_recommended", "acei_arb_recommended"):
        rec = recommendation(result, rid)
        assert rec.status == "blocked"
        assert [b.reason for b in rec.blocked_by] == [reason]
        assert [b.rule_id for b in rec.blocked_by] == [
            "acei_arb_contraindicated_pregnancy"
        ]
    assert "acei_arb_strongly_recommended" not in result.rules_fired


def test_pregnancy_alone_says_nothing_about_acei(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb,
        acei_case(acr=10, diabetes=False, hypertension=False, conditions=["pregnancy"]),
    )
    assert "acei_arb_contraindicated_pregnancy" not in recommendation_statuses(result)

    on_acei = evaluate(
        kb,
        acei_case(
            acr=10,
            diabetes=False,
            hypertension=False,
            conditions=["pregnancy"],
            drugs=["ace_inhibitor"],
        ),
    )
    assert recommendation_statuses(on_acei)["acei_arb_contraindicated_pregnancy"] == (
        "recommended"
    )


@pytest.mark.parametrize(
    ("drugs", "forbidden"),
    [
        (("ace_inhibitor", "arb"), True),
        (("ace_inhibitor", "direct_renin_inhibitor"), True),
        (("arb", "direct_renin_inhibitor"), True),
        (("ace_inhibitor",), False),
        (("arb",), False),
    ],
)
def test_forbidden_combination(
    kb: KnowledgeBase, drugs: tuple[str, ...], forbidden: bool
) -> None:
    result = evaluate(kb, acei_case(acr=400, drugs=drugs))
    assert ("forbidden_combination_acei_plus_arb" in finding_ids(result)) is forbidden
    statuses = recommendation_statuses(result)
    if forbidden:
        stop = recommendation(result, "stop_acei_arb_combination")
        assert stop.status == "recommended" and MONITOR in stop.text
        rec = recommendation(result, "acei_arb_strongly_recommended")
        assert rec.status == "blocked"
        assert [b.rule_id for b in rec.blocked_by] == [
            "forbidden_combination_acei_plus_arb"
        ]
        assert "forbidden combination" in rec.blocked_by[0].reason
    else:
        assert "stop_acei_arb_combination" not in statuses
        assert statuses["acei_arb_strongly_recommended"] == "recommended"


def test_missing_acr_cannot_be_determined_and_is_named(kb: KnowledgeBase) -> None:
    result = evaluate(kb, acei_case(acr=None, egfr_value=90))
    assert acei_rows(result) == {}
    assert undetermined(result, "acei_arb_strongly_recommended").missing == ["acr"]
    assert undetermined(result, "acei_arb_recommended").missing == ["acr"]


def test_missing_acr_does_not_matter_when_egfr_is_below_60(kb: KnowledgeBase) -> None:
    result = evaluate(kb, acei_case(acr=None, egfr_value=45))
    assert acei_rows(result) == {"acei_arb_strongly_recommended": "recommended"}


def test_missing_acr_and_egfr_are_both_named(kb: KnowledgeBase) -> None:
    result = evaluate(kb, acei_case(acr=None, egfr_value=None))
    assert undetermined(result, "acei_arb_strongly_recommended").missing == [
        "acr",
        "egfr",
    ]


# --- Care gaps -------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "conditions", "gap"),
    [
        ([lab("hba1c", 7.1, "%", days_ago=400)], ["diabetes"], True),
        ([lab("hba1c", 7.1, "%", days_ago=300)], ["diabetes"], False),
        ([], ["diabetes"], True),
        (
            [lab("fasting_glucose", [140, 135], "mg/dL", days_ago=[100, 10])],
            [],
            True,
        ),
        ([lab("fasting_glucose", 90, "mg/dL")], [], False),
    ],
)
def test_a1c_care_gap(
    kb: KnowledgeBase, parts: list[Readings], conditions: list[str], gap: bool
) -> None:
    c = case(
        *parts,
        lab("systolic_bp", 120, "mm[Hg]"),
        conditions=map(has_condition, conditions),
    )
    result = evaluate(kb, c)
    assert ("obtain_hba1c" in recommendation_statuses(result)) is gap
    assert "care_gap_hba1c" not in undetermined_ids(result)


def test_care_gap_does_not_repeat_the_metformin_egfr_request(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, case(conditions=[has_condition("diabetes")]))
    statuses = recommendation_statuses(result)
    assert statuses["obtain_hba1c"] == "recommended"
    assert statuses["obtain_egfr_before_metformin"] == "recommended"
    assert [
        r.rule_id for r in recommendation(result, "obtain_hba1c").evidence.rules
    ] == ["care_gap_hba1c"]


def test_an_absurd_input_is_noted_not_a_crash(kb: KnowledgeBase) -> None:
    # A typing slip of 1e300 mg/dL overflowed the equations (OverflowError).
    result = evaluate(kb, pce_case("male", "white", tc=1e300))
    assert risk_band(result) == set()
    assert (
        "pooled_cohort_2013: not calculated: an input is too far out of range "
        "for the formula"
    ) in result.notes


def test_the_risk_names_every_input_as_the_equations_took_it(
    kb: KnowledgeBase,
) -> None:
    # SI lipids are shown as converted: the equations take mg/dL.
    result = evaluate(kb, pce_case("male", "white", tc=5.51, hdl=1.29, unit="mmol/L"))
    (band,) = [f for f in result.findings if f.id in risk_band(result)]
    (risk,) = [f for f in band.evidence.facts if f.name == "ascvd_10y_risk"]
    for part in (
        "total_cholesterol 213.072 mg/dL",
        "hdl_cholesterol 49.8843 mg/dL",
        "systolic_bp 120 mm[Hg]",
        "untreated",
        "white male equation",
        "smoking_status never",
        "no diabetes",
    ):
        assert part in risk.source, (part, risk.source)
