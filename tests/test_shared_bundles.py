"""The engine on the 100 shared Synthea bundles (skipped when they are absent).

Each record is evaluated as of its own last recorded date. The agreement test
leaves each bundle's Condition resources out and compares the engine's
conclusions with them; it prints sensitivity and specificity per condition.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from cli import render
from engine import Assessment, KnowledgeBase, read_input
from engine.facts import Case

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fhir"
BUNDLES = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []

pytestmark = pytest.mark.skipif(not BUNDLES, reason=f"no shared bundles at {SHARED}")


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [read_input(p) for p in BUNDLES]


@pytest.fixture(scope="module")
def blind(kb: KnowledgeBase, cases: list[Case]) -> list[Assessment]:
    return [kb.evaluate(c, as_of=c.last_time(), use_conditions=False) for c in cases]


def test_every_bundle_evaluates_in_json_and_rich(
    kb: KnowledgeBase, cases: list[Case]
) -> None:
    assert len(cases) == 100
    for case in cases:
        result = kb.evaluate(case, as_of=case.last_time())
        assert result.status == "complete", (case.source, result.problems)
        doc = json.loads(result.model_dump_json())
        assert doc["notice"].startswith("Decision support only")
        for dx in doc["diagnoses"]:
            assert dx["system"] == "http://snomed.info/sct" and dx["code"].isdigit()
            assert dx["evidence"]["rules"]
        out = io.StringIO()
        render(result, Console(file=out, width=120))
        assert "not a medical device" in out.getvalue()


def _recorded(case: Case, concept: str) -> bool:
    end = case.last_recorded
    return any(
        c.concept == concept and (c.onset is None or end is None or c.onset <= end)
        for c in case.conditions
    )


def _agreement(
    cases: list[Case],
    results: list[Assessment],
    concepts: tuple[str, ...],
    engine: set[str],
) -> tuple[int, int, int, int, int]:
    tp = fp = tn = fn = undetermined = 0
    for case, result in zip(cases, results, strict=True):
        truth = any(_recorded(case, c) for c in concepts)
        found = {f.id for f in result.findings} | {d.id for d in result.diagnoses}
        said = bool(found & engine)
        if not said and any(
            u.rule_id in _DECIDING[concepts[0]] for u in result.undetermined
        ):
            undetermined += 1
            continue
        if truth and said:
            tp += 1
        elif truth:
            fn += 1
        elif said:
            fp += 1
        else:
            tn += 1
    return tp, fp, tn, fn, undetermined


_DECIDING = {
    "hypertension": {"bp_stage_1", "bp_stage_2"},
    "diabetes": {"diabetes_two_tests", "diabetes_repeated_test"},
    "prediabetes": {"prediabetes"},
    "chronic_kidney_disease": {"ckd_by_egfr", "ckd_by_albuminuria"},
}


def test_agreement_with_recorded_conditions(
    cases: list[Case], blind: list[Assessment], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        (
            "hypertension, stage 1 or 2",
            ("hypertension",),
            {"stage_1_hypertension", "stage_2_hypertension"},
        ),
        ("hypertension, stage 2 only", ("hypertension",), {"stage_2_hypertension"}),
        ("hypertension, stage 1 only", ("hypertension",), {"stage_1_hypertension"}),
        ("diabetes", ("diabetes",), {"diabetes"}),
        ("prediabetes", ("prediabetes",), {"prediabetes"}),
        (
            "chronic kidney disease",
            ("chronic_kidney_disease",),
            {"chronic_kidney_disease"},
        ),
    ]
    lines = [
        "condition | recorded | TP FP TN FN | undetermined | sensitivity | specificity"
    ]
    for label, concepts, engine in rows:
        tp, fp, tn, fn, und = _agreement(cases, blind, concepts, engine)
        assert tp + fp + tn + fn + und == len(cases)
        sens = tp / (tp + fn) if tp + fn else float("nan")
        spec = tn / (tn + fp) if tn + fp else float("nan")
        lines.append(
            f"{label} | {tp + fn} | {tp} {fp} {tn} {fn} | {und} | "
            f"{sens:.2f} | {spec:.2f}"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    # The blind run must not see the problem list at all.
    assert all(r.patient.conditions == [] for r in blind)


def test_criteria_coverage_on_the_shared_bundles(
    kb: KnowledgeBase,
    cases: list[Case],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Per ruleset: on how many bundles it was decided, and what was missing.

    Decided: some rule of the ruleset fired, or none of them is undetermined.
    """
    from collections import Counter

    results = [kb.evaluate(c, as_of=c.last_time()) for c in cases]
    rulesets = sorted(kb.info.rulesets)
    ruleset_of = {r.rule.id: r.ruleset.id for r in kb.rules}
    lines = ["ruleset | decided | undetermined | commonest missing facts"]
    for rs in rulesets:
        decided = 0
        missing: Counter[str] = Counter()
        for result in results:
            fired = any(ruleset_of[r] == rs for r in result.rules_fired)
            open_rules = [u for u in result.undetermined if u.ruleset == rs]
            if fired or not open_rules:
                decided += 1
            else:
                missing.update({m for u in open_rules for m in u.missing})
        top = ", ".join(f"{m} ({n})" for m, n in missing.most_common(3)) or "-"
        lines.append(f"{rs} | {decided} | {len(results) - decided} | {top}")
        assert 0 <= decided <= len(results)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert all(r.status == "complete" for r in results)


def test_a_patient_who_died_gets_no_conclusions_after_death(
    kb: KnowledgeBase, cases: list[Case]
) -> None:
    dead = [c for c in cases if c.deceased is not None]
    assert len(dead) == 18  # SOURCE.md: 18 patients died inside their record
    for case in dead:
        after = kb.evaluate(case, as_of=datetime(2026, 1, 1, tzinfo=UTC))
        assert after.status == "not_evaluable"
        assert after.recommendations == [] and after.diagnoses == []
        assert f"died on {case.deceased.date()}" in after.problems[0]  # type: ignore[union-attr]
        before = kb.evaluate(case, as_of="last")
        assert before.status == "complete"
        assert before.as_of < case.deceased  # type: ignore[operator]
