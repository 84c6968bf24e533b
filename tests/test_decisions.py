"""Deciding a leaf without its evidence gives the value its full evaluation gives.

The three-valued pass reads leaves through engine.decisions (compiled, with
combinations that stop at their deciding part); conclusions show
engine.leaves.evaluate_leaf's result. If the two disagreed, a rule could fire
on a value its evidence contradicts. Checked on every leaf of the bundled
rules, for every scenario of the bundled rule tests and, where present, every
shared Synthea bundle.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from engine import Case, KnowledgeBase, read_input
from engine.casefile import read_case_data
from engine.decisions import decide_leaf
from engine.evaluation import _scores, _view
from engine.leaves import evaluate_leaf
from engine.points import Points
from engine.ruletests import read_rule_tests, rule_test_paths

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fhir"
BUNDLES = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []


def _scenarios(kb: KnowledgeBase) -> list[tuple[str, Case, datetime]]:
    out = []
    for path in rule_test_paths([ROOT / "rules"]):
        tests, _raw, problems = read_rule_tests(path)
        assert tests is not None and not problems, problems
        for test in tests.tests:
            case = read_case_data(test.given, source=path.name, catalogue=kb.catalogue)
            when = test.as_of if isinstance(test.as_of, datetime) else None
            last = case.last_time()
            if when is None and last is not None:
                out.append((f"{path.name}: {test.name}", case, last))
    return out


def _disagreements(kb: KnowledgeBase, case: Case, as_of: datetime) -> list[str]:
    view = _view(kb, case, as_of)
    scores = _scores(kb, view)
    points = Points(view, kb.point_scores, scores)
    out = []
    for i, cond in enumerate(kb.leaves):
        full = evaluate_leaf(view, cond, scores, points).value
        fast = decide_leaf(view, cond, scores, points)
        if full is not fast:
            out.append(f"leaf {i}: evaluate_leaf {full}, decide_leaf {fast}")
    return out


def test_rule_test_scenarios_decide_every_leaf_as_evaluated(kb: KnowledgeBase) -> None:
    scenarios = _scenarios(kb)
    assert len(scenarios) >= 50  # the bundled rule tests, most dated by a reading

    wrong = {
        name: bad
        for name, case, when in scenarios
        if (bad := _disagreements(kb, case, when))
    }

    assert wrong == {}


@pytest.mark.skipif(not BUNDLES, reason=f"no shared bundles at {SHARED}")
def test_shared_bundles_decide_every_leaf_as_evaluated(kb: KnowledgeBase) -> None:
    wrong = {}
    for path in BUNDLES:
        case = read_input(path, catalogue=kb.catalogue)
        last = case.last_time()
        assert last is not None
        if bad := _disagreements(kb, case, last):
            wrong[path.name] = bad

    assert wrong == {}
