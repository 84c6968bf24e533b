"""Certainty in assessments: evidence against a conclusion, and a model that
disagrees strongly with a rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from engine import KnowledgeBase, read_input

ROOT = Path(__file__).resolve().parents[1]
BENIGN = ROOT / "tests" / "data" / "case-breast-cytology-benign.yaml"

RULES = """ruleset:
  id: certainty_demo
  title: Certainty demonstration
  version: 0.1.0
  source: tests
rules:
  - id: refer_by_rule
    title: A rule that refers everyone with an aspirate
    when: {fact: breast_fna_worst_area, at_least: 1}
    then:
      - recommendation:
          id: refer
          text: Refer
          strength: moderate
          certainty: 0.8
          adjusted_by: breast_cytology
  - id: older_woman
    title: A rule that supports a diagnosis
    when: {fact: age, at_least: 50 a}
    then:
      - diagnosis: {id: demo_dx, display: Demo, snomed: "123456", certainty: 0.8}
  - id: contradiction
    title: Evidence against the diagnosis
    when: {fact: age, below: 60 a}
    then:
      - against: {conclusion: demo_dx, certainty: 0.5, reason: younger than 60}
"""


def _kb(tmp_path: Path) -> KnowledgeBase:
    (tmp_path / "demo.yaml").write_text(RULES, encoding="utf-8")
    return KnowledgeBase.load(tmp_path, ROOT / "models")


def test_evidence_against_lowers_a_diagnosis(tmp_path: Path) -> None:
    result = _kb(tmp_path).evaluate(
        read_input(BENIGN), as_of=datetime(2025, 6, 1, tzinfo=UTC)
    )
    [dx] = result.diagnoses
    # (0.8 - 0.5) / (1 - 0.5)
    assert dx.certainty == 0.6


def test_a_model_that_argues_strongly_against_a_rule_is_flagged(tmp_path: Path) -> None:
    result = _kb(tmp_path).evaluate(
        read_input(BENIGN), as_of=datetime(2025, 6, 1, tzinfo=UTC)
    )
    [rec] = [r for r in result.recommendations if r.id == "refer"]
    score = {s.name: s for s in result.scores}["breast_cytology"]
    assert score.value is not None and score.value < 0.05
    assert rec.disagreement is True
    assert rec.certainty < 0.8
    assert "the rule and the model disagree strongly" in rec.certainty_method
    assert any("argues strongly against it" in n for n in result.notes)
