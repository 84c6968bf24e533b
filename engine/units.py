"""Units: UCUM spellings, and conversion of a fact's value between units.

UCUM strings are parsed by ``ucumvert`` into ``pint`` quantities, so any unit of
the right physical dimension converts (g/L to mg/dL, [degF] to Cel). What a unit
library cannot know, the quantity-specific factors of clinical-criteria-spec
section 0.1 (glucose 18.016, creatinine 88.4, the HbA1c master equation), comes
from the fact catalogue and is applied first.
"""

from __future__ import annotations

import re
import threading
from functools import cache, lru_cache
from typing import Any

from .catalogue import QuantityFact
from .errors import UnitError

__all__ = ["convert", "normalise_unit", "same_dimension"]

# Spellings people type that are not UCUM, mapped to the UCUM code.
_ALIASES = {
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "ml/min/1.73 m2": "mL/min/{1.73_m2}",
    "ml/min/1.73m²": "mL/min/{1.73_m2}",
    "ml/min/{1.73_m2}": "mL/min/{1.73_m2}",
    "µmol/l": "umol/L",
    "μmol/l": "umol/L",
    "umol/l": "umol/L",
    "mmol/l": "mmol/L",
    "meq/l": "meq/L",  # potassium: 1 mEq/L is 1 mmol/L (one charge)
    "mg/dl": "mg/dL",
    "g/dl": "g/dL",
    "°c": "Cel",
    "degc": "Cel",
    "c": "Cel",
    "cel": "Cel",
    "°f": "[degF]",
    "degf": "[degF]",
    "f": "[degF]",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "in": "[in_i]",
    "inch": "[in_i]",
    "y": "a",
    "yr": "a",
    "years": "a",
    "year": "a",
    "bpm": "/min",
    "beats/min": "/min",
    "breaths/min": "/min",
    "kg/m²": "kg/m2",
    "x10^9/l": "10*9/L",
    "10^9/l": "10*9/L",
    "x10^3/ul": "10*3/uL",
    "k/ul": "10*3/uL",
}

_lock = threading.Lock()


def normalise_unit(unit: str) -> str:
    """Return the UCUM code for a unit as typed (``mmHg`` becomes ``mm[Hg]``)."""
    text = unit.strip()
    return _ALIASES.get(text.lower(), text)


@cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@cache
def _parse(unit: str) -> Any:
    with _lock:
        try:
            return _registry().from_ucum(unit)
        except Exception as err:  # ucumvert raises lark and pint errors alike
            raise UnitError(f"unknown unit `{unit}`") from err


def _dimension(unit: str) -> Any:
    return _parse(unit).dimensionality


def _annotation(unit: str) -> str:
    return "".join(re.findall(r"\{[^}]*\}", unit))


def same_dimension(a: str, b: str) -> bool:
    """Return True when two units measure the same physical dimension.

    Dimensionless units (``%``, ``mmol/mol``, ``mg/g``) are only the same as
    themselves: pint would happily turn an HbA1c of 6.5 % into 65 mmol/mol.

    Raises:
        UnitError: If either unit is not a UCUM unit.
    """
    a, b = normalise_unit(a), normalise_unit(b)
    if a == b:
        return True
    if _annotation(a) != _annotation(b):
        return False
    da, db = _dimension(a), _dimension(b)
    return bool(da == db and len(da) > 0)


def _pint_convert(value: float, unit: str, target: str) -> float:
    registry = _registry()
    # Parsed before the lock is taken: _parse takes it too.
    source, goal = _parse(unit).units, _parse(target).units
    with _lock:
        return float(registry.Quantity(value, source).to(goal).magnitude)


@lru_cache(maxsize=4096)
def _factor(unit: str, target: str) -> float | None:
    """pint's factor from ``unit`` to ``target``; None if not a plain factor.

    Most conversions multiply by a factor (cm to m, 10*3/uL to 10*9/L), and
    pint takes about 50 microseconds to work one out: it is worked out once.
    A conversion with an offset (Cel to [degF]) is left to pint every time.
    """
    factor = _pint_convert(1.0, unit, target)
    if _pint_convert(0.0, unit, target) != 0.0:
        return None
    if _pint_convert(1000.0, unit, target) != 1000.0 * factor:
        return None
    return factor


def _scale(value: float, unit: str, target: str) -> float:
    factor = _factor(unit, target)
    return _pint_convert(value, unit, target) if factor is None else value * factor


def convert(value: float, unit: str, target: str, fact: QuantityFact) -> float:
    """Convert a value of ``fact`` from ``unit`` to ``target``.

    Quantity-specific factors of the catalogue come first; plain unit scaling
    (same dimension) is done by pint, also around a catalogue factor (glucose in
    g/L goes to mg/dL by pint, glucose in umol/L to mmol/L by pint then by 18.016).

    Raises:
        UnitError: If the unit is unknown or no conversion to ``target`` exists.
    """
    if unit == target:
        return value
    unit, target = normalise_unit(unit), normalise_unit(target)
    if unit == target:
        return value
    for conv in fact.conversions:
        if conv.source == unit and conv.target == target:
            return conv.apply(value)
    if same_dimension(unit, target):
        return _scale(value, unit, target)
    for conv in fact.conversions:
        if same_dimension(unit, conv.source) and same_dimension(conv.target, target):
            bridged = conv.apply(_scale(value, unit, conv.source))
            return _scale(bridged, conv.target, target)
    accepted = ", ".join(fact.units)
    raise UnitError(
        f"`{unit}` cannot be converted to `{target}` for {fact.name}; "
        f"accepted units: {accepted}"
    )
