"""Checks of point scores: ids, well-formed items, the conditions and bands
they read, and findings that would rest on the score itself.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from . import ruleformat as rf
from .catalogue import Catalogue
from .conditionchecks import check_comparison, check_when
from .errors import Problem
from .loader import LoadedFile
from .sites import (
    RuleSite,
    findings_resting_on,
    reads_points,
    score_sites,
    site_problem,
    walk,
)

__all__ = ["check_point_scores"]


def check_point_scores(
    files: list[LoadedFile],
    cat: Catalogue,
    models: set[str],
    points: set[str],
    produced: set[str],
    sites: list[RuleSite],
) -> list[Problem]:
    """Items are well formed and read known facts, and any finding they read
    is asserted by a rule and does not rest on the score itself."""
    from .compiler import mentions_finding

    out: list[Problem] = []
    seen: set[str] = set()
    for site, score in score_sites(files):
        raw_score = site.raw
        if score.id in seen:
            out.append(
                site_problem(
                    site,
                    site.at(None),
                    f"point score id `{score.id}` is used twice",
                    "give each its own id",
                    "duplicate-id",
                )
            )
        seen.add(score.id)
        if score.reported_when is not None:
            out += check_when(
                site,
                cat,
                models,
                set(),
                set(),  # a point score cannot wait on another: none exist yet
                (score.reported_when, raw_score["reported_when"]),
            )
        for ii, item in enumerate(score.items):
            raw_item = raw_score["items"][ii]
            where = site.at(raw_score["items"], ii)
            banded = item.bands is not None
            if banded == (item.when is not None) or banded == (item.points is not None):
                out.append(
                    site_problem(
                        site,
                        where,
                        f"item `{item.id}` needs either "
                        "`points` with `when`, or `fact` with `bands`",
                        "",
                        "point-item",
                    )
                )
                continue
            for key in ("when", "applies_when"):
                cond = getattr(item, key)
                if cond is None:
                    continue
                looped = mentions_finding(cond) and findings_resting_on(
                    partial(reads_points, score.id), sites
                ).intersection(
                    c.finding
                    for c, _ in walk(cond, raw_item[key])
                    if isinstance(c, rf.FindingTest)
                )
                if looped:
                    out.append(
                        site_problem(
                            site,
                            site.at(raw_item, key),
                            f"item `{item.id}` reads finding "
                            f"`{sorted(looped)[0]}`, which rests on the "
                            f"point score `{score.id}` itself",
                            "an item may read only findings that do not "
                            "depend on its own score",
                            "cycle",
                        )
                    )
                    continue
                if any(
                    isinstance(c, rf.PointsTest) for c, _ in walk(cond, raw_item[key])
                ):
                    out.append(
                        site_problem(
                            site,
                            site.at(raw_item, key),
                            f"item `{item.id}` tests a point score; the "
                            "scores are computed together, so an item cannot "
                            "read another's total",
                            "test the facts or findings that score reads",
                            "point-item",
                        )
                    )
                    continue
                out += check_when(
                    site, cat, models, produced, points, (cond, raw_item[key])
                )
            if banded:
                assert item.bands is not None
                if item.fact is None:
                    out.append(
                        site_problem(
                            site,
                            where,
                            f"item `{item.id}` has bands but no `fact`",
                            "add `fact:`",
                            "point-item",
                        )
                    )
                    continue
                for bi, band in enumerate(item.bands):
                    cond = band.comparison(item.fact)
                    out += check_comparison(
                        site, cond, _Merged(raw_item, raw_item["bands"][bi]), cat
                    )
    return out


class _Merged(dict):  # type: ignore[type-arg]
    """A band seen as a comparison: `fact` located in the item, the rest in the band."""

    def __init__(self, item: Any, band: Any) -> None:
        super().__init__(band)
        self.lc = _MergedLc(item, band)


class _MergedLc:
    def __init__(self, item: Any, band: Any) -> None:
        self._item, self._band = item, band

    def key(self, key: str) -> tuple[int, int]:
        node = self._band if key in self._band else self._item
        line, col = node.lc.key(key)
        return line, col
