"""Tests for engine.resources: the two Observation schemas agree."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, NotRequired, get_origin, get_type_hints

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from engine import resourcereader, resources
from engine.errors import InputError
from engine.fhir import read_bundle

LOINC = "http://loinc.org"

PAIRS = [
    (resources.Observation, resources.ObservationData),
    (resources.Component, resources.ComponentData),
    (resources.CodeableConcept, resources.ConceptData),
    (resources.Coding, resources.CodingData),
    (resources.Quantity, resources.QuantityData),
    (resources.Period, resources.PeriodData),
    (resources.Reference, resources.ReferenceData),
]


@pytest.mark.parametrize(("model", "data"), PAIRS)
def test_fast_schema_names_the_same_elements_as_the_model(
    model: type[BaseModel], data: type
) -> None:
    aliases = {field.alias or name for name, field in model.model_fields.items()}
    hints = get_type_hints(data, include_extras=True)
    assert aliases == set(hints)
    required = {f.alias for f in model.model_fields.values() if f.is_required()}
    assert required == {k for k, v in hints.items() if get_origin(v) is not NotRequired}


def glucose(**changes: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "g",
        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
        "effectivePeriod": {"start": "2024-01-01"},
        "valueQuantity": {"value": 5.5, "unit": "mmol/L"},
        "component": [{"code": {"text": "x"}, "valueQuantity": None}],
        "subject": {"reference": "Patient/p"},
    }
    obs.update(changes)
    return obs


MALFORMED = [
    {"valueQuantity": "5.5"},
    {"valueQuantity": {"value": "5.5"}},
    {"valueQuantity": {"value": float("inf")}},
    {"valueQuantity": {"value": True}},
    {"valueQuantity": {"unit": 5}},
    {"code": None},
    {"code": {"coding": None}},
    {"code": {"coding": [None]}},
    {"component": None},
    {"component": [{}]},
    {"component": [{"code": {}, "valueQuantity": []}]},
    {"effectivePeriod": {"start": 2024}},
    {"effectiveDateTime": 2024},
    {"id": 7},
    {"status": ["final"]},
    {"subject": "Patient/p"},
]


@pytest.mark.parametrize("changes", MALFORMED)
def test_both_schemas_refuse_the_same_observations(changes: dict[str, Any]) -> None:
    obs = glucose(**changes)
    with pytest.raises(ValidationError):
        resources.Observation.model_validate(obs)
    with pytest.raises(ValidationError):
        resources.OBSERVATION.validate_python(obs)


def test_both_schemas_accept_a_well_formed_observation() -> None:
    obs = glucose()
    model = resources.Observation.model_validate(obs)
    data = resources.OBSERVATION.validate_python(obs)
    assert model.model_dump(by_alias=True, exclude_unset=True) == data
    assert data["subject"] == {"reference": "Patient/p"}
    assert "resourceType" not in data  # elements not read are dropped


def test_an_error_is_worded_by_the_model() -> None:
    # The fast schema would say "Input should be a valid dictionary".
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p"}},
            {"resource": glucose(valueQuantity="5.5")},
        ],
    }
    with pytest.raises(InputError) as info:
        read_bundle(bundle, source="t.json")
    assert info.value.where == "Observation/g (entry 1) valueQuantity"
    assert info.value.reason == (
        "Input should be a valid dictionary or instance of Quantity (found a string)"
    )


def test_a_refusal_only_the_fast_schema_makes_is_still_located(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Were the schemas ever to disagree, the fast schema's error is reported.
    monkeypatch.setattr(resourcereader, "OBSERVATION", TypeAdapter(list[int]))
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p"}},
            {"resource": glucose()},
        ],
    }
    with pytest.raises(InputError) as info:
        read_bundle(bundle, source="t.json")
    assert info.value.where == "Observation/g (entry 1)"
    assert info.value.reason == "Input should be a valid list (found an object)"


def test_both_schemas_read_a_mapping_that_is_not_a_dict() -> None:
    quantity = MappingProxyType({"value": 5.5, "unit": "mmol/L"})
    obs = glucose(valueQuantity=quantity)
    model = resources.Observation.model_validate(obs)
    data = resources.OBSERVATION.validate_python(obs)
    assert model.model_dump(by_alias=True, exclude_unset=True) == data
