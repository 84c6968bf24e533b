"""Tests for engine.fhir.read_bundle_json: bundle files read straight from bytes.

Every input is read both ways: by ``read_input`` (the fast way first) and by
``read_input_data`` on the decoded text (the usual way, which the fast way
falls back to). Both must give the same case, or the same error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine import inputs
from engine.errors import InputError
from engine.facts import Case
from engine.fhir import read_bundle, read_bundle_json
from engine.inputs import read_input, read_input_data
from engine.resources import BUNDLE

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fhir"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
METFORMIN = {"system": RXNORM, "code": "860975", "display": "metformin 500 MG"}


def glucose(oid: str, value: Any = 5.5, unit: Any = "mmol/L", **extra: Any) -> Any:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
        "effectiveDateTime": "2024-03-01T09:30:00+02:00",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **extra,
    }


def survey(oid: str, **extra: Any) -> Any:
    # Feeds no fact: the usual way never validates it.
    return {
        "resourceType": "Observation",
        "id": oid,
        "code": {"coding": [{"system": LOINC, "code": "72166-2"}]},
        **extra,
    }


def patient(**extra: Any) -> Any:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "gender": "female",
        "birthDate": "1957-03-02",
        "extension": [
            {
                "url": RACE,
                "extension": [
                    {"url": "ombCategory", "valueCoding": {"code": "2106-3"}}
                ],
            }
        ],
        **extra,
    }


def full_record() -> list[Any]:
    """One of each thing the reader reads, and things it skips."""
    return [
        patient(),
        glucose("g1", meta={"versionId": "1"}),
        glucose("g1", 6.1, meta={"versionId": "2", "lastUpdated": "2024-03-02"}),
        glucose("g2", 120, "mg/dL", status="entered-in-error"),
        glucose("g3", 99, "mg/dL", component=[{"code": {"text": "x"}}]),
        {
            **glucose("g4"),
            "code": {"coding": [{"system": LOINC, "code": "14959-1"}]},
            "valueQuantity": {"value": 30, "comparator": "<", "unit": "mg/g"},
        },
        survey("s1", valueString="never smoker"),
        {
            "resourceType": "Condition",
            "id": "c1",
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}]},
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "onsetDateTime": "2015-06-01T10:00:00+00:00",
        },
        {"resourceType": "Medication", "id": "m1", "code": {"coding": [METFORMIN]}},
        {
            "resourceType": "MedicationRequest",
            "id": "r1",
            "status": "active",
            "medicationReference": {"reference": "urn:uuid:m1"},
            "authoredOn": "2020-02-03",
        },
        {
            "resourceType": "MedicationStatement",
            "id": "r2",
            "status": "completed",
            "contained": [{"resourceType": "Medication", "id": "x", "code": {}}],
            "medicationReference": {"reference": "#x"},
        },
        {
            "resourceType": "AllergyIntolerance",
            "id": "a1",
            "code": {"text": "peanuts"},
            "recordedDate": "2010-01-01",
        },
        {"resourceType": "Claim", "id": "cl1", "total": {"value": float("nan")}},
        {"resourceType": "Encounter", "id": "e1", "period": {"start": "bad"}},
    ]


def document(resources: list[Any], **extra: Any) -> dict[str, Any]:
    entries: list[Any] = [
        {"fullUrl": f"urn:uuid:{r.get('id', i)}", "resource": r}
        for i, r in enumerate(resources)
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries, **extra}


def encode(data: Any) -> bytes:
    # The stdlib writes NaN, which orjson would write as null.
    return json.dumps(data, ensure_ascii=False).encode()


def outcome(read: Any) -> Case | tuple[str, str, str]:
    try:
        return read()  # type: ignore[no-any-return]
    except InputError as err:
        return err.where, err.reason, err.hint


def both_ways(tmp_path: Path, raw: bytes) -> tuple[Any, Any, bool]:
    """(read_input's outcome, the usual way's, whether the fast way read it)."""
    path = tmp_path / "bundle.json"
    path.write_bytes(raw)
    fast = outcome(lambda: read_input(path))
    usual = outcome(lambda: read_input_data(raw.decode("utf-8-sig"), source=str(path)))
    taken = read_bundle_json(raw.removeprefix(b"\xef\xbb\xbf"), source=str(path))
    return fast, usual, taken is not None


@pytest.mark.parametrize("path", sorted(SHARED.glob("*.json"))[:20], ids=str)
def test_shared_bundles_read_the_fast_way_give_the_usual_case(path: Path) -> None:
    raw = path.read_bytes()
    fast = read_bundle_json(raw, source=str(path))
    assert fast is not None, "a Synthea bundle fell back to the usual way"
    assert fast == read_bundle(orjson.loads(raw), source=str(path))


def test_a_record_of_every_kind_reads_the_same_both_ways(tmp_path: Path) -> None:
    fast, usual, taken = both_ways(tmp_path, encode(document(full_record())))
    assert taken
    assert isinstance(fast, Case)
    assert fast == usual
    values = [reading.value for reading in fast.readings["random_glucose"]]
    assert 6.1 in values and 5.5 not in values  # only the amended version
    assert fast.readings["race"][0].value == "white"
    assert fast.medications and fast.allergies and fast.conditions
    assert "acr" not in fast.readings
    assert any("bound, not a value" in problem for problem in fast.problems)


def test_entries_without_a_resource_are_skipped_both_ways(tmp_path: Path) -> None:
    data = document([patient()])
    data["entry"] += [{"request": {"method": "DELETE"}}, {"resource": None}]
    fast, usual, taken = both_ways(tmp_path, encode(data))
    assert taken
    assert isinstance(fast, Case)
    assert fast == usual


def test_the_schema_keeps_no_name_or_address_and_only_observation_elements() -> None:
    person = patient(name=[{"family": "Example"}], address=[{"city": "Springfield"}])
    bundle = BUNDLE.validate_json(encode(document([person, glucose("g")])))
    kept, obs = (entry["resource"] for entry in bundle["entry"])
    assert set(kept) == {"resourceType", "id", "gender", "birthDate", "extension"}
    assert set(obs) == {
        "resourceType",
        "id",
        "status",
        "code",
        "effectiveDateTime",
        "valueQuantity",
    }


FALLS_BACK = {
    # The usual way accepts these: the fast way gives them up.
    "unknown resource type": [patient(), {"resourceType": "Spaceship", "id": "s"}],
    "malformed Observation of no fact": [patient(), survey("s", status=7)],
    "versionId as a number": [patient(meta={"versionId": 2})],
    "meta as a list": [patient(), glucose("g", meta=[])],
    "observation without an id string": [patient(), survey("s", id=12)],
    # The usual way refuses these, with its located messages.
    "malformed Observation of a fact": [patient(), glucose("g", "5.5")],
    "bad date of a fact": [patient(), glucose("g", effectiveDateTime="soon")],
    "no Patient": [glucose("g")],
    "two Patients": [patient(), patient(id="p2")],
    "malformed Condition": [patient(), {"resourceType": "Condition", "code": 5}],
    "resource without a type": [patient(), {"id": "x"}],
    "empty resource type": [patient(), {"resourceType": ""}],
}


@pytest.mark.parametrize("resources", FALLS_BACK.values(), ids=FALLS_BACK)
def test_what_the_fast_way_gives_up_reads_as_the_usual_way(
    tmp_path: Path, resources: list[Any]
) -> None:
    fast, usual, taken = both_ways(tmp_path, encode(document(resources)))
    assert not taken
    assert fast == usual


def test_a_unit_its_fact_does_not_accept_leaves_the_fact_out_both_ways(
    tmp_path: Path,
) -> None:
    raw = encode(document([patient(), glucose("g", unit="furlong"), glucose("h")]))
    fast, usual, taken = both_ways(tmp_path, raw)
    assert taken
    assert isinstance(fast, Case)
    assert fast == usual
    assert "random_glucose" not in fast.readings
    [problem] = fast.problems
    assert problem.startswith("random_glucose not used: Observation/g (entry 1)")


def test_values_given_as_integer_or_text_read_the_same_both_ways(
    tmp_path: Path,
) -> None:
    gcs = {**glucose("s"), "code": {"coding": [{"system": LOINC, "code": "9269-2"}]}}
    del gcs["valueQuantity"]
    as_text = {**glucose("t"), "valueString": "5.5 mmol/L"}
    del as_text["valueQuantity"]
    raw = encode(document([patient(), {**gcs, "valueInteger": 14}, as_text]))
    fast, usual, taken = both_ways(tmp_path, raw)
    assert taken
    assert isinstance(fast, Case)
    assert fast == usual
    assert [r.value for r in fast.readings["gcs"]] == [14.0]
    assert "random_glucose" not in fast.readings
    assert fast.problems[0].startswith("random_glucose not used: Observation/t")


def test_a_malformed_observation_of_a_fact_gets_its_located_message(
    tmp_path: Path,
) -> None:
    raw = encode(document([patient(), glucose("g", "5.5")]))
    fast, _, _ = both_ways(tmp_path, raw)
    assert fast[0] == "Observation/g (entry 1) valueQuantity.value"
    assert fast[1].startswith("Input should be a valid number (found a string)")


BUNDLE_TEXT = '{"resourceType": "Bundle", "entry": [{"resource": %s}, %s]}'
PATIENT_TEXT = '{"resource": {"resourceType": "Patient", "id": "p1"}}'
DOCUMENTS = {
    # (the bundle's JSON, whether the fast way reads it)
    "NaN in a skipped resource": ('{"resourceType": "Claim", "x": NaN}', True),
    "Infinity in the Patient": (
        '{"resourceType": "Patient", "id": "p1", "x": -Infinity}',
        True,
    ),
    "NaN as a value": (
        '{"resourceType": "Observation", "code": {"coding": [{"system": '
        f'"{LOINC}", "code": "2339-0"}}]}}, "valueQuantity": {{"value": NaN}}}}',
        False,
    ),
    "lone surrogate": ('{"resourceType": "Claim", "x": "\\ud800"}', False),
    "surrogate pair": ('{"resourceType": "Claim", "x": "\\ud83d\\ude00"}', True),
    "nested 300 deep": (
        '{"resourceType": "Claim", "x": ' + "[" * 300 + "]" * 300 + "}",
        False,
    ),
    "nested 5000 deep": (
        '{"resourceType": "Claim", "x": ' + "[" * 5000 + "]" * 5000 + "}",
        False,
    ),
    "integer beyond 64 bits": (
        '{"resourceType": "Condition", "meta": {"versionId": 1' + "0" * 25 + "}}",
        False,
    ),
    "duplicate keys": (
        '{"resourceType": "Claim", "resourceType": "Condition", "id": "c"}',
        True,
    ),
    "not UTF-8": ('{"resourceType": "Claim", "x": "f\udce9male"}', False),
    "non-ASCII text": ('{"resourceType": "Claim", "x": "f\u00e9male"}', True),
}


@pytest.mark.parametrize(("text", "taken"), DOCUMENTS.values(), ids=DOCUMENTS)
def test_json_edge_cases_read_as_the_usual_way(
    tmp_path: Path, text: str, taken: bool
) -> None:
    raw = (BUNDLE_TEXT % (text, PATIENT_TEXT)).encode("utf-8", "surrogateescape")
    path = tmp_path / "bundle.json"
    path.write_bytes(raw)
    fast = outcome(lambda: read_input(path))
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        assert isinstance(fast, tuple)
        assert fast[1] == "the file is not UTF-8 text (byte 0xe9)"
        assert not taken
        return
    assert fast == outcome(lambda: read_input_data(decoded, source=str(path)))
    if taken:
        assert read_bundle_json(raw, source=str(path)) is not None
    else:
        assert read_bundle_json(raw, source=str(path)) is None


@pytest.mark.parametrize("marks", [1, 2])
def test_byte_order_marks_are_read_the_fast_way(
    tmp_path: Path, marks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = b"\xef\xbb\xbf" * marks + encode(document(full_record()))
    path = tmp_path / "bom.json"
    path.write_bytes(raw)
    expected = read_input_data(raw.decode("utf-8-sig"), source=str(path))

    def refuse(*args: Any, **kwargs: Any) -> Case:
        raise AssertionError("read the usual way")

    monkeypatch.setattr(inputs, "read_bundle", refuse)
    assert read_input(path) == expected


def test_text_after_the_bundle_is_refused_as_the_usual_way(tmp_path: Path) -> None:
    raw = encode(document([patient()])) + b" x"
    fast, usual, taken = both_ways(tmp_path, raw)
    assert not taken
    assert fast == usual
    assert fast[1].startswith("neither JSON nor YAML")


def test_a_json_case_file_is_still_read_as_a_case_file() -> None:
    path = Path(__file__).resolve().parent / "data" / "case-json.json"
    assert read_bundle_json(path.read_bytes(), source=str(path)) is None
    assert read_input(path) == read_input_data(path.read_text(), source=str(path))
