"""Certainty: combining rules' certainties and a model's probability.

Method (also in docs/certainty.md):

1. Several rules reaching the same conclusion combine as independent
   supporting evidence, the certainty-factor rule for positive support:
   ``c = 1 - prod(1 - c_i)``. More support never lowers it; order does not
   matter; the result stays in [0, 1].
2. A model score updates that certainty on the log-odds scale, as a Bayesian
   likelihood ratio: the model's odds over its training prevalence's odds,
   ``logit(c') = logit(c) + logit(p) - logit(prior)``. A score at the prior
   leaves ``c`` unchanged; a higher score raises it, a lower one lowers it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["combine", "update_with_score"]

_EPS = 1e-6


def combine(certainties: Iterable[float]) -> float:
    """Combine supporting certainties: ``1 - prod(1 - c)``; empty gives 0."""
    remaining = 1.0
    for c in certainties:
        remaining *= 1.0 - min(max(c, 0.0), 1.0)
    return 1.0 - remaining


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def update_with_score(certainty: float, probability: float, prior: float) -> float:
    """Update a certainty by a model probability relative to its prior."""
    z = _logit(certainty) + _logit(probability) - _logit(prior)
    return 1.0 / (1.0 + math.exp(-z))
