"""One deliberately broken rule file per check, with the exact located message.

The files are in tests/data/broken_rules/. Each message is what an author sees
from `cdss rules check`: file:line:column, the rule, what was found and what to
write instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import KnowledgeBase, RuleFileError
from engine.errors import Problem

HERE = Path(__file__).resolve().parent / "data" / "broken_rules"
MODELS = Path(__file__).resolve().parents[1] / "models"

_MODEL_IDS = sorted(p.name for p in MODELS.iterdir() if (p / "card.json").exists())

# file -> (line, column, rule id, message, hint)
EXPECTED: dict[str, tuple[int, int, str | None, str, str]] = {
    "yaml_syntax.yaml": (
        8,
        13,
        None,
        "not valid YAML: mapping values are not allowed here",
        "fix the YAML syntax at that place",
    ),
    "tab.yaml": (
        8,
        1,
        None,
        "not valid YAML: a tab character; YAML indentation must use spaces",
        "replace the tab with spaces",
    ),
    "duplicate_key.yaml": (
        9,
        5,
        None,
        "not valid YAML: a key appears twice in the same "
        'mapping; found duplicate key "title" with value "second" '
        '(original value: "first")',
        "remove or rename one of them",
    ),
    "unsafe_tag.yaml": (
        8,
        12,
        None,
        "not valid YAML: a YAML tag (`!...`) that rule files do not allow",
        "remove the tag; rule files hold plain values only",
    ),
    "empty.yaml": (
        1,
        1,
        None,
        "the file is empty",
        "a rule file starts with `ruleset:` and has `rules:`",
    ),
    # The unknown key itself is pointed at, not its mapping's `fact:`.
    "unknown_key.yaml": (
        9,
        23,
        "r1",
        "unknown key `at_lest`; allowed here: fact, above, "
        "at_least, below, at_most, value, within, equals, one_of, min_readings, "
        "readings, lasting_more_than, if_missing",
        "did you mean `at_least`?",
    ),
    "unknown_key_block.yaml": (
        13,
        11,
        "r1",
        "unknown key `belwo`; allowed here: fact, above, "
        "at_least, below, at_most, value, within, equals, one_of, min_readings, "
        "readings, lasting_more_than, if_missing",
        "did you mean `below`?",
    ),
    "unknown_fact.yaml": (
        9,
        12,
        "r1",
        "unknown fact `sytolic_bp`",
        "did you mean `systolic_bp`?",
    ),
    "wrong_dimension.yaml": (
        9,
        31,
        "r1",
        "`mg/dL` is not a unit of systolic_bp (Systolic blood pressure)",
        "use one of: mm[Hg]",
    ),
    "unit_missing.yaml": (
        9,
        25,
        "r1",
        "the threshold 6.5 for hba1c has no unit",
        "write `6.5 %`",
    ),
    "implausible.yaml": (
        9,
        31,
        "r1",
        "1400 mm[Hg] is outside the plausible range of systolic_bp (40 to 300 mm[Hg])",
        "check the number and its unit",
    ),
    # Checked in the fact's own unit, whatever the unit written.
    "implausible_other_unit.yaml": (
        9,
        30,
        "r1",
        "3000 umol/L (33.9 mg/dL) is outside the plausible range of creatinine "
        "(0.1 to 25 mg/dL)",
        "check the number and its unit",
    ),
    "unit_pair.yaml": (
        9,
        30,
        "r1",
        "the cut points of `at_least` disagree: 2.26 mg/dL is 2.26 mg/dL, "
        "20 umol/L is 0.226 mg/dL",
        "give each unit the same cut point, converted (spec 0.2)",
    ),
    "text_fact_as_number.yaml": (
        9,
        12,
        "r1",
        "`hypertension` is a problem-list "
        "condition (yes or no), not a measured fact; it cannot "
        "be compared with a number",
        "write `condition: hypertension`",
    ),
    "unknown_condition.yaml": (
        9,
        12,
        "r1",
        "unknown condition `hypertenson`",
        "did you mean `hypertension`?",
    ),
    "unknown_score.yaml": (
        9,
        12,
        "r1",
        "unknown score `diabetes_progresion`; loaded models: " + ", ".join(_MODEL_IDS),
        "did you mean `diabetes_progression`?",
    ),
    "finding_never_asserted.yaml": (
        9,
        12,
        "r1",
        "finding `stage_2_hypertension` is tested but no rule asserts it",
        "",
    ),
    "never_true.yaml": (
        10,
        7,
        "r1",
        "these conditions on bmi can never all be true together",
        "check the thresholds; did you mean `any`?",
    ),
    "band_gap.yaml": (
        15,
        5,
        "high",
        "bands of bmi leave [25, 26) kg/m2 in no category (between mid and high)",
        "make each band start where the previous one ends",
    ),
    "band_gap_guarded.yaml": (
        21,
        5,
        "high",
        "bands of bmi leave [25, 26) kg/m2 in no category (between mid and high)",
        "make each band start where the previous one ends",
    ),
    "band_overlap.yaml": (
        11,
        5,
        "mid",
        "bands of bmi overlap: [25, 25] kg/m2 is in both low and mid",
        "use `below` in one band and `at_least` in the next",
    ),
    "cycle.yaml": (
        7,
        5,
        "r1",
        "chaining cycle: r1 -> r2 -> r1; these rules could fire for ever",
        "break the cycle: a rule must not depend, through findings, on what it asserts",
    ),
    "calculation_finding_cycle.yaml": (
        16,
        7,
        None,
        "calculation `bmi_calc` reads finding `obese`, which rests on `bmi`, "
        "the fact it calculates",
        "a calculation may read only findings that do not depend on its own result",
    ),
    "calculation_finding_unknown.yaml": (
        16,
        7,
        None,
        "calculation `bmi_calc`: obese_finding `obese_confirmed` is not asserted "
        "by any rule",
        "name a finding that some rule asserts",
    ),
    "points_in_points.yaml": (
        14,
        28,
        "b",
        "item `y` tests a point score; the scores are computed together, so an "
        "item cannot read another's total",
        "test the facts or findings that score reads",
    ),
    "points_finding_cycle.yaml": (
        11,
        31,
        "risk",
        "item `high` reads finding `high_risk`, which rests on the point score "
        "`risk` itself",
        "an item may read only findings that do not depend on its own score",
    ),
    "points_band_gap.yaml": (
        14,
        13,
        "risk",
        "item `age`: age [65, 66) a is in no band",
        "make each band start where the previous one ends",
    ),
    "points_band_overlap.yaml": (
        15,
        13,
        "rr",
        "item `rate`: respiratory_rate [20, 20] /min is in two bands",
        "use `below` in one band and `at_least` in the next",
    ),
    # Once, though each of the item's three bands names the fact.
    "points_unknown_fact.yaml": (
        11,
        9,
        "hr",
        "unknown fact `heart_rat`",
        "did you mean `heart_rate`?",
    ),
    "made_and_blocked.yaml": (
        12,
        5,
        "forbid",
        "recommendation `diet` is made by give "
        "and blocked by forbid under the very same condition",
        "one of the two rules is wrong; make the conditions differ",
    ),
}


def _problems(name: str) -> list[Problem]:
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(HERE / name, MODELS)
    return info.value.problems


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_file_gives_the_exact_located_message(name: str) -> None:
    [problem] = _problems(name)
    line, column, rule_id, message, hint = EXPECTED[name]
    assert (problem.line, problem.column, problem.rule_id) == (line, column, rule_id)
    assert problem.message == message
    assert problem.hint == hint
    assert problem.path.endswith(f"broken_rules/{name}")
    assert str(problem).startswith(f"{problem.path}:{line}:{column}: error")


def test_every_broken_file_has_an_expectation() -> None:
    files = {p.name for p in HERE.glob("*.yaml")}
    assert files - set(EXPECTED) == {"finding_unused.yaml", "duplicate_rule_id.yaml"}


def test_duplicate_rule_id_names_both_places() -> None:
    [problem] = _problems("duplicate_rule_id.yaml")
    assert (problem.line, problem.column, problem.rule_id) == (11, 5, "r1")
    assert problem.message.startswith("rule id `r1` is also used at ")
    assert problem.message.endswith("broken_rules/duplicate_rule_id.yaml:7")


def test_unused_finding_is_a_warning_and_the_file_loads() -> None:
    kb = KnowledgeBase.load(HERE / "finding_unused.yaml", MODELS)
    [warning] = kb.warnings
    assert warning.severity == "warning"
    assert (warning.line, warning.column) == (10, 12)
    assert warning.message == (
        "finding `obese` is asserted but no rule tests it and it has no display text"
    )


def test_non_utf8_and_enormous_files(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"ruleset:\n  title: caf\xe9\n")
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(bad, MODELS)
    [p] = info.value.problems
    assert (p.line, p.column, p.message) == (2, 13, "byte 0xe9 is not UTF-8")
    big = tmp_path / "big.yaml"
    big.write_text("# x\n" * 600_000)
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(big, MODELS)
    assert "a rule file may be at most 2,000,000" in info.value.problems[0].message


def test_all_problems_of_all_files_in_one_run() -> None:
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(
            [
                HERE / "unknown_fact.yaml",
                HERE / "unit_missing.yaml",
                HERE / "wrong_dimension.yaml",
                HERE / "cycle.yaml",
            ],
            MODELS,
        )
    codes = sorted(p.code for p in info.value.problems)
    # The four files share the ruleset id and the rule id r1: those are
    # reported too (3 ruleset ids, 3 rule ids), beside each file's own
    # problem. The chaining cycle is found among the other errors, not once
    # they are fixed.
    assert codes == [
        "cycle",
        *["duplicate-id"] * 6,
        "unit-dimension",
        "unit-missing",
        "unknown-fact",
    ]
    [cycle] = [p for p in info.value.problems if p.code == "cycle"]
    assert (cycle.path.endswith("cycle.yaml"), cycle.line, cycle.rule_id) == (
        True,
        7,
        "r1",
    )


@pytest.mark.parametrize(
    ("name", "band", "edited", "rule_id", "message"),
    [
        (
            # eGFR 45 falls in no band of the rules that share this guard, and
            # no other metformin rule has a band inside 45 to 46.
            "metformin.yaml",
            "at_least: 45 mL/min/1.73m2, below: 60 mL/min/1.73m2",
            "at_least: 46 mL/min/1.73m2, below: 60 mL/min/1.73m2",
            "metformin_may_continue_monitor_3_6_months",
            "bands of egfr leave [45, 46) mL/min/{1.73_m2} in no category "
            "(between metformin_contraindicated and "
            "metformin_may_continue_monitor_3_6_months)",
        ),
        (
            # Adults' BMI 25.0 to 25.9 in no category (the Asian action points
            # are another family: they do not fill it).
            "bmi.yaml",
            "at_least: 25 kg/m2, below: 30 kg/m2",
            "at_least: 26 kg/m2, below: 30 kg/m2",
            "bmi_overweight",
            "bands of bmi leave [25, 26) kg/m2 in no category "
            "(between bmi_healthy_weight and bmi_overweight)",
        ),
    ],
)
def test_a_guarded_band_edited_by_one_is_a_gap(
    tmp_path: Path, name: str, band: str, edited: str, rule_id: str, message: str
) -> None:
    rules = Path(__file__).resolve().parents[1] / "rules"
    for path in rules.glob("*.yaml"):
        if not path.name.endswith(".test.yaml"):
            (tmp_path / path.name).write_bytes(path.read_bytes())
    text = (rules / name).read_text("utf-8")
    assert text.count(band) == 1
    (tmp_path / name).write_text(text.replace(band, edited), encoding="utf-8")
    KnowledgeBase.load(rules, MODELS)  # as shipped: no problem
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(tmp_path, MODELS)
    gaps = [p for p in info.value.problems if p.code == "band-gap"]
    assert [(p.rule_id, p.message) for p in gaps] == [(rule_id, message)]


def test_bands_with_thresholds_already_wrong_add_no_band_noise(tmp_path: Path) -> None:
    # A unit of another dimension and a never-true band are reported as such;
    # the band analysis does not add "(-inf, inf) is in both" or an overlap of
    # an empty range on top.
    src = Path(__file__).resolve().parent / "data" / "band_with_bad_thresholds.yaml"
    (tmp_path / "ldl.yaml").write_bytes(src.read_bytes())
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(tmp_path, MODELS)
    assert sorted((p.rule_id, p.code) for p in info.value.problems) == [
        ("ldl_kg", "unit-dimension"),
        ("ldl_never", "never-true"),
    ]


def test_two_rules_under_the_same_band_are_not_an_overlap(tmp_path: Path) -> None:
    # Two conclusions under "adult, BMI 30 or more" share one band.
    rules = "".join(
        f"""
  - id: {rid}
    title: t
    when:
      all:
        - {{fact: age, at_least: 20 a}}
        - {{fact: bmi, {band}}}
    then: [{{finding: {rid}, display: {rid}}}]
"""
        for rid, band in (
            ("lean", "below: 25 kg/m2"),
            ("over", "at_least: 25 kg/m2, below: 30 kg/m2"),
            ("obese", "at_least: 30 kg/m2"),
            ("obese_reminder", "at_least: 30 kg/m2"),
        )
    )
    head = "ruleset: {id: b, title: t, version: 0.0.1, source: tests}\nrules:"
    (tmp_path / "b.yaml").write_text(head + rules, encoding="utf-8")
    kb = KnowledgeBase.load(tmp_path, MODELS)
    assert [p.code for p in kb.warnings] == []


def test_a_point_score_problem_is_labelled_as_a_point_score() -> None:
    [problem] = _problems("points_band_gap.yaml")
    assert str(problem).startswith(
        f"{problem.path}:14:13: error [point score risk]: item `age`"
    )
    [in_rule] = _problems("never_true.yaml")
    assert " error [rule r1]: " in str(in_rule)
