"""The cdss command: one JSON document on stdout, errors on stderr with exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cli import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_RULES, main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"


def _case_file(path: Path, text: str) -> str:
    """Write a case file; return its path as the command line takes it."""
    path.write_text(text, encoding="utf-8")
    return str(path)


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_output_is_exactly_one_document_with_codes_and_evidence() -> None:
    code, out, _err = _run(
        "evaluate", str(EXAMPLE), "--as-of", "last", "--format", "json"
    )
    assert code == 0
    doc = json.loads(out)  # the whole of stdout parses as one document
    assert doc["notice"].startswith("Decision support only, not a medical device")
    dx = {d["id"]: d for d in doc["diagnoses"]}
    assert dx["diabetes"]["system"] == "http://snomed.info/sct"
    assert dx["diabetes"]["code"] == "73211009"
    assert dx["chronic_kidney_disease"]["code"] == "709044004"
    bp = [
        f for f in dx["hypertension"]["evidence"]["facts"] if f["name"] == "systolic_bp"
    ]
    assert bp[0]["aggregate"] == "mean"
    recs = {r["id"]: r for r in doc["recommendations"]}
    assert recs["metformin_continue_with_caution"]["status"] == "recommended"
    scores = {s["name"]: s for s in doc["scores"]}
    assert 0.0 <= scores["diabetes_progression"]["value"] <= 1.0


def test_rich_view_shows_the_notice_and_the_diagnoses() -> None:
    code, out, _err = _run("evaluate", str(EXAMPLE), "--as-of", "2024-04-30")
    assert code == 0
    assert "not a medical device" in out
    assert "73211009" in out


def test_an_80_column_terminal_wraps_ids_and_evidence_instead_of_cutting_them() -> None:
    result = CliRunner().invoke(
        main, ["evaluate", str(EXAMPLE), "--as-of", "last"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "…" not in result.stdout
    # The rule id wraps inside its cell: both halves are shown.
    assert "diabetes_two_tes" in result.stdout and "diabetes_repeate" in result.stdout


def test_as_of_a_date_counts_the_readings_of_that_day(tmp_path: Path) -> None:
    case = _case_file(
        tmp_path / "today.yaml",
        "patient: {age: 50, sex: female}\n"
        "facts:\n"
        "  systolic_bp: [150 mmHg @ 2024-03-01, 152 mmHg @ 2024-04-02T10:00]\n"
        "  diastolic_bp: [85 mmHg @ 2024-03-01, 86 mmHg @ 2024-04-02T10:00]\n",
    )
    code, out, _ = _run("evaluate", case, "--as-of", "2024-04-02", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["as_of"] == "2024-04-02T23:59:59Z"
    assert not any("after the evaluation time" in n for n in doc["notes"])
    stage_2 = next(f for f in doc["findings"] if f["id"] == "stage_2_hypertension")
    [bp] = [u for u in stage_2["evidence"]["facts"] if u["name"] == "systolic_bp"]
    assert bp["value"] == 151.0 and bp["aggregate"] == "mean"


def test_a_block_no_rule_made_reads_as_not_to_be_given(tmp_path: Path) -> None:
    # Pregnancy blocks the ACE inhibitor recommendations whether or not a rule
    # made them; one not made is not shown as if it had been indicated.
    case = _case_file(
        tmp_path / "pregnant.yaml",
        "patient: {age: 32, sex: female}\n"
        "conditions: [pregnancy, type_2_diabetes, hypertension]\n",
    )
    result = CliRunner().invoke(
        main, ["evaluate", case, "--as-of", "2024-04-02"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if "acei_arb_" in line]
    assert rows, result.stdout
    blocked = [r for r in rows if "Pregnancy - ACE inhibitors and ARBs are" in r]
    assert blocked and all("not to be given" in r for r in blocked)
    assert not any("blocked" in r for r in rows)


def test_explain_refuses_a_conclusion_and_why_not_together() -> None:
    code, out, err = _run(
        "explain", str(EXAMPLE), "diabetes", "--why-not", "chronic_kidney_disease"
    )
    assert code == 2 and out == ""
    assert "give either a conclusion to explain (diabetes) or --why-not" in err


def test_scores_a_record_cannot_have_are_one_line(tmp_path: Path) -> None:
    # A blood-pressure visit has none of the breast cytology model's inputs:
    # one line names what is missing, not a paragraph per model.
    case = _case_file(
        tmp_path / "bp.yaml",
        "patient: {age: 50, sex: female}\n"
        "facts:\n  systolic_bp: 128 mmHg @ 2024-03-01\n"
        "  diastolic_bp: 78 mmHg @ 2024-03-01\n",
    )
    code, out, _err = _run("evaluate", case, "--as-of", "2024-03-02")
    assert code == 0
    text = " ".join(out.split())  # the terminal wraps long lines
    assert "Scores not available: breast_cytology (missing " in text
    assert "and 2 more); diabetes_progression (missing" in text
    assert text.count("not available") == 1


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    code, out, err = _run("evaluate", str(tmp_path / "nope.json"))
    assert code == EXIT_INPUT
    assert out == ""
    assert "nope.json" in err


def test_bundle_without_patient_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []})
    )
    code, out, err = _run("evaluate", str(path), "--format", "json")
    assert code == EXIT_INPUT
    assert out == ""
    assert "no Patient" in err


def test_broken_rules_folder_is_refused_with_located_problems(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "ruleset: {id: x, title: t, version: '1', source: s}\n"
        "rules:\n  - id: r1\n    title: t\n"
        "    when: {fact: sytolic_bp, at_least: 1 mmHg}\n"
        "    then: [{finding: f}]\n"
    )
    code, out, err = _run("evaluate", str(EXAMPLE), "--rules", str(tmp_path))
    assert code == EXIT_RULES
    assert out == ""
    assert "r.yaml:5:12" in err and "did you mean `systolic_bp`?" in err


def test_rules_check_exit_codes(tmp_path: Path) -> None:
    code, out, _ = _run("rules", "check")
    assert code == 0 and "0 error(s)" in out
    (tmp_path / "r.yaml").write_text("rules: [\n")
    code, out, _ = _run("rules", "check", str(tmp_path))
    assert code == 1 and "r.yaml:" in out


def test_documented_output_schema_is_the_current_one() -> None:
    documented = Path(__file__).resolve().parents[1] / "docs" / "assessment.schema.json"
    code, out, _ = _run("schema")
    assert code == 0
    assert json.loads(out) == json.loads(documented.read_text()), (
        "regenerate with `cdss schema > docs/assessment.schema.json`"
    )


def test_ctrl_c_while_a_command_starts_exits_130(monkeypatch: Any) -> None:
    # Click's own answer to Ctrl-C is "Aborted!" and exit 1.
    def interrupted(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("engine.KnowledgeBase.load", interrupted)
    code, _out, err = _run("evaluate", str(EXAMPLE))
    assert (code, err.strip()) == (EXIT_INTERRUPTED, "interrupted")


def test_a_certainty_just_below_one_is_not_shown_as_certain() -> None:
    from cli import _certainty

    assert [_certainty(v) for v in (0.8, 0.994, 0.998, 0.9999, 1.0)] == [
        "0.80",
        "0.99",
        "0.998",
        "0.999",
        "1.00",
    ]


def test_checking_one_rule_file_checks_it_and_its_tests() -> None:
    # A rule author checks the file they edited: a clean file is clean (it
    # was read as a test file and failed), and its tests beside it count.
    rules = Path(__file__).resolve().parents[1] / "rules"
    code, out, _err = _run("rules", "check", str(rules / "bmi.yaml"))
    assert code == 0, out
    assert out.strip().endswith("0 error(s), 0 warning(s) in 2 file(s)")
    code, out, _err = _run("rules", "test", str(rules / "bmi.yaml"))
    assert code == 0, out
    assert "PASS" in out and "bmi.test.yaml" in out


def test_a_birth_date_in_the_future_is_an_input_error(tmp_path: Path) -> None:
    case = _case_file(
        tmp_path / "born.yaml",
        "patient: {birth_date: 2099-01-01, sex: male}\n"
        "facts:\n  hba1c: 7.1 % @ 2024-01-10\n",
    )
    for command in ("evaluate", "explain"):
        code, out, err = _run(command, case, "--as-of", "last")
        assert code == EXIT_INPUT, (command, err)
        assert "the birth date is in the future" in err
        assert "2099" not in err  # the birth date is not repeated
        assert out == ""


def test_an_evaluation_time_that_makes_the_patient_older_than_130_is_refused(
    tmp_path: Path,
) -> None:
    case = _case_file(
        tmp_path / "typo.yaml",
        "patient: {birth_date: 1960-03-01, sex: male}\n"
        "facts:\n  hba1c: 7.1 % @ 2024-01-10\n",
    )
    for command in ("evaluate", "explain"):
        code, out, err = _run(command, case, "--as-of", "3000-01-01")
        assert code == EXIT_INPUT, (command, err)
        assert "the patient would be 1039 years old at the evaluation time" in err
        assert "1960" not in err
        assert out == ""
    code, _, _ = _run("evaluate", case, "--as-of", "2090-01-01")  # 129: still taken
    assert code == 0


def test_a_missing_rule_folder_is_named_without_a_line_zero(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, _out, err = _run("evaluate", str(EXAMPLE), "--rules", str(missing))
    assert code == EXIT_RULES
    assert f"{missing}: error: no such file or folder" in " ".join(err.split())
    assert ":0:0" not in err


def test_explain_with_nothing_reached_says_so(tmp_path: Path) -> None:
    case = _case_file(
        tmp_path / "hdl.yaml",
        "patient: {age: 30, sex: male}\n"
        "facts:\n  hdl_cholesterol: 50 mg/dL @ 2024-01-01\n",
    )
    code, out, _err = _run("explain", case, "--as-of", "last")
    assert code == 0
    text = " ".join(out.split())
    assert (
        "Nothing to explain: no finding, diagnosis or recommendation was reached"
        in text
    )
    assert "not a medical device" in text
