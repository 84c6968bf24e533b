"""Cut points: reading them, rounding before banding, comparing a value.

A rule's cut point is a number with a unit (``140 mmHg``); a guideline may
give one in each unit system (``7.0 mmol/L`` and ``126 mg/dL``). A value is
compared with the cut point for the unit it arrived in (spec 0.2), after
rounding half-up in the fact's canonical unit (spec 0.3), so that a value on
a band edge is not pushed below it by floating-point noise.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from . import ruleformat as rf
from .catalogue import QuantityFact
from .facts import Reading
from .memo import ByIdentity
from .units import convert, normalise_unit

__all__ = [
    "OPERATORS",
    "Cuts",
    "Threshold",
    "compare_value",
    "cuts_of",
    "in_unit",
    "meets_cuts",
    "parse_threshold",
    "round_for_banding",
    "text_matches",
    "thresholds_of",
]

OPERATORS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "above": (operator.gt, ">"),
    "at_least": (operator.ge, ">="),
    "below": (operator.lt, "<"),
    "at_most": (operator.le, "<="),
}
_NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Threshold:
    """One cut point in one unit."""

    value: float
    unit: str


@lru_cache(maxsize=4096)
def parse_threshold(raw: str | float) -> Threshold:
    """Parse ``140 mmHg`` into a Threshold (the unit normalised to UCUM).

    Raises:
        ValueError: If there is no number first.
    """
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return Threshold(float(raw), "")
    match = _NUMBER_UNIT.match(str(raw))
    if not match:
        raise ValueError(f"`{raw}` is not a number followed by a unit")
    return Threshold(float(match.group(1)), normalise_unit(match.group(2)))


def thresholds_of(raw: rf.Threshold | None) -> list[Threshold]:
    """All cut points given for one operator (parsed once, then cached)."""
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    return [parse_threshold(i) for i in items]


def round_for_banding(value: float, fact: QuantityFact, unit: str) -> float:
    # Spec 0.3: round half-up in the canonical unit before banding, so that a
    # value on a band edge is not pushed below it by floating-point noise.
    if unit == fact.unit and fact.decimals is not None:
        return _half_up(repr(value), fact.decimals)
    return round(value, 6)


@lru_cache(maxsize=65536)
def _half_up(value: str, decimals: int) -> float:
    # Keyed by the value's text, not the float: 0.0 and -0.0 are equal keys.
    quantum = Decimal(1).scaleb(-decimals)
    return float(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


def in_unit(reading: Reading, unit: str, fact: QuantityFact) -> float:
    assert isinstance(reading.value, float)
    return round_for_banding(
        convert(reading.value, reading.unit or fact.unit, unit, fact), fact, unit
    )


# Per operator given: its test, its sign, and its cut points (a plain number
# in the fact's own unit, "1" for a count).
Cuts = list[tuple[Callable[[float, float], bool], str, list[Threshold]]]
_cuts: ByIdentity[rf.FactComparison, Cuts] = ByIdentity()


def cuts_of(cond: rf.FactComparison, fact: QuantityFact) -> Cuts:
    """The condition's cut points, parsed once per condition."""

    def parse(c: rf.FactComparison) -> Cuts:
        cuts: Cuts = []
        for op, (test, sign) in OPERATORS.items():
            given = thresholds_of(getattr(c, op))
            if given:
                units = [t if t.unit else Threshold(t.value, fact.unit) for t in given]
                cuts.append((test, sign, units))
        return cuts

    return _cuts.get(cond, parse, tag=fact.unit)


def meets_cuts(
    value: float,
    value_unit: str,
    cuts: Cuts,
    fact: QuantityFact,
    shown: list[str] | None,
) -> bool:
    """Whether the value meets every cut point; ``shown`` gets each comparison.

    Without ``shown`` it stops at the first cut point the value misses.
    """
    ok = True
    for test, sign, given in cuts:
        native = None
        for c in given:
            if c.unit == value_unit:
                native = c
                break
        cut = native or given[0]
        # Spec 0.3: round (half-up, in the canonical unit) before banding.
        raw = value if native else convert(value, value_unit, cut.unit, fact)
        v = round_for_banding(raw, fact, cut.unit)
        met = test(v, cut.value)
        if not met:
            ok = False
            if shown is None:
                return False
        if shown is not None:
            # Said so either way: "acr 100 mg/g, not >= 300 mg/g".
            said = f" {sign}" if met else f", not {sign}"
            shown.append(f"{fact.name} {v:g} {cut.unit}{said} {cut.value:g} {cut.unit}")
    return ok


def compare_value(
    value: float, value_unit: str, cond: rf.FactComparison, fact: QuantityFact
) -> tuple[bool, list[str]]:
    """Compare a value with every operator's cut point, in the value's own unit.

    Spec 0.2: where a guideline gives a cut point in both unit systems, the
    value is compared with the one for the unit it arrived in.
    """
    shown: list[str] = []
    return meets_cuts(value, value_unit, cuts_of(cond, fact), fact, shown), shown


def text_matches(value: str, equals: str | None, one_of: list[str] | None) -> bool:
    """Whether a text value is the one asked for (case-insensitive)."""
    v = value.strip().casefold()
    if equals is not None and v != equals.strip().casefold():
        return False
    return one_of is None or v in {o.strip().casefold() for o in one_of}
