"""``did you mean`` for a misspelt name: one wording and one cut-off everywhere."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "suggest"]

# difflib's similarity ratio: 0.6 takes `sytolic_bp` for `systolic_bp` and
# `expcet` for `expect`, and offers nothing for an unrelated word.
_CUTOFF = 0.6


def closest(name: str, pool: Iterable[str]) -> str | None:
    """The name of ``pool`` closest to ``name``, or None when none is close."""
    match = difflib.get_close_matches(name, list(pool), n=1, cutoff=_CUTOFF)
    return match[0] if match else None


def suggest(name: str, pool: Iterable[str]) -> str:
    """``did you mean `x`?`` for the closest name of ``pool``, or ""."""
    near = closest(name, pool)
    return f"did you mean `{near}`?" if near else ""
