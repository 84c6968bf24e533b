"""Evaluation when a condition cannot be worked out, and what is never read.

A reading in a unit that does not convert for a comparison (possible through
the library, where a Case is built without a reader's unit checks) makes the
assessment partial and names the fact and the units accepted. Leaves are read
only as rules need them: a condition behind a false guard is never evaluated,
so a bad reading there does not spoil the assessment.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine import Case, CodedEntry, InputError, KnowledgeBase, Reading, read_input

WHEN = datetime(2024, 1, 1, tzinfo=UTC)
PNEUMONIA = CodedEntry(
    concept="pneumonia", system="http://snomed.info/sct", code="233604007", onset=WHEN
)


def _case(
    readings: dict[str, list[Reading]], conditions: list[CodedEntry] | None = None
) -> Case:
    return Case(
        case_id="c",
        sex="male",
        age=70,
        readings=readings,
        conditions=conditions or [],
    )


def test_a_comparison_whose_unit_does_not_convert_makes_the_assessment_partial(
    kb: KnowledgeBase,
) -> None:
    case = _case(
        {
            "systolic_bp": [Reading(value=150.0, unit="kg", time=WHEN)],
            "diastolic_bp": [Reading(value=95.0, unit="mm[Hg]", time=WHEN)],
        }
    )

    result = kb.evaluate(case, as_of=WHEN)

    assert result.status == "partial"
    assert result.problems == [
        "a condition could not be evaluated: `kg` cannot be converted to "
        "`mm[Hg]` for systolic_bp; accepted units: mm[Hg]"
    ]
    assert "hypertension" not in {d.id for d in result.diagnoses}
    assert "bp_stage_2" in {u.rule_id for u in result.undetermined}


def test_a_point_score_whose_item_does_not_convert_is_named_and_not_shown(
    kb: KnowledgeBase,
) -> None:
    case = _case(
        {"bun": [Reading(value=25.0, unit="kg", time=WHEN)]}, conditions=[PNEUMONIA]
    )

    result = kb.evaluate(case, as_of=WHEN)

    assert result.status == "partial"
    assert result.problems == [
        "point score curb65 could not be evaluated: `kg` cannot be converted to "
        "`mg/dL` for bun; accepted units: mg/dL, mmol/L"
    ]
    assert "curb65" not in {f.id for f in result.findings}
    assert "crb65" in {f.id for f in result.findings}  # CRB-65 leaves urea out


def test_a_condition_behind_a_false_guard_is_never_evaluated(kb: KnowledgeBase) -> None:
    # Urea (BUN) is read only by CURB-65, which applies to pneumonia alone.
    case = _case({"bun": [Reading(value=25.0, unit="kg", time=WHEN)]})

    result = kb.evaluate(case, as_of=WHEN)

    assert result.status == "complete", result.problems
    assert result.problems == []


# --- the library's evaluate_many, as the README shows it ---------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"


def test_evaluate_many_takes_paths_and_as_of_last_per_record(
    kb: KnowledgeBase,
) -> None:
    undated = _case({"bmi": [Reading(value=31.0, unit="kg/m2")]})
    dated = _case({"bmi": [Reading(value=31.0, unit="kg/m2", time=WHEN)]})
    dated = dated.model_copy(update={"last_recorded": WHEN})  # as readers set it

    many = kb.evaluate_many([str(EXAMPLE), dated], as_of="last")

    one = kb.evaluate(EXAMPLE, as_of="last")
    assert [a.as_of for a in many] == [one.as_of, WHEN]
    assert [d.id for d in many[0].diagnoses] == [d.id for d in one.diagnoses]
    assert "obesity_class_1" in {f.id for f in many[1].findings}
    with pytest.raises(InputError) as info:
        kb.evaluate_many([dated, undated], as_of="last")
    assert info.value.where == "as_of"


def test_a_date_as_of_is_the_end_of_that_day_as_on_the_command_line(
    kb: KnowledgeBase,
) -> None:
    # The second of two stage 2 readings, taken at 10:00 on the day asked
    # about, counts: the date means that whole day, as `--as-of 2024-01-01`
    # does on the command line. At midnight there would be one reading only.
    visits = [WHEN - timedelta(days=30), WHEN + timedelta(hours=10)]
    case = _case(
        {
            "systolic_bp": [
                Reading(value=164.0, unit="mm[Hg]", time=t) for t in visits
            ],
            "diastolic_bp": [
                Reading(value=96.0, unit="mm[Hg]", time=t) for t in visits
            ],
        }
    )

    result = kb.evaluate(case, as_of=date(2024, 1, 1))

    assert result.as_of == datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC)
    assert "stage_2_hypertension" in {f.id for f in result.findings}
    [many] = kb.evaluate_many([case], as_of=date(2024, 1, 1))
    assert many.as_of == result.as_of
    at_midnight = kb.evaluate(case, as_of=WHEN)
    assert "stage_2_hypertension" not in {f.id for f in at_midnight.findings}


def test_read_input_takes_a_file_name_as_text(kb: KnowledgeBase) -> None:
    assert read_input(str(EXAMPLE)) == read_input(EXAMPLE)


def test_an_evaluation_time_before_birth_is_refused_without_the_date(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    path = tmp_path / "case.yaml"
    path.write_text("patient: {birth_date: 1960-03-15, sex: male}\n")
    with pytest.raises(InputError) as info:
        kb.evaluate(path, as_of=datetime(1900, 1, 1, tzinfo=UTC))
    assert info.value.reason == "the evaluation time is before the patient's birth date"
    assert "1960" not in str(info.value)
    assert kb.evaluate(path, as_of=datetime(1960, 3, 15, tzinfo=UTC)).patient.age == 0


def test_readings_given_out_of_order_are_read_oldest_first() -> None:
    # A Case built by an application may list readings in any order, with or
    # without offsets: the latest is the latest by time, and a reading after
    # the evaluation time is not seen.
    from engine.caseview import CaseView

    kb = KnowledgeBase.load()
    case = Case(
        case_id="order",
        readings={
            "systolic_bp": (
                Reading(
                    value=152.0, unit="mm[Hg]", time=datetime(2024, 3, 1, tzinfo=UTC)
                ),
                Reading(
                    value=118.0, unit="mm[Hg]", time=datetime(2023, 1, 5)
                ),  # naive: UTC
                Reading(
                    value=201.0, unit="mm[Hg]", time=datetime(2025, 1, 9, tzinfo=UTC)
                ),
                Reading(
                    value=131.0, unit="mm[Hg]", time=datetime(2024, 2, 1, tzinfo=UTC)
                ),
            )
        },
    )
    assert [r.value for r in case.readings["systolic_bp"]] == [
        118.0,
        131.0,
        152.0,
        201.0,
    ]
    view = CaseView(case, datetime(2024, 6, 1, tzinfo=UTC), kb.catalogue)
    assert [r.value for r in view.select("systolic_bp", None)] == [118.0, 131.0, 152.0]


def test_readings_after_the_evaluation_time_are_counted_in_a_note() -> None:
    kb = KnowledgeBase.load()
    when = datetime(2024, 1, 1, tzinfo=UTC)
    case = Case(
        case_id="later",
        age=58,
        sex="male",
        readings={
            "systolic_bp": tuple(
                Reading(value=v, unit="mm[Hg]", time=datetime(y, 6, 1, tzinfo=UTC))
                for v, y in ((128.0, 2023), (171.0, 2024), (169.0, 2025))
            )
        },
    )
    result = kb.evaluate(case, as_of=when)
    assert "2 readings dated after the evaluation time not used" in result.notes
    later = kb.evaluate(case, as_of=datetime(2026, 1, 1, tzinfo=UTC))
    assert not any("after the evaluation time" in n for n in later.notes)


def test_an_evaluation_time_in_the_future_is_noted() -> None:
    kb = KnowledgeBase.load()
    case = Case(
        case_id="typo",
        birth_date=date(1960, 3, 1),
        sex="female",
        readings={
            "systolic_bp": (
                Reading(
                    value=150.0, unit="mm[Hg]", time=datetime(2024, 6, 1, tzinfo=UTC)
                ),
            )
        },
    )
    future = datetime.now(UTC) + timedelta(days=3 * 365)
    result = kb.evaluate(case, as_of=future)
    assert (
        f"the evaluation time {future.date().isoformat()} is in the future: "
        "ages and look-back windows are counted to it"
    ) in result.notes
    # Today, even given as a naive time, is not the future.
    today = kb.evaluate(case, as_of=datetime.now())
    assert not any("in the future" in n for n in today.notes)


def test_a_case_built_by_an_application_can_be_evaluated_as_of_its_last_entry() -> None:
    kb = KnowledgeBase.load()
    case = Case(
        case_id="app",
        age=67,
        sex="female",
        readings={
            "hba1c": (
                Reading(value=7.1, unit="%", time=datetime(2024, 1, 10, tzinfo=UTC)),
                Reading(value=6.9, unit="%", time=datetime(2024, 4, 2, tzinfo=UTC)),
            )
        },
        conditions=(
            CodedEntry(
                concept="hypertension",
                system="local",
                code="hypertension",
                onset=datetime(2020, 5, 1),  # naive: UTC
            ),
        ),
    )
    assert case.last_time() == datetime(2024, 4, 2, tzinfo=UTC)
    result = kb.evaluate(case, as_of="last")
    assert result.as_of == datetime(2024, 4, 2, tzinfo=UTC)


def test_a_case_built_with_an_unknown_fact_or_a_word_for_a_number_says_so() -> None:
    kb = KnowledgeBase.load()
    when = datetime(2024, 5, 1, tzinfo=UTC)
    case = Case(
        case_id="app",
        age=60,
        sex="male",
        readings={
            "hbac1": (Reading(value=7.1, unit="%", time=when),),
            "ldl_cholesterol": (Reading(value="high", unit="mg/dL", time=when),),
        },
    )
    result = kb.evaluate(case, as_of=when)
    assert (
        "readings of `hbac1` not used: not a fact the knowledge base knows; "
        "did you mean `hba1c`?"
    ) in result.notes
    assert "ldl_cholesterol: readings that are not numbers not used" in result.notes


def test_evaluate_many_given_one_path_says_to_pass_a_list() -> None:
    kb = KnowledgeBase.load()
    example = (
        Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"
    )
    with pytest.raises(TypeError, match=r"takes a list of inputs, got one str"):
        kb.evaluate_many(str(example))  # type: ignore[arg-type]
    (one,) = kb.evaluate_many([example], as_of="last")
    assert "diabetes" in {d.id for d in one.diagnoses}


def test_rule_firing_is_logged_at_debug_without_the_patient(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kb = KnowledgeBase.load()
    example = (
        Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"
    )
    with caplog.at_level("DEBUG", logger="engine.evaluation"):
        result = kb.evaluate(example, as_of="last")
    (line,) = [
        r.getMessage() for r in caplog.records if "rules fired" in r.getMessage()
    ]
    assert "fpg_diabetes_range" in line
    assert result.case_id not in line


def test_a_score_from_inputs_older_than_a_year_says_so() -> None:
    # The demo's results are from early 2024: scored at that time they are
    # current; scored in mid 2026 the model still takes them, and a note says
    # they are old.
    kb = KnowledgeBase.load()
    example = (
        Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"
    )
    current = kb.evaluate(example, as_of="last")
    late = kb.evaluate(example, as_of=datetime(2026, 6, 1, tzinfo=UTC))
    assert not any("more than 12 months" in n for n in current.notes)
    (note,) = [n for n in late.notes if "more than 12 months" in n]
    assert note.startswith(
        "score diabetes_progression: inputs more than 12 months before the "
        "evaluation time: bmi, systolic_bp, diastolic_bp, total_cholesterol"
    )
    assert note.count("total_cholesterol") == 1


def test_conclusions_resting_on_an_implausible_value_make_the_assessment_partial() -> (
    None
):
    kb = KnowledgeBase.load()
    when = datetime(2024, 4, 2, tzinfo=UTC)
    typed = tuple(
        Reading(value=v, unit="mm[Hg]", time=datetime(2024, m, 1, tzinfo=UTC))
        for v, m in ((1400.0, 3), (1400.0, 4))
    )
    normal = tuple(
        Reading(value=80.0, unit="mm[Hg]", time=datetime(2024, m, 1, tzinfo=UTC))
        for m in (3, 4)
    )
    case = Case(
        case_id="typo",
        age=60,
        sex="male",
        readings={"systolic_bp": typed, "diastolic_bp": normal},
    )
    result = kb.evaluate(case, as_of=when)
    # The value is used as recorded (a range cannot tell a typo from a rare
    # extreme), but the assessment is partial and names what rests on it.
    assert result.status == "partial"
    [problem] = result.problems
    assert problem.startswith(
        "systolic_bp 1400 mm[Hg] is outside the plausible range 40-300 mm[Hg]: "
        "check the record before acting on "
    )
    assert "hypertensive_crisis" in problem
    assert "assess_target_organ_damage_urgently" in problem
    # 140 is plausible: complete, no problem.
    fixed = case.model_copy(
        update={
            "readings": {
                "systolic_bp": tuple(
                    r.model_copy(update={"value": 140.0}) for r in typed
                ),
                "diastolic_bp": normal,
            }
        }
    )
    again = kb.evaluate(fixed, as_of=when)
    assert again.status == "complete" and again.problems == []


def test_a_pregnancy_recorded_for_a_man_is_believed_and_noted() -> None:
    kb = KnowledgeBase.load()
    when = datetime(2024, 4, 2, tzinfo=UTC)
    pregnancy = CodedEntry(
        concept="pregnancy", system="http://snomed.info/sct", code="77386006"
    )
    diabetes = CodedEntry(
        concept="type_2_diabetes", system="http://snomed.info/sct", code="44054006"
    )
    case = Case(case_id="m", age=32, sex="male", conditions=(pregnancy, diabetes))
    result = kb.evaluate(case, as_of=when)
    assert (
        "a pregnancy is recorded for a patient whose recorded sex is male; it is "
        "taken as recorded: check the record"
    ) in result.notes
    ids = {r.id: r.status for r in result.recommendations}
    assert ids["acei_arb_contraindicated_pregnancy"] == "recommended"
    female = kb.evaluate(case.model_copy(update={"sex": "female"}), as_of=when)
    assert not any("recorded sex is male" in n for n in female.notes)


def test_an_implausible_value_names_the_conclusions_resting_on_it_through_findings(
    tmp_path: Path,
) -> None:
    # An A1C of 65 % confirms diabetes, which CHA2DS2-VASc counts, which the
    # anticoagulation advice reads: all of them rest on the typo.
    case = tmp_path / "af.yaml"
    case.write_text(
        "patient: {age: 59, sex: male}\n"
        "facts:\n"
        "  hba1c: [65 % @ 2024-01-10, 6.9 % @ 2024-03-10]\n"
        "conditions: [atrial_fibrillation]\n",
        encoding="utf-8",
    )
    result = KnowledgeBase.load().evaluate(case, as_of=datetime(2024, 4, 1, tzinfo=UTC))
    assert result.status == "partial"
    [problem] = result.problems
    head, named = problem.split(": check the record before acting on ")
    assert head == "hba1c 65 % is outside the plausible range 3-20 %"
    assert {
        "diabetes",
        "diabetes_confirmed",
        "cha2ds2_vasc",
        "anticoagulation_reasonable",
    } <= set(named.split(", "))


@pytest.mark.parametrize(
    ("born", "latest", "as_of", "status"),
    [
        # Born in 1959, on a day not recorded: 64 or 65 on 1 March 2024.
        (date(1959, 1, 1), date(1959, 12, 31), datetime(2024, 3, 1), "partial"),
        # Born in February 1959: 65 on 1 March 2024 whatever the day.
        (date(1959, 2, 1), date(1959, 2, 28), datetime(2024, 3, 1), "complete"),
        # The day is known.
        (date(1959, 6, 1), None, datetime(2024, 3, 1), "complete"),
    ],
)
def test_an_age_from_a_birth_year_alone_names_the_conclusions_it_decides(
    kb: KnowledgeBase, born: date, latest: date | None, as_of: datetime, status: str
) -> None:
    # A man with AF: age 65 gives a CHA2DS2-VASc point (anticoagulation
    # reasonable), 64 none (not recommended). The age is counted from the
    # first possible day; the conclusions that differ at the last possible
    # day are named, and only those (the lipid panel is the same at both).
    case = Case(
        case_id="yob",
        sex="male",
        birth_date=born,
        birth_date_latest=latest,
        conditions=[
            CodedEntry(
                concept="atrial_fibrillation",
                system="http://snomed.info/sct",
                code="49436004",
                onset=WHEN,
            )
        ],
    )
    result = kb.evaluate(case, as_of=as_of)
    assert result.status == status
    if status == "partial":
        [problem] = result.problems
        assert problem == (
            "the birth date is recorded as a year or month only, and the age is "
            "counted from its first day (65 a); born on its last day (age 64 a), "
            "the conclusions would differ (not made then, or made otherwise: "
            "af_oac_candidate, anticoagulation_reasonable, cha2ds2_vasc, "
            "doac_preferred; made then: anticoagulation_not_recommended, "
            "cha2ds2_vasc): check the birth date before acting on them"
        )
    else:
        assert result.problems == []
    # The same in a chunk, as a batch evaluates it.
    [chunked] = kb.evaluate_many([case], as_of=as_of)
    assert chunked.problems == result.problems


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_reading_that_is_not_a_finite_number_is_refused_when_made(
    value: float,
) -> None:
    # A NaN systolic (from a pandas frame) compared false with every cut
    # point: stage 2 hypertension vanished, with the assessment complete.
    with pytest.raises(ValidationError, match="finite number"):
        Reading(value=value, unit="mm[Hg]", time=WHEN)


def test_a_negative_age_is_refused_when_the_case_is_made() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Case(case_id="c", age=-1)


def test_a_rule_that_cannot_be_determined_names_only_what_could_change_it(
    kb: KnowledgeBase,
) -> None:
    # Diabetes and hypertension on the problem list, UACR 100 mg/g, no eGFR:
    # whether an ACE inhibitor is "strongly recommended" waits for the eGFR.
    # Blood pressure is not missing (the problem list already says
    # hypertension), and the UACR comparison reads as what it is.
    snomed = "http://snomed.info/sct"
    case = Case(
        case_id="acr",
        age=60,
        sex="male",
        conditions=[
            CodedEntry(concept="diabetes", system=snomed, code="73211009"),
            CodedEntry(concept="hypertension", system=snomed, code="38341003"),
        ],
        readings={"acr": [Reading(value=100.0, unit="mg/g", time=WHEN)]},
    )
    result = kb.evaluate(case, as_of=WHEN + timedelta(days=30))
    [strong] = [
        u for u in result.undetermined if u.rule_id == "acei_arb_strongly_recommended"
    ]
    assert strong.missing == ["egfr"]
    assert strong.reason == "acr 100 mg/g, not >= 300 mg/g; no egfr within 12 months"


def test_a_naive_date_of_death_is_utc_like_every_other_time(kb: KnowledgeBase) -> None:
    # It raised "can't compare offset-naive and offset-aware datetimes".
    case = _case({"bmi": [Reading(value=31.0, unit="kg/m2", time=WHEN)]})
    dead = case.model_copy(update={"deceased": datetime(2024, 6, 1)})
    dead = Case.model_validate(dead.model_dump())
    assert dead.deceased == datetime(2024, 6, 1, tzinfo=UTC)
    assert kb.evaluate(dead, as_of="last").as_of == datetime(2024, 1, 1, tzinfo=UTC)


def test_readings_built_without_a_unit_are_read_in_the_catalogue_unit_and_noted(
    kb: KnowledgeBase,
) -> None:
    # A pandas column of A1C in mmol/mol passed with no unit reads as %: the
    # note lets the caller see what was assumed.
    case = _case({"hba1c": [Reading(value=7.5, time=WHEN)]})
    result = kb.evaluate(case, as_of=WHEN)
    assert "hba1c: 1 reading without a unit read in %, the catalogue's unit" in (
        result.notes
    )


def test_a_text_fact_in_another_case_is_read_and_an_unknown_word_noted(
    kb: KnowledgeBase,
) -> None:
    # "Never" (as a pandas column may hold it) dropped the ASCVD findings in
    # silence; a word the catalogue does not know is now named.
    def smoker(word: str) -> Case:
        return _case({"smoking_status": [Reading(value=word, time=WHEN)]}).model_copy(
            update={"sex": "female"}
        )

    from engine.caseview import CaseView

    view = CaseView(smoker("Never"), WHEN, kb.catalogue)
    assert [r.value for r in view.readings["smoking_status"]] == ["never"]
    assert not any("smoking_status" in n for n in view.notes)
    odd = kb.evaluate(smoker("sometimes"), as_of=WHEN)
    assert any(
        n.startswith("smoking_status: `sometimes` is not one of ") for n in odd.notes
    )
