"""How and why-not explanations, for fixed cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from engine import KnowledgeBase, read_input
from engine.explain import how, why_not

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"
AS_OF = datetime(2024, 4, 2, 23, 59, tzinfo=UTC)


def test_how_tree_of_diabetes_chains_to_the_two_tests(kb: KnowledgeBase) -> None:
    result = kb.evaluate(read_input(EXAMPLE), as_of=AS_OF)
    [tree] = how(result, "diabetes")
    # Both rules read the same A1C results: one piece of evidence, 0.95.
    assert tree.kind == "diagnosis" and tree.value == pytest.approx(0.95)
    assert {r.rule_id for r in tree.rules} == {
        "diabetes_two_tests",
        "diabetes_repeated_test",
    }
    assert all(r.file.endswith("diabetes.yaml") and r.line > 0 for r in tree.rules)
    assert all("Diabetes Care 2025" in r.source for r in tree.rules)
    children = {c.id: c for c in tree.because}
    assert set(children) == {"hba1c_diabetes_range", "fpg_diabetes_range"}
    [fpg] = children["fpg_diabetes_range"].facts
    assert (fpg.name, fpg.value, fpg.unit) == ("fasting_glucose", 131.0, "mg/dL")
    assert fpg.time == datetime(2024, 4, 2, tzinfo=UTC)


def test_how_tree_of_a_recommendation_shows_the_model_score(kb: KnowledgeBase) -> None:
    result = kb.evaluate(read_input(EXAMPLE), as_of=AS_OF)
    [tree] = how(result, "closer_diabetes_follow_up")
    [score] = [c for c in tree.because if c.kind == "score"]
    assert score.id == "diabetes_progression"
    assert 0.7 <= score.value <= 1.0  # type: ignore[operator]
    assert len(score.contributions) == 3
    assert {f.name for f in score.facts} >= {"bmi", "mean_arterial_pressure"}


def test_why_not_names_the_failed_threshold_and_the_actual_value(
    kb: KnowledgeBase,
) -> None:
    case = read_input(EXAMPLE)
    answer = why_not(kb, case, "metformin_may_initiate_or_continue", AS_OF)
    assert not answer.reached
    by_rule = {a.rule.rule_id: a for a in answer.attempts}
    yearly = by_rule["metformin_may_continue_monitor_yearly"]
    assert yearly.state == "false"
    [obstacle] = yearly.obstacles
    assert obstacle.actual == "egfr is 41 mL/min/{1.73_m2} (2024-04-02)"
    assert obstacle.change == "would hold if egfr were at least 60 mL/min/{1.73_m2}"
    assert yearly.smallest_change == obstacle.change


def test_why_not_takes_a_path_and_as_of_last_as_evaluate_does(
    kb: KnowledgeBase,
) -> None:
    target = "metformin_may_initiate_or_continue"
    by_path = why_not(kb, str(EXAMPLE), target, "last")
    by_case = why_not(kb, read_input(EXAMPLE), target, read_input(EXAMPLE).last_time())
    assert by_path == by_case
    assert not by_path.reached


def test_why_not_names_a_missing_fact(kb: KnowledgeBase) -> None:
    case = read_input(EXAMPLE).model_copy(update={"readings": {}})
    answer = why_not(kb, case, "stage_2_hypertension", AS_OF)
    [attempt] = answer.attempts
    assert attempt.state == "cannot be determined"
    assert {o.state for o in attempt.obstacles} == {"cannot be determined"}
    assert any("missing: systolic_bp" in o.actual for o in attempt.obstacles)
    assert any(
        o.change == "record systolic_bp (no systolic_bp within 12 months)"
        for o in attempt.obstacles
    )


def test_why_not_a_blocked_recommendation_gives_the_reason(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    text = EXAMPLE.read_text().replace(
        "1.4 mg/dL @ 2024-04-02", "3.5 mg/dL @ 2024-04-02"
    )
    path = tmp_path / "blocked.yaml"
    path.write_text(text)
    case = read_input(path)
    answer = why_not(
        kb, case.model_copy(update={"medications": ()}), "start_metformin", AS_OF
    )
    assert answer.message.startswith("start_metformin is blocked: eGFR below 30")


def test_cli_explain_json_and_unknown_conclusion() -> None:
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "explain",
            str(EXAMPLE),
            "hypertension",
            "--as-of",
            "last",
            "--format",
            "json",
        ],
    )
    assert out.exit_code == 0
    document = json.loads(out.stdout)
    assert document["notice"].startswith("Decision support only")
    [tree] = document["conclusions"]
    assert tree["rules"][0]["rule_id"] == "bp_stage_2"
    facts = {f["name"]: f for f in tree["facts"]}
    assert facts["systolic_bp"]["aggregate"] == "mean"
    assert facts["age"]["value"] == 67  # adults only: the age is evidence too
    why = runner.invoke(
        main,
        ["explain", str(EXAMPLE), "--as-of", "last", "--format", "json"]
        + ["--why-not", "metformin_may_initiate_or_continue"],
    )
    assert json.loads(why.stdout)["notice"].startswith("Decision support only")
    bad = runner.invoke(main, ["explain", str(EXAMPLE), "--why-not", "no_such_thing"])
    assert bad.exit_code == 2
    assert "no rule concludes `no_such_thing`" in bad.stderr
    typo = runner.invoke(
        main, ["explain", str(EXAMPLE), "--why-not", "stage_2_hypertensoin"]
    )
    # The message is wrapped to the terminal's width.
    assert "did you mean `stage_2_hypertension`?" in " ".join(typo.stderr.split())
    nosuch = runner.invoke(main, ["explain", str(EXAMPLE), "stage_2_hypertensoin"])
    said = " ".join(nosuch.stderr.split())
    assert "try --why-not" not in said
    assert "did you mean `stage_2_hypertension`?" in said


def test_why_not_says_a_second_result_is_what_is_missing(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    path = tmp_path / "one_a1c.yaml"
    path.write_text(
        "patient: {age: 58, sex: male}\nfacts:\n  hba1c: 48 mmol/mol @ 2024-04-01\n"
    )
    answer = why_not(kb, read_input(path), "diabetes", AS_OF)
    repeated = {a.rule.rule_id: a for a in answer.attempts}["diabetes_repeated_test"]
    texts = [o.condition + " / " + o.change for o in repeated.obstacles]
    assert any(
        "on 2 results on separate days" in t
        and "1 of 2 hba1c results on separate days meet the cut point" in t
        for t in texts
    ), texts


def test_evidence_shows_the_branch_that_held(kb: KnowledgeBase) -> None:
    result = kb.evaluate(read_input(EXAMPLE), as_of=AS_OF)
    # start/continue metformin rules test `any: [finding diabetes_confirmed,
    # condition diabetes, taking metformin]`: only what held is evidence.
    [rec] = [
        r for r in result.recommendations if r.id == "metformin_continue_with_caution"
    ]
    assert all(f.value is not False for f in rec.evidence.facts), rec.evidence.facts


def test_why_not_reads_the_risk_the_assessment_used(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    # Diabetes confirmed by two A1C results feeds the risk (10.1 %, not the
    # 5.4 % of a non-diabetic): why-not must show the same figure.
    path = tmp_path / "case.yaml"
    path.write_text(
        "patient: {age: 55, sex: male}\n"
        "facts:\n"
        "  race: white\n"
        "  smoking_status: never @ 2025-05-01\n"
        "  total_cholesterol: 213 mg/dL @ 2025-05-01\n"
        "  hdl_cholesterol: 50 mg/dL @ 2025-05-01\n"
        "  systolic_bp: 120 mmHg @ 2025-05-01\n"
        "  hba1c: [7.0 % @ 2025-02-01, 7.2 % @ 2025-05-01]\n"
    )
    answer = why_not(kb, str(path), "ascvd_risk_high", "last")
    [attempt] = answer.attempts
    [obstacle] = attempt.obstacles
    assert obstacle.actual == "ascvd_10y_risk is 10.136 % (2025-05-01)"


def test_a_score_shows_when_each_of_its_inputs_was_recorded() -> None:
    kb = KnowledgeBase.load()
    case = read_input(EXAMPLE, catalogue=kb.catalogue)
    result = kb.evaluate(case, as_of=datetime(2024, 4, 30, tzinfo=UTC))
    [score] = [s for s in result.scores if s.name == "diabetes_progression"]
    assert score.input_times["bmi"] == datetime(2024, 4, 2, tzinfo=UTC)
    assert score.input_times["age"] == datetime(2024, 4, 30, tzinfo=UTC)

    def walk(tree: Any) -> Any:
        yield tree
        for child in tree.because:
            yield from walk(child)

    [follow_up] = [t for t in how(result) if t.id == "closer_diabetes_follow_up"]
    node = next(c for c in walk(follow_up) if c.kind == "score")
    bmi = next(f for f in node.facts if f.name == "bmi")
    assert (bmi.value, bmi.time, bmi.age_days) == (
        31.2,
        datetime(2024, 4, 2, tzinfo=UTC),
        28,
    )


def test_why_not_a_point_score_names_its_cut_point_and_the_items_that_scored(
    tmp_path: Path,
) -> None:
    case = tmp_path / "af.yaml"
    case.write_text(
        "patient: {age: 60, sex: male}\n"
        "facts: {hba1c: 6.6 % @ 2024-03-01, fasting_glucose: 126 mg/dL @ 2024-03-01}\n"
        "conditions: [atrial_fibrillation]\n",
        encoding="utf-8",
    )
    kb = KnowledgeBase.load()
    when = datetime(2024, 4, 2, tzinfo=UTC)
    result = kb.evaluate(case, as_of=when)
    answer = why_not(kb, case, "anticoagulation_recommended", when, result)
    [attempt] = answer.attempts
    scores = [o for o in attempt.obstacles if o.condition.startswith("point score")]
    # Once per cut point (men 2, women 3), not once per alternative.
    assert [o.condition for o in scores] == [
        "point score cha2ds2_vasc at least 2",
        "point score cha2ds2_vasc at least 3",
    ]
    assert scores[0].actual.startswith(
        "the cha2ds2_vasc total is 1 (7 items); scored: diabetes 1; "
        "0 points: heart_failure"
    )
    assert scores[0].change == "would hold at a total of at least 2 (now 1)"
    other = [o for o in attempt.obstacles if "one of" in o.condition]
    assert [o.condition for o in other] == ["sex one of other, unknown"]


def test_how_a_recommendation_resting_on_a_point_score_lists_its_items(
    tmp_path: Path,
) -> None:
    # A woman of 78 with AF and hypertension: CHA2DS2-VASc 4 = hypertension 1,
    # age >= 75 2, female sex 1. The tree of the advice reaches the score, and
    # the score shows each item with its points and the fact behind it.
    case = tmp_path / "af.yaml"
    case.write_text(
        "patient: {age: 78, sex: female}\n"
        "conditions: [atrial_fibrillation, hypertension]\n",
        encoding="utf-8",
    )
    kb = KnowledgeBase.load()
    result = kb.evaluate(case, as_of=AS_OF)

    [advice] = how(result, "anticoagulation_recommended")
    [score] = [c for c in advice.because if c.id == "cha2ds2_vasc"]
    assert (score.kind, score.value) == ("point_score", 4.0)
    points = {c.id: c.points for c in score.components}
    assert points == {
        "heart_failure": 0,
        "hypertension": 1,
        "age": 2,
        "diabetes": 0,
        "stroke_tia_thromboembolism": 0,
        "vascular_disease": 0,
        "sex_female": 1,
    }
    [age] = next(c for c in score.components if c.id == "age").facts
    assert age.value == 78

    out = CliRunner().invoke(main, ["explain", str(case), "cha2ds2_vasc"]).output
    assert "point_score cha2ds2_vasc = 4" in out
    assert "item age: 2 points" in out and "fact age = 78 a" in out
    assert "item heart_failure: 0 points" in out


def test_a_model_score_can_be_explained_by_its_name(kb: KnowledgeBase) -> None:
    # The score was computed (0.8-ish) but `explain FILE diabetes_progression`
    # said it was not reached.
    result = kb.evaluate(read_input(EXAMPLE), as_of=AS_OF)
    [node] = how(result, "diabetes_progression")
    assert node.kind == "score" and node.value is not None and node.value > 0.7
    assert {f.name for f in node.facts} >= {"bmi", "random_glucose"}


def test_why_not_a_point_score_with_a_missing_item_gives_its_range(
    tmp_path: Path,
) -> None:
    # CURB-65 with the urea missing: 3 points known, so 3 to 4. Outpatient
    # care (0-1) cannot hold whatever the urea: no change is offered; ICU
    # assessment (4-5) waits for the urea.
    case = tmp_path / "pn.yaml"
    case.write_text(
        "patient: {age: 70, sex: male}\n"
        "conditions: [pneumonia]\n"
        "facts:\n"
        "  respiratory_rate: 31 /min @ 2024-05-31\n"
        "  systolic_bp: 120 mmHg @ 2024-05-31\n"
        "  diastolic_bp: 60 mmHg @ 2024-05-31\n"
        "  amt_score: 10 @ 2024-05-31\n",
        encoding="utf-8",
    )
    kb = KnowledgeBase.load()
    when = datetime(2024, 6, 1, tzinfo=UTC)
    out = why_not(kb, case, "site_of_care_outpatient", when)
    [obstacle] = out.attempts[0].obstacles
    assert obstacle.actual.startswith("the curb65 total is 3 to 4 (missing bun)")
    assert obstacle.change == "" and out.attempts[0].smallest_change == ""
    icu = why_not(kb, case, "site_of_care_hospital_admission_assess_icu", when)
    assert icu.attempts[0].smallest_change == "record bun"
