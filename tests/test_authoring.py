"""Authoring tools: bundled rule tests, the editor schema, governance, reload,
provenance and Unicode display text."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from cli import main
from engine import Case, KnowledgeBase, Reading, ReloadableKnowledgeBase, RuleFileError
from engine.ruleformat import RuleFile
from engine.ruletests import RuleTestFile, rule_test_paths, run_rule_tests

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"
MODELS = ROOT / "models"


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load(RULES, MODELS)


def test_every_bundled_rule_file_ships_with_tests() -> None:
    rule_files = {
        p.name.removesuffix(".yaml")
        for p in RULES.glob("*.yaml")
        if not p.name.endswith(".test.yaml")
    }
    test_files = {p.name.removesuffix(".test.yaml") for p in RULES.glob("*.test.yaml")}
    assert rule_files <= test_files


def test_bundled_rule_tests_pass(kb: KnowledgeBase) -> None:
    results, problems = run_rule_tests(kb, [RULES])
    assert problems == []
    assert len(results) >= 20
    failed = [(r.file, r.line, r.name, r.failures) for r in results if not r.passed]
    assert failed == []


def test_a_failing_rule_test_shows_expected_versus_got(tmp_path: Path) -> None:
    test = tmp_path / "wrong.test.yaml"
    test.write_text(
        """tests:
  - name: wrongly expects stage 1
    as_of: 2024-05-01
    given:
      patient: {age: 60, sex: male}
      facts:
        systolic_bp: [150 mmHg @ 2024-03-01, 150 mmHg @ 2024-04-20]
        diastolic_bp: [70 mmHg @ 2024-03-01, 70 mmHg @ 2024-04-20]
    expect:
      findings: [stage_1_hypertension]
""",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["rules", "test", str(test)])
    assert result.exit_code == 1
    assert f"FAIL {test}:2 wrongly expects stage 1" in result.stdout
    assert (
        "expected findings ['stage_1_hypertension']; got ['stage_2_hypertension']"
        in result.stdout
    )
    assert "rules fired: bp_stage_2" in result.stdout
    assert "0 passed, 1 failed" in result.stdout


def test_a_rule_test_file_with_broken_yaml_is_located_and_counted(
    tmp_path: Path,
) -> None:
    test = tmp_path / "broken.test.yaml"
    test.write_text("tests:\n  - name: x\n    given: {patient: {age: 4\n")
    result = CliRunner().invoke(main, ["rules", "test", str(test)])
    assert result.exit_code == 1
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"{test}:4:1: error: not valid YAML")
    assert "see docs/rules.md, Rule tests" in line and "case file" not in line
    assert "0 passed, 0 failed; 1 file(s) not run for the errors above" in (
        result.stdout
    )


def test_cli_rules_test_passes_on_the_bundled_knowledge_base() -> None:
    result = CliRunner().invoke(main, ["rules", "test"])
    assert result.exit_code == 0, result.stdout
    assert " 0 failed" in result.stdout


def _yaml(path: Path) -> object:
    # A YAML language server sees dates as text: give the validator the same.
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return json.loads(json.dumps(data, default=str))


def test_every_bundled_file_validates_against_the_editor_schema() -> None:
    rule_schema = json.loads(CliRunner().invoke(main, ["rules", "schema"]).stdout)
    test_schema = json.loads(
        CliRunner().invoke(main, ["rules", "schema", "--tests"]).stdout
    )
    assert rule_schema == RuleFile.model_json_schema()
    assert test_schema == RuleTestFile.model_json_schema()
    for path in RULES.glob("*.yaml"):
        schema = test_schema if path.name.endswith(".test.yaml") else rule_schema
        jsonschema.validate(_yaml(path), schema)


def test_schema_rejects_a_misspelled_key() -> None:
    rule_schema = RuleFile.model_json_schema()
    broken = _yaml(ROOT / "tests" / "data" / "broken_rules" / "unknown_key.yaml")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, rule_schema)


def _ruleset(tmp_path: Path, extra: str) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / "r.yaml").write_text(
        f"""ruleset:
  id: gov
  title: 肥胖筛查 (obesity screening)
  version: 1.0.0
  source: WHO TRS 894
rules:
  - id: obese
    title: 肥胖 BMI ≥ 30
{extra}    when: {{fact: bmi, at_least: 30 kg/m2}}
    then:
      - finding: obesity
        display: 肥胖症
""",
        encoding="utf-8",
    )
    return folder


def test_draft_and_overdue_rules_are_refused_when_only_approved_rules_may_run(
    tmp_path: Path,
) -> None:
    folder = _ruleset(tmp_path, "    status: draft\n    review_due: 2020-01-01\n")
    KnowledgeBase.load(folder, MODELS)  # allowed without the policy
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(folder, MODELS, approved_only=True, today=date(2024, 1, 1))
    messages = [(p.code, p.message) for p in info.value.problems]
    assert messages == [
        (
            "not-approved",
            "the rule is a draft; this deployment accepts approved rules only",
        ),
        ("review-overdue", "the rule's review was due on 2020-01-01"),
    ]


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("", "the rule is not marked approved"),
        (
            "    status: approved\n",
            "the rule is approved without reviewer and reviewed",
        ),
        (
            "    status: approved\n    reviewer: Dr A. Example\n",
            "the rule is approved without reviewed",
        ),
    ],
)
def test_only_a_rule_approved_by_a_named_reviewer_runs_under_the_policy(
    tmp_path: Path, extra: str, said: str
) -> None:
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(_ruleset(tmp_path, extra), MODELS, approved_only=True)
    [problem] = info.value.problems
    assert problem.message == f"{said}; this deployment accepts approved rules only"
    reviewed = (
        "    status: approved\n    reviewer: Dr A. Example\n    reviewed: 2026-11-02\n"
    )
    KnowledgeBase.load(_ruleset(tmp_path, reviewed), MODELS, approved_only=True)


def test_under_the_policy_a_retired_rule_is_not_asked_for_approval(
    tmp_path: Path,
) -> None:
    kb = KnowledgeBase.load(
        _ruleset(tmp_path, "    status: retired\n"), MODELS, approved_only=True
    )
    assert [(p.code, p.severity) for p in kb.warnings] == [("retired", "warning")]


def test_under_the_policy_a_review_dated_after_today_is_refused(
    tmp_path: Path,
) -> None:
    reviewed = (
        "    status: approved\n    reviewer: Dr A. Example\n    reviewed: 2030-01-01\n"
    )
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(
            _ruleset(tmp_path, reviewed),
            MODELS,
            approved_only=True,
            today=date(2026, 12, 5),
        )
    [problem] = info.value.problems
    assert (problem.code, problem.message) == (
        "review-in-future",
        "the rule's review is dated 2030-01-01, after today",
    )


def test_the_bundled_rules_are_not_reviewed_and_say_so() -> None:
    # No clinician has reviewed them: a deployment that runs approved rules
    # only must not take them as approved.
    with pytest.raises(RuleFileError) as info:
        KnowledgeBase.load(approved_only=True)
    assert {p.code for p in info.value.problems} == {"not-approved"}


def test_unicode_labels_work_end_to_end(tmp_path: Path) -> None:
    kb = KnowledgeBase.load(_ruleset(tmp_path, ""), MODELS)
    case = Case(
        case_id="u",
        age=40,
        sex="female",
        readings={
            "bmi": (
                Reading(
                    value=31.0, unit="kg/m2", time=datetime(2024, 1, 1, tzinfo=UTC)
                ),
            )
        },
    )
    result = kb.evaluate(case, as_of=datetime(2024, 2, 1, tzinfo=UTC))
    [finding] = result.findings
    assert finding.display == "肥胖症"
    assert finding.evidence.rules[0].title == "肥胖 BMI ≥ 30"
    assert "肥胖症" in result.model_dump_json()


def test_provenance_changes_with_the_rule_files(tmp_path: Path) -> None:
    folder = _ruleset(tmp_path, "")
    first = KnowledgeBase.load(folder, MODELS).info
    assert first.rulesets == {"gov": "1.0.0"}
    assert first.models["diabetes_progression"] == "1.0.0"
    again = KnowledgeBase.load(folder, MODELS).info
    assert again.content_hash == first.content_hash
    (folder / "r.yaml").write_text((folder / "r.yaml").read_text().replace("30", "35"))
    assert KnowledgeBase.load(folder, MODELS).info.content_hash != first.content_hash


def test_reload_while_serving_finishes_running_evaluations_on_the_old_version(
    tmp_path: Path,
) -> None:
    folder = _ruleset(tmp_path, "")
    served = ReloadableKnowledgeBase(folder, MODELS)
    old = served.current
    case = Case(
        case_id="u",
        age=40,
        sex="female",
        readings={
            "bmi": (
                Reading(
                    value=32.0, unit="kg/m2", time=datetime(2024, 1, 1, tzinfo=UTC)
                ),
            )
        },
    )
    when = datetime(2024, 2, 1, tzinfo=UTC)

    # A broken new version is refused whole; the old one keeps serving.
    (folder / "r.yaml").write_text(
        (folder / "r.yaml").read_text().replace("fact: bmi", "fact: bmii")
    )
    with pytest.raises(RuleFileError):
        served.reload()
    assert served.current is old

    # A good new version (threshold 35) replaces it; a run holding the old one
    # still concludes as the old rules said.
    (folder / "r.yaml").write_text(
        (folder / "r.yaml")
        .read_text()
        .replace("fact: bmii, at_least: 30", "fact: bmi, at_least: 35")
    )
    results: dict[str, list[str]] = {}

    def run_on_old() -> None:
        results["old"] = [f.id for f in old.evaluate(case, as_of=when).findings]

    thread = threading.Thread(target=run_on_old)
    thread.start()
    new = served.reload()
    thread.join()
    assert new is served.current and new is not old
    assert results["old"] == ["obesity"]
    assert [f.id for f in served.evaluate(case, as_of=when).findings] == []
    assert new.info.content_hash != old.info.content_hash
    # The served knowledge base takes what KnowledgeBase takes: "last", a
    # date, and a list.
    dated = case.model_copy(update={"last_recorded": datetime(2024, 1, 1, tzinfo=UTC)})
    [last, on_day] = served.evaluate_many([dated, case], as_of=when.date())
    assert on_day.as_of == datetime(2024, 2, 1, 23, 59, 59, tzinfo=UTC)
    assert served.evaluate(dated, as_of="last").as_of == dated.last_recorded
    assert last.findings == []


def test_rule_test_paths_find_only_test_files(tmp_path: Path) -> None:
    shutil.copy(RULES / "kidney.test.yaml", tmp_path / "k.test.yaml")
    shutil.copy(RULES / "kidney.yaml", tmp_path / "kidney.yaml")
    assert rule_test_paths([tmp_path]) == [tmp_path / "k.test.yaml"]


def test_rules_test_on_a_copied_folder_tests_the_copy(tmp_path: Path) -> None:
    # An author edits a copy; its tests must run against the copy, not rules/.
    shutil.copy(RULES / "bmi.yaml", tmp_path / "bmi.yaml")
    shutil.copy(RULES / "bmi.test.yaml", tmp_path / "bmi.test.yaml")
    text = (tmp_path / "bmi.yaml").read_text().replace("25 kg/m2", "25.5 kg/m2")
    (tmp_path / "bmi.yaml").write_text(text)
    result = CliRunner().invoke(
        main, ["rules", "test", str(tmp_path / "bmi.test.yaml")]
    )
    assert result.exit_code == 1
    assert " 1 failed" in result.stdout or " failed" in result.stdout.splitlines()[-1]


def test_rules_check_finds_a_misspelt_id_in_a_rule_test(tmp_path: Path) -> None:
    shutil.copy(RULES / "blood_pressure.yaml", tmp_path / "blood_pressure.yaml")
    test = (RULES / "blood_pressure.test.yaml").read_text()
    bad = test.replace(
        "findings: [stage_2_hypertension]", "findings: [stage_2_hypertenion]", 1
    )
    (tmp_path / "blood_pressure.test.yaml").write_text(bad)
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        "names `stage_2_hypertenion`, which no rule concludes; did you mean "
        "`stage_2_hypertension`?" in result.stdout
    )
    # Placed on the misspelt id itself, not on the test's first line.
    line = bad.splitlines().index(
        next(x for x in bad.splitlines() if "stage_2_hypertenion" in x)
    )
    column = bad.splitlines()[line].index("stage_2_hypertenion")
    where = f"{tmp_path / 'blood_pressure.test.yaml'}:{line + 1}:{column + 1}:"
    assert where in result.stdout


def _check_bmi_tests(tmp_path: Path, tests: str) -> tuple[int, str]:
    """`rules check` of bmi.yaml beside a test file of the given tests; the
    exit code and the output with rich's wrapping undone."""
    shutil.copy(RULES / "bmi.yaml", tmp_path / "bmi.yaml")
    (tmp_path / "bmi.test.yaml").write_text("ruleset: bmi\ntests:\n" + tests)
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path)])
    return result.exit_code, " ".join(result.stdout.split())


def test_fired_takes_rule_ids_and_says_so_when_given_a_conclusion(
    tmp_path: Path,
) -> None:
    code, flat = _check_bmi_tests(
        tmp_path,
        "  - name: two slips\n"
        "    given: {patient: {age: 45, sex: female}, facts: {bmi: 27 kg/m2}}\n"
        "    expect: {fired: [bmi_overweigth, overweight]}\n",
    )
    assert code == 1
    assert (
        "expect fired names `bmi_overweigth`, which is not the id of a rule; "
        "did you mean `bmi_overweight`?" in flat
    )
    assert (
        "expect fired names `overweight`, which is not the id of a rule; "
        "`overweight` is listed under findings" in flat
    )


def test_a_rule_test_id_listed_under_the_wrong_kind_is_named(tmp_path: Path) -> None:
    # A finding expected among the recommendations passed the check, then
    # failed with "got []".
    code, flat = _check_bmi_tests(
        tmp_path,
        "  - name: a slip\n"
        "    given: {patient: {age: 45, sex: female}, facts: {bmi: 27 kg/m2}}\n"
        "    expect: {recommendations: [overweight]}\n",
    )
    assert code == 1
    assert (
        "expect recommendations names `overweight`, which is not one of the "
        "recommendations; `overweight` is listed under findings" in flat
    )


def test_a_misspelt_ruleset_in_a_rule_test_gets_a_did_you_mean(tmp_path: Path) -> None:
    shutil.copy(RULES / "bmi.yaml", tmp_path / "bmi.yaml")
    test = (RULES / "bmi.test.yaml").read_text()
    (tmp_path / "bmi.test.yaml").write_text(
        test.replace("ruleset: bmi", "ruleset: bmii")
    )
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    flat = " ".join(result.stdout.split())
    assert "ruleset `bmii` is not in the knowledge base being tested" in flat
    assert "did you mean `bmi`?" in flat


def test_a_misspelt_key_in_a_rule_test_is_placed_with_a_did_you_mean(
    tmp_path: Path,
) -> None:
    shutil.copy(RULES / "bmi.yaml", tmp_path / "bmi.yaml")
    (tmp_path / "bmi.test.yaml").write_text(
        "tests:\n"
        "  - name: adult overweight\n"
        "    given:\n"
        "      patient: {age: 40, sex: male}\n"
        "      facts: {bmi: 27 kg/m2 @ 2024-01-01}\n"
        "    expcet:\n"
        "      findings: [overweight]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        main, ["rules", "check", str(tmp_path / "bmi.test.yaml")]
    )
    assert result.exit_code == 1
    assert (
        f"{tmp_path / 'bmi.test.yaml'}:6:5: error: `tests.0.expcet`: unknown key; "
        "allowed here: name, as_of, given, expect, absent; did you mean `expect`?"
    ) in result.stdout


def test_checking_one_clean_file_says_when_its_folder_has_errors(
    tmp_path: Path,
) -> None:
    for name in ("bmi.yaml", "bmi.test.yaml", "metformin.yaml"):
        shutil.copy(RULES / name, tmp_path / name)
    broken = (tmp_path / "metformin.yaml").read_text()
    (tmp_path / "metformin.yaml").write_text(
        broken.replace(
            "{fact: egfr, within: 12 months, at_least: 45",
            "{fact: egfrr, within: 12 months, at_least: 45",
            1,
        )
    )
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path / "bmi.yaml")])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "0 error(s), 0 warning(s) in 2 file(s)"
    assert lines[1].startswith(
        "note: other files of the folder have errors (metformin.yaml): the "
        "knowledge base does not load"
    )


def test_rule_files_may_end_in_yml_and_an_empty_folder_is_an_error(
    tmp_path: Path,
) -> None:
    # A rule renamed to .yml was skipped without a word: the check said
    # "0 errors" and the rule never ran.
    shutil.copy(RULES / "bmi.yaml", tmp_path / "bmi.yml")
    shutil.copy(RULES / "bmi.test.yaml", tmp_path / "bmi.test.yml")
    kb = KnowledgeBase.load(tmp_path, MODELS)
    assert kb.info.rulesets.keys() == {"bmi"}
    tested = CliRunner().invoke(main, ["rules", "test", str(tmp_path)])
    assert tested.exit_code == 0, tested.stdout
    assert " 0 failed" in tested.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    checked = CliRunner().invoke(main, ["rules", "check", str(empty)])
    assert checked.exit_code == 1
    assert f"{empty}: error: no rule files (*.yaml or *.yml) found" in checked.stdout


def test_rules_check_reads_each_rule_test_case_as_a_case(tmp_path: Path) -> None:
    # A unit the catalogue refuses in a test's `given` was found only when
    # the tests ran, after `rules check` had said 0 errors.
    code, flat = _check_bmi_tests(
        tmp_path,
        "  - name: a slip\n"
        "    given:\n"
        "      patient: {age: 45, sex: female}\n"
        "      facts: {bmi: 27 kg/m3}\n"
        "    expect: {findings: [overweight]}\n",
    )
    assert code == 1
    assert (
        f"{tmp_path / 'bmi.test.yaml'}:6:20: error: test 'a slip': `given` is not "
        "a valid case: `kg/m3` is not a unit of bmi" in flat
    )
