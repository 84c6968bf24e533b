"""Certainty: combining rules' certainties and a model's probability.

Method (also in docs/certainty.md):

1. Several rules reaching the same conclusion combine as independent
   supporting evidence, the certainty-factor rule for positive support:
   ``c = 1 - prod(1 - c_i)``. More support never lowers it; order does not
   matter; the result stays in [0, 1]. Rules whose evidence shares a
   recorded entry (the same A1C result) are not independent: such a group
   counts once, at its strongest rule (:func:`independent`).
2. A model score updates that certainty on the log-odds scale, as a Bayesian
   likelihood ratio: the model's odds over its training prevalence's odds,
   ``logit(c') = logit(c) + logit(p) - logit(prior)``. A score at the prior
   leaves ``c`` unchanged; a higher score raises it, a lower one lowers it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence, Set

__all__ = [
    "combine",
    "combine_for_and_against",
    "disagrees",
    "independent",
    "update_with_score",
]

_EPS = 1e-6


def combine(certainties: Iterable[float]) -> float:
    """Combine supporting certainties: ``1 - prod(1 - c)``; empty gives 0."""
    remaining = 1.0
    for c in certainties:
        remaining *= 1.0 - min(max(c, 0.0), 1.0)
    return 1.0 - remaining


def independent(supports: Sequence[tuple[float, Set[str]]]) -> list[float]:
    """One certainty per group of supporting rules whose evidence overlaps.

    Each support is a rule's certainty and the recorded entries its evidence
    rests on (``Observation/abc``). Rules that share an entry, directly or
    through others, form a group, which counts as its strongest rule: two
    rules reading the same A1C are one piece of evidence, not two.
    """
    group = list(range(len(supports)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    first: dict[str, int] = {}
    for i, (_, entries) in enumerate(supports):
        for entry in entries:
            j = first.setdefault(entry, i)
            group[root(i)] = root(j)
    best: dict[int, float] = {}
    for i, (certainty, _) in enumerate(supports):
        r = root(i)
        best[r] = max(best.get(r, 0.0), certainty)
    return list(best.values())


def combine_for_and_against(
    support: Iterable[float], against: Iterable[float]
) -> float:
    """Certainty for a conclusion with evidence on both sides.

    Support and contradiction are each combined as in :func:`combine`, then
    netted by the certainty-factor rule ``(s - a) / (1 - min(s, a))``. A net
    below zero is reported as 0: the conclusion stands (its rule fired) but
    the contradicting evidence outweighs it.
    """
    s, a = combine(support), combine(against)
    if a == 0.0:
        return s
    if min(s, a) >= 1.0:
        return 0.0
    return max(0.0, (s - a) / (1.0 - min(s, a)))


def disagrees(certainty: float, probability: float, prior: float) -> bool:
    """Whether a model argues strongly against a rule's conclusion.

    Strongly: the rule supports (certainty >= 0.5) while the model's odds are
    a third of its prior odds or less (a likelihood ratio <= 1/3).
    """
    return certainty >= 0.5 and _logit(probability) - _logit(prior) <= -math.log(3.0)


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def update_with_score(certainty: float, probability: float, prior: float) -> float:
    """Update a certainty by a model probability relative to its prior."""
    z = _logit(certainty) + _logit(probability) - _logit(prior)
    return 1.0 / (1.0 + math.exp(-z))
