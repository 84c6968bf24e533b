"""Properties of the certainty method (docs/certainty.md)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.certainty import combine, update_with_score

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
inner = st.floats(min_value=0.01, max_value=0.99, allow_nan=False)


@given(st.lists(unit, max_size=8), unit)
def test_more_support_never_lowers_certainty(cs: list[float], extra: float) -> None:
    assert combine([*cs, extra]) >= combine(cs) - 1e-12


@given(st.lists(unit, max_size=8))
def test_order_of_firing_does_not_matter(cs: list[float]) -> None:
    assert abs(combine(cs) - combine(list(reversed(cs)))) < 1e-12
    assert abs(combine(cs) - combine(sorted(cs))) < 1e-12


@given(st.lists(unit, max_size=8))
def test_bounds_hold(cs: list[float]) -> None:
    assert 0.0 <= combine(cs) <= 1.0


def test_two_rules_at_095_give_09975() -> None:
    assert abs(combine([0.95, 0.95]) - 0.9975) < 1e-12
    assert combine([]) == 0.0


def test_rules_sharing_evidence_count_once_at_their_strongest() -> None:
    from engine.certainty import independent

    a1c = {"Observation/a1", "Observation/a2"}
    # Two A1C results read by both rules; a glucose read by the first too.
    assert independent(
        [(0.95, a1c | {"Observation/g"}), (0.9, a1c), (0.8, {"Observation/x"})]
    ) == [0.95, 0.8]
    # Linked through a third rule: one group.
    assert independent([(0.5, {"a"}), (0.6, {"b"}), (0.7, {"a", "b"})]) == [0.7]
    # Nothing shared: each counts.
    assert sorted(independent([(0.5, {"a"}), (0.6, {"b"})])) == [0.5, 0.6]


@given(st.lists(st.tuples(unit, st.sets(st.sampled_from("abcd"))), max_size=6))
def test_grouping_never_raises_certainty_above_independent_support(
    supports: list[tuple[float, set[str]]],
) -> None:
    from engine.certainty import independent

    groups = independent(supports)
    assert combine(groups) <= combine([c for c, _ in supports]) + 1e-12
    assert combine(groups) >= max((c for c, _ in supports), default=0.0) - 1e-12


@given(inner, inner)
def test_score_at_prior_leaves_certainty_unchanged(c: float, prior: float) -> None:
    assert abs(update_with_score(c, prior, prior) - c) < 1e-9


@given(inner, inner, inner)
def test_score_above_prior_raises_and_below_lowers(
    c: float, p: float, prior: float
) -> None:
    updated = update_with_score(c, p, prior)
    assert 0.0 < updated < 1.0
    if p > prior + 1e-9:
        assert updated > c
    elif p < prior - 1e-9:
        assert updated < c


@given(st.lists(inner, min_size=1, max_size=5), st.lists(inner, min_size=1, max_size=5))
def test_contradicting_evidence_lowers_certainty(
    support: list[float], against: list[float]
) -> None:
    from engine.certainty import combine_for_and_against

    net = combine_for_and_against(support, against)
    assert 0.0 <= net < combine(support)
    again = combine_for_and_against(list(reversed(support)), list(reversed(against)))
    assert abs(net - again) < 1e-12


def test_against_netting_worked_example() -> None:
    from engine.certainty import combine_for_and_against

    # 0.8 for, 0.5 against: (0.8 - 0.5) / (1 - 0.5) = 0.6
    assert abs(combine_for_and_against([0.8], [0.5]) - 0.6) < 1e-12
    assert combine_for_and_against([0.5], [0.8]) == 0.0
    assert combine_for_and_against([0.7], []) == 0.7


def test_strong_disagreement_needs_a_likelihood_ratio_of_a_third_or_less() -> None:
    from engine.certainty import disagrees

    prior = 0.5
    assert disagrees(0.8, 0.25, prior)  # odds 1/3 of prior odds
    assert not disagrees(0.8, 0.26, prior)
    assert not disagrees(0.4, 0.01, prior)  # the rule does not support it
