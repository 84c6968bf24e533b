"""ByIdentity: one value per rule-file object, made once."""

from __future__ import annotations

from engine.memo import ByIdentity
from engine.ruleformat import FactComparison


def test_a_value_is_made_once_per_object_and_tag() -> None:
    made: list[str] = []
    cache: ByIdentity[FactComparison, str] = ByIdentity()
    egfr = FactComparison(fact="egfr", below="60 mL/min/{1.73_m2}")
    twin = FactComparison(fact="egfr", below="60 mL/min/{1.73_m2}")

    def make(c: FactComparison) -> str:
        made.append(c.fact)
        return f"{c.fact} {c.below}"

    first = cache.get(egfr, make, tag="a")
    again = cache.get(egfr, make, tag="a")
    cache.get(twin, make, tag="a")  # equal content, another object
    cache.get(egfr, make, tag="b")  # another setting

    assert first == again == "egfr 60 mL/min/{1.73_m2}"
    assert made == ["egfr", "egfr", "egfr"]


def test_a_full_cache_starts_afresh() -> None:
    cache: ByIdentity[FactComparison, int] = ByIdentity(limit=2)
    conds = [FactComparison(fact="bmi", at_least=n) for n in (25, 30, 35)]
    made = [cache.get(c, lambda c: int(c.at_least or 0)) for c in conds]

    assert made == [25, 30, 35]
    assert len(cache._entries) == 1  # cleared at the limit, then the third
