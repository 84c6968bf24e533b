"""Clinical formulas whose coefficients come from the rule file.

The shape of each equation lives here; its numbers (and their citation) live in
the ``calculations`` section of a ruleset, so a guideline update is a rule-file
change that an author can review.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMULAS",
    "FormulaInputs",
    "POOLED_COHORT_TERMS",
    "PooledCohortInputs",
    "bmi_from_weight_height",
    "ckd_epi_2021_creatinine",
    "pooled_cohort_2013",
    "required_parameters",
]

FormulaInputs = Mapping[str, Any]


def ckd_epi_2021_creatinine(
    creatinine_mg_dl: float, age: float, sex: str, p: Mapping[str, Any]
) -> float:
    """Return eGFR (mL/min/1.73 m2) by the race-free CKD-EPI 2021 equation.

    eGFR = base * min(Scr/k, 1)^alpha * max(Scr/k, 1)^high * age_base^age
    * female_factor (if female), with k and alpha by sex.

    Raises:
        ValueError: If sex is neither female nor male (the equation has no
            coefficients for it) or creatinine is not positive.
    """
    if sex not in ("female", "male"):
        raise ValueError(
            f"the CKD-EPI 2021 equation needs sex female or male, not {sex}"
        )
    if creatinine_mg_dl <= 0:
        raise ValueError("creatinine must be positive")
    by_sex = p[sex]
    ratio = creatinine_mg_dl / float(by_sex["kappa"])
    value: float = (
        float(p["base"])
        * min(ratio, 1.0) ** float(by_sex["alpha"])
        * max(ratio, 1.0) ** float(p["high_exponent"])
        * float(p["age_base"]) ** age
        * float(by_sex.get("factor", 1.0))
    )
    return value


def _positive(weight: float, weight_unit: str, height: float, height_unit: str) -> None:
    if weight <= 0 or height <= 0:
        raise ValueError(
            f"BMI needs a positive weight and height, got {weight:g} {weight_unit} "
            f"and {height:g} {height_unit}"
        )


def bmi_imperial(weight_lb: float, height_in: float) -> float:
    """Body mass index (kg/m2) from pounds and inches: 703 x lb / in2.

    The factor is the spec's (clinical-criteria-spec 0.1, as CDC gives it);
    the exact one is 703.07, so on a band edge the two can round apart (173.9
    lb at 70 in: 24.9 by 703, 25.0 by the exact factor). The spec's is used
    when both are imperial.

    Raises:
        ValueError: If weight or height is not positive.
    """
    _positive(weight_lb, "lb", height_in, "in")
    return 703 * weight_lb / height_in**2


def bmi_from_weight_height(
    weight_kg: float, height_m: float, p: Mapping[str, Any]
) -> float:
    """Return body mass index (kg/m2): weight / height ** height_exponent.

    The caller converts other units to kg and m (pint); a weight in pounds
    with a height in inches goes to :func:`bmi_imperial` instead.

    Raises:
        ValueError: If weight or height is not positive.
    """
    _positive(weight_kg, "kg", height_m, "m")
    value: float = weight_kg / height_m ** float(p["height_exponent"])
    return value


POOLED_COHORT_TERMS = (
    "ln_age",
    "ln_age_squared",
    "ln_tc",
    "ln_age_x_ln_tc",
    "ln_hdl",
    "ln_age_x_ln_hdl",
    "ln_sbp_treated",
    "ln_age_x_ln_sbp_treated",
    "ln_sbp_untreated",
    "ln_age_x_ln_sbp_untreated",
    "smoker",
    "ln_age_x_smoker",
    "diabetes",
    "mean",
    "baseline_survival",
)
"""The coefficients of one pooled cohort equation (Goff 2014 Table A rows)."""


@dataclass(frozen=True)
class PooledCohortInputs:
    """The inputs of the 2013 pooled cohort equations, validated on creation.

    Attributes:
        age: Age in years (the equations were derived for 40 to 79).
        sex: female or male.
        race: The equation group: white or african_american (the caller maps
            any other race to the group the rule file names).
        total_cholesterol: mg/dL.
        hdl_cholesterol: mg/dL.
        systolic_bp: mmHg.
        treated: Whether blood pressure is treated (selects the SBP term).
        smoker: Current smoker.
        diabetes: Diabetes.
    """

    age: float
    sex: str
    race: str
    total_cholesterol: float
    hdl_cholesterol: float
    systolic_bp: float
    treated: bool
    smoker: bool
    diabetes: bool

    def __post_init__(self) -> None:
        if self.sex not in ("female", "male"):
            raise ValueError(
                f"sex: the pooled cohort equations need female or male, not {self.sex}"
            )
        for name in ("age", "total_cholesterol", "hdl_cholesterol", "systolic_bp"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name}: must be positive, got {value:g}")


def pooled_cohort_2013(x: PooledCohortInputs, p: Mapping[str, Any]) -> float:
    """Return the 10-year risk (%) of a first hard ASCVD event, 2013 PCE.

    risk = 1 - S0 ** exp(sum(beta * x) - mean), with the equation of the
    patient's sex and race group, ``p["<race>_<sex>"]``, whose terms are
    :data:`POOLED_COHORT_TERMS` (a blank cell of the published table is 0).

    Raises:
        ValueError: If the rule file has no equation for the group or the
            equation lacks a coefficient.
    """
    group = f"{x.race}_{x.sex}"
    if group not in p:
        raise ValueError(f"the rule file has no pooled cohort equation `{group}`")
    eq = p[group]
    lacking = [t for t in POOLED_COHORT_TERMS if t not in eq]
    if lacking:
        raise ValueError(f"equation `{group}` lacks {', '.join(lacking)}")
    b = {t: float(eq[t]) for t in POOLED_COHORT_TERMS}

    ln_age = math.log(x.age)
    ln_tc = math.log(x.total_cholesterol)
    ln_hdl = math.log(x.hdl_cholesterol)
    ln_sbp = math.log(x.systolic_bp)
    sbp = "treated" if x.treated else "untreated"
    smoker = 1.0 if x.smoker else 0.0
    total = (
        b["ln_age"] * ln_age
        + b["ln_age_squared"] * ln_age**2
        + b["ln_tc"] * ln_tc
        + b["ln_age_x_ln_tc"] * ln_age * ln_tc
        + b["ln_hdl"] * ln_hdl
        + b["ln_age_x_ln_hdl"] * ln_age * ln_hdl
        + b[f"ln_sbp_{sbp}"] * ln_sbp
        + b[f"ln_age_x_ln_sbp_{sbp}"] * ln_age * ln_sbp
        + b["smoker"] * smoker
        + b["ln_age_x_smoker"] * ln_age * smoker
        + b["diabetes"] * (1.0 if x.diabetes else 0.0)
    )
    risk: float = 1.0 - b["baseline_survival"] ** math.exp(total - b["mean"])
    return 100.0 * risk


FORMULAS: dict[str, Callable[..., float]] = {
    "ckd_epi_2021_creatinine": ckd_epi_2021_creatinine,
    "bmi_from_weight_height": bmi_from_weight_height,
    "pooled_cohort_2013": pooled_cohort_2013,
}


def required_parameters(formula: str) -> dict[str, tuple[str, ...]]:
    """Return the parameter keys a formula needs: top-level and per sub-table."""
    if formula == "ckd_epi_2021_creatinine":
        return {
            "": ("base", "high_exponent", "age_base", "female", "male", "min_age"),
            "female": ("kappa", "alpha", "factor"),
            "male": ("kappa", "alpha"),
        }
    if formula == "bmi_from_weight_height":
        return {"": ("weight_unit", "height_unit", "height_exponent", "height_within")}
    if formula == "pooled_cohort_2013":
        groups = (
            "white_female",
            "african_american_female",
            "white_male",
            "african_american_male",
        )
        top = (
            "min_age",
            "max_age",
            "inputs_within",
            "treated_when_taking",
            "smoker_condition",
            "diabetes_condition",
            "not_for_condition",
            "equation_for_race",
        )
        return {"": (*top, *groups), **dict.fromkeys(groups, POOLED_COHORT_TERMS)}
    return {}
