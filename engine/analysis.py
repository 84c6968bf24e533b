"""Static analysis of rulesets: conditions that can never hold, bands with
gaps or overlaps, findings nobody uses, and recommendations made and blocked
under the very same condition.

Thresholds are compared in the fact's canonical unit (converted where a cut
point is given only in another unit).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from . import ruleformat as rf
from .catalogue import Catalogue, QuantityFact
from .cutpoints import thresholds_of
from .errors import Problem, UnitError
from .loader import LoadedFile
from .sites import RuleSite, rule_sites, score_sites, site_problem
from .units import convert

__all__ = ["Interval", "analyse"]

_INF = float("inf")


@dataclass(frozen=True)
class Interval:
    """A range of values: ``lo`` to ``hi``, each end open or closed."""

    lo: float = -_INF
    lo_closed: bool = False
    hi: float = _INF
    hi_closed: bool = False

    def empty(self) -> bool:
        """True when no value lies in the range."""
        if self.lo > self.hi:
            return True
        return self.lo == self.hi and not (self.lo_closed and self.hi_closed)

    def meet(self, other: Interval) -> Interval:
        """The intersection."""
        if self.lo > other.lo or (self.lo == other.lo and not self.lo_closed):
            lo, lo_c = self.lo, self.lo_closed
        else:
            lo, lo_c = other.lo, other.lo_closed
        if self.hi < other.hi or (self.hi == other.hi and not self.hi_closed):
            hi, hi_c = self.hi, self.hi_closed
        else:
            hi, hi_c = other.hi, other.hi_closed
        return Interval(lo, lo_c, hi, hi_c)

    def text(self, unit: str) -> str:
        """Readable form, e.g. ``[30, 45) mL/min``."""
        left = "[" if self.lo_closed else "("
        right = "]" if self.hi_closed else ")"
        return f"{left}{self.lo:g}, {self.hi:g}{right} {unit}"


def _cut(value: rf.Threshold | None, fact: QuantityFact) -> float | None:
    try:
        cuts = thresholds_of(value)
    except ValueError:  # reported by the checks already
        return None
    if not cuts:
        return None
    cuts = [c if c.unit else type(c)(c.value, fact.unit) for c in cuts]
    native = [c for c in cuts if c.unit == fact.unit]
    cut = native[0] if native else cuts[0]
    if cut.unit == fact.unit:
        return cut.value
    try:
        return convert(cut.value, cut.unit, fact.unit, fact)
    except UnitError:
        return None


def interval_of(cond: rf.FactComparison, fact: QuantityFact) -> Interval:
    """The values a comparison accepts, in the fact's canonical unit."""
    out = Interval()
    for op, closed, lower in (
        ("above", False, True),
        ("at_least", True, True),
        ("below", False, False),
        ("at_most", True, False),
    ):
        v = _cut(getattr(cond, op), fact)
        if v is None:
            continue
        bound = Interval(v, closed) if lower else Interval(hi=v, hi_closed=closed)
        out = out.meet(bound)
    return out


def _key(cond: rf.FactComparison) -> tuple[Any, ...]:
    return (
        cond.fact,
        cond.value,
        cond.within,
        cond.readings,
        cond.min_readings,
        cond.lasting_more_than,
    )


def _problem(
    site: RuleSite,
    node: Any,
    key: str | int | None,
    msg: str,
    hint: str,
    code: str,
    severity: str = "error",
) -> Problem:
    where = site.at(node, key) if key is not None else site.at(None)
    return site_problem(site, where, msg, hint, code, severity)


def _never_true(site: RuleSite, cat: Catalogue) -> list[Problem]:
    out = []

    def visit(cond: rf.Condition, raw: Any) -> None:
        if isinstance(cond, rf.FactComparison) and cond.fact in cat.quantities:
            fact = cat.quantities[cond.fact]
            iv = interval_of(cond, fact)
            if iv.empty():
                out.append(
                    _problem(
                        site,
                        raw,
                        "fact",
                        f"this comparison of {cond.fact} can never be true "
                        f"(it asks for {iv.text(fact.unit)})",
                        "check the direction of above/below",
                        "never-true",
                    )
                )
        if isinstance(cond, rf.AllOf):
            groups: dict[tuple[Any, ...], list[rf.FactComparison]] = defaultdict(list)
            for c in cond.all:
                if isinstance(c, rf.FactComparison) and c.fact in cat.quantities:
                    groups[_key(c)].append(c)
            for key, comps in groups.items():
                fact = cat.quantities[key[0]]
                joint = Interval()
                for c in comps:
                    joint = joint.meet(interval_of(c, fact))
                if len(comps) > 1 and joint.empty():
                    out.append(
                        _problem(
                            site,
                            raw,
                            "all",
                            f"these conditions on {key[0]} can never all be "
                            "true together",
                            "check the thresholds; did you mean `any`?",
                            "never-true",
                        )
                    )
            for c, r in zip(cond.all, raw["all"], strict=True):
                visit(c, r)
        elif isinstance(cond, rf.AnyOf):
            for c, r in zip(cond.any, raw["any"], strict=True):
                visit(c, r)
        elif isinstance(cond, rf.AtLeastOf):
            if cond.at_least > len(cond.of):
                out.append(
                    _problem(
                        site,
                        raw,
                        "at_least",
                        f"at_least {cond.at_least} of {len(cond.of)} "
                        "conditions can never be true",
                        f"use a number from 1 to {len(cond.of)}",
                        "never-true",
                    )
                )
            for c, r in zip(cond.of, raw["of"], strict=True):
                visit(c, r)
        elif isinstance(cond, rf.Not):
            visit(cond.not_, raw["not"])

    visit(site.rule.when, site.raw["when"])
    return out


def _band_candidates(
    when: rf.Condition, cat: Catalogue
) -> list[tuple[rf.FactComparison, str]]:
    """The comparisons of a rule that may be its band, each with its guard.

    A rule that tests one fact is a band of it with no guard. A rule whose
    ``all`` tests a fact beside other conditions ("adult" and "BMI 25 to 30")
    may be a band of any fact it compares; the other conditions are the guard,
    and only rules with the very same guard form a family.
    """
    parts = when.all if isinstance(when, rf.AllOf) else [when]
    out = []
    for i, part in enumerate(parts):
        if (
            isinstance(part, rf.FactComparison)
            and part.fact in cat.quantities
            and part.if_missing is None
        ):
            guard = sorted(
                json.dumps(p.model_dump(mode="json"), sort_keys=True)
                for j, p in enumerate(parts)
                if j != i
            )
            out.append((part, json.dumps(guard)))
    return out


def _bands(sites: list[RuleSite], cat: Catalogue) -> list[Problem]:
    """Rules of one ruleset that test one fact, under the same guard, form a
    band family (at least three of them).

    A family without a guard must cover the fact's plausible range, each value
    in exactly one band. A guarded family ("adults": BMI) need not reach the
    ends (its guard may be the scope: diabetes from age 20), and a gap
    between two of its bands is reported only where no band of another rule
    of the file lies inside it: metformin's eGFR 30 to 44 belongs to two rules
    with other guards (taking metformin or not), which is no gap.
    """
    out = []
    families: dict[tuple[Any, ...], list[tuple[RuleSite, Interval]]] = defaultdict(list)
    compared: dict[tuple[Any, ...], list[Interval]] = defaultdict(list)
    for s in sites:
        for part, guard in _band_candidates(s.rule.when, cat):
            fact = cat.quantities[part.fact]
            interval = interval_of(part, fact)
            if interval.empty() or any(
                getattr(part, op) is not None and _cut(getattr(part, op), fact) is None
                for op in ("above", "at_least", "below", "at_most")
            ):
                continue  # reported already (never true, a unit that is wrong)
            families[(s.file.path, *_key(part), guard)].append((s, interval))
            compared[(s.file.path, *_key(part))].append(interval)
    for key, found in families.items():
        # Rules that share one band (several conclusions under the same
        # condition) are one band of the family, not bands that overlap.
        members = list(
            {interval: (s, interval) for s, interval in reversed(found)}.values()
        )
        if len(members) < 3:
            continue
        guarded = key[-1] != "[]"
        fact = cat.quantities[key[1]]
        lo, hi = fact.plausible or (-_INF, _INF)
        members.sort(key=lambda m: (m[1].lo, not m[1].lo_closed))
        first = members[0][1]
        if first.lo > lo and not guarded:
            out.append(
                _problem(
                    members[0][0],
                    None,
                    None,
                    f"bands of {fact.name} leave values from {lo:g} up to "
                    f"{first.lo:g} {fact.unit} in no category",
                    "extend the lowest band",
                    "band-gap",
                )
            )
        for (sa, a), (sb, b) in zip(members, members[1:], strict=False):
            gap = Interval(a.hi, not a.hi_closed, b.lo, not b.lo_closed)
            if a.hi < b.lo or (a.hi == b.lo and not a.hi_closed and not b.lo_closed):
                if guarded:
                    left = _unfilled(gap, compared[key[:-1]])
                    if left is None:
                        continue
                    gap = left
                out.append(
                    _problem(
                        sb,
                        None,
                        None,
                        f"bands of {fact.name} leave {gap.text(fact.unit)} in no "
                        f"category (between {sa.rule.id} and {sb.rule.id})",
                        "make each band start where the previous one ends",
                        "band-gap",
                    )
                )
            elif a.hi > b.lo or (a.hi == b.lo and a.hi_closed and b.lo_closed):
                both = a.meet(b)
                out.append(
                    _problem(
                        sb,
                        None,
                        None,
                        f"bands of {fact.name} overlap: {both.text(fact.unit)} "
                        f"is in both {sa.rule.id} and {sb.rule.id}",
                        "use `below` in one band and `at_least` in the next",
                        "band-overlap",
                    )
                )
        last = members[-1][1]
        if last.hi < hi and not guarded:
            out.append(
                _problem(
                    members[-1][0],
                    None,
                    None,
                    f"bands of {fact.name} leave values above {last.hi:g} "
                    f"{fact.unit} in no category",
                    "extend the highest band",
                    "band-gap",
                )
            )
    return out


def _item_bands(files: list[LoadedFile], cat: Catalogue) -> list[Problem]:
    """The bands of a point-score item give every plausible value of its fact
    exactly one band: a value in none makes the item, and the score, unknown
    for every patient who has it."""
    out = []
    for site, score in score_sites(files):
        for ii, item in enumerate(score.items):
            if item.bands is None or item.fact not in cat.quantities:
                continue  # a text fact, or a fact reported already
            fact = cat.quantities[item.fact]
            raw = site.raw["items"][ii]["bands"]
            members = []
            for bi, band in enumerate(item.bands):
                cond = band.comparison(fact.name)
                if any(
                    getattr(band, op) is not None
                    and _cut(getattr(band, op), fact) is None
                    for op in ("above", "at_least", "below", "at_most")
                ):
                    break  # a cut point in a wrong unit: reported by the checks
                members.append((bi, interval_of(cond, fact)))
            else:
                out += [
                    _problem(site, raw, bi, f"item `{item.id}`: {msg}", hint, code)
                    for bi, msg, hint, code in _cover(fact, members)
                ]
    return out


def _cover(
    fact: QuantityFact, members: list[tuple[int, Interval]]
) -> list[tuple[int, str, str, str]]:
    """Gaps and overlaps of one item's bands, each given by its index: the
    band, message, hint and code of each problem."""
    out = []
    lo, hi = fact.plausible or (-_INF, _INF)
    members = sorted(members, key=lambda m: (m[1].lo, not m[1].lo_closed))
    first, last = members[0], members[-1]
    below = Interval(lo, lo > -_INF, first[1].lo, not first[1].lo_closed)
    if not below.empty():
        out.append(
            (
                first[0],
                f"{fact.name} {below.text(fact.unit)} is in no band",
                "extend the lowest band (`below` alone reaches down to any value)",
                "band-gap",
            )
        )
    for (_, a), (bi, b) in zip(members, members[1:], strict=False):
        if a.hi < b.lo or (a.hi == b.lo and not a.hi_closed and not b.lo_closed):
            gap = Interval(a.hi, not a.hi_closed, b.lo, not b.lo_closed)
            out.append(
                (
                    bi,
                    f"{fact.name} {gap.text(fact.unit)} is in no band",
                    "make each band start where the previous one ends",
                    "band-gap",
                )
            )
        elif a.hi > b.lo or (a.hi == b.lo and a.hi_closed and b.lo_closed):
            out.append(
                (
                    bi,
                    f"{fact.name} {a.meet(b).text(fact.unit)} is in two bands",
                    "use `below` in one band and `at_least` in the next",
                    "band-overlap",
                )
            )
    above = Interval(last[1].hi, not last[1].hi_closed, hi, hi < _INF)
    if not above.empty():
        out.append(
            (
                last[0],
                f"{fact.name} {above.text(fact.unit)} is in no band",
                "extend the highest band (`at_least` alone reaches up to any value)",
                "band-gap",
            )
        )
    return out


def _unfilled(gap: Interval, intervals: list[Interval]) -> Interval | None:
    """The first part of a gap that the intervals lying inside it leave open.

    Only intervals inside the gap fill it: bands that other rules of the file
    give to exactly that range. A threshold reaching beyond it ("eGFR 45 or
    more" of another recommendation) does not.
    """
    at, closed = gap.lo, gap.lo_closed  # the first value not yet filled
    inside = [iv for iv in intervals if not iv.empty() and iv.meet(gap) == iv]
    for iv in sorted(inside, key=lambda i: (i.lo, not i.lo_closed)):
        if iv.lo > at or (iv.lo == at and closed and not iv.lo_closed):
            return Interval(at, closed, iv.lo, not iv.lo_closed)
        if iv.hi > at or (iv.hi == at and iv.hi_closed and closed):
            at, closed = iv.hi, not iv.hi_closed
    rest = Interval(at, closed, gap.hi, gap.hi_closed)
    return None if rest.empty() else rest


def _made_and_blocked(sites: list[RuleSite]) -> list[Problem]:
    out = []
    made: dict[tuple[str, str], RuleSite] = {}
    for s in sites:
        when = json.dumps(s.rule.when.model_dump(mode="json"), sort_keys=True)
        for a in s.rule.then:
            if isinstance(a, rf.RecommendationAction):
                made[(a.recommendation.id, when)] = s
    for s in sites:
        when = json.dumps(s.rule.when.model_dump(mode="json"), sort_keys=True)
        for a in s.rule.then:
            if isinstance(a, rf.BlockAction):
                maker = made.get((a.block.recommendation, when))
                if maker is not None:
                    out.append(
                        _problem(
                            s,
                            None,
                            None,
                            f"recommendation `{a.block.recommendation}` is made "
                            f"by {maker.rule.id} and blocked by {s.rule.id} "
                            "under the very same condition",
                            "one of the two rules is wrong; make the conditions differ",
                            "made-and-blocked",
                        )
                    )
    return out


def _unused_findings(sites: list[RuleSite]) -> list[Problem]:
    tested: set[str] = set()

    def collect(cond: rf.Condition) -> None:
        if isinstance(cond, rf.FindingTest):
            tested.add(cond.finding)
        for child in (
            getattr(cond, "all", None)
            or getattr(cond, "any", None)
            or getattr(cond, "of", None)
            or []
        ):
            collect(child)
        if isinstance(cond, rf.Not):
            collect(cond.not_)

    for s in sites:
        collect(s.rule.when)
    out = []
    for s in sites:
        for i, a in enumerate(s.rule.then):
            if (
                isinstance(a, rf.FindingAction)
                and a.display is None
                and a.finding not in tested
            ):
                out.append(
                    _problem(
                        s,
                        s.raw["then"],
                        i,
                        f"finding `{a.finding}` is asserted but no rule tests "
                        "it and it has no display text",
                        "give it `display:` if it is meant for the clinician, "
                        "or remove it",
                        "finding-unused",
                        severity="warning",
                    )
                )
    return out


def analyse(files: list[LoadedFile], catalogue: Catalogue) -> list[Problem]:
    """Run the static analyses over validated rule files.

    XXX: bands over two facts at once (blood pressure: systolic and diastolic)
    are not analysed: only families whose members compare one fact under the
    same guard are. Rule tests cover the blood pressure bands.
    """
    everything = list(rule_sites(files))
    out: list[Problem] = []
    for s in everything:
        out += _never_true(s, catalogue)
    # The others need every rule of a file: a file with schema errors (whose
    # valid rules alone were kept) is left out of them.
    sites = [s for s in everything if not s.file.partial]
    out += _bands(sites, catalogue)
    out += _item_bands([f for f in files if not f.partial], catalogue)
    out += _made_and_blocked(sites)
    out += _unused_findings(sites)
    return out
