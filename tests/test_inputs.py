"""Tests for engine.inputs: deciding between FHIR and case files, file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.inputs import MAX_BYTES, read_input, read_input_data

DATA = Path(__file__).resolve().parent / "data"


def error_for(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        read_input(path)
    assert info.value.source == str(path)
    return info.value


def error_for_text(text: str) -> InputError:
    with pytest.raises(InputError) as info:
        read_input_data(text, source="in.txt")
    assert info.value.source == "in.txt"
    return info.value


def test_fhir_bundle_file() -> None:
    case = read_input(DATA / "bundle-small.json")
    assert (case.case_id, case.sex, str(case.birth_date)) == (
        "pt-1",
        "male",
        "1960-07-15",
    )
    (systolic,) = case.readings["systolic_bp"]
    assert (systolic.value, systolic.unit) == (151.0, "mm[Hg]")
    assert [c.concept for c in case.conditions] == ["hypertension"]
    assert case.source == str(DATA / "bundle-small.json")


def test_yaml_case_file() -> None:
    case = read_input(DATA / "case-minimal.yaml")
    assert case.case_id == "case-minimal"
    assert case.readings["systolic_bp"][0].source == "case file line 6"


def test_json_case_file_is_read_with_line_numbers() -> None:
    case = read_input(DATA / "case-json.json")
    assert case.case_id == "json-case"
    assert case.readings["creatinine"][0].source == "case file line 5"


def test_json_case_with_duplicate_keys_is_refused() -> None:
    err = error_for_text('{"patient": {"age": 50, "age": 51}}')
    assert err.reason.startswith("duplicate key")
    assert err.where == "line 1, column 25"


def test_yaml_flow_mapping_that_is_not_json_is_a_case() -> None:
    case = read_input_data("{patient: {age: 50}}", source="in.txt")
    assert case.age == 50


def test_other_resource_type_is_refused() -> None:
    err = error_for(DATA / "patient-only.json")
    assert (err.where, err.reason) == ("resourceType", "expected a Bundle, got Patient")


def test_bundle_written_as_yaml_is_refused() -> None:
    err = error_for_text("resourceType: Bundle\nentry: []\n")
    assert err.reason == "a FHIR Bundle written as YAML"


def test_parsed_mapping_routes_by_content() -> None:
    bundle = json.loads((DATA / "bundle-small.json").read_text("utf-8"))
    assert read_input_data(bundle, source="api").case_id == "pt-1"
    case = read_input_data({"patient": {"sex": "male"}}, source="api")
    assert case.sex == "male"


def test_neither_json_nor_yaml_names_the_json_error_position() -> None:
    err = error_for_text('{"resourceType": "Bundle",\n  "entry": [}\n')
    assert err.where == "line 2, column 13"
    assert err.reason.startswith("neither JSON nor YAML")
    assert "FHIR" in err.hint


def test_bad_yaml_names_line_and_column() -> None:
    err = error_for_text("patient:\n  age: [67\n")
    assert err.where.startswith("line 3")


def test_top_level_list_is_refused() -> None:
    err = error_for_text("[1, 2]")
    assert err.reason == "expected a FHIR Bundle or a case-file mapping, got a list"


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfpatient: {age: 40}\n")
    assert read_input(path).age == 40


def test_not_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"patient:\n  sex: f\xe9male\n")
    err = error_for(path)
    assert err.where == "byte offset 17 (line 2)"
    assert err.reason == "the file is not UTF-8 text (byte 0xe9)"
    assert err.hint == "save the file as UTF-8"


def test_missing_file(tmp_path: Path) -> None:
    err = error_for(tmp_path / "nope.json")
    assert err.reason == "the file does not exist"


def test_directory(tmp_path: Path) -> None:
    assert error_for(tmp_path).reason == "this is a directory, not a file"


def test_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("wb") as fh:
        fh.truncate(MAX_BYTES + 1)  # sparse: no 50 MB actually written
    err = error_for(path)
    assert err.reason == "the file is 50.0 MB; inputs over 50 MB are refused"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.yaml"
    path.write_text("patient: {age: 40}\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    # Mode 000 does not stop root, so the refusal is simulated.
    monkeypatch.setattr(Path, "read_bytes", refuse)
    err = error_for(path)
    assert err.reason == "the file cannot be read: Permission denied"


def test_data_of_another_type_is_refused() -> None:
    with pytest.raises(InputError) as info:
        read_input_data(b"{}", source="raw")  # type: ignore[arg-type]
    assert info.value.reason == "expected text or a mapping, got bytes"


def test_a_truncated_bundle_is_placed_and_worded_whole(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('{"resourceType": "Bundle", "entry": [{"resource": {"x": "Pat')
    with pytest.raises(InputError) as info:
        read_input(path)
    assert info.value.where == "line 1, column 57"  # the opening quote of "Pat
    assert (
        info.value.reason == "neither JSON nor YAML: Unterminated string starting here"
    )


def test_document_text_passed_as_a_path_is_an_input_error_that_says_so() -> None:
    text = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []})
    with pytest.raises(InputError) as info:
        read_input(text * 40)  # longer than any file name
    assert info.value.source == "<text>"
    assert "the text of a document, not a path to a file" in str(info.value)
    assert "json.loads" in str(info.value)
    # A case file's YAML text, short enough to be a file name.
    with pytest.raises(InputError) as yaml_text:
        read_input("patient: {age: 50, sex: male}\nfacts: {bmi: 31 kg/m2}\n")
    assert yaml_text.value.source == "<text>"
    assert "yaml.safe_load" in str(yaml_text.value)
    with pytest.raises(InputError) as long_name:
        read_input("x" * 5000)
    assert "not a usable path: File name too long" in str(long_name.value)


def test_a_null_document_is_named_as_null_not_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "null.json"
    path.write_text("null\n")
    with pytest.raises(InputError) as info:
        read_input(path)
    assert info.value.reason == "the document is `null`, not a bundle or case file"
