"""Checks of validated rule files against the catalogue, models and each other.

Each check reports :class:`~engine.errors.Problem` with the file, line, column
and rule id, what was found, what is allowed and what to write instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from . import ruleformat as rf
from .caseview import parse_duration
from .catalogue import Catalogue
from .cutpoints import parse_threshold
from .errors import Problem, UnitError
from .loader import LoadedFile
from .nearest import suggest
from .units import convert, same_dimension

__all__ = ["RuleSite", "check_rule_files", "rule_sites"]

# One cut point in two units (126 mg/dL, 7.0 mmol/L) is the same value
# converted, give or take the rounding of the guideline's pair: KDIGO's
# 30 mg/g and 3 mg/mmol differ by 13 %. A pair further apart than this
# (2.26 mg/dL beside 20 umol/L, ten times off) is a slip.
_PAIR = 1.25

_OPS = ("above", "at_least", "below", "at_most")


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


def _problem(
    site: RuleSite,
    where: tuple[int, int],
    msg: str,
    hint: str,
    code: str,
    severity: str = "error",
) -> Problem:
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


def _walk(cond: rf.Condition, raw: Any) -> Iterator[tuple[rf.Condition, Any]]:
    yield cond, raw
    if isinstance(cond, rf.AllOf):
        for c, r in zip(cond.all, raw["all"], strict=True):
            yield from _walk(c, r)
    elif isinstance(cond, rf.AnyOf):
        for c, r in zip(cond.any, raw["any"], strict=True):
            yield from _walk(c, r)
    elif isinstance(cond, rf.AtLeastOf):
        for c, r in zip(cond.of, raw["of"], strict=True):
            yield from _walk(c, r)
    elif isinstance(cond, rf.Not):
        yield from _walk(cond.not_, raw["not"])


def _check_comparison(
    site: RuleSite, cond: rf.FactComparison, raw: Any, cat: Catalogue
) -> list[Problem]:
    out = []
    fact = cat.quantities.get(cond.fact)
    if cond.fact in cat.texts:
        return _check_text(site, cond, raw, cat)
    if fact is not None and (cond.equals is not None or cond.one_of is not None):
        key = "equals" if cond.equals is not None else "one_of"
        return [
            _problem(
                site,
                site.at(raw, key),
                f"{cond.fact} is a measured number; `{key}` is for text facts",
                "compare it with above, at_least, below or at_most",
                "not-text",
            )
        ]
    if fact is None:
        kind = cat.kind_of(cond.fact)
        msg = f"unknown fact `{cond.fact}`"
        code = "unknown-fact"
        if kind == "condition":
            msg = (
                f"`{cond.fact}` is a problem-list condition (yes or no), not a "
                "measured fact; it cannot be compared with a number"
            )
            hint = f"write `condition: {cond.fact}`"
            code = "not-a-number"
        elif kind == "medication":
            msg = (
                f"`{cond.fact}` is a medication (taken or not), not a measured "
                "fact; it cannot be compared with a number"
            )
            hint = f"write `taking: {cond.fact}`"
            code = "not-a-number"
        else:
            hint = suggest(cond.fact, list(cat.quantities))
        return [_problem(site, site.at(raw, "fact"), msg, hint, code)]
    if cond.within:
        try:
            parse_duration(cond.within)
        except ValueError as err:
            out.append(_problem(site, site.at(raw, "within"), str(err), "", "duration"))
    for op in _OPS:
        value = getattr(cond, op)
        if value is None:
            continue
        pair: list[tuple[float, str, float]] = []  # value, unit, canonical value
        for item in value if isinstance(value, list) else [value]:
            try:
                cut = parse_threshold(item)
            except ValueError as err:
                out.append(
                    _problem(
                        site,
                        site.at(raw, op),
                        str(err),
                        f"write e.g. `{op}: 140 {fact.unit}`",
                        "threshold",
                    )
                )
                continue
            if not cut.unit and fact.unit == "1":
                continue  # a count or score: a plain number is its own unit
            if not cut.unit:
                out.append(
                    _problem(
                        site,
                        site.at(raw, op),
                        f"the threshold {cut.value:g} for {cond.fact} has no unit",
                        f"write `{cut.value:g} {fact.unit}`",
                        "unit-missing",
                    )
                )
                continue
            try:
                ok = any(same_dimension(cut.unit, u) for u in fact.units)
            except UnitError:
                out.append(
                    _problem(
                        site,
                        site.at(raw, op),
                        f"unknown unit `{cut.unit}` for {cond.fact}",
                        f"use one of: {', '.join(fact.units)}",
                        "unit-unknown",
                    )
                )
                continue
            if not ok:
                out.append(
                    _problem(
                        site,
                        site.at(raw, op),
                        f"`{cut.unit}` is not a unit of {cond.fact} ({fact.meaning})",
                        f"use one of: {', '.join(fact.units)}",
                        "unit-dimension",
                    )
                )
                continue
            try:
                canonical = convert(cut.value, cut.unit, fact.unit, fact)
            except UnitError:
                continue  # no conversion known: the unit is compared as it is
            pair.append((cut.value, cut.unit, canonical))
            if fact.plausible:
                lo, hi = fact.plausible
                if not lo <= canonical <= hi:
                    shown = (
                        f"{cut.value:g} {cut.unit}"
                        if cut.unit == fact.unit
                        else f"{cut.value:g} {cut.unit} ({canonical:.3g} {fact.unit})"
                    )
                    out.append(
                        _problem(
                            site,
                            site.at(raw, op),
                            f"{shown} is outside the plausible range of "
                            f"{cond.fact} ({lo:g} to {hi:g} {fact.unit})",
                            "check the number and its unit",
                            "implausible",
                        )
                    )
        values = [c for *_, c in pair]
        if len(values) > 1 and min(values) > 0 and max(values) / min(values) > _PAIR:
            said = ", ".join(f"{v:g} {u} is {c:.3g} {fact.unit}" for v, u, c in pair)
            out.append(
                _problem(
                    site,
                    site.at(raw, op),
                    f"the cut points of `{op}` disagree: {said}",
                    "give each unit the same cut point, converted (spec 0.2)",
                    "unit-pair",
                )
            )
    return out


def _check_text(
    site: RuleSite, cond: rf.FactComparison, raw: Any, cat: Catalogue
) -> list[Problem]:
    text = cat.texts[cond.fact]
    out = []
    for op in _OPS:
        if getattr(cond, op) is not None:
            out.append(
                _problem(
                    site,
                    site.at(raw, op),
                    f"{cond.fact} is a text fact ({', '.join(text.values)}); it "
                    "cannot be compared with a number",
                    f"write `equals: {text.values[0]}` or `one_of: [...]`",
                    "not-a-number",
                )
            )
    wanted = [cond.equals] if cond.equals is not None else list(cond.one_of or [])
    allowed = {v.casefold() for v in text.values}
    for value in wanted:
        if value.casefold() not in allowed:
            key = "equals" if cond.equals is not None else "one_of"
            out.append(
                _problem(
                    site,
                    site.at(raw, key),
                    f"`{value}` is not a value of {cond.fact}",
                    f"use one of: {', '.join(text.values)}",
                    "text-value",
                )
            )
    return out


def _check_point_scores(
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
                _problem(
                    site,
                    site.at(None),
                    f"point score id `{score.id}` is used twice",
                    "give each its own id",
                    "duplicate-id",
                )
            )
        seen.add(score.id)
        if score.reported_when is not None:
            out += _check_when(
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
                    _problem(
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
                looped = mentions_finding(cond) and _findings_resting_on(
                    partial(_reads_points, score.id), sites
                ).intersection(
                    c.finding
                    for c, _ in _walk(cond, raw_item[key])
                    if isinstance(c, rf.FindingTest)
                )
                if looped:
                    out.append(
                        _problem(
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
                    isinstance(c, rf.PointsTest) for c, _ in _walk(cond, raw_item[key])
                ):
                    out.append(
                        _problem(
                            site,
                            site.at(raw_item, key),
                            f"item `{item.id}` tests a point score; items "
                            "are computed together and read facts only",
                            "test the facts that score reads",
                            "point-item",
                        )
                    )
                    continue
                out += _check_when(
                    site, cat, models, produced, points, (cond, raw_item[key])
                )
            if banded:
                assert item.bands is not None
                if item.fact is None:
                    out.append(
                        _problem(
                            site,
                            where,
                            f"item `{item.id}` has bands but no `fact`",
                            "add `fact:`",
                            "point-item",
                        )
                    )
                    continue
                for bi, band in enumerate(item.bands):
                    cond = rf.FactComparison(
                        fact=item.fact,
                        above=band.above,
                        at_least=band.at_least,
                        below=band.below,
                        at_most=band.at_most,
                        equals=band.equals,
                        one_of=band.one_of,
                    )
                    out += _check_comparison(
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


def _check_when(
    site: RuleSite,
    cat: Catalogue,
    models: set[str],
    produced: set[str],
    points: set[str],
    root: tuple[rf.Condition, Any] | None = None,
) -> list[Problem]:
    out: list[Problem] = []
    cond0, raw0 = root or (site.rule.when, site.raw["when"])
    for cond, raw in _walk(cond0, raw0):
        if isinstance(cond, rf.PointsTest) and cond.points not in points:
            out.append(
                _problem(
                    site,
                    site.at(raw, "points"),
                    f"unknown point score `{cond.points}`; defined: "
                    f"{', '.join(sorted(points)) or 'none'}",
                    suggest(cond.points, sorted(points)),
                    "unknown-points",
                )
            )
        if isinstance(cond, rf.FactComparison):
            out += _check_comparison(site, cond, raw, cat)
        elif (
            isinstance(cond, rf.ConditionTest) and cond.condition not in cat.conditions
        ):
            out.append(
                _problem(
                    site,
                    site.at(raw, "condition"),
                    f"unknown condition `{cond.condition}`",
                    suggest(cond.condition, list(cat.conditions)),
                    "unknown-condition",
                )
            )
        elif isinstance(cond, rf.MedicationTest) and cond.taking not in cat.medications:
            out.append(
                _problem(
                    site,
                    site.at(raw, "taking"),
                    f"unknown medication `{cond.taking}`",
                    suggest(cond.taking, list(cat.medications)),
                    "unknown-medication",
                )
            )
        elif (
            isinstance(cond, rf.AllergyTest) and cond.allergic_to not in cat.medications
        ):
            out.append(
                _problem(
                    site,
                    site.at(raw, "allergic_to"),
                    f"unknown medication `{cond.allergic_to}`",
                    suggest(cond.allergic_to, list(cat.medications)),
                    "unknown-medication",
                )
            )
        elif isinstance(cond, rf.ScoreTest) and cond.score not in models:
            out.append(
                _problem(
                    site,
                    site.at(raw, "score"),
                    f"unknown score `{cond.score}`; loaded models: "
                    f"{', '.join(sorted(models)) or 'none'}",
                    suggest(cond.score, sorted(models)),
                    "unknown-score",
                )
            )
        elif isinstance(cond, rf.FindingTest) and cond.finding not in produced:
            out.append(
                _problem(
                    site,
                    site.at(raw, "finding"),
                    f"finding `{cond.finding}` is tested but no rule asserts it",
                    suggest(cond.finding, sorted(produced)),
                    "finding-never-asserted",
                )
            )
        for op in _OPS:
            if isinstance(cond, rf.ScoreTest) and getattr(cond, op) is not None:
                v = float(getattr(cond, op))
                if not 0.0 <= v <= 1.0:
                    out.append(
                        _problem(
                            site,
                            site.at(raw, op),
                            f"a score is a probability; {v:g} is outside 0 to 1",
                            "write a number between 0 and 1",
                            "implausible",
                        )
                    )
    return out


def _references(
    action: rf.Action, catalogue: Catalogue, models: set[str], produced: set[str]
) -> list[tuple[str, set[str], str, str]]:
    """The names a conclusion refers to: (name, where it must be, message, code)."""
    if isinstance(action, rf.RecommendationAction):
        spec = action.recommendation
        out = []
        if spec.drug is not None:
            out.append(
                (
                    spec.drug,
                    set(catalogue.medications),
                    f"`drug: {spec.drug}` is not a medication of the catalogue",
                    "unknown-medication",
                )
            )
        if spec.adjusted_by is not None:
            out.append(
                (
                    spec.adjusted_by,
                    models,
                    f"`adjusted_by: {spec.adjusted_by}` names no loaded model",
                    "unknown-score",
                )
            )
        return out
    if isinstance(action, rf.BlockAction):
        target = action.block.recommendation
        return [
            (
                target,
                produced,
                f"blocks recommendation `{target}` that no rule makes",
                "unknown-recommendation",
            )
        ]
    if isinstance(action, rf.AgainstAction):
        target = action.against.conclusion
        return [
            (
                target,
                produced,
                f"argues against `{target}`, which no rule concludes",
                "unknown-conclusion",
            )
        ]
    return []


def _check_calculation_findings(
    files: list[LoadedFile], sites: list[RuleSite], produced: set[str]
) -> list[Problem]:
    """A finding a calculation reads must exist and must not depend on it.

    Such a calculation is run again once the rules have decided the finding;
    if the finding itself rested on the calculated fact, the second run could
    change what the first one decided.
    """
    problems: list[Problem] = []
    for f in files:
        for i, calc in enumerate(f.model.calculations):
            for key, finding in calc.findings().items():
                line, col = f.raw["calculations"][i]["parameters"].lc.key(key)
                if finding not in produced:
                    problems.append(
                        Problem(
                            f.path,
                            line + 1,
                            col + 1,
                            f"calculation `{calc.id}`: {key} `{finding}` is not "
                            "asserted by any rule",
                            hint=suggest(finding, sorted(produced))
                            or "name a finding that some rule asserts",
                            code="unknown-finding",
                        )
                    )
                elif finding in _findings_resting_on(
                    partial(_reads_fact, calc.fact), sites
                ):
                    problems.append(
                        Problem(
                            f.path,
                            line + 1,
                            col + 1,
                            f"calculation `{calc.id}` reads finding `{finding}`, "
                            f"which rests on `{calc.fact}`, the fact it calculates",
                            hint="a calculation may read only findings that do "
                            "not depend on its own result",
                            code="cycle",
                        )
                    )
    return problems


def _reads_fact(fact: str, cond: rf.Condition) -> bool:
    return isinstance(cond, rf.FactComparison) and cond.fact == fact


def _reads_points(score: str, cond: rf.Condition) -> bool:
    return isinstance(cond, rf.PointsTest) and cond.points == score


def _findings_resting_on(
    reads_it: Callable[[rf.Condition], bool], sites: list[RuleSite]
) -> set[str]:
    """Findings asserted by rules with a condition that ``reads_it`` (a fact,
    a point score), directly or through findings."""
    from .compiler import produced_by

    reads: list[tuple[bool, set[str], list[str]]] = []
    for site in sites:
        if site.section != "rules":
            continue
        conds = [c for c, _ in _walk(site.rule.when, site.raw["when"])]
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


def check_rule_files(
    files: list[LoadedFile], catalogue: Catalogue, models: set[str]
) -> list[Problem]:
    """Run every per-rule and cross-file check.

    Returns:
        Problems, errors and warnings, in file order.
    """
    from .compiler import produced_by

    problems: list[Problem] = []
    sites = list(rule_sites(files))
    produced = {p for s in sites for p in produced_by(s.rule)}
    seen: dict[str, RuleSite] = {}
    ruleset_ids: dict[str, LoadedFile] = {}
    points = {p.id for f in files for p in f.model.point_scores}
    problems += _check_point_scores(files, catalogue, models, points, produced, sites)
    for site in sites:
        for made in produced_by(site.rule):
            if made in points:
                problems.append(
                    _problem(
                        site,
                        site.at(None),
                        f"`{made}` is the id of a point score; a rule's conclusion "
                        "needs an id of its own",
                        f"e.g. `{made}_high`",
                        "duplicate-id",
                    )
                )
    for f in files:
        rid = f.model.ruleset.id
        if rid in ruleset_ids:
            line, col = f.raw.lc.key("ruleset")
            problems.append(
                Problem(
                    f.path,
                    line + 1,
                    col + 1,
                    f"ruleset id `{rid}` is also used by {ruleset_ids[rid].path}",
                    hint="give each ruleset its own id",
                    code="duplicate-id",
                )
            )
        ruleset_ids[rid] = f
        for i, calc in enumerate(f.model.calculations):
            if calc.fact not in catalogue.quantities:
                line, col = f.raw["calculations"][i].lc.key("fact")
                problems.append(
                    Problem(
                        f.path,
                        line + 1,
                        col + 1,
                        f"calculation `{calc.id}` feeds unknown fact `{calc.fact}`",
                        hint=suggest(calc.fact, list(catalogue.quantities)),
                        code="unknown-fact",
                    )
                )
    problems += _check_calculation_findings(files, sites, produced)
    for site in sites:
        if site.rule.id in seen:
            other = seen[site.rule.id]
            line, _ = other.at(None)
            problems.append(
                _problem(
                    site,
                    site.at(site.raw, "id"),
                    f"rule id `{site.rule.id}` is also used at "
                    f"{other.file.path}:{line}",
                    "give each rule its own id",
                    "duplicate-id",
                )
            )
        seen.setdefault(site.rule.id, site)
        problems += _check_when(site, catalogue, models, produced, points)
        for i, action in enumerate(site.rule.then):
            for name, pool, message, code in _references(
                action, catalogue, models, produced
            ):
                if name not in pool:
                    problems.append(
                        _problem(
                            site,
                            site.at(site.raw["then"], i),
                            message,
                            suggest(name, sorted(pool)),
                            code,
                        )
                    )
    return problems
