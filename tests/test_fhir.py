"""Tests for engine.fhir: FHIR R4 bundles into Cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine import KnowledgeBase
from engine.catalogue import default_catalogue, parse_catalogue
from engine.errors import InputError
from engine.facts import Case
from engine.fhir import parse_datetime, read_bundle

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fhir"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
CEST = timezone(timedelta(hours=2))


# --- a small bundle builder ---------------------------------------------------


def patient(pid: str = "p1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "gender": "female",
        "birthDate": "1957-03-02",
        "name": [{"family": "Example", "given": ["Alice"]}],
        "address": [{"line": ["1 Main Street"], "city": "Springfield"}],
        **extra,
    }


def quantity(value: Any, unit: str | None = "mm[Hg]") -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit is not None:
        q.update(unit=unit, system=UCUM, code=unit)
    return q


def observation(
    oid: str,
    loinc: str,
    value: Any,
    unit: str | None,
    when: str = "2024-03-01T09:30:00+02:00",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "effectiveDateTime": when,
        "valueQuantity": quantity(value, unit),
        **extra,
    }


def bp_panel(
    oid: str, systolic: float, diastolic: float, when: str, panel: str = "85354-9"
) -> dict[str, Any]:
    def part(code: str, value: float) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": quantity(value),
        }

    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": panel}]},
        "effectiveDateTime": when,
        "component": [part("8480-6", systolic), part("8462-4", diastolic)],
    }


def condition(
    cid: str, code: str, status: str | None = "active", **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": SNOMED, "code": code, "display": "Dx"}]},
        "onsetDateTime": "2015-06-01T10:00:00+00:00",
        **extra,
    }
    if status is not None:
        resource["clinicalStatus"] = {"coding": [{"code": status}]}
    return resource


def med_request(mid: str, status: str = "active", **medication: Any) -> dict[str, Any]:
    if not medication:
        medication = {
            "medicationCodeableConcept": {
                "coding": [
                    {
                        "system": RXNORM,
                        "code": "860975",
                        "display": "24 HR Metformin hydrochloride 500 MG",
                    }
                ]
            }
        }
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "authoredOn": "2020-02-03T08:00:00+00:00",
        **medication,
    }


def allergy(aid: str, coding: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": aid,
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [coding]},
        "recordedDate": "2010-01-01",
        **extra,
    }


def bundle(*resources: dict[str, Any], with_patient: bool = True) -> dict[str, Any]:
    items = [patient(), *resources] if with_patient else list(resources)
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{r.get('id', i)}", "resource": r}
            for i, r in enumerate(items)
        ],
    }


def read(*resources: dict[str, Any]) -> Case:
    return read_bundle(bundle(*resources), source="test.json")


def error(data: dict[str, Any]) -> InputError:
    with pytest.raises(InputError) as info:
        read_bundle(data, source="test.json")
    assert info.value.source == "test.json"
    return info.value


# --- observations -----------------------------------------------------------


def test_bp_panel_gives_systolic_and_diastolic_at_its_time() -> None:
    case = read(bp_panel("bp1", 142, 88, "2024-03-01T09:30:00+02:00"))
    (systolic,) = case.readings["systolic_bp"]
    (diastolic,) = case.readings["diastolic_bp"]
    assert (systolic.value, systolic.unit) == (142.0, "mm[Hg]")
    assert (diastolic.value, diastolic.unit) == (88.0, "mm[Hg]")
    assert systolic.time == datetime(2024, 3, 1, 9, 30, tzinfo=CEST)
    assert systolic.source == "Observation/bp1"
    assert case.last_recorded == systolic.time


def test_older_bp_panel_code_reads_the_same() -> None:
    case = read(bp_panel("bp1", 128, 79, "2019-05-04", panel="55284-4"))
    assert [r.value for r in case.readings["systolic_bp"]] == [128.0]


def test_readings_are_sorted_oldest_first() -> None:
    case = read(
        bp_panel("late", 150, 90, "2024-01-01T00:00:00Z"),
        bp_panel("early", 130, 80, "2020-01-01T00:00:00Z"),
    )
    assert [r.source for r in case.readings["systolic_bp"]] == [
        "Observation/early",
        "Observation/late",
    ]


def test_entered_in_error_and_cancelled_are_skipped_amended_kept() -> None:
    case = read(
        observation("a1", "4548-4", 9.9, "%", status="entered-in-error"),
        observation("a2", "4548-4", 8.8, "%", status="cancelled"),
        observation("a3", "4548-4", 7.1, "%", status="amended"),
        observation("a4", "4548-4", 6.9, "%", status="corrected"),
    )
    assert sorted(r.value for r in case.readings["hba1c"]) == [6.9, 7.1]


def test_an_amended_results_earlier_version_never_counts() -> None:
    original = observation(
        "h1", "4548-4", 9.1, "%", status="final", meta={"versionId": "1"}
    )
    amended = observation(
        "h1", "4548-4", 7.1, "%", status="amended", meta={"versionId": "2"}
    )
    case = read(amended, original)  # order in the bundle does not matter
    assert [r.value for r in case.readings["hba1c"]] == [7.1]
    assert "Observation/h1: an earlier version was left out" in case.notes


def test_umol_creatinine_arrives_as_umol_per_l() -> None:
    obs = observation("c1", "2160-0", 124, None)
    obs["valueQuantity"]["unit"] = "µmol/L"
    (reading,) = read(obs).readings["creatinine"]
    assert (reading.value, reading.unit) == (124.0, "umol/L")


def test_ifcc_hba1c_keeps_its_unit() -> None:
    (reading,) = read(observation("h", "4548-4", 53, "mmol/mol")).readings["hba1c"]
    assert (reading.value, reading.unit) == (53.0, "mmol/mol")


def test_unit_code_preferred_over_display_unit() -> None:
    obs = observation("g", "2339-0", 131, "mg/dL")
    obs["valueQuantity"]["unit"] = "milligram per decilitre"
    (reading,) = read(obs).readings["random_glucose"]
    assert reading.unit == "mg/dL"


def test_non_ucum_code_falls_back_to_unit() -> None:
    obs = observation("g", "2339-0", 7.3, "mmol/L")
    obs["valueQuantity"].update(system="http://example.org/units", code="MMOLL")
    (reading,) = read(obs).readings["random_glucose"]
    assert reading.unit == "mmol/L"


def test_observation_time_fallbacks_and_partial_dates() -> None:
    period = observation("p", "4548-4", 7.0, "%")
    del period["effectiveDateTime"]
    period["effectivePeriod"] = {"start": "2019-05"}
    issued = observation("i", "39156-5", 31.2, "kg/m2")
    del issued["effectiveDateTime"]
    issued["issued"] = "2021-01-02T03:04:05.678+01:00"
    ended = observation("e", "2160-0", 1.1, "mg/dL")
    del ended["effectiveDateTime"]
    ended["effectivePeriod"] = {"end": "2015-01-01"}
    case = read(period, issued, ended)
    assert case.readings["hba1c"][0].time == datetime(2019, 5, 1, tzinfo=UTC)
    assert case.readings["bmi"][0].time == datetime(
        2021, 1, 2, 2, 4, 5, 678000, tzinfo=UTC
    )
    # A period with only its end is placed there, not taken as current.
    assert case.readings["creatinine"][0].time == datetime(2015, 1, 1, tzinfo=UTC)
    assert case.problems == ()


def test_a_coded_value_of_a_measured_fact_leaves_it_out_as_text_does() -> None:
    coded = observation("c", "14959-1", 0, "mg/g")
    del coded["valueQuantity"]
    coded["valueCodeableConcept"] = {"text": "negative"}
    case = read(observation("a", "14959-1", 300, "mg/g", "2023-01-01"), coded)
    assert "acr" not in case.readings
    assert case.problems == (
        "acr not used: Observation/c valueCodeableConcept: the value is given as "
        "a coded concept, not as a quantity with a unit",
    )


def test_an_undated_observation_leaves_its_fact_out_and_is_named() -> None:
    # An eGFR of 25 with no date could be older or newer than the dated one:
    # it is not taken as current (severe impairment today), and the dated 62
    # must not stand as the latest either.
    dated = observation("d", "98979-8", 62, "mL/min/{1.73_m2}")
    undated = observation("u", "98979-8", 25, "mL/min/{1.73_m2}")
    del undated["effectiveDateTime"]
    weight = observation("w", "29463-7", 80, "kg")
    case = read(dated, undated, weight)
    assert "egfr" not in case.readings
    assert [r.value for r in case.readings["body_weight"]] == [80.0]
    assert case.problems == (
        "egfr not used: Observation/u: the Observation has no date "
        "(effective[x] or issued)",
    )


def test_unknown_and_non_loinc_codes_are_ignored() -> None:
    other = observation("x", "72514-3", 4, "{score}")
    snomed = observation("y", "8480-6", 120, "mm[Hg]")
    snomed["code"]["coding"][0]["system"] = SNOMED
    no_value = observation("z", "8480-6", 120, "mm[Hg]")
    del no_value["valueQuantity"]
    assert read(other, snomed, no_value).readings == {}


def test_observation_of_no_fact_is_skipped_without_validation() -> None:
    # A value of the wrong type would be an error, were the resource validated.
    survey = observation("s", "72514-3", "four", "{score}", effectiveDateTime=5)
    assert read(survey).readings == {}


def test_observation_with_a_fact_code_among_others_is_validated() -> None:
    obs = observation("o", "8480-6", "142", "mm[Hg]")
    obs["code"]["coding"].insert(0, {"system": LOINC, "code": "72514-3"})
    err = error(bundle(obs))
    assert err.where == "Observation/o (entry 1) valueQuantity.value"
    assert err.reason == "Input should be a valid number (found a string)"


def test_observation_with_a_fact_code_in_a_component_is_validated() -> None:
    panel = bp_panel("bp", 120, 80, "2024", panel="72514-3")
    panel["component"][0]["valueQuantity"]["value"] = "120"
    err = error(bundle(panel))
    assert err.where == "Observation/bp (entry 1) component[0].valueQuantity.value"


@pytest.mark.parametrize(
    ("code", "where"),
    [
        ("not an object", "code"),
        ({"coding": {"system": LOINC}}, "code.coding"),
        ({"coding": ["8480-6"]}, "code.coding[0]"),
        ({"coding": [{"system": LOINC, "code": 8480}]}, "code.coding[0].code"),
        ({"coding": [{"system": 1, "code": "x"}]}, "code.coding[0].system"),
    ],
)
def test_observation_with_a_malformed_code_is_validated(code: Any, where: str) -> None:
    # The codes cannot show that it feeds no fact, so it is not skipped.
    obs = observation("o", "72514-3", 4, "{score}", code=code)
    assert error(bundle(obs)).where == f"Observation/o (entry 1) {where}"


def test_observation_with_malformed_components_is_validated() -> None:
    obs = observation("o", "72514-3", 4, "{score}", component=[{"code": 1}])
    assert error(bundle(obs)).where == "Observation/o (entry 1) component[0].code"
    obs = observation("o", "72514-3", 4, "{score}", component="x")
    assert error(bundle(obs)).where == "Observation/o (entry 1) component"
    obs = observation("o", "72514-3", 4, "{score}", component=["x"])
    assert error(bundle(obs)).where == "Observation/o (entry 1) component[0]"


def test_implausible_value_is_kept_with_a_note() -> None:
    case = read(observation("s", "8480-6", 400, "mm[Hg]"))
    assert case.readings["systolic_bp"][0].value == 400.0
    assert any("systolic_bp 400" in n and "plausible" in n for n in case.notes)


def test_plausibility_is_judged_in_the_canonical_unit() -> None:
    # 1200 umol/L is 13.6 mg/dL: plausible, though above 25 as a raw number.
    case = read(observation("c", "2160-0", 1200, "umol/L"))
    assert case.notes == ()


def test_egfr_without_annotation_is_read_per_1_73_m2_with_a_note() -> None:
    case = read(
        observation("e1", "33914-3", 58.2, "mL/min"),
        observation("e2", "33914-3", 61.0, "mL/min", when="2024-05-01"),
    )
    assert {r.unit for r in case.readings["egfr_mdrd"]} == {"mL/min/{1.73_m2}"}
    assert case.notes == (
        "egfr_mdrd recorded in `mL/min` was read as `mL/min/{1.73_m2}` (2 values)",
    )


def test_an_annotated_ucum_unit_is_read_as_the_unit_it_annotates() -> None:
    # UCUM: an annotation in braces does not change the unit. One HbA1c in
    # `%{HbA1c}` refused the whole record.
    case = read(observation("a", "4548-4", 7.1, "%{HbA1c}"))
    assert [(r.value, r.unit) for r in case.readings["hba1c"]] == [(7.1, "%")]
    assert case.notes == ("hba1c recorded in `%{HbA1c}` was read as `%` (1 value)",)


def test_a_bound_leaves_its_fact_out_so_an_older_value_is_not_the_latest() -> None:
    # eGFR ">90" (as laboratories report it) after an eGFR of 25: reading the
    # 25 as the latest would call for stopping metformin.
    old = observation("e1", "98979-8", 25, "mL/min/{1.73_m2}", "2023-12-01")
    bound = observation("e2", "98979-8", 90, "mL/min/{1.73_m2}", "2024-05-01")
    bound["valueQuantity"]["comparator"] = ">"
    case = read(old, bound)
    assert "egfr" not in case.readings
    assert case.problems == (
        "egfr not used: Observation/e2 (entry 2) valueQuantity.comparator: "
        "recorded as >90, a bound, not a value",
    )


@pytest.mark.parametrize(
    ("unit", "reason"),
    [
        ("furlong", "`furlong` is not a UCUM unit (systolic_bp is recorded in mm[Hg])"),
        ("mg/dL", "`mg/dL` is not a unit of systolic_bp (accepted: mm[Hg])"),
    ],
)
def test_a_bad_unit_leaves_its_fact_out_whole_and_says_where(
    unit: str, reason: str
) -> None:
    # One unreadable value makes the whole fact unusable: with the rest kept,
    # the latest reading or a mean could be wrong. The rest of the record is
    # read, and the assessment is partial.
    case = read(
        observation("ok1", "8480-6", 128, "mm[Hg]", "2024-02-01"),
        observation("abc123", "8480-6", 142, unit, "2024-03-01"),
        observation("a1c", "4548-4", 7.1, "%"),
    )
    assert "systolic_bp" not in case.readings
    assert [r.value for r in case.readings["hba1c"]] == [7.1]
    assert case.problems == (
        "systolic_bp not used: Observation/abc123 (entry 2) valueQuantity.code: "
        f"{reason}; record the value in one of: mm[Hg]",
    )
    when = datetime(2024, 4, 1, tzinfo=UTC)
    result = KnowledgeBase.load().evaluate(case, as_of=when)
    assert result.status == "partial"
    assert result.problems[0] == case.problems[0]
    assert any(u.rule_id == "bp_stage_2" for u in result.undetermined)


def test_a_missing_unit_leaves_its_fact_out_naming_the_unit_field() -> None:
    case = read(observation("n", "4548-4", 7.0, None))
    assert "hba1c" not in case.readings
    assert case.problems == (
        "hba1c not used: Observation/n (entry 1) valueQuantity.unit: the value has "
        "no unit; hba1c is recorded in %, mmol/mol; record the value in one of: "
        "%, mmol/mol",
    )


def test_a_bad_component_unit_names_the_component() -> None:
    panel = bp_panel("bp9", 142, 88, "2024-03-01")
    panel["component"][1]["valueQuantity"].update(code="kg", unit="kg")
    case = read(panel)
    assert "diastolic_bp" not in case.readings
    assert [r.value for r in case.readings["systolic_bp"]] == [142.0]
    [problem] = case.problems
    assert problem.startswith(
        "diastolic_bp not used: Observation/bp9 (entry 1) "
        "component[1].valueQuantity.code"
    )


def test_kpa_blood_pressure_is_accepted_as_the_same_dimension() -> None:
    (reading,) = read(observation("k", "8480-6", 16, "kPa")).readings["systolic_bp"]
    assert reading.unit == "kPa"


# --- patient ----------------------------------------------------------------


def test_patient_fields() -> None:
    case = read_bundle(
        bundle(patient("pid-7", deceasedDateTime="2023-01-05"), with_patient=False),
        source="x.json",
    )
    assert case.case_id == "pid-7"
    assert case.sex == "female"
    assert str(case.birth_date) == "1957-03-02"
    assert case.deceased == datetime(2023, 1, 5, tzinfo=UTC)
    assert case.source == "x.json"


@pytest.mark.parametrize(
    ("gender", "sex"), [("male", "male"), ("other", "other"), ("unknown", "unknown")]
)
def test_gender_maps_to_sex(gender: str, sex: str) -> None:
    data = bundle(patient(gender=gender), with_patient=False)
    assert read_bundle(data, source="t").sex == sex


def test_no_gender_gives_no_sex() -> None:
    p = patient()
    del p["gender"]
    assert read_bundle(bundle(p, with_patient=False), source="t").sex is None


def test_no_identifying_details_reach_the_case() -> None:
    dumped = read(bp_panel("b", 120, 80, "2024-01-01")).model_dump_json()
    assert "Alice" not in dumped and "Main Street" not in dumped
    assert "Springfield" not in dumped


def test_deceased_without_a_date_is_noted() -> None:
    data = bundle(patient(deceasedBoolean=True), with_patient=False)
    case = read_bundle(data, source="t")
    assert case.deceased is None
    assert case.notes == ("the patient is recorded as deceased, without a date",)


def test_missing_patient() -> None:
    err = error(bundle(bp_panel("b", 1, 1, "2024"), with_patient=False))
    assert err.where == "Bundle.entry"
    assert err.reason == "the bundle holds no Patient resource"
    assert err.hint


@pytest.mark.parametrize(
    ("element", "value", "reason"),
    [
        ("birthDate", "1961-02-30", "malformed date"),
        ("deceasedDateTime", "Johnny Qwerty died 1999", "malformed date"),
        ("gender", "Johnny Qwerty", "the gender is not a FHIR administrative gender"),
    ],
)
def test_a_malformed_patient_detail_is_named_but_not_repeated(
    element: str, value: str, reason: str
) -> None:
    # Messages reach logs and batch error records: no identifying value.
    err = error(bundle(patient("p1", **{element: value}), with_patient=False))
    assert err.where.endswith(element)
    assert err.reason == reason
    assert value not in str(err) and "1961" not in str(err)


def test_two_patients() -> None:
    err = error(bundle(patient("a"), patient("b"), with_patient=False))
    assert err.where == "Bundle.entry"
    assert err.reason == "the bundle holds 2 Patient resources (entries 0, 1)"


def test_patient_without_id() -> None:
    p = patient()
    del p["id"]
    err = error(bundle(p, with_patient=False))
    assert (err.where, err.reason) == ("Patient (entry 0) id", "the Patient has no id")


def test_bad_gender() -> None:
    err = error(bundle(patient(gender="F"), with_patient=False))
    assert err.where == "Patient/p1 (entry 0) gender"
    assert err.reason == "the gender is not a FHIR administrative gender"
    assert err.hint == "use male, female, other or unknown"


@pytest.mark.parametrize(
    ("given", "first", "last"),
    [
        ("1959", "1959-01-01", "1959-12-31"),
        ("1960-02", "1960-02-01", "1960-02-29"),
        ("1959-12", "1959-12-01", "1959-12-31"),
        ("1959-06-15", "1959-06-15", None),
    ],
)
def test_a_birth_date_without_its_day_keeps_its_span(
    given: str, first: str, last: str | None
) -> None:
    case = read_bundle(bundle(patient(birthDate=given), with_patient=False), source="x")
    assert str(case.birth_date) == first
    assert (str(case.birth_date_latest) if case.birth_date_latest else None) == last


def test_bad_birth_date_names_resource_and_field() -> None:
    err = error(bundle(patient(birthDate="02/03/1957"), with_patient=False))
    assert err.where == "Patient/p1 (entry 0) birthDate"
    assert err.reason == "malformed date"
    assert "YYYY-MM-DD" in err.hint


def test_patient_name_is_never_in_an_error() -> None:
    err = error(bundle(patient(gender={"text": "Alice"}), with_patient=False))
    assert "Alice" not in str(err)
    assert err.where == "Patient/p1 (entry 0) gender"


# --- conditions -------------------------------------------------------------


def test_hypertension_condition() -> None:
    (entry,) = read(condition("c1", "38341003")).conditions
    assert entry.concept == "hypertension"
    assert (entry.system, entry.code, entry.active) == (SNOMED, "38341003", True)
    assert entry.onset == datetime(2015, 6, 1, 10, tzinfo=UTC)
    assert entry.source == "Condition/c1"


def test_one_code_in_two_concepts_gives_two_entries() -> None:
    case = read(condition("d", "44054006"))
    assert {c.concept for c in case.conditions} == {"type_2_diabetes", "diabetes"}


def test_resolved_condition_is_inactive_with_its_end() -> None:
    cond = condition("c", "59621000", "resolved", abatementDateTime="2018-02-02")
    (entry,) = read(cond).conditions
    assert entry.active is False
    assert entry.end == datetime(2018, 2, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "extra", "active"),
    [
        ("recurrence", {}, True),
        ("remission", {}, False),
        (None, {}, True),
        (None, {"abatementDateTime": "2019"}, False),
        # R4 con-4: any abatement means the condition abated.
        (None, {"abatementBoolean": True}, False),
        (None, {"abatementBoolean": False}, True),
        (None, {"abatementString": "in childhood"}, False),
        (None, {"abatementAge": {"value": 12, "unit": "a"}}, False),
    ],
)
def test_condition_activity(
    status: str | None, extra: dict[str, Any], active: bool
) -> None:
    (entry,) = read(condition("c", "38341003", status, **extra)).conditions
    assert entry.active is active


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
def test_refuted_conditions_are_skipped(verification: str) -> None:
    cond = condition(
        "c", "38341003", verificationStatus={"coding": [{"code": verification}]}
    )
    assert read(cond).conditions == ()


def test_unknown_condition_codes_are_skipped() -> None:
    assert read(condition("c", "195662009")).conditions == ()


def test_a_clinical_status_outside_r4_is_read_as_none_and_named() -> None:
    # One odd Condition does not refuse the whole record: it is read as if no
    # status were recorded (active unless abated), and the assessment is
    # partial, naming it.
    case = read(
        condition("c", "38341003", "cured"),
        condition("d", "44054006", "55561003", abatementDateTime="2019"),
    )
    assert {(c.concept, c.active) for c in case.conditions} == {
        ("hypertension", True),
        ("diabetes", False),
        ("type_2_diabetes", False),
    }
    assert case.problems == (
        "Condition/c (entry 1) clinicalStatus: `cured` is not a FHIR R4 clinical "
        "status (active, recurrence, relapse, inactive, remission, resolved); "
        "read as if none were recorded",
        "Condition/d (entry 2) clinicalStatus: `55561003` is not a FHIR R4 "
        "clinical status (active, recurrence, relapse, inactive, remission, "
        "resolved); read as if none were recorded",
    )


def test_resources_about_another_patient_are_left_out_and_named() -> None:
    # Two HbA1c results of someone else must not diagnose this patient.
    other = {"reference": "Patient/SOMEONE-ELSE"}
    theirs = [
        observation("h1", "4548-4", 9.0, "%", "2024-01-01", subject=other),
        observation("h2", "4548-4", 9.2, "%", "2024-03-01", subject=other),
        condition("c", "44054006", subject=other),
        med_request("m") | {"subject": other},
        allergy("a", {"system": RXNORM, "code": "6809"}, patient=other),
    ]
    # Ours: by fullUrl, by Patient/id, by an absolute URL, or not said.
    ours = [
        observation("w1", "29463-7", 80, "kg", subject={"reference": "urn:uuid:p1"}),
        observation(
            "w2", "29463-7", 81, "kg", "2024-03-02", subject={"reference": "Patient/p1"}
        ),
        observation(
            "w3",
            "29463-7",
            82,
            "kg",
            "2024-03-03",
            subject={"reference": "https://ehr.example/fhir/Patient/p1/_history/2"},
        ),
        observation("w4", "29463-7", 83, "kg", "2024-03-04"),
    ]
    case = read(*theirs, *ours)
    assert "hba1c" not in case.readings
    assert [r.value for r in case.readings["body_weight"]] == [80, 81, 82, 83]
    assert case.conditions == case.medications == case.allergies == ()
    assert case.problems == (
        "5 resources of the bundle are about another patient than its Patient "
        "(Patient/p1) and were left out: Observation/h1, Observation/h2, "
        "Condition/c and 2 more; check the export",
    )


# --- medications ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "active"),
    [("active", True), ("on-hold", True), ("stopped", False), ("completed", False)],
)
def test_metformin_request(status: str, active: bool) -> None:
    (entry,) = read(med_request("m", status)).medications
    assert (entry.concept, entry.system, entry.code) == ("metformin", RXNORM, "860975")
    assert entry.active is active
    assert entry.onset == datetime(2020, 2, 3, 8, tzinfo=UTC)
    assert entry.source == "MedicationRequest/m"


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_erroneous_requests_are_skipped(status: str) -> None:
    assert read(med_request("m", status)).medications == ()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"doNotPerform": True}, "an order not to give it"),
        ({"intent": "proposal"}, "proposal"),
        ({"intent": "plan"}, "plan"),
    ],
)
def test_an_order_not_to_give_or_a_proposal_is_not_taking_the_drug(
    change: dict[str, Any], said: str
) -> None:
    case = read(med_request("m") | change)
    assert case.medications == ()
    assert case.notes == (f"MedicationRequest/m is {said}: not read as taken",)


def test_medication_reference_resolves_by_full_url_and_by_id() -> None:
    med = {
        "resourceType": "Medication",
        "id": "med1",
        "code": {"coding": [{"system": RXNORM, "code": "29046", "display": "x"}]},
    }
    by_url = med_request("r1", medicationReference={"reference": "urn:uuid:med1"})
    by_id = med_request("r2", medicationReference={"reference": "Medication/med1"})
    case = read(med, by_url, by_id)
    assert [(m.concept, m.source) for m in case.medications] == [
        ("ace_inhibitor", "MedicationRequest/r1"),
        ("ace_inhibitor", "MedicationRequest/r2"),
    ]


def test_contained_medication_resolves() -> None:
    contained = {
        "resourceType": "Medication",
        "id": "c",
        "code": {"text": "Losartan 50 mg tablet"},
    }
    req = med_request(
        "r", medicationReference={"reference": "#c"}, contained=[contained]
    )
    # Losartan is an ARB and an antihypertensive: one entry per concept.
    entries = read(req).medications
    assert [(e.concept, e.system, e.code) for e in entries] == [
        ("arb", "local", "Losartan 50 mg tablet"),
        ("antihypertensive", "local", "Losartan 50 mg tablet"),
    ]


def test_unresolved_medication_reference_is_noted() -> None:
    req = med_request("r", medicationReference={"reference": "Medication/missing"})
    case = read(req)
    assert case.medications == ()
    assert any("Medication/missing" in n for n in case.notes)


def test_a_drug_looked_up_again_gives_the_same_concepts() -> None:
    # The catalogue keeps its answer for every refill of a drug; a caller that
    # changes the list it got must not change what the next record gets.
    catalogue = default_catalogue()
    first = catalogue.medications_for("860975", "24 HR Metformin hydrochloride 500 MG")
    assert first == ["metformin"]
    first.append("warfarin")
    case = read(med_request("m1"), med_request("m2"), med_request("m3"))
    assert [(m.concept, m.source) for m in case.medications] == [
        ("metformin", "MedicationRequest/m1"),
        ("metformin", "MedicationRequest/m2"),
        ("metformin", "MedicationRequest/m3"),
    ]


def test_medication_statement_and_text_match() -> None:
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s",
        "status": "active",
        "medicationCodeableConcept": {"text": "lisinopril 10 MG Oral Tablet"},
        "effectivePeriod": {"start": "2021-01-01", "end": "2021-06-30"},
    }
    entry, other = read(statement).medications
    assert (entry.concept, other.concept) == ("ace_inhibitor", "antihypertensive")
    assert entry.source == "MedicationStatement/s"
    assert entry.end == datetime(2021, 6, 30, tzinfo=UTC)


def test_unknown_medications_are_skipped() -> None:
    req = med_request(
        "r",
        medicationCodeableConcept={
            "coding": [{"system": RXNORM, "code": "313782", "display": "paracetamol"}]
        },
    )
    assert read(req).medications == ()


def test_malformed_referenced_medication_names_the_reference() -> None:
    med = {"resourceType": "Medication", "id": "bad", "code": {"coding": "x"}}
    req = med_request("r", medicationReference={"reference": "urn:uuid:bad"})
    err = error(bundle(med, req))
    assert err.where == "Medication/bad (entry 1) code.coding"


# --- allergies --------------------------------------------------------------


def test_non_drug_allergy_is_kept_without_concept() -> None:
    coding = {"system": SNOMED, "code": "91936005", "display": "Penicillin allergy"}
    (entry,) = read(allergy("a", coding)).allergies
    assert entry.concept is None
    assert (entry.system, entry.code, entry.display) == (
        SNOMED,
        "91936005",
        "Penicillin allergy",
    )
    assert entry.active is True
    assert entry.onset == datetime(2010, 1, 1, tzinfo=UTC)


def test_drug_allergy_maps_to_the_medication_concept() -> None:
    coding = {"system": RXNORM, "code": "6809", "display": "Metformin"}
    clinical = {"coding": [{"code": "inactive"}]}
    (entry,) = read(allergy("a", coding, clinicalStatus=clinical)).allergies
    assert (entry.concept, entry.active) == ("metformin", False)


def test_refuted_allergy_is_skipped() -> None:
    coding = {"system": SNOMED, "code": "91936005"}
    refuted = {"coding": [{"code": "refuted"}]}
    assert read(allergy("a", coding, verificationStatus=refuted)).allergies == ()


# --- last_recorded and dates ------------------------------------------------


def test_last_recorded_is_the_latest_entry() -> None:
    case = read(
        bp_panel("b", 120, 80, "2021-01-01"),
        condition("c", "38341003", "resolved", abatementDateTime="2022-07-01"),
        med_request("m"),
    )
    assert case.last_recorded == datetime(2022, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019", datetime(2019, 1, 1, tzinfo=UTC)),
        ("2019-05", datetime(2019, 5, 1, tzinfo=UTC)),
        ("2019-05-04", datetime(2019, 5, 4, tzinfo=UTC)),
        ("2019-05-04T10:11:12Z", datetime(2019, 5, 4, 10, 11, 12, tzinfo=UTC)),
        ("2019-05-04T10:11:12+02:00", datetime(2019, 5, 4, 10, 11, 12, tzinfo=CEST)),
        ("2019-05-04T10:11:12", datetime(2019, 5, 4, 10, 11, 12, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == expected and parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["2019-13", "2019-02-30", "04/05/2019", "soon", ""])
def test_parse_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_malformed_observation_date_names_resource_and_field() -> None:
    err = error(bundle(observation("o", "8480-6", 120, "mm[Hg]", when="2019-02-30")))
    assert err.where == "Observation/o (entry 1) effectiveDateTime"
    assert "2019-02-30" in err.reason


# --- malformed structure ----------------------------------------------------


def test_not_a_bundle() -> None:
    err = error({"resourceType": "Patient", "id": "x"})
    assert (err.where, err.reason) == ("resourceType", "expected a Bundle, got Patient")


def test_entry_not_a_list() -> None:
    err = error({"resourceType": "Bundle", "entry": {"resource": patient()}})
    assert err.where == "Bundle.entry"
    assert err.reason == "`entry` must be a list, got an object"


def test_entry_not_an_object() -> None:
    err = error({"resourceType": "Bundle", "entry": [{"resource": patient()}, 3]})
    assert err.where == "Bundle.entry[1]"


def test_resource_not_an_object() -> None:
    err = error({"resourceType": "Bundle", "entry": [{"resource": "Patient"}]})
    assert err.where == "Bundle.entry[0].resource"


def test_resource_without_resource_type() -> None:
    data = bundle({"id": "x", "status": "final"})
    err = error(data)
    assert err.where == "Bundle.entry[1].resource.resourceType"
    assert err.reason == "the resource has no resourceType"


def test_string_value_is_an_error_not_a_number() -> None:
    err = error(bundle(observation("o", "8480-6", "142", "mm[Hg]")))
    assert err.where == "Observation/o (entry 1) valueQuantity.value"
    assert err.reason == "Input should be a valid number (found a string)"


def test_missing_required_element() -> None:
    obs = observation("o", "8480-6", 120, "mm[Hg]")
    del obs["code"]
    err = error(bundle(obs))
    assert err.where == "Observation/o (entry 1) code"
    assert err.reason == "Field required"


def test_component_structure_error_has_its_index() -> None:
    panel = bp_panel("bp", 120, 80, "2024")
    panel["component"][1]["code"] = {"coding": [{"code": 8462}]}
    err = error(bundle(panel))
    assert err.where == "Observation/bp (entry 1) component[1].code.coding[0].code"


def test_other_resource_types_are_not_validated() -> None:
    junk = {"resourceType": "Claim", "id": 5, "total": "lots", "item": "x"}
    entry_without_resource = {"request": {"method": "DELETE", "url": "Claim/1"}}
    data = bundle(junk)
    data["entry"].append(entry_without_resource)
    assert read_bundle(data, source="t").case_id == "p1"


# --- the shared Synthea bundles ---------------------------------------------

HYPERTENSION = {"59621000", "38341003"}


def _has_hypertension(data: dict[str, Any]) -> bool:
    for entry in data["entry"]:
        res = entry["resource"]
        if res["resourceType"] != "Condition":
            continue
        verification = res.get("verificationStatus", {}).get("coding", [])
        if any(c.get("code") in ("refuted", "entered-in-error") for c in verification):
            continue
        codes = {c.get("code") for c in res.get("code", {}).get("coding", [])}
        if codes & HYPERTENSION:
            return True
    return False


def test_every_shared_bundle_reads() -> None:
    files = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
    if not files:
        pytest.skip(f"no shared FHIR bundles at {SHARED}")
    expected = reading_hypertension = 0
    for path in files:
        data = json.loads(path.read_bytes())
        case = read_bundle(data, source=path.name)
        assert case.sex in ("male", "female"), path.name
        assert case.birth_date is not None, path.name
        assert case.readings.get("systolic_bp"), path.name
        has = any(c.concept == "hypertension" for c in case.conditions)
        assert has == _has_hypertension(data), path.name
        expected += _has_hypertension(data)
        reading_hypertension += has
    assert expected == reading_hypertension > 0


# --- less common shapes and a custom catalogue ------------------------------


def test_effective_instant_and_condition_periods() -> None:
    obs = observation("o", "8867-4", 72, "/min")
    del obs["effectiveDateTime"]
    obs["effectiveInstant"] = "2022-02-02T02:02:02Z"
    cond = condition(
        "c",
        "49436004",
        None,
        onsetPeriod={"start": "2017-03"},
        abatementPeriod={"end": "2018-04"},
    )
    del cond["onsetDateTime"]
    case = read(obs, cond)
    assert case.readings["heart_rate"][0].time == datetime(
        2022, 2, 2, 2, 2, 2, tzinfo=UTC
    )
    (entry,) = case.conditions
    assert (entry.onset, entry.end, entry.active) == (
        datetime(2017, 3, 1, tzinfo=UTC),
        datetime(2018, 4, 1, tzinfo=UTC),
        False,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("effectiveDateTime", "2021-05-05"), ("dateAsserted", "2021-05-05")],
)
def test_medication_statement_dates(field: str, value: str) -> None:
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s",
        "status": "intended",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6809"}]},
        field: value,
    }
    (entry,) = read(statement).medications
    assert (entry.concept, entry.active) == ("metformin", False)
    assert entry.onset == datetime(2021, 5, 5, tzinfo=UTC)


def test_not_taken_statement_and_empty_allergy_are_skipped() -> None:
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s",
        "status": "not-taken",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6809"}]},
    }
    empty = {"resourceType": "AllergyIntolerance", "id": "a", "code": {}}
    case = read(statement, empty)
    assert (case.medications, case.allergies) == ((), ())


CUSTOM = parse_catalogue(
    {
        "quantities": {
            "pain": {"unit": "{score}", "loinc": ["72514-3"], "range": [0, 10]},
            "glucose_x": {
                "unit": "mg/dL",
                "units": ["mg/dL", "mmol/L"],
                "loinc": ["2339-0"],
                "range": [20, 1500],
            },
        }
    }
)


def test_custom_catalogue_reads_its_own_facts() -> None:
    data = bundle(observation("p", "72514-3", 4, "{score}"))
    case = read_bundle(data, source="t", catalogue=CUSTOM)
    assert [(r.value, r.unit) for r in case.readings["pain"]] == [(4.0, "{score}")]


def test_an_accepted_unit_without_a_conversion_leaves_the_fact_out() -> None:
    # The catalogue accepts mmol/L but gives no factor to its canonical mg/dL.
    data = bundle(observation("g", "2339-0", 7.0, "mmol/L"))
    case = read_bundle(data, source="t", catalogue=CUSTOM)
    assert not case.readings.get("glucose_x")
    [problem] = case.problems
    assert problem.startswith(
        "glucose_x not used: Observation/g (entry 1) valueQuantity.code"
    )
    assert "cannot be converted" in problem


def test_nan_value_is_refused() -> None:
    text = json.dumps(bundle(observation("n", "8480-6", float("nan"), "mm[Hg]")))
    assert "NaN" in text  # Python's json writes and reads it; FHIR forbids it
    err = error(json.loads(text))
    assert err.where == "Observation/n (entry 1) valueQuantity.value"
    assert err.reason.startswith("Input should be a finite number")


def test_a_reading_dated_in_the_future_does_not_move_the_last_entry() -> None:
    # A result typed as 2099 instead of 2019: "as of last" must not evaluate
    # the patient at 142 years of age, and the record says why.
    case = read(
        bp_panel("typo", 190, 110, "2099-05-01T00:00:00Z"),
        bp_panel("real", 138, 86, "2024-03-01T00:00:00Z"),
    )
    assert case.last_time() == datetime(2024, 3, 1, tzinfo=UTC)
    assert len(case.readings["systolic_bp"]) == 2  # kept, not erased
    (note,) = [n for n in case.notes if "later than the time" in n]
    assert note.startswith(
        "1 entry is dated later than the time the record was read "
        "(Observation/typo; a data error?)"
    )
    assert "2099" not in note


def test_a_preliminary_result_is_read_and_noted() -> None:
    early = observation("p2", "4548-4", 8.0, "%", "2024-01-01")
    early["status"] = "preliminary"
    final = observation("f1", "4548-4", 8.0, "%", "2024-02-01")
    case = read(early, final)
    assert [r.value for r in case.readings["hba1c"]] == [8.0, 8.0]
    assert case.notes == (
        "1 preliminary result read as recorded (status preliminary: may still "
        "change): Observation/p2",
    )


def test_a_score_given_as_valueinteger_is_read_and_a_number_as_text_is_noted() -> None:
    gcs = observation("g1", "9269-2", None, None)
    del gcs["valueQuantity"]
    gcs["valueInteger"] = 14
    text = observation("t1", "4548-4", None, None)
    del text["valueQuantity"]
    text["valueString"] = "7.5 %"
    integer_a1c = observation("i1", "4548-4", None, None)
    del integer_a1c["valueQuantity"]
    integer_a1c["valueInteger"] = 8
    case = read(gcs, text, integer_a1c)
    assert [(r.value, r.unit) for r in case.readings["gcs"]] == [(14.0, "1")]
    # A measured fact given as text or a bare integer is left out whole (the
    # first such value named), as for a unit that cannot be read.
    assert "hba1c" not in case.readings
    assert case.problems == (
        "hba1c not used: Observation/t1 valueString: the value is given as text, "
        "not as a quantity with a unit",
    )


def test_a_score_in_ucum_annotation_units_reads_as_unit_one() -> None:
    # `{score}` is how UCUM writes a dimensionless score (Synthea's GCS).
    case = read(observation("g", "9269-2", 13, "{score}"))
    assert [(r.value, r.unit) for r in case.readings["gcs"]] == [(13.0, "1")]
    assert case.notes == () and case.problems == ()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # A history bundle lists the newest version first.
        ({}, {}),
        # Version ids that are not numbers say nothing of order.
        ({"meta": {"versionId": "b"}}, {"meta": {"versionId": "a"}}),
        # lastUpdated compared as times: 23:00 at -05:00 is after 02:00 UTC.
        (
            {"meta": {"lastUpdated": "2024-01-31T23:00:00-05:00"}},
            {"meta": {"lastUpdated": "2024-02-01T02:00:00+00:00"}},
        ),
    ],
)
def test_the_newest_version_of_an_amended_result_is_the_one_read(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    amended = observation("a1", "4548-4", 5.1, "%", "2024-01-15") | first
    original = observation("a1", "4548-4", 9.9, "%", "2024-01-15") | second
    data = bundle(amended, original)
    data["type"] = "history"
    case = read_bundle(data, source="history.json")
    assert [r.value for r in case.readings["hba1c"]] == [5.1]
    assert "Observation/a1: an earlier version was left out" in case.notes


def test_a_versioned_reference_to_the_patient_is_the_patient() -> None:
    mine = observation(
        "w", "29463-7", 80, "kg", subject={"reference": "Patient/p1/_history/2"}
    )
    case = read(mine)
    assert [r.value for r in case.readings["body_weight"]] == [80]
    assert case.problems == ()
