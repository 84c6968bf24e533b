"""The knowledge base: rule files and models, loaded once, all or nothing.

:class:`KnowledgeBase` is the library's entry point::

    kb = KnowledgeBase.load()                 # bundled rules/ and models/
    result = kb.evaluate("patient.json")      # or a dict, or a Case
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias

from . import ruleformat as rf
from .analysis import analyse
from .assessment import Assessment, KnowledgeBaseInfo
from .catalogue import Catalogue, default_catalogue
from .chaining import Matcher, Session
from .checks import check_rule_files
from .compiler import (
    MAX_CONJUNCTS,
    MAX_DURABLE_RULES,
    MAX_PATTERNS_PER_FINDING,
    CompiledRule,
    compile_expr,
    durable_definition,
    produced_by,
    to_dnf,
)
from .errors import InputError, ModelError, Problem, RuleFileError
from .facts import Case, evaluation_time
from .loader import LoadedFile, read_rule_file
from .scoring import ScoringModel, load_models
from .sites import rule_sites

__all__ = [
    "KnowledgeBase",
    "default_models_dir",
    "default_rules_dir",
    "rule_file_paths",
]

# What evaluate() takes: a Case, a FHIR Bundle as a dict, or a file's path.
CaseInput: TypeAlias = Case | dict[str, Any] | str | Path
# The evaluation time: a datetime (UTC without an offset), a date (its end),
# "last" (the record's last entry) or None (now).
AsOf: TypeAlias = datetime | date | Literal["last"] | None

log = logging.getLogger(__name__)

# Checks that would report a name defined in a rule a schema error dropped.
_WAIT_FOR_SCHEMA = {"finding-never-asserted", "unknown-finding", "unknown-points"}

_ROOT = Path(__file__).resolve().parent.parent


def default_rules_dir() -> Path:
    """The bundled knowledge base's rule folder (``rules/`` of the repo)."""
    return _ROOT / "rules"


def default_models_dir() -> Path:
    """The bundled models folder (``models/`` of the repo)."""
    return _ROOT / "models"


RULE_SUFFIXES = (".yaml", ".yml")


def is_rule_test(path: Path) -> bool:
    """``bmi.test.yaml`` (or ``.yml``): rule tests, not rules."""
    return path.name.endswith(tuple(f".test{s}" for s in RULE_SUFFIXES))


def rule_file_paths(paths: Iterable[Path]) -> list[Path]:
    """Rule files (``.yaml`` or ``.yml``) under the given files or folders;
    rule tests are left out."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(
                f
                for f in p.rglob("*")
                if f.suffix in RULE_SUFFIXES and f.is_file() and not is_rule_test(f)
            )
        else:
            out.append(p)
    return out


def _shown(path: Path) -> Path:
    """A path as messages show it: relative to the working folder when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _order(rules: list[CompiledRule]) -> tuple[list[int], list[Problem]]:
    """Topological order of rules by finding dependencies; sets strata.

    A cycle (a rule that, through findings, depends on itself) is an error: it
    could fire for ever, and "not F" inside a cycle has no stable meaning.
    """
    producers: dict[str, list[int]] = {}
    for i, r in enumerate(rules):
        for f in r.produces:
            producers.setdefault(f, []).append(i)
    deps: dict[int, list[tuple[int, bool]]] = {}
    for i, r in enumerate(rules):
        edges = [
            (p, False)
            for f in sorted(r.positive_findings())
            for p in producers.get(f, [])
        ]
        edges += [
            (p, True)
            for f in sorted(r.negated_findings())
            for p in producers.get(f, [])
        ]
        deps[i] = edges
    order: list[int] = []
    state: dict[int, int] = {}
    problems: list[Problem] = []

    def visit(i: int, trail: list[int]) -> None:
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            cycle = trail[trail.index(i) :] + [i]
            names = " -> ".join(rules[j].rule.id for j in cycle)
            r = rules[i]
            problems.append(
                Problem(
                    r.file,
                    r.line,
                    r.column,
                    f"chaining cycle: {names}; these rules could fire for ever",
                    rule_id=r.rule.id,
                    hint="break the cycle: a rule must not depend, through "
                    "findings, on what it asserts",
                    code="cycle",
                )
            )
            return
        state[i] = 1
        for j, _neg in deps[i]:
            visit(j, [*trail, i])
        state[i] = 2
        order.append(i)

    for i in range(len(rules)):
        visit(i, [])
    if problems:
        return order, problems
    for i in order:
        rules[i].stratum = max(
            [0] + [rules[j].stratum + (1 if neg else 0) for j, neg in deps[i]]
        )
    return order, []


def _compile(
    files: list[LoadedFile],
) -> tuple[list[CompiledRule], list[rf.Condition], list[Problem]]:
    """Every rule in force compiled: its leaves (added to one list for all
    rules) and conjuncts, with the problems of rules too complex to expand."""
    rules: list[CompiledRule] = []
    leaves: list[rf.Condition] = []
    problems: list[Problem] = []
    for f in files:
        for i, rule in enumerate(f.model.rules):
            if rule.status == "retired":
                continue
            line, column = (n + 1 for n in f.raw["rules"].lc.item(f.rule_place(i)))
            start = len(leaves)
            expr = compile_expr(rule.when, leaves)
            try:
                conjuncts = to_dnf(expr)
            except OverflowError:
                problems.append(
                    Problem(
                        f.path,
                        line,
                        column,
                        f"the condition expands to more than "
                        f"{MAX_CONJUNCTS} alternatives",
                        rule_id=rule.id,
                        hint="split the rule, or move finding "
                        "tests out of any/at_least lists",
                        code="too-complex",
                    )
                )
                conjuncts = []
            used = sorted(
                {int(k) for c in conjuncts for kind, k, _ in c if kind == "L"}
            )
            rules.append(
                CompiledRule(
                    rule,
                    f.model.ruleset,
                    f.path,
                    line,
                    expr,
                    used or list(range(start, len(leaves))),
                    conjuncts,
                    produced_by(rule),
                    column=column,
                )
            )
    return rules, leaves, problems


def _governance(
    files: list[LoadedFile], approved_only: bool, today: date
) -> list[Problem]:
    """Rules a deployment refuses: not approved, or past their review date."""
    out = []
    for site in rule_sites(files):
        rule = site.rule
        line, col = site.at(None)
        if rule.status == "retired":
            out.append(
                Problem(
                    site.file.path,
                    line,
                    col,
                    "the rule is retired and does not run",
                    rule_id=rule.id,
                    hint="delete it when no longer needed",
                    severity="warning",
                    code="retired",
                )
            )
        if not approved_only or rule.status == "retired":
            continue  # a retired rule does not run: nothing to approve
        unreviewed = [k for k in ("reviewer", "reviewed") if getattr(rule, k) is None]
        if rule.status != "approved" or unreviewed:
            said = (
                "the rule is a draft"
                if rule.status == "draft"
                else "the rule is not marked approved"
                if rule.status is None
                else f"the rule is approved without {' and '.join(unreviewed)}"
            )
            out.append(
                Problem(
                    site.file.path,
                    line,
                    col,
                    f"{said}; this deployment accepts approved rules only",
                    rule_id=rule.id,
                    hint="have it reviewed, then set `status: approved`, "
                    "`reviewer` and `reviewed`",
                    code="not-approved",
                )
            )
        if rule.reviewed is not None and rule.reviewed > today:
            out.append(
                Problem(
                    site.file.path,
                    line,
                    col,
                    f"the rule's review is dated {rule.reviewed}, after today",
                    rule_id=rule.id,
                    hint="give the date the review took place",
                    code="review-in-future",
                )
            )
        if rule.review_due is not None and rule.review_due < today:
            out.append(
                Problem(
                    site.file.path,
                    line,
                    col,
                    f"the rule's review was due on {rule.review_due}",
                    rule_id=rule.id,
                    hint="review it and set a new `review_due`",
                    code="review-overdue",
                )
            )
    return out


class KnowledgeBase:
    """Rule files and models, compiled and ready to evaluate many cases.

    Loading is all or nothing: any error in any rule file refuses the whole
    knowledge base with every problem listed (:class:`RuleFileError`).
    """

    def __init__(
        self,
        files: list[LoadedFile],
        models: dict[str, ScoringModel],
        catalogue: Catalogue,
        content_hash: str,
    ) -> None:
        self.files = files
        self.models = models
        self.catalogue = catalogue
        self.calculations = [c for f in files for c in f.model.calculations]
        self.point_scores = [p for f in files for p in f.model.point_scores]
        self.rules, self.leaves, problems = _compile(files)
        self.order, cycle_problems = _order(self.rules)
        problems += cycle_problems
        problems += self._capacity()
        if any(p.severity == "error" for p in problems):
            raise RuleFileError(problems)
        self.gates: list[list[str]] = []
        self.used_leaves: set[tuple[int, bool]] = set()
        self.matcher = Matcher(
            self._definition,
            self._on_fire,
            lambda: self._findings_used,
            max_firings=max(100, 20 * len(self.rules)),
        )
        negated = {f for r in self.rules for f in r.negated_findings()}
        self._settled: dict[int, list[tuple[str, bool]]] = {
            k: [
                (f, all(r.stratum < k for r in self.rules if f in r.produces))
                for f in sorted(negated)
            ]
            for k in range(len(self.gates))
        }
        self.info = KnowledgeBaseInfo(
            content_hash=content_hash,
            rulesets={f.model.ruleset.id: f.model.ruleset.version for f in files},
            models={m.id: m.version for m in models.values()},
        )

    def settled_below(self, stratum: int) -> list[tuple[str, bool]]:
        """Negated findings, each with whether all its producers are below ``stratum``.

        Returns:
            (finding, settled) pairs.
        """
        return self._settled.get(stratum, [])

    def _definition(self, action_for: Any) -> dict[str, Any]:
        definition, self.used_leaves, self._findings_used, gates = durable_definition(
            self.rules, action_for
        )
        self.gates = [gates.get(k, []) for k in range(max(gates, default=-1) + 1)]
        return definition

    def _capacity(self) -> list[Problem]:
        out = []
        total = sum(max(1, len(r.conjuncts)) for r in self.rules)
        if total > MAX_DURABLE_RULES:
            r = self.rules[-1]
            out.append(
                Problem(
                    r.file,
                    1,
                    1,
                    f"the knowledge base compiles to {total} matcher rules; "
                    f"durable-rules allows at most {MAX_DURABLE_RULES}",
                    hint="split any/at_least conditions over findings into "
                    "separate rules, or remove rulesets",
                    code="capacity",
                )
            )
        uses: dict[str, int] = {}
        for r in self.rules:
            for c in r.conjuncts:
                for kind, key, _ in c:
                    if kind == "F":
                        uses[str(key)] = uses.get(str(key), 0) + 1
        for finding, n in uses.items():
            if n > MAX_PATTERNS_PER_FINDING:
                out.append(
                    Problem(
                        self.rules[0].file,
                        1,
                        1,
                        f"finding `{finding}` is tested by {n} matcher rules; "
                        f"durable-rules fails above 64",
                        hint="introduce an intermediate finding",
                        code="capacity",
                    )
                )
        return out

    def _on_fire(self, session: Session, rule_index: int, conjunct: int) -> list[str]:
        return self.rules[rule_index].produces

    @classmethod
    def load(
        cls,
        rules: Path | str | Iterable[Path | str] | None = None,
        models: Path | str | None = None,
        *,
        catalogue: Catalogue | None = None,
        approved_only: bool = False,
        today: date | None = None,
    ) -> KnowledgeBase:
        """Load rule files and models.

        Args:
            rules: A folder, a file, or several; default the bundled ``rules/``.
            models: A folder of model folders; default the bundled ``models/``.
            catalogue: The fact catalogue; default the engine's.
            approved_only: Refuse rules whose status is not ``approved`` or
                whose ``review_due`` date is before ``today``.
            today: The date review dates are judged against; default today.

        Raises:
            RuleFileError: With every problem of every file, if any is an error.
            ModelError: If a model cannot be loaded.
        """
        catalogue = catalogue or default_catalogue()
        if rules is None:
            rule_inputs = [default_rules_dir()]
        elif isinstance(rules, Path | str):
            rule_inputs = [Path(rules)]
        else:
            rule_inputs = [Path(p) for p in rules]
        missing = [p for p in rule_inputs if not p.exists()]
        if missing:
            raise RuleFileError(
                [
                    Problem(
                        str(p),
                        0,
                        0,
                        "no such file or folder",
                        hint="give a rule file or a folder of them",
                        code="missing",
                    )
                    for p in missing
                ]
            )
        paths = [_shown(p) for p in rule_file_paths(rule_inputs)]
        if not paths:
            raise RuleFileError(
                [
                    Problem(
                        str(rule_inputs[0]),
                        0,
                        0,
                        "no rule files (*.yaml or *.yml) found",
                        code="missing",
                    )
                ]
            )
        model_dir = default_models_dir() if models is None else Path(models)
        if models is not None and not model_dir.is_dir():
            raise ModelError(
                f"{model_dir}: no such folder; give a folder of model folders "
                "(the bundled one is models/)"
            )
        loaded_models = load_models(model_dir) if model_dir.exists() else {}

        files: list[LoadedFile] = []
        problems: list[Problem] = []
        for path in paths:
            loaded, found = read_rule_file(path)
            problems += found
            if loaded is not None:
                files.append(loaded)
        # Every file that parsed is checked, even when another did not, and so
        # are the valid rules of a file with schema errors: all problems of
        # all files in one run. A finding (or point score) defined only where
        # a file did not parse would look undefined, so those checks wait.
        unreadable = bool(problems)
        checked = check_rule_files(files, catalogue, set(loaded_models))
        if unreadable:
            checked = [p for p in checked if p.code not in _WAIT_FOR_SCHEMA]
        problems += checked
        problems += analyse(files, catalogue)
        problems += _governance(files, approved_only, today or date.today())
        # Each file's problems together, by line, schema and other checks
        # alike; the same problem once (a banded item's unknown fact is found
        # in each of its bands).
        problems = list(dict.fromkeys(problems))
        order = {str(path): i for i, path in enumerate(paths)}
        problems.sort(key=lambda p: (order.get(p.path, len(order)), p.line))
        if any(p.severity == "error" for p in problems):
            # A chaining cycle is found in the compiled rules: looked for now
            # too, so that it is listed with the other problems, not after
            # they are fixed.
            rules_found, _, too_complex = _compile(files)
            problems += too_complex + _order(rules_found)[1]
            problems.sort(key=lambda p: (order.get(p.path, len(order)), p.line))
            raise RuleFileError(problems)
        artifacts = [m.folder / "model.skops" for m in loaded_models.values()]
        content = _digest(paths + [a for a in artifacts if a.exists()])
        kb = cls(files, loaded_models, catalogue, content)
        kb.warnings = [p for p in problems if p.severity != "error"]
        log.info(
            "loaded knowledge base: %d rules in %d rulesets, %d models",
            len(kb.rules),
            len(files),
            len(loaded_models),
        )
        return kb

    warnings: list[Problem] = []

    def evaluate(
        self,
        case: CaseInput,
        *,
        as_of: AsOf = None,
        use_conditions: bool = True,
    ) -> Assessment:
        """Evaluate one case.

        Args:
            case: A :class:`Case`, a FHIR Bundle as a dict, or a path to a FHIR
                bundle or case file.
            as_of: The evaluation time; default now; ``"last"`` for the
                record's last entry (see :meth:`Case.last_time`). A datetime
                without an offset is UTC; a date alone is the end of that day
                (23:59:59 UTC), as ``--as-of`` takes it. Readings after it are
                ignored, so a case evaluates the same way on any day.
            use_conditions: False leaves the record's problem list out (to
                compare the engine's conclusions with it).

        Raises:
            InputError: If the input cannot be read, or ``as_of`` is "last" and
                the record has no dated entries.
        """
        from .evaluation import evaluate_case

        chosen = self._case(case, use_conditions)
        return evaluate_case(self, chosen, self._when(chosen, as_of, datetime.now(UTC)))

    def evaluate_many(
        self,
        cases: Sequence[CaseInput],
        *,
        as_of: AsOf = None,
        use_conditions: bool = True,
    ) -> list[Assessment]:
        """Evaluate several cases; models score them in one call each.

        Args:
            cases: Cases, FHIR Bundles as dicts, or paths, as :meth:`evaluate`
                takes them.
            as_of: One evaluation time for all (default: now, taken once;
                a date is its end, as for :meth:`evaluate`); ``"last"`` for
                each record's own last entry.
            use_conditions: False leaves the problem lists out.

        Returns:
            One assessment per case, in order.

        Raises:
            InputError: If an input cannot be read, or ``as_of`` is "last" and a
                record has no dated entries; nothing is evaluated then.
            TypeError: If ``cases`` is one input (a path, a text, a mapping or
                a Case) rather than a sequence of them.
        """
        from .evaluation import evaluate_cases

        if isinstance(cases, str | Path | dict | Case):
            raise TypeError(
                "evaluate_many takes a list of inputs, got one "
                f"{type(cases).__name__}; pass [input], or use evaluate()"
            )
        now = datetime.now(UTC)
        chosen = [self._case(c, use_conditions) for c in cases]
        return evaluate_cases(self, chosen, [self._when(c, as_of, now) for c in chosen])

    def _case(self, case: CaseInput, conditions: bool) -> Case:
        from .inputs import read_input, read_input_data

        if isinstance(case, str | Path):
            case = read_input(Path(case), catalogue=self.catalogue)
        elif isinstance(case, dict):
            case = read_input_data(case, source="<bundle>", catalogue=self.catalogue)
        if not isinstance(case, Case):
            raise InputError(
                "<input>",
                "",
                f"cannot evaluate a {type(case).__name__}",
                "pass a Case, a FHIR Bundle dict or a file path",
            )
        return case if conditions else case.without_conditions()

    @staticmethod
    def _when(case: Case, as_of: object, now: datetime) -> datetime:
        if as_of == "last":
            last = case.last_time()
            if last is None:
                raise InputError(
                    case.source or case.case_id,
                    "as_of",
                    "`last`: the record has no dated entries",
                    "give the evaluation time as a datetime",
                )
            return last
        if as_of is None:
            return now
        if isinstance(as_of, date):  # a datetime too
            return evaluation_time(as_of)
        raise InputError(
            case.source or case.case_id,
            "as_of",
            f"cannot use {as_of!r} as the evaluation time",
            'pass a datetime, a date (its end), "last" or None (now)',
        )
