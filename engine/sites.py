"""Where the parts of validated rule files are, and what rests on what.

A site is a rule (or a point score) with the file and raw YAML node it came
from, so that every check can give a problem its line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from . import ruleformat as rf
from .errors import Problem
from .loader import LoadedFile

__all__ = [
    "RuleSite",
    "findings_resting_on",
    "reads_fact",
    "reads_points",
    "rule_sites",
    "score_sites",
    "site_problem",
    "walk",
]


@dataclass
class RuleSite:
    """A rule with the file and raw node it came from."""

    file: LoadedFile
    index: int
    rule: rf.Rule
    raw: Any
    section: str = "rules"
    name: str = ""

    @property
    def owner(self) -> str:
        """The id problems are reported under (a rule's or a point score's)."""
        return self.name or self.rule.id

    @property
    def subject(self) -> str:
        """What the owner is, as problems name it."""
        return "point score" if self.section == "point_scores" else "rule"

    def at(self, node: Any, key: str | int | None = None) -> tuple[int, int]:
        """1-based line and column of ``key`` in ``node`` (or of the rule)."""
        try:
            if key is None:
                line, col = self.file.raw[self.section].lc.item(self.index)
            elif isinstance(node, list):
                line, col = cast(Any, node).lc.item(key)
            else:
                line, col = node.lc.key(key)
            return line + 1, col + 1
        except (AttributeError, KeyError, TypeError, IndexError):
            return 1, 1


def rule_sites(files: list[LoadedFile]) -> Iterator[RuleSite]:
    """Every rule of every file with its raw node."""
    for f in files:
        for i, rule in enumerate(f.model.rules):
            yield RuleSite(f, f.rule_place(i), rule, f.raw_rule(i))


# A point score has no rule of its own: its site carries a placeholder.
_NO_RULE = rf.Rule.model_construct(
    id="", title="", when=rf.FindingTest(finding="none"), then=[]
)


def score_sites(files: list[LoadedFile]) -> Iterator[tuple[RuleSite, rf.PointScore]]:
    """Every point score of every file, with a site that locates its parts."""
    for f in files:
        for si, score in enumerate(f.model.point_scores):
            raw = f.raw["point_scores"][si]
            yield RuleSite(f, si, _NO_RULE, raw, "point_scores", score.id), score


def site_problem(
    site: RuleSite,
    where: tuple[int, int],
    msg: str,
    hint: str,
    code: str,
    severity: str = "error",
) -> Problem:
    """A problem at ``where`` (line, column), under the site's rule or score."""
    return Problem(
        site.file.path,
        where[0],
        where[1],
        msg,
        rule_id=site.owner,
        subject=site.subject,
        hint=hint,
        code=code,
        severity=severity,
    )


def walk(cond: rf.Condition, raw: Any) -> Iterator[tuple[rf.Condition, Any]]:
    """Every part of a condition, outermost first, each with its raw node."""
    yield cond, raw
    if isinstance(cond, rf.AllOf):
        for c, r in zip(cond.all, raw["all"], strict=True):
            yield from walk(c, r)
    elif isinstance(cond, rf.AnyOf):
        for c, r in zip(cond.any, raw["any"], strict=True):
            yield from walk(c, r)
    elif isinstance(cond, rf.AtLeastOf):
        for c, r in zip(cond.of, raw["of"], strict=True):
            yield from walk(c, r)
    elif isinstance(cond, rf.Not):
        yield from walk(cond.not_, raw["not"])


def reads_fact(fact: str, cond: rf.Condition) -> bool:
    """True when the condition compares the fact."""
    return isinstance(cond, rf.FactComparison) and cond.fact == fact


def reads_points(score: str, cond: rf.Condition) -> bool:
    """True when the condition tests the point score."""
    return isinstance(cond, rf.PointsTest) and cond.points == score


def findings_resting_on(
    reads_it: Callable[[rf.Condition], bool], sites: list[RuleSite]
) -> set[str]:
    """Findings asserted by rules with a condition that ``reads_it`` (a fact,
    a point score), directly or through findings."""
    from .compiler import produced_by

    reads: list[tuple[bool, set[str], list[str]]] = []
    for site in sites:
        if site.section != "rules":
            continue
        conds = [c for c, _ in walk(site.rule.when, site.raw["when"])]
        needs = {c.finding for c in conds if isinstance(c, rf.FindingTest)}
        reads.append((any(map(reads_it, conds)), needs, produced_by(site.rule)))
    resting: set[str] = set()
    grown = True
    while grown:
        grown = False
        for direct, needs, made in reads:
            if (direct or needs & resting) and not set(made) <= resting:
                resting.update(made)
                grown = True
    return resting
