"""Rule tests that authors write: YAML scenarios beside the rule files.

A rule test file (``<name>.test.yaml``) holds scenarios: facts given as in a
case file, the time of the evaluation, and the findings, diagnoses,
recommendations and undetermined rules that must appear or must not::

    tests:
      - name: stage 2 by a systolic mean of 144
        as_of: 2024-05-01
        given:
          patient: {age: 60, sex: male}
          facts:
            systolic_bp: [142 mmHg @ 2024-03-01, 146 mmHg @ 2024-04-20]
            diastolic_bp: [78 mmHg @ 2024-03-01, 76 mmHg @ 2024-04-20]
        expect:
          findings: [stage_2_hypertension]
          diagnoses: [hypertension]
        absent:
          findings: [stage_1_hypertension]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import ruleformat as rf
from .assessment import Assessment
from .casefile import load_yaml, read_case_data
from .errors import InputError, Problem
from .facts import Case, evaluation_time
from .knowledge import RULE_SUFFIXES, KnowledgeBase, is_rule_test
from .loader import locate
from .nearest import suggest

__all__ = [
    "RuleTestFile",
    "RuleTestResult",
    "check_rule_tests",
    "read_rule_tests",
    "run_rule_tests",
    "rule_test_paths",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outcome(_Strict):
    """What must appear (``expect``) or must not (``absent``)."""

    findings: list[str] = Field(default_factory=list)
    diagnoses: list[str] = Field(default_factory=list)
    recommendations: list[str] = Field(
        default_factory=list, description="Recommendations made and not blocked."
    )
    blocked: list[str] = Field(
        default_factory=list, description="Recommendations shown as blocked."
    )
    undetermined: list[str] = Field(
        default_factory=list, description="Rule ids that cannot be determined."
    )
    fired: list[str] = Field(default_factory=list, description="Rule ids that fired.")


class RuleTest(_Strict):
    """One scenario."""

    name: str
    as_of: date | datetime | None = Field(
        None, description="Evaluation time; default: the latest reading's time."
    )
    given: dict[str, Any] = Field(description="A case, in the case-file format.")
    expect: Outcome = Field(default_factory=Outcome)
    absent: Outcome = Field(default_factory=Outcome)


class RuleTestFile(_Strict):
    """A rule test file."""

    ruleset: str | None = Field(None, description="The ruleset these tests are for.")
    tests: list[RuleTest] = Field(min_length=1)


@dataclass
class RuleTestResult:
    """The outcome of one scenario."""

    file: str
    line: int
    name: str
    failures: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every expectation held."""
        return not self.failures


def rule_test_paths(paths: list[Path]) -> list[Path]:
    """Rule test files under the given files or folders.

    A folder gives every ``*.test.yaml`` (or ``.yml``) under it; a test file
    is itself; a rule file (``bmi.yaml``) gives its tests beside it
    (``bmi.test.yaml``), if it has any.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if is_rule_test(f) and f.is_file())
        elif is_rule_test(p):
            out.append(p)
        else:
            stem = p.name.removesuffix(p.suffix)
            twins = [p.with_name(f"{stem}.test{s}") for s in RULE_SUFFIXES]
            out += [t for t in twins if t.is_file()]
    return list(dict.fromkeys(out))


def read_rule_tests(path: Path) -> tuple[RuleTestFile | None, Any, list[Problem]]:
    """Read and validate a rule test file, with located problems."""
    shown = str(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"), source=shown)
    except InputError as err:
        # The reader words YAML errors for case files: place them as a rule
        # author's editor expects (file:line:column) and point to the format.
        place = re.match(r"line (\d+), column (\d+)", err.where)
        line, column = (int(place[1]), int(place[2])) if place else (0, 0)
        hint = (
            "a rule test file is YAML indented with spaces; see docs/rules.md, "
            "Rule tests"
            if "case file" in err.hint
            else err.hint
        )
        return (
            None,
            None,
            [Problem(shown, line, column, err.reason, hint=hint, code="yaml")],
        )
    except (OSError, UnicodeDecodeError) as err:
        return None, None, [Problem(shown, 0, 0, f"cannot read the file: {err}")]
    try:
        return RuleTestFile.model_validate(raw), raw, []
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = tuple(e["loc"])
            line, col = locate(raw, loc)
            key = ".".join(str(s) for s in loc)
            message, hint = f"`{key}`: {e['msg'].lower()}", ""
            allowed = _keys_at(loc[:-1])
            if e["type"] == "extra_forbidden" and allowed:
                message = f"`{key}`: unknown key; allowed here: {', '.join(allowed)}"
                hint = suggest(str(loc[-1]), allowed)
            problems.append(
                Problem(shown, line, col, message, hint=hint, code="schema")
            )
        return None, raw, problems


def _keys_at(parent: tuple[Any, ...]) -> list[str]:
    """The keys a test file allows under ``parent`` (a pydantic location)."""
    if parent == ():
        model: type[BaseModel] = RuleTestFile
    elif len(parent) == 2 and parent[0] == "tests":
        model = RuleTest
    elif (
        len(parent) == 3 and parent[0] == "tests" and parent[2] in ("expect", "absent")
    ):
        model = Outcome
    else:
        return []
    return list(model.model_fields)


def _outcome(result: Assessment) -> dict[str, set[str]]:
    return {
        "findings": {f.id for f in result.findings},
        "diagnoses": {d.id for d in result.diagnoses},
        "recommendations": {
            r.id for r in result.recommendations if r.status == "recommended"
        },
        "blocked": {r.id for r in result.recommendations if r.status == "blocked"},
        "undetermined": {u.rule_id for u in result.undetermined},
        "fired": set(result.rules_fired),
    }


def _as_of(test: RuleTest, last: datetime | None) -> datetime:
    if isinstance(test.as_of, date):  # a datetime too
        return evaluation_time(test.as_of)
    return last or datetime.now(UTC)


def _run_one(
    kb: KnowledgeBase, shown: str, line: int, test: RuleTest, case: Case
) -> RuleTestResult:
    out = RuleTestResult(shown, line, test.name)
    result = kb.evaluate(case, as_of=_as_of(test, case.last_time()))
    got = _outcome(result)
    out.fired = result.rules_fired
    if result.problems:
        out.failures.append("the assessment is partial: " + "; ".join(result.problems))
    for kind, wanted in test.expect.model_dump().items():
        missing = sorted(set(wanted) - got[kind])
        if missing:
            out.failures.append(f"expected {kind} {missing}; got {sorted(got[kind])}")
    for kind, unwanted in test.absent.model_dump().items():
        present = sorted(set(unwanted) & got[kind])
        if present:
            out.failures.append(f"expected no {kind} {present}; got them")
    return out


def check_rule_tests(
    kb: KnowledgeBase, paths: list[Path]
) -> tuple[list[tuple[Path, RuleTestFile, Any, list[Case]]], list[Problem]]:
    """Read rule test files and check them against a knowledge base.

    Returns:
        The usable files (path, model, raw tree, each test's case) and every
        problem: schema errors, a ruleset not in the knowledge base, an
        expected id that no rule concludes (with the nearest one), a `given`
        that is not a valid case.
    """
    usable: list[tuple[Path, RuleTestFile, Any, list[Case]]] = []
    problems: list[Problem] = []
    rule_ids = {r.rule.id for r in kb.rules}
    # What each list of `expect`/`absent` may name.
    pools: dict[str, set[str]] = {
        "fired": rule_ids,
        "undetermined": rule_ids,
        "findings": {p.id for p in kb.point_scores},
        "diagnoses": set(),
        "recommendations": set(),
        "blocked": set(),
    }
    for r in kb.rules:
        for action in r.rule.then:
            if isinstance(action, rf.FindingAction):
                pools["findings"].add(action.finding)
            elif isinstance(action, rf.DiagnosisAction):
                pools["diagnoses"].add(action.diagnosis.id)
            elif isinstance(action, rf.RecommendationAction):
                pools["recommendations"].add(action.recommendation.id)
                pools["blocked"].add(action.recommendation.id)
            elif isinstance(action, rf.BlockAction):
                pools["blocked"].add(action.block.recommendation)

    for path in rule_test_paths(paths):
        model, raw, found = read_rule_tests(path)
        problems += found
        if model is None:
            continue
        if model.ruleset is not None and model.ruleset not in kb.info.rulesets:
            line, col = locate(raw, ("ruleset",))
            problems.append(
                Problem(
                    str(path),
                    line,
                    col,
                    f"ruleset `{model.ruleset}` is not in the knowledge base being "
                    f"tested ({', '.join(sorted(kb.info.rulesets))})",
                    hint=suggest(model.ruleset, sorted(kb.info.rulesets))
                    or "give the folder of its rule file with --rules",
                    code="unknown-ruleset",
                )
            )
            continue
        before = len(problems)
        cases: list[Case] = []
        for i, test in enumerate(model.tests):
            for side in ("expect", "absent"):
                for kind, ids in getattr(test, side).model_dump().items():
                    # `fired` and `undetermined` list rules; the others
                    # list what rules conclude, each of its own kind.
                    known = pools[kind]
                    for j, ident in enumerate(ids):
                        if ident in known:
                            continue
                        line, col = locate(raw, ("tests", i, side, kind, j))
                        said, hint = _wrong_id(kind, ident, pools)
                        problems.append(
                            Problem(
                                str(path),
                                line,
                                col,
                                f"test {test.name!r}: {side} {kind} names "
                                f"`{ident}`, {said}",
                                hint=hint,
                                code="unknown-id",
                            )
                        )
            case = _given(kb, path, test, cast(Any, raw)["tests"][i])
            if isinstance(case, Problem):
                problems.append(case)
            else:
                cases.append(case)
        if len(problems) == before:
            usable.append((path, model, raw, cases))
    return usable, problems


_OF_RULES = ("fired", "undetermined")  # the lists that name rules, not conclusions


def _wrong_id(kind: str, ident: str, pools: dict[str, set[str]]) -> tuple[str, str]:
    """What is wrong with an id in a list of `expect`/`absent`, and the hint."""
    elsewhere = [k for k, ids in pools.items() if ident in ids and k != kind]
    if kind in _OF_RULES:
        said = "which is not the id of a rule"
    elif elsewhere:
        said = f"which is not one of the {kind}"
    else:
        return "which no rule concludes", suggest(ident, sorted(pools[kind]))
    if elsewhere:
        return said, f"`{ident}` is listed under {' or '.join(elsewhere)}"
    return said, suggest(ident, sorted(pools[kind]))


_AT = re.compile(r"line (\d+), column (\d+)")


def _given(kb: KnowledgeBase, path: Path, test: RuleTest, node: Any) -> Case | Problem:
    """A test's `given` read as the case it is, read once for `rules check`
    and `rules test` alike: a unit the catalogue refuses is a located problem
    of the test file."""
    try:
        return read_case_data(
            node["given"],
            source=f"{path} (test {test.name!r})",
            catalogue=kb.catalogue,
        )
    except InputError as err:
        at = _AT.match(err.where)
        line, col = (int(at[1]), int(at[2])) if at else locate(node, ("given",))
        return Problem(
            str(path),
            line,
            col,
            f"test {test.name!r}: `given` is not a valid case: {err.reason}",
            hint=err.hint,
            code="invalid-case",
        )


def run_rule_tests(
    kb: KnowledgeBase, paths: list[Path]
) -> tuple[list[RuleTestResult], list[Problem]]:
    """Run every scenario of the given test files against a knowledge base.

    Returns:
        The results, and the problems of test files that could not be used.
    """
    results: list[RuleTestResult] = []
    usable, problems = check_rule_tests(kb, paths)
    for path, model, raw, cases in usable:
        for i, (test, case) in enumerate(zip(model.tests, cases, strict=True)):
            node = cast(Any, raw)["tests"][i]
            line = node.lc.line + 1 if hasattr(node, "lc") else 0
            results.append(_run_one(kb, str(path), line, test, case))
    return results, problems
