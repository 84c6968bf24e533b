"""Checks of validated rule files against the catalogue, models and each other.

Each check reports :class:`~engine.errors.Problem` with the file, line, column
and rule id, what was found, what is allowed and what to write instead.
"""

from __future__ import annotations

from functools import partial

from . import ruleformat as rf
from .catalogue import Catalogue
from .conditionchecks import check_when
from .errors import Problem
from .loader import LoadedFile
from .nearest import suggest
from .scorechecks import check_point_scores
from .sites import RuleSite, findings_resting_on, reads_fact, rule_sites, site_problem

__all__ = ["check_rule_files"]


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
                elif finding in findings_resting_on(
                    partial(reads_fact, calc.fact), sites
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
    problems += check_point_scores(files, catalogue, models, points, produced, sites)
    for site in sites:
        for made in produced_by(site.rule):
            if made in points:
                problems.append(
                    site_problem(
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
                site_problem(
                    site,
                    site.at(site.raw, "id"),
                    f"rule id `{site.rule.id}` is also used at "
                    f"{other.file.path}:{line}",
                    "give each rule its own id",
                    "duplicate-id",
                )
            )
        seen.setdefault(site.rule.id, site)
        problems += check_when(site, catalogue, models, produced, points)
        for i, action in enumerate(site.rule.then):
            for name, pool, message, code in _references(
                action, catalogue, models, produced
            ):
                if name not in pool:
                    problems.append(
                        site_problem(
                            site,
                            site.at(site.raw["then"], i),
                            message,
                            suggest(name, sorted(pool)),
                            code,
                        )
                    )
    return problems
