"""Stratified negation with shared gate facts.

Every conjunct that tests a finding's absence waits for a gate fact of its
stratum. One gate fact opens many conjuncts at once, but durable-rules fails
(error 303) when one fact satisfies more than 64 conditions, so the compiler
splits a stratum's conjuncts into gates of at most MAX_PATTERNS_PER_FINDING.
"""

from __future__ import annotations

from pathlib import Path

from engine import Case, KnowledgeBase, Reading
from engine.compiler import MAX_PATTERNS_PER_FINDING

ROOT = Path(__file__).resolve().parents[1]
RULES_NEGATING = 130  # more than two gates' worth


def _rules(tmp_path: Path) -> Path:
    negating = "".join(
        f"""
  - id: not_severe_{i}
    title: Obese but not severely, reminder {i}
    when:
      all:
        - {{fact: bmi, at_least: 30 kg/m2}}
        - not: {{finding: severely_obese_{i % 3}}}
    then:
      - recommendation:
          id: reminder_{i}
          text: Reminder {i}.
          strength: weak
          certainty: 0.5
"""
        for i in range(RULES_NEGATING)
    )
    # Three negated findings: durable-rules also limits how many rules may
    # test one finding (the load-time capacity check).
    severe = "".join(
        f"""
  - id: severely_obese_{k}
    title: BMI 40 or more ({k})
    when:
      all:
        - {{fact: bmi, at_least: 40 kg/m2}}
        - {{fact: age, at_least: {18 + k} a, if_missing: true}}
    then:
      - finding: severely_obese_{k}
        display: Obesity class III
"""
        for k in range(3)
    )
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "gates.yaml").write_text(
        f"""ruleset:
  id: gates
  title: Many rules negating one finding
  version: 1.0.0
  source: WHO TRS 894 (BMI classes)
rules:
{severe}{negating}""",
        encoding="utf-8",
    )
    return folder


def _case(bmi: float) -> Case:
    return Case(case_id="c", readings={"bmi": [Reading(value=bmi, unit="kg/m2")]})


def test_a_stratum_shares_gates_of_at_most_the_pattern_limit(tmp_path: Path) -> None:
    kb = KnowledgeBase.load(_rules(tmp_path), ROOT / "models")

    gates = [g for stratum in kb.gates for g in stratum]

    expected = -(-RULES_NEGATING // MAX_PATTERNS_PER_FINDING)  # ceiling
    assert len(gates) == expected == 3


def test_every_rule_behind_a_shared_gate_fires(tmp_path: Path) -> None:
    kb = KnowledgeBase.load(_rules(tmp_path), ROOT / "models")

    obese = kb.evaluate(_case(33.0))
    severe = kb.evaluate(_case(42.0))

    assert obese.status == "complete", obese.problems
    assert {r.id for r in obese.recommendations} == {
        f"reminder_{i}" for i in range(RULES_NEGATING)
    }
    assert severe.status == "complete", severe.problems
    assert severe.recommendations == []
