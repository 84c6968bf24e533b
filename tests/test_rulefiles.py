"""Broken rule files give located messages, and the knowledge base is refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import KnowledgeBase, RuleFileError

HEADER = """ruleset:
  id: test_rules
  title: Test rules
  version: 0.1.0
  source: test
rules:
"""


def _load(tmp_path: Path, body: str, name: str = "r.yaml") -> list[str]:
    (tmp_path / name).write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(tmp_path)
    return [str(p) for p in info.value.problems if p.severity == "error"]


def test_misspelled_fact_names_the_place_and_the_nearest_name(tmp_path: Path) -> None:
    body = """  - id: r1
    title: t
    when: {fact: sytolic_bp, at_least: 140 mmHg}
    then: [{finding: f1}]
"""
    [msg] = _load(tmp_path, body)
    assert msg == (
        f"{tmp_path / 'r.yaml'}:9:12: error [rule r1]: unknown fact `sytolic_bp`; "
        "did you mean `systolic_bp`?"
    )


def test_threshold_in_the_wrong_dimension(tmp_path: Path) -> None:
    body = """  - id: r1
    title: t
    when: {fact: systolic_bp, at_least: 140 mg/dL}
    then: [{finding: f1}]
"""
    [msg] = _load(tmp_path, body)
    assert msg.endswith(
        "error [rule r1]: `mg/dL` is not a unit of systolic_bp (Systolic blood "
        "pressure); use one of: mm[Hg]"
    )
    assert ":9:31:" in msg


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    body = """  - id: r1
    title: t
    when: {fact: systolic_bp, at_lest: 140 mmHg}
    then: [{finding: f1}]
"""
    msgs = _load(tmp_path, body)
    assert any(
        "unknown key `at_lest`" in m and "did you mean `at_least`?" in m for m in msgs
    )


def test_a_schema_error_does_not_hide_the_other_rules_problems(
    tmp_path: Path,
) -> None:
    # Four mistakes in one file are reported in one run, in line order: the
    # schema error, and the unknown fact, wrong unit and impossible range of
    # the rules that are otherwise valid. A finding asserted only by the
    # broken rule is not reported as never asserted.
    body = """  - id: r1
    title: t
    when: {fact: systolic_bp, at_lest: 140 mmHg}
    then: [{finding: f1}]
  - id: r2
    title: t
    when:
      all:
        - {finding: f1}
        - {fact: sytolic_bp, at_least: 140 mmHg}
    then: [{finding: f2}]
  - id: r3
    title: t
    when: {fact: diastolic_bp, at_least: 90 mg/dL}
    then: [{finding: f3}]
  - id: r4
    title: t
    when: {fact: hba1c, at_least: 7 %, below: 6.5 %}
    then: [{finding: f4, display: F4}]
"""
    msgs = _load(tmp_path, body)
    where = [m.split(": error")[0].rsplit(":", 2)[1:] for m in msgs]
    assert where == [["9", "31"], ["16", "12"], ["20", "32"], ["24", "12"]]
    assert "unknown key `at_lest`" in msgs[0]
    assert msgs[1].endswith("unknown fact `sytolic_bp`; did you mean `systolic_bp`?")
    assert "`mg/dL` is not a unit of diastolic_bp" in msgs[2]
    assert "never be true" in msgs[3]


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    body = """  - id: r1
    title: t: x: y
"""
    [msg] = _load(tmp_path, body)
    assert msg.startswith(f"{tmp_path / 'r.yaml'}:8:")
    assert "not valid YAML" in msg


def test_tab_and_duplicate_key_and_unsafe_tag(tmp_path: Path) -> None:
    assert "tab" in _load(tmp_path, "\t- id: r1\n")[0]
    dup = """  - id: r1
    id: r2
    title: t
    when: {fact: systolic_bp, at_least: 140 mmHg}
    then: [{finding: f1}]
"""
    assert "appears twice" in _load(tmp_path, dup)[0]
    tag = """  - id: !!python/object:os.system r1
    title: t
    when: {fact: systolic_bp, at_least: 140 mmHg}
    then: [{finding: f1}]
"""
    assert "tag" in _load(tmp_path, tag)[0]


def test_empty_and_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("", encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(tmp_path)
    assert str(info.value.problems[0]).endswith(
        "the file is empty; a rule file starts with `ruleset:` and has `rules:`"
    )
    (tmp_path / "r.yaml").write_bytes(HEADER.encode() + b"  - id: r\xff1\n")
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(tmp_path)
    assert "byte 0xff is not UTF-8" in str(info.value.problems[0])
    assert ":7:" in str(info.value.problems[0])


def test_finding_tested_but_never_asserted(tmp_path: Path) -> None:
    body = """  - id: r1
    title: t
    when: {finding: stage_9_hypertension}
    then: [{finding: f1, display: F1}]
"""
    [msg] = _load(tmp_path, body)
    assert "finding `stage_9_hypertension` is tested but no rule asserts it" in msg


def test_chaining_cycle_is_refused(tmp_path: Path) -> None:
    body = """  - id: r1
    title: t
    when: {finding: b}
    then: [{finding: a}]
  - id: r2
    title: t
    when: {finding: a}
    then: [{finding: b}]
"""
    msgs = _load(tmp_path, body)
    assert any(
        "chaining cycle: r1 -> r2 -> r1" in m or "chaining cycle: r2 -> r1 -> r2" in m
        for m in msgs
    )


def test_every_problem_of_every_file_in_one_run(tmp_path: Path) -> None:
    bad = """  - id: r1
    title: t
    when: {fact: sytolic_bp, at_least: 140 mmHg}
    then: [{finding: f1}]
  - id: r2
    title: t
    when: {fact: hba1c, at_least: 6.5}
    then: [{finding: f2}]
"""
    (tmp_path / "a.yaml").write_text(HEADER + bad, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        HEADER.replace("test_rules", "other")
        + bad.replace("r1", "r3").replace("r2", "r4"),
        encoding="utf-8",
    )
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(tmp_path)
    text = [str(p) for p in info.value.problems if p.severity == "error"]
    assert len(text) == 4
    assert any(
        "the threshold 6.5 for hba1c has no unit; write `6.5 %`" in t for t in text
    )


def test_bundled_knowledge_base_is_clean() -> None:
    kb = KnowledgeBase.load()
    assert kb.warnings == []
    assert {"blood_pressure", "diabetes", "kidney", "metformin"} <= set(
        kb.info.rulesets
    )
