"""Unit conversion: the factors worked out once give pint's own results."""

from __future__ import annotations

import random
import threading

import pytest

from engine.catalogue import default_catalogue
from engine.units import _pint_convert, convert


@pytest.fixture(scope="module")
def facts():  # type: ignore[no-untyped-def]
    return default_catalogue().quantities


def test_fever_in_fahrenheit_is_converted_with_its_offset(facts) -> None:  # type: ignore[no-untyped-def]
    # 102 °F is 38.9 °C: an offset conversion, not a factor.
    t = facts["body_temperature"]
    assert convert(102.0, "[degF]", "Cel", t) == pytest.approx(38.8889, abs=1e-4)
    assert convert(98.6, "[degF]", "Cel", t) == pytest.approx(37.0, abs=1e-9)
    assert convert(38.0, "Cel", "[degF]", t) == pytest.approx(100.4, abs=1e-9)


def test_height_and_white_cell_count_scale_by_their_factor(facts) -> None:  # type: ignore[no-untyped-def]
    assert convert(170.0, "cm", "m", facts["body_height"]) == pytest.approx(1.70)
    assert convert(69.0, "[in_i]", "cm", facts["body_height"]) == pytest.approx(175.26)
    # 7.2 thousand per microlitre is 7.2 x 10^9 per litre (SIRS: 4 to 12).
    assert convert(7.2, "10*3/uL", "10*9/L", facts["wbc"]) == pytest.approx(7.2)
    assert convert(12500.0, "/uL", "10*9/L", facts["wbc"]) == pytest.approx(12.5)


@pytest.mark.parametrize(
    ("unit", "target"),
    [
        ("cm", "m"),
        ("[in_i]", "cm"),
        ("[lb_av]", "kg"),
        ("10*3/uL", "10*9/L"),
        ("g/L", "mg/dL"),
        ("umol/L", "mmol/L"),
    ],
)
def test_a_kept_factor_gives_exactly_what_pint_gives(
    unit: str, target: str, facts
) -> None:  # type: ignore[no-untyped-def]
    # The factor is reused across readings; it must not move a value on a
    # band edge by even the last bit (bands compare after rounding).
    fact = facts["body_height"]  # no catalogue factors: pint alone
    rng = random.Random(7)
    values = [round(rng.uniform(0, 500), rng.randint(0, 3)) for _ in range(300)]
    for v in values:
        assert convert(v, unit, target, fact) == _pint_convert(v, unit, target)


def test_converting_a_unit_never_parsed_before_does_not_hang() -> None:
    # The conversion once took a lock that parsing a new unit takes again.
    out: list[float] = []
    worker = threading.Thread(
        target=lambda: out.append(_pint_convert(2.0, "[ft_i]", "[yd_i]")), daemon=True
    )
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "converting a unit parsed for the first time hung"
    assert out == [pytest.approx(2 / 3)]
