"""Three-valued truth of a compiled rule: true, false or unknown (None).

A rule's expression combines leaves (decided outside the matcher, see
:mod:`engine.leaves`) and findings. Unknown is not false: a rule that cannot
be decided names the facts it lacked. Evaluation short-circuits: once a
conjunction has a false part, or an at-least has enough true parts, the parts
after it are not looked at, so leaves that cannot change a rule's value are
never evaluated (the leaf mapping evaluates a leaf the first time it is read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .compiler import And, AtLeast, Expr, Find, Leaf, Not, Or
from .leaves import LeafResult

__all__ = ["LeafSource", "missing", "truth"]


class LeafSource(Protocol):
    """A case's leaves: each one's value, and its full result when needed."""

    def value(self, index: int) -> bool | None:
        """The leaf's value (cheap: no evidence is built)."""

    def __getitem__(self, index: int) -> LeafResult:
        """The leaf's full result: the facts it used, what it lacked."""


def truth(
    expr: Expr, leaves: LeafSource, found: Mapping[str, bool | None]
) -> bool | None:
    """The expression's value: True, False or None (cannot be determined).

    Kleene's three-valued logic; at-least-k is true once k parts are true and
    false once fewer than k parts can still be true. The value is the one a
    full evaluation gives: only parts that cannot change it are skipped.
    """
    if isinstance(expr, Leaf):
        return leaves.value(expr.index)
    if isinstance(expr, Find):
        return found.get(expr.id, False)
    if isinstance(expr, Not):
        v = truth(expr.child, leaves, found)
        return None if v is None else not v
    children = expr.children
    k = (
        len(children)
        if isinstance(expr, And)
        else 1
        if isinstance(expr, Or)
        else expr.k
    )
    if k <= 0:
        return True
    true = unknown = 0
    left = len(children)
    for child in children:
        left -= 1
        v = truth(child, leaves, found)
        if v is True:
            true += 1
            if true >= k:
                return True
        elif v is None:
            unknown += 1
        if true + unknown + left < k:
            return False
    return None


def missing(
    expr: Expr,
    leaves: LeafSource,
    found: Mapping[str, bool | None],
    finding_missing: Mapping[str, list[str]],
) -> list[str]:
    """The facts whose absence leaves the expression's undecided parts unknown.

    Only parts that cannot be determined are looked into: blood pressure is
    not missing from "hypertension on the problem list, or stage 1 or 2 by
    measurement" once the problem list has it.
    """
    if isinstance(expr, Leaf):
        if leaves.value(expr.index) is not None:
            return []
        return leaves[expr.index].missing
    if isinstance(expr, Find):
        return finding_missing.get(expr.id, []) if found.get(expr.id) is None else []
    if isinstance(expr, Not):
        return missing(expr.child, leaves, found, finding_missing)
    assert isinstance(expr, And | Or | AtLeast)
    out: list[str] = []
    for c in expr.children:
        if truth(c, leaves, found) is None:
            out += missing(c, leaves, found, finding_missing)
    return out
