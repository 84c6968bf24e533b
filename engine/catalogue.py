"""The fact catalogue: which facts exist, their units, codes and ranges.

The catalogue is data (``catalogue.yaml`` beside this module); this module
reads it into frozen value types and answers look-ups by fact name, LOINC,
SNOMED CT or RxNorm code.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ruamel.yaml import YAML

from .nearest import closest

__all__ = [
    "Catalogue",
    "Conversion",
    "CodedConcept",
    "QuantityFact",
    "TextFact",
    "default_catalogue",
]


@dataclass(frozen=True)
class Conversion:
    """A quantity-specific linear conversion: ``value * scale / divisor + offset``.

    A divisor keeps factors such as 88.4 exact instead of 0.0113122.
    """

    source: str
    target: str
    scale: float = 1.0
    divisor: float = 1.0
    offset: float = 0.0

    def apply(self, value: float) -> float:
        """Convert ``value`` from ``source`` to ``target``."""
        return value * self.scale / self.divisor + self.offset


@dataclass(frozen=True)
class QuantityFact:
    """A measured fact and how to read it."""

    name: str
    meaning: str
    unit: str
    units: tuple[str, ...]
    loinc: tuple[str, ...] = ()
    plausible: tuple[float, float] | None = None
    decimals: int | None = None
    conversions: tuple[Conversion, ...] = ()


@dataclass(frozen=True)
class TextFact:
    """A fact recorded as one of a few words (ACVPU: A, C, V, P, U)."""

    name: str
    meaning: str
    values: tuple[str, ...]
    loinc: tuple[str, ...] = ()
    # SNOMED CT code of an Observation's coded value -> the value it records.
    snomed: dict[str, str] = field(default_factory=dict)
    # The same for LOINC answer codes (LA...), which some systems send instead.
    answers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CodedConcept:
    """A condition or medication concept and the codes that mean it."""

    name: str
    kind: str
    meaning: str
    codes: frozenset[str] = field(default_factory=frozenset)
    ingredients: tuple[str, ...] = ()
    implies: tuple[str, ...] = ()
    # A condition that cannot last longer (pregnancy): an entry older than
    # this with no end is not taken as current (a duration, "10 months").
    lasts_at_most: str | None = None


@dataclass(frozen=True)
class Catalogue:
    """Every fact the engine knows, with look-ups by name and code."""

    quantities: dict[str, QuantityFact]
    conditions: dict[str, CodedConcept]
    medications: dict[str, CodedConcept]
    texts: dict[str, TextFact] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_loinc: dict[str, str] = {}
        for fact in self.quantities.values():
            for code in fact.loinc:
                by_loinc[code] = fact.name
        object.__setattr__(self, "_by_loinc", by_loinc)
        texts_by_loinc = {c: t.name for t in self.texts.values() for c in t.loinc}
        object.__setattr__(self, "_texts_by_loinc", texts_by_loinc)
        by_snomed: dict[str, list[str]] = {}
        for concept in self.conditions.values():
            for code in concept.codes:
                by_snomed.setdefault(code, []).append(concept.name)
        object.__setattr__(self, "_by_snomed", by_snomed)
        # Drug look-ups by code and product text, kept across records: every
        # refill names the same few drugs. Bounded: emptied when full.
        object.__setattr__(self, "_drugs", {})

    def fact_for_loinc(self, code: str) -> str | None:
        """Return the fact fed by a LOINC code, or None."""
        found: str | None = self._by_loinc.get(code)  # type: ignore[attr-defined]
        return found

    def text_fact_for_loinc(self, code: str) -> str | None:
        """Return the text fact an Observation code records (coded value), or None."""
        found: str | None = self._texts_by_loinc.get(code)  # type: ignore[attr-defined]
        return found

    def loinc_codes(self) -> tuple[Collection[str], Collection[str]]:
        """The LOINC codes that feed a quantity fact, and those of a text fact."""
        return self._by_loinc.keys(), self._texts_by_loinc.keys()  # type: ignore[attr-defined]

    def conditions_for_snomed(self, code: str) -> list[str]:
        """Return every condition concept a SNOMED CT code belongs to."""
        return list(self._by_snomed.get(code, ()))  # type: ignore[attr-defined]

    def medications_for(self, code: str, text: str) -> list[str]:
        """Return medication concepts matching an RxNorm code or product text."""
        drugs: dict[tuple[str, str], list[str]] = self._drugs  # type: ignore[attr-defined]
        found = drugs.get((code, text))
        if found is None:
            lowered = text.lower()
            found = [
                m.name
                for m in self.medications.values()
                if code in m.codes or any(i in lowered for i in m.ingredients)
            ]
            if len(drugs) >= 4096:
                drugs.clear()
            drugs[(code, text)] = found
        return list(found)

    def names(self) -> list[str]:
        """Return every fact name rules may refer to."""
        return sorted(
            [*self.quantities, *self.texts, *self.conditions, *self.medications]
        )

    def kind_of(self, name: str) -> str | None:
        """Return ``quantity``, ``condition``, ``medication`` or None."""
        if name in self.quantities:
            return "quantity"
        if name in self.texts:
            return "text"
        if name in self.conditions:
            return "condition"
        if name in self.medications:
            return "medication"
        return None

    def nearest(self, name: str, kinds: tuple[str, ...] | None = None) -> str | None:
        """Return the closest known fact name to a misspelling, or None."""
        pool = [n for n in self.names() if kinds is None or self.kind_of(n) in kinds]
        return closest(name, pool)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def parse_catalogue(data: dict[str, Any]) -> Catalogue:
    """Build a catalogue from its YAML mapping."""
    quantities = {}
    for name, spec in (data.get("quantities") or {}).items():
        rng = spec.get("range")
        quantities[name] = QuantityFact(
            name=name,
            meaning=str(spec.get("meaning", "")),
            unit=str(spec["unit"]),
            units=_as_tuple(spec.get("units")) or (str(spec["unit"]),),
            loinc=_as_tuple(spec.get("loinc")),
            plausible=(float(rng[0]), float(rng[1])) if rng else None,
            decimals=spec.get("decimals"),
            conversions=tuple(
                Conversion(
                    source=str(c["from"]),
                    target=str(c["to"]),
                    scale=float(c.get("scale", 1.0)),
                    divisor=float(c.get("divisor", 1.0)),
                    offset=float(c.get("offset", 0.0)),
                )
                for c in spec.get("conversions") or ()
            ),
        )
    conditions = {
        name: CodedConcept(
            name=name,
            kind="condition",
            meaning=str(spec.get("meaning", "")),
            codes=frozenset(_as_tuple(spec.get("snomed"))),
            implies=_as_tuple(spec.get("implies")),
            lasts_at_most=spec.get("lasts_at_most"),
        )
        for name, spec in (data.get("conditions") or {}).items()
    }
    medications = {
        name: CodedConcept(
            name=name,
            kind="medication",
            meaning=str(spec.get("meaning", "")),
            codes=frozenset(_as_tuple(spec.get("rxnorm"))),
            ingredients=tuple(i.lower() for i in _as_tuple(spec.get("ingredient"))),
        )
        for name, spec in (data.get("medications") or {}).items()
    }
    texts = {
        name: TextFact(
            name=name,
            meaning=str(spec.get("meaning", "")),
            values=_as_tuple(spec.get("values")),
            loinc=_as_tuple(spec.get("loinc")),
            snomed=_coded_values(spec.get("snomed")),
            answers=_coded_values(spec.get("loinc_answers")),
        )
        for name, spec in (data.get("texts") or {}).items()
    }
    return Catalogue(quantities, conditions, medications, texts)


def _coded_values(spec: Any) -> dict[str, str]:
    """``{value: [codes]}`` turned round into code -> value."""
    return {
        str(code): str(value)
        for value, codes in (spec or {}).items()
        for code in _as_tuple(codes)
    }


@cache
def default_catalogue() -> Catalogue:
    """Return the catalogue shipped with the engine."""
    text = resources.files("engine").joinpath("catalogue.yaml").read_text("utf-8")
    return parse_catalogue(YAML(typ="safe").load(text))
