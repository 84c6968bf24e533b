"""Compiling validated rulesets into one durable-rules ruleset definition.

Each rule's ``when`` is split into *leaves* (finding-free subtrees, decided in
three values by :mod:`engine.leaves`) and *finding references* (chained by
durable-rules). The rule is rewritten in disjunctive normal form over those
literals; each conjunct becomes one durable rule whose patterns are:

- one ``{"t": "leaf", "k": L, "v": true|false}`` fact per leaf literal,
- one ``{"t": "finding", "f": F}`` fact per finding it needs,
- a ``none`` pattern per finding it needs to be absent, plus a ``gate`` fact
  that the engine asserts only after every lower stratum has finished, so that
  "not finding F" is tested once F is settled (stratified negation). The
  conjuncts of one stratum share a gate (one fact to assert, not one per
  conjunct), up to MAX_PATTERNS_PER_FINDING of them per gate fact.

Leaves and findings are separate small facts, rather than one patient fact
with many attributes, because durable-rules fails (error 303) when one fact
satisfies more than 64 conditions at once. No fact carries an ``id`` key:
durable-rules takes ``id`` as the fact's identity, and two facts with the same
``id`` are one fact to it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from . import ruleformat as rf

__all__ = [
    "And",
    "CompiledRule",
    "Expr",
    "Find",
    "Leaf",
    "MAX_CONJUNCTS",
    "MAX_DURABLE_RULES",
    "MAX_PATTERNS_PER_FINDING",
    "Not",
    "Or",
    "AtLeast",
    "compile_expr",
    "mentions_finding",
    "to_dnf",
    "produced_by",
]

# durable-rules 2.0.28 hangs registering more than 512 rules in one ruleset and
# fails when one fact satisfies more than 64 conditions (notes, "capacity").
MAX_DURABLE_RULES = 500
MAX_PATTERNS_PER_FINDING = 60
MAX_CONJUNCTS = 64


@dataclass(frozen=True)
class Leaf:
    """A finding-free condition, decided outside the matcher."""

    index: int


@dataclass(frozen=True)
class Find:
    """A reference to a finding."""

    id: str


@dataclass(frozen=True)
class Not:
    """Negation."""

    child: Expr


@dataclass(frozen=True)
class And:
    """Conjunction."""

    children: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """Disjunction."""

    children: tuple[Expr, ...]


@dataclass(frozen=True)
class AtLeast:
    """At least k of the children."""

    k: int
    children: tuple[Expr, ...]


Expr = Leaf | Find | Not | And | Or | AtLeast
Literal = tuple[str, str | int, bool]  # ("L", leaf index, wanted) / ("F", id, present)


def mentions_finding(cond: rf.Condition) -> bool:
    if isinstance(cond, rf.FindingTest):
        return True
    if isinstance(cond, rf.AllOf):
        return any(mentions_finding(c) for c in cond.all)
    if isinstance(cond, rf.AnyOf):
        return any(mentions_finding(c) for c in cond.any)
    if isinstance(cond, rf.AtLeastOf):
        return any(mentions_finding(c) for c in cond.of)
    if isinstance(cond, rf.Not):
        return mentions_finding(cond.not_)
    return False


def compile_expr(cond: rf.Condition, leaves: list[rf.Condition]) -> Expr:
    """Turn a condition into an expression; finding-free subtrees become leaves.

    ``leaves`` is appended to; a Leaf's index points into it.
    """
    if not mentions_finding(cond):
        leaves.append(cond)
        return Leaf(len(leaves) - 1)
    if isinstance(cond, rf.FindingTest):
        return Find(cond.finding)
    if isinstance(cond, rf.AllOf):
        return And(tuple(compile_expr(c, leaves) for c in cond.all))
    if isinstance(cond, rf.AnyOf):
        return Or(tuple(compile_expr(c, leaves) for c in cond.any))
    if isinstance(cond, rf.AtLeastOf):
        return AtLeast(cond.at_least, tuple(compile_expr(c, leaves) for c in cond.of))
    if isinstance(cond, rf.Not):
        return Not(compile_expr(cond.not_, leaves))
    raise TypeError(type(cond).__name__)


def _product(parts: list[list[frozenset[Literal]]]) -> list[frozenset[Literal]]:
    out: list[frozenset[Literal]] = [frozenset()]
    for options in parts:
        out = [a | b for a in out for b in options]
        if len(out) > MAX_CONJUNCTS * 4:
            raise OverflowError
    return out


def to_dnf(expr: Expr, negated: bool = False) -> list[frozenset[Literal]]:
    """Disjunctive normal form: a list of conjuncts of literals.

    Contradictory conjuncts (a literal and its negation) are dropped.

    Raises:
        OverflowError: If the form exceeds MAX_CONJUNCTS conjuncts.
    """
    out: list[frozenset[Literal]]
    if isinstance(expr, Leaf):
        out = [frozenset({("L", expr.index, not negated)})]
    elif isinstance(expr, Find):
        out = [frozenset({("F", expr.id, not negated)})]
    elif isinstance(expr, Not):
        out = to_dnf(expr.child, not negated)
    elif isinstance(expr, And | Or):
        conjunctive = isinstance(expr, And) != negated
        parts = [to_dnf(c, negated) for c in expr.children]
        out = _product(parts) if conjunctive else [c for p in parts for c in p]
    else:
        n = len(expr.children)
        k = expr.k if not negated else n - expr.k + 1
        if k <= 0:
            return [frozenset()]
        if k > n:
            return []
        out = []
        for combo in itertools.combinations(expr.children, k):
            out.extend(_product([to_dnf(c, negated) for c in combo]))
            if len(out) > MAX_CONJUNCTS:
                raise OverflowError
    kept: list[frozenset[Literal]] = []
    for conj in out:
        if not any((kind, key, not want) in conj for kind, key, want in conj):
            if conj not in kept:
                kept.append(conj)
    if len(kept) > MAX_CONJUNCTS:
        raise OverflowError
    return kept


def produced_by(rule: rf.Rule) -> list[str]:
    """The ids a rule asserts (findings, diagnoses, recommendations)."""
    out = []
    for action in rule.then:
        if isinstance(action, rf.FindingAction):
            out.append(action.finding)
        elif isinstance(action, rf.DiagnosisAction):
            out.append(action.diagnosis.id)
        elif isinstance(action, rf.RecommendationAction):
            out.append(action.recommendation.id)
    return out


@dataclass
class CompiledRule:
    """A rule ready to run: leaves, conjuncts, stratum and durable names."""

    rule: rf.Rule
    ruleset: rf.Header
    file: str
    line: int
    expr: Expr
    leaf_indices: list[int]
    conjuncts: list[frozenset[Literal]]
    produces: list[str]
    stratum: int = 0
    durable_names: list[str] = field(default_factory=list)
    column: int = 1

    @property
    def source(self) -> str:
        """The rule's citation, or the ruleset's."""
        return self.rule.source or self.ruleset.source

    def negated_findings(self) -> set[str]:
        """Findings some conjunct needs to be absent."""
        return {
            str(k)
            for c in self.conjuncts
            for kind, k, want in c
            if kind == "F" and not want
        }

    def positive_findings(self) -> set[str]:
        """Findings some conjunct needs to be present."""
        return {
            str(k)
            for c in self.conjuncts
            for kind, k, want in c
            if kind == "F" and want
        }


def durable_definition(
    rules: list[CompiledRule], action_for: Any
) -> tuple[dict[str, Any], set[tuple[int, bool]], set[str], dict[int, list[str]]]:
    """Build the durable ruleset definition for compiled rules.

    Args:
        rules: Compiled rules with strata set.
        action_for: ``action_for(rule_index, conjunct_index) -> callable(c)``.

    Returns:
        The definition, the leaf literals any pattern uses, the findings any
        pattern uses, and the gate names to assert per stratum.
    """
    definition: dict[str, Any] = {}
    used_leaves: set[tuple[int, bool]] = set()
    used_findings: set[str] = set()
    gates: dict[int, list[str]] = {}
    gated: dict[int, int] = {}  # conjuncts behind a gate so far, per stratum
    for ri, crule in enumerate(rules):
        crule.durable_names = []
        for ci, conj in enumerate(crule.conjuncts):
            name = f"r{ri}_{ci}"
            patterns: list[dict[str, Any]] = []
            # A gate first, then positive patterns, `none` patterns last: durable
            # evaluates a `none` against the facts joined before it.
            if any(kind == "F" and not want for kind, _k, want in conj) or not conj:
                k = crule.stratum
                group = gated.get(k, 0) // MAX_PATTERNS_PER_FINDING
                gated[k] = gated.get(k, 0) + 1
                gate = f"s{k}_{group}"
                if gate not in gates.setdefault(k, []):
                    gates[k].append(gate)
                patterns.append({"g": {"$and": [{"t": "gate"}, {"g": gate}]}})
            ordered = sorted(
                conj, key=lambda lit: (lit[0] == "F" and not lit[2], str(lit))
            )
            for n, (kind, key, want) in enumerate(ordered):
                if kind == "L":
                    used_leaves.add((int(key), want))
                    patterns.append(
                        {
                            f"l{n}": {
                                "$and": [{"t": "leaf"}, {"k": int(key)}, {"v": want}]
                            }
                        }
                    )
                elif want:
                    used_findings.add(str(key))
                    patterns.append(
                        {
                            f"f{n}": {
                                "$and": [{"t": "finding"}, {"f": key}, {"u": False}]
                            }
                        }
                    )
                else:
                    used_findings.add(str(key))
                    patterns.append(
                        {f"n{n}$not": {"$and": [{"t": "finding"}, {"f": key}]}}
                    )
            definition[name] = {"all": patterns, "run": action_for(ri, ci)}
            crule.durable_names.append(name)
    return definition, used_leaves, used_findings, gates
