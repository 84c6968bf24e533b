"""Clinical formulas whose coefficients come from the rule file.

The shape of each equation lives here; its numbers (and their citation) live in
the ``calculations`` section of a ruleset, so a guideline update is a rule-file
change that an author can review.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "FORMULAS",
    "FormulaInputs",
    "ckd_epi_2021_creatinine",
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


FORMULAS: dict[str, Callable[..., float]] = {
    "ckd_epi_2021_creatinine": ckd_epi_2021_creatinine,
}


def required_parameters(formula: str) -> dict[str, tuple[str, ...]]:
    """Return the parameter keys a formula needs: top-level and per sex."""
    if formula == "ckd_epi_2021_creatinine":
        return {
            "": ("base", "high_exponent", "age_base", "female", "male", "min_age"),
            "female": ("kappa", "alpha", "factor"),
            "male": ("kappa", "alpha"),
        }
    return {}
