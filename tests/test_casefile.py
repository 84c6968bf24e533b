"""Tests for engine.casefile: hand-written YAML/JSON cases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from textwrap import dedent

import pytest

from engine.casefile import load_yaml, read_case_data, read_case_file
from engine.catalogue import parse_catalogue
from engine.errors import InputError
from engine.facts import Case

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def case(text: str, source: str = "cases/demo.yaml") -> Case:
    return read_case_file(dedent(text), source=source)


def error(text: str) -> InputError:
    with pytest.raises(InputError) as info:
        case(text)
    assert info.value.source == "cases/demo.yaml"
    return info.value


def test_demo_case_reads_as_a_clinician_would_check_it() -> None:
    path = ROOT / "examples" / "case-diabetic-ckd.yaml"
    c = read_case_file(path.read_text("utf-8"), source=str(path))
    assert (c.age, c.sex, c.birth_date) == (67, "female", None)
    assert [(r.value, r.unit) for r in c.readings["hba1c"]] == [(7.1, "%"), (6.9, "%")]
    assert [r.time for r in c.readings["hba1c"]] == [
        datetime(2024, 1, 10, tzinfo=UTC),
        datetime(2024, 4, 2, tzinfo=UTC),
    ]
    # The latest of each (the file may hold earlier results too).
    latest = {name: (r[-1].value, r[-1].unit) for name, r in c.readings.items()}
    assert latest["fasting_glucose"] == (131.0, "mg/dL")
    assert latest["creatinine"] == (1.4, "mg/dL")
    assert latest["acr"] == (45.0, "mg/g")
    assert [r.value for r in c.readings["systolic_bp"]] == [142.0, 142.0]
    assert [r.value for r in c.readings["diastolic_bp"]] == [88.0, 88.0]
    assert {r.unit for r in c.readings["systolic_bp"]} == {"mm[Hg]"}
    assert len({r.time for r in c.readings["systolic_bp"]}) == 2
    assert [e.concept for e in c.conditions] == ["hypertension"]
    assert [(e.concept, e.active) for e in c.medications] == [("metformin", True)]
    assert c.last_recorded == datetime(2024, 4, 2, tzinfo=UTC)
    assert c.notes == ()


def test_brief_example_all_value_forms() -> None:
    c = case(
        """\
        # A case typed by hand. Every fact has a unit.
        id: example-ckd-diabetes
        patient:
          age: 67
          sex: female
        facts:
          systolic_bp: 142 mmHg
          diastolic_bp: {value: 88, unit: mmHg, time: 2024-03-01}
          hba1c:
            - 7.1 % @ 2024-01-10
            - {value: 53, unit: mmol/mol, time: 2024-04-02}
          creatinine: 1.4 mg/dL
        conditions: [hypertension]
        medications: [metformin]
        allergies: [penicillin]
        """
    )
    assert c.case_id == "example-ckd-diabetes"
    (systolic,) = c.readings["systolic_bp"]
    assert (systolic.value, systolic.unit, systolic.time) == (142.0, "mm[Hg]", None)
    assert systolic.source == "case file line 7"
    (diastolic,) = c.readings["diastolic_bp"]
    assert diastolic.time == datetime(2024, 3, 1, tzinfo=UTC)
    first, second = c.readings["hba1c"]
    assert (first.value, first.unit, first.source) == (7.1, "%", "case file line 10")
    assert (second.value, second.unit) == (53.0, "mmol/mol")
    (allergy,) = c.allergies
    assert (allergy.concept, allergy.system, allergy.code) == (
        None,
        "local",
        "penicillin",
    )


def test_default_id_is_the_file_stem_and_undated_readings_sort_last() -> None:
    c = case(
        """\
        facts:
          systolic_bp: [150 mmHg, 130 mmHg @ 2020-01-01, 140 mmHg @ 2021-01-01]
        """,
        source="some/dir/mrs-x.yaml",
    )
    assert c.case_id == "mrs-x"
    assert [r.value for r in c.readings["systolic_bp"]] == [130.0, 140.0, 150.0]


def test_minimal_file_with_birth_date() -> None:
    path = DATA / "case-minimal.yaml"
    c = read_case_file(path.read_text("utf-8"), source=str(path))
    assert c.case_id == "case-minimal"
    assert c.birth_date == date(1957, 3, 2)
    assert (c.sex, c.age) == ("male", None)
    assert [r.unit for r in c.readings["diastolic_bp"]] == ["mm[Hg]"]
    assert c.last_recorded is None


def test_json_case_file_converts_nothing_and_maps_free_text() -> None:
    path = DATA / "case-json.json"
    c = read_case_file(path.read_text("utf-8"), source=str(path))
    (creatinine,) = c.readings["creatinine"]
    assert (creatinine.value, creatinine.unit) == (124.0, "umol/L")
    assert [r.value for r in c.readings["fasting_glucose"]] == [6.8, 7.3]
    assert [e.concept for e in c.conditions] == ["type_2_diabetes"]
    assert [e.concept for e in c.medications] == ["metformin"]


def test_times_with_offsets_and_yaml_timestamps() -> None:
    c = case(
        """\
        facts:
          hba1c:
            - 7.0 % @ 2024-01-10T08:30:00+02:00
            - {value: 7.2, unit: '%', time: 2024-02-10 08:30:00}
            - {value: 7.4, unit: '%', time: '2024-03'}
        """
    )
    times = [r.time for r in c.readings["hba1c"]]
    assert times == [
        datetime(2024, 1, 10, 8, 30, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 2, 10, 8, 30, tzinfo=UTC),
        datetime(2024, 3, 1, tzinfo=UTC),
    ]


def test_conditions_medications_allergies_with_details() -> None:
    c = case(
        """\
        conditions:
          - hypertension
          - {name: Atrial fibrillation, onset: 2019-04-01, end: 2020-01-01}
        medications:
          - lisinopril 10 mg
          - {name: metformin, onset: 2022-01-01, active: false}
          - herbal tea
        allergies: [metformin, latex]
        """
    )
    assert [(e.concept, e.active) for e in c.conditions] == [
        ("hypertension", True),
        ("atrial_fibrillation", False),
    ]
    assert c.conditions[1].end == datetime(2020, 1, 1, tzinfo=UTC)
    # Lisinopril is an ACE inhibitor and an antihypertensive: one entry each.
    assert [(e.concept, e.active) for e in c.medications] == [
        ("ace_inhibitor", True),
        ("antihypertensive", True),
        ("metformin", False),
        (None, True),
    ]
    assert c.medications[3].code == "herbal tea"
    assert c.notes == (
        "medication `herbal tea` (line 7) is not one the knowledge base knows; "
        "kept without a concept",
    )
    assert [e.concept for e in c.allergies] == ["metformin", None]
    assert c.last_recorded == datetime(2022, 1, 1, tzinfo=UTC)


def test_a_single_name_is_a_list_of_one() -> None:
    c = case("conditions: hypertension\nmedications: metformin\n")
    assert [e.concept for e in c.conditions] == ["hypertension"]
    assert [e.concept for e in c.medications] == ["metformin"]


def test_implausible_value_is_kept_with_a_note() -> None:
    c = case("facts:\n  systolic_bp: 420 mmHg\n")
    assert c.readings["systolic_bp"][0].value == 420.0
    assert any("plausible" in n and "case file line 2" in n for n in c.notes)


def test_egfr_in_plain_ml_per_min_is_read_with_a_note() -> None:
    c = case("facts:\n  egfr: 44 mL/min\n")
    assert c.readings["egfr"][0].unit == "mL/min/{1.73_m2}"
    assert len(c.notes) == 1


def test_plain_mapping_has_no_positions() -> None:
    c = read_case_data(
        {"patient": {"age": 40}, "facts": {"bmi": "31 kg/m2"}}, source="api"
    )
    assert c.readings["bmi"][0].source == "case file"
    with pytest.raises(InputError) as info:
        read_case_data({"facts": {"bmi": "31"}}, source="api")
    assert info.value.where == "facts.bmi"


# --- errors -----------------------------------------------------------------


def test_unknown_fact_suggests_the_nearest() -> None:
    err = error("facts:\n  sytolic_bp: 142 mmHg\n")
    assert err.where == "line 2, column 3 (facts.sytolic_bp)"
    assert err.reason == "unknown fact `sytolic_bp`; did you mean `systolic_bp`?"
    # With a likely match the 45 facts are not listed, only where they are.
    assert err.hint == "the facts are listed in engine/catalogue.yaml"
    far = error("facts:\n  zzz: 1 mmHg\n")
    assert far.reason == "unknown fact `zzz`"
    assert "systolic_bp" in far.hint


def test_condition_under_facts_is_pointed_to_conditions() -> None:
    err = error("facts:\n  hypertension: yes\n")
    assert err.reason == "`hypertension` is a condition, not a measured fact"
    assert err.hint == "list it under `conditions`"


def test_age_under_facts_is_pointed_to_patient() -> None:
    err = error("facts:\n  age: 67 a\n")
    assert err.where == "line 2, column 3 (facts.age)"


def test_unknown_top_level_key_suggests_the_nearest() -> None:
    err = error("patient: {age: 50}\nfact:\n  bmi: 30 kg/m2\n")
    assert err.where == "line 2, column 1 (fact)"
    assert err.reason == "unknown key `fact`; did you mean `facts`?"


def test_unknown_patient_key() -> None:
    err = error("patient:\n  gender: female\n")
    assert err.where == "line 2, column 3 (patient.gender)"
    assert err.reason.startswith("unknown key `gender`")


def test_an_impossible_date_is_located_and_not_repeated() -> None:
    # YAML builds dates itself; 30 February was a bare ValueError, no position.
    err = error("patient:\n  birth_date: 1961-02-30\n  sex: female\n")
    assert err.where == "line 2, column 15"
    assert err.reason == "not a real date (day is out of range for month)"
    assert "1961" not in str(err)  # a birth date is not echoed
    assert err.hint == "write a real date as YYYY-MM-DD (or YYYY-MM-DDThh:mm)"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("patient:\n  birth_date: 15/03/1970\n", "patient.birth_date"),
        ("patient:\n  birth_date: 1970-03-15T25:00\n", "patient.birth_date"),
        ("patient:\n  birth_date: March 15, 1970\n", "patient.birth_date"),
        ("patient:\n  age: 80\n  deceased: 15.04.2020\n", "patient.deceased"),
    ],
)
def test_a_malformed_birth_or_death_date_is_not_echoed(text: str, where: str) -> None:
    err = error(text)
    assert where in err.where
    assert err.reason == "bad date"
    assert "1970" not in str(err) and "2020" not in str(err)


def test_value_without_unit() -> None:
    err = error("facts:\n  hba1c:\n    - 7.1 %\n    - 6.9\n")
    assert err.where == "line 4, column 7 (facts.hba1c[1])"
    assert err.reason == "the value has no unit; hba1c is recorded in %, mmol/mol"
    assert err.hint == "record the value in one of: %, mmol/mol"


def test_value_without_unit_in_a_mapping() -> None:
    err = error("facts:\n  creatinine: {value: 1.2}\n")
    assert "creatinine" in err.reason and "no unit" in err.reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "facts:\n  creatinine: 1.4 mg/dl/zz\n",
            "`mg/dl/zz` is not a UCUM unit (creatinine is recorded in mg/dL, umol/L)",
        ),
        (
            "facts:\n  creatinine: 1.4 g\n",
            "`g` is not a unit of creatinine (accepted: mg/dL, umol/L)",
        ),
    ],
)
def test_bad_units(text: str, reason: str) -> None:
    err = error(text)
    assert err.where == "line 2, column 15 (facts.creatinine)"
    assert err.reason == reason


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("facts:\n  hba1c: 7 % @ 2024-13-01\n", "line 2, column 10 (facts.hba1c)"),
        (
            "facts:\n  hba1c: {value: 7, unit: '%', time: yesterday}\n",
            "line 2, column 38 (facts.hba1c.time)",
        ),
        (
            "patient:\n  birth_date: 03/02/1957\n",
            "line 2, column 15 (patient.birth_date)",
        ),
        (
            "conditions:\n  - {name: hypertension, onset: soon}\n",
            "line 2, column 33 (conditions[0].onset)",
        ),
    ],
)
def test_bad_dates(text: str, where: str) -> None:
    err = error(text)
    assert err.where == where
    assert err.reason.startswith("bad date")


def test_unknown_condition_suggests_the_nearest() -> None:
    err = error("conditions: [hypertention]\n")
    assert err.where == "line 1, column 14 (conditions[0])"
    assert (
        err.reason == "unknown condition `hypertention`; did you mean `hypertension`?"
    )


def test_duplicate_keys_are_refused() -> None:
    err = error("patient:\n  age: 60\n  age: 61\n")
    assert err.where == "line 3, column 3"
    assert err.reason == "duplicate key `age`"


def test_tabs_are_refused() -> None:
    err = error("patient:\n\tage: 60\n")
    assert err.where == "line 2, column 1"
    assert err.reason == "a tab in the indentation"


def test_syntax_error_names_line_and_column() -> None:
    err = error("facts:\n  bmi: [30 kg/m2\n")
    assert err.where.startswith("line 3, column 1")
    assert err.reason.startswith("not valid YAML")
    assert err.hint


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- 1\n- 2\n", "expected a mapping, got a list"),
        ("just text\n", "expected a mapping, got text"),
        ("# only a comment\n", "the file is empty"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, reason: str) -> None:
    assert error(text).reason == reason


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("id: ''\n", "line 1, column 5 (id)", "`id` must be a non-empty text"),
        (
            "patient: {age: 67, birth_date: 1957-01-01}\n",
            "line 1, column 20 (patient.birth_date)",
            "both `age` and `birth_date` are given",
        ),
        (
            "patient: {age: 67.5}\n",
            "line 1, column 16 (patient.age)",
            "age must be whole years from 0 to 130, got 67.5",
        ),
        (
            "patient: {sex: femail}\n",
            "line 1, column 16 (patient.sex)",
            "sex not recognised; did you mean `female`?",
        ),
        (
            "patient: 67\n",
            "line 1, column 10 (patient)",
            "expected a mapping, got a number",
        ),
        (
            "facts: [bmi]\n",
            "line 1, column 8 (facts)",
            "expected a mapping of fact names to values, got a list",
        ),
        ("facts:\n  bmi: []\n", "line 2, column 8 (facts.bmi)", "no readings given"),
        (
            "facts:\n  bmi: thirty\n",
            "line 2, column 8 (facts.bmi)",
            "cannot read 'thirty' as a value",
        ),
        (
            "facts:\n  bmi:\n",
            "line 2, column 3 (facts.bmi)",
            "expected a value with a unit, got nothing",
        ),
        (
            "facts:\n  bmi: {value: '30', unit: kg/m2}\n",
            "line 2, column 16 (facts.bmi.value)",
            "value must be a number, got text",
        ),
        (
            "facts:\n  bmi: {unit: kg/m2}\n",
            "line 2, column 8 (facts.bmi)",
            "the reading has no `value`",
        ),
        (
            "facts:\n  bmi: {value: 30, units: kg/m2}\n",
            "line 2, column 20 (facts.bmi.units)",
            "unknown key `units`; did you mean `unit`?",
        ),
        (
            "facts:\n  bmi: {value: 30, unit: 5}\n",
            "line 2, column 26 (facts.bmi.unit)",
            "unit must be text",
        ),
        (
            "conditions: {hypertension: true}\n",
            "line 1, column 13 (conditions)",
            "expected a list of names, got a mapping",
        ),
        (
            "medications: [42]\n",
            "line 1, column 15 (medications[0])",
            "expected a name, got a number",
        ),
        (
            "medications: [{dose: 5}]\n",
            "line 1, column 16 (medications[0].dose)",
            "unknown key `dose`",
        ),
        (
            "medications: [{onset: 2020-01-01}]\n",
            "line 1, column 15 (medications[0])",
            "the entry has no `name`",
        ),
        (
            "allergies: [{name: latex, active: maybe}]\n",
            "line 1, column 35 (allergies[0].active)",
            "active must be true or false",
        ),
    ],
)
def test_content_errors(text: str, where: str, reason: str) -> None:
    err = error(text)
    assert err.where == where
    assert err.reason.startswith(reason)


def test_load_yaml_keeps_positions() -> None:
    doc = load_yaml("facts:\n  bmi: 30 kg/m2\n", source="x")
    assert doc["facts"].lc.value("bmi") == (1, 7)


def test_deceased_date() -> None:
    c = case("patient: {age: 80, deceased: 2023-09-09}\n")
    assert c.deceased == datetime(2023, 9, 9, tzinfo=UTC)


def test_a_date_is_not_a_value() -> None:
    err = error("facts:\n  bmi: 2024-01-01\n")
    assert err.reason == "expected a value with a unit, got a date"


def test_control_characters_are_refused() -> None:
    err = error("patient: {age: 4\x070}\n")
    assert err.reason.startswith("not valid YAML")


def test_unitless_score_needs_no_unit() -> None:
    catalogue = parse_catalogue(
        {"quantities": {"pain": {"unit": "{score}", "range": [0, 10]}}}
    )
    c = read_case_file("facts:\n  pain: 4\n", source="p.yaml", catalogue=catalogue)
    assert [(r.value, r.unit) for r in c.readings["pain"]] == [(4.0, "{score}")]


def test_non_finite_values_are_refused() -> None:
    err = error("facts:\n  bmi: {value: .nan, unit: kg/m2}\n")
    assert (err.where, err.reason) == (
        "line 2, column 8 (facts.bmi)",
        "nan is not a number",
    )


def test_accepted_unit_without_a_conversion_is_an_error() -> None:
    catalogue = parse_catalogue(
        {
            "quantities": {
                "glucose_x": {
                    "unit": "mg/dL",
                    "units": ["mg/dL", "mmol/L"],
                    "range": [20, 1500],
                }
            }
        }
    )
    with pytest.raises(InputError) as info:
        read_case_file(
            "facts:\n  glucose_x: 7 mmol/L\n", source="g.yaml", catalogue=catalogue
        )
    assert info.value.where == "line 2, column 14 (facts.glucose_x)"
    assert "cannot be converted" in info.value.reason


def test_a_reading_dated_in_the_future_does_not_move_the_last_entry() -> None:
    c = case(
        """\
        patient: {age: 61, sex: male}
        facts:
          systolic_bp: [136 mmHg @ 2024-02-01, 188 mmHg @ 2099-02-01]
        """
    )
    assert c.last_time() == datetime(2024, 2, 1, tzinfo=UTC)
    (note,) = [n for n in c.notes if "later than the time" in n]
    assert "(case file line 3; a data error?)" in note


def test_a_name_typed_as_the_sex_is_not_repeated() -> None:
    err = error("patient: {sex: Mikel Baumbach}\n")
    assert "Mikel" not in str(err) and "Baumbach" not in str(err)
    assert err.hint == "use one of: female, male, other, unknown"


def test_deceased_yes_or_no_asks_for_the_date_of_death() -> None:
    err = error("patient: {age: 70, sex: male, deceased: true}\n")
    assert err.where == "line 1, column 41 (patient.deceased)"
    assert err.reason == "`deceased` takes the date of death, not yes or no"
    assert err.hint.startswith("write the date (YYYY-MM-DD)")


def test_a_birth_year_alone_is_kept_as_a_span_of_days() -> None:
    got = case("patient: {birth_date: 1959, sex: male}\n")  # YAML: a number
    assert (got.birth_date, got.birth_date_latest) == (
        date(1959, 1, 1),
        date(1959, 12, 31),
    )
    full = case("patient: {birth_date: 1959-06-15, sex: male}\n")
    assert (full.birth_date, full.birth_date_latest) == (date(1959, 6, 15), None)


def test_an_id_written_as_a_date_is_taken_as_text() -> None:
    assert case("id: 2024-01-01\npatient: {age: 50, sex: male}\n").case_id == (
        "2024-01-01"
    )


def test_a_decimal_comma_is_named_and_meq_is_read_as_ucum() -> None:
    err = error("patient: {age: 50, sex: male}\nfacts: {hba1c: '6,5 %'}\n")
    assert err.reason == "6,5 has a decimal comma"
    assert err.hint == "write the decimal with a point: 6.5"
    # Laboratories write potassium in mEq/L; UCUM spells it meq/L (1 mmol/L).
    got = case("patient: {age: 50, sex: male}\nfacts: {potassium: 6.5 mEq/L}\n")
    [k] = got.readings["potassium"]
    assert (k.value, k.unit) == (6.5, "meq/L")


@pytest.mark.parametrize(
    "name", ["no aspirin", "metformin - discontinued", "Not on statin"]
)
def test_a_medication_written_as_not_taken_is_refused(name: str) -> None:
    # "no aspirin" read as aspirin gave HAS-BLED its drug point.
    err = error(f"patient: {{age: 60, sex: male}}\nmedications: [{name!r}]\n")
    assert err.reason == f"`{name}` reads as a medication not taken"
    assert "give a stopped one with its end" in err.hint
