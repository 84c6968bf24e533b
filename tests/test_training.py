"""Tests for engine.training and engine.modelspec: specs, training, cards."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from engine.errors import ModelError
from engine.modelspec import ModelCard, load_spec
from engine.scoring import load_model
from engine.training import (
    _logistic_fit,
    load_training_data,
    render_card_markdown,
    split_training_data,
    train_model,
)

ROOT = Path(__file__).resolve().parents[1]
DIABETES = ROOT / "models" / "diabetes_progression"
PIMA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "tabular"
    / "pima_diabetes"
)


def _small_spec(**changes: Any) -> dict[str, Any]:
    """Return a spec over a synthetic CSV (``data.csv``) that trains in ms."""
    spec: dict[str, Any] = {
        "id": "toy",
        "version": "0.1.0",
        "title": "Toy",
        "intended_use": "Tests only.",
        "dataset": {"csv": "data.csv", "description": "Synthetic rows."},
        "target": {
            "column": "outcome",
            "positive_if": "== 1",
            "positive_label": "event",
            "description": "Synthetic event.",
        },
        "features": [
            {"name": "age", "column": "age", "fact": "age", "unit": "a"},
            {
                "name": "bmi",
                "column": "bmi",
                "fact": "bmi",
                "unit": "kg/m2",
                "missing_values": [0],
            },
        ],
        "estimator": {"name": "logistic_regression"},
        "calibration": "none",
        "test_size": 0.25,
        "random_state": 3,
        "cv_folds": 3,
    }
    spec.update(changes)
    return spec


def _write(folder: Path, spec: dict[str, Any], rows: int = 200) -> Path:
    # JSON is valid YAML, and writing it needs no YAML dumper.
    rng = np.random.default_rng(0)
    age = rng.integers(20, 80, rows)
    bmi = rng.normal(28, 4, rows).round(1)
    bmi[:5] = 0  # coded as not recorded, as in the Pima data
    risk = 1 / (1 + np.exp(-(0.05 * (age - 50) + 0.2 * (bmi - 28))))
    outcome = (rng.random(rows) < risk).astype(int)
    with (folder / "data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "bmi", "outcome"])
        writer.writerows(zip(age, bmi, outcome, strict=True))
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    train_model(DIABETES / "spec.yaml", first)
    train_model(DIABETES / "spec.yaml", second)
    return first, second


def test_training_twice_gives_same_metrics_and_predictions(
    two_runs: tuple[Path, Path],
) -> None:
    first, second = (load_model(folder) for folder in two_runs)
    assert first.card.held_out == second.card.held_out
    assert first.card.cross_validation == second.card.cross_validation
    assert first.card.features == second.card.features

    spec = load_spec(DIABETES / "spec.yaml")
    data = load_training_data(spec, DIABETES)
    np.testing.assert_array_equal(
        first.estimator.predict_proba(data.x), second.estimator.predict_proba(data.x)
    )


def test_metrics_come_from_the_held_out_split(two_runs: tuple[Path, Path]) -> None:
    model = load_model(two_runs[0])
    spec = load_spec(DIABETES / "spec.yaml")
    x_train, x_test, y_train, y_test = split_training_data(
        spec, load_training_data(spec, DIABETES)
    )
    held = model.card.held_out

    assert (held.n_train, held.n_test) == (len(y_train), len(y_test)) == (331, 111)
    assert 0.5 < held.roc_auc < 1.0
    p_test = model.estimator.predict_proba(x_test)[:, 1]
    assert held.roc_auc == pytest.approx(roc_auc_score(y_test, p_test))
    train_auc = roc_auc_score(y_train, model.estimator.predict_proba(x_train)[:, 1])
    assert abs(train_auc - held.roc_auc) > 1e-3
    assert sum(b.n for b in held.reliability) == held.n_test
    assert held.prevalence_test == pytest.approx(y_test.mean())


def test_card_records_training_ranges_and_artifact(two_runs: tuple[Path, Path]) -> None:
    folder = two_runs[0]
    card = ModelCard.model_validate_json((folder / "card.json").read_text())
    age = next(f for f in card.features if f.name == "age")

    assert (
        card.artifact.sha256
        == hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
    )
    assert (age.train_min, age.train_max) == (19.0, 79.0)
    assert [e.column for e in card.excluded_columns] == ["sex"]
    assert "sex" not in [f.column for f in card.features]
    assert card.cross_validation.folds == 5
    assert card.estimator.params["random_state"] == 20240
    assert (folder / "MODEL_CARD.md").read_text() == render_card_markdown(card)


def test_committed_model_card_markdown_is_rendered_from_card_json() -> None:
    card = ModelCard.model_validate_json((DIABETES / "card.json").read_text())
    assert (DIABETES / "MODEL_CARD.md").read_text() == render_card_markdown(card)
    assert "not for diagnosing diabetes" in card.intended_use


def test_csv_spec_trains_with_cross_validated_auc(tmp_path: Path) -> None:
    source = PIMA / "pima_indians_diabetes.csv"
    if not source.is_file():
        pytest.skip(f"{source} is not present")
    zero_missing = [0]
    spec = _small_spec(
        id="pima_onset",
        dataset={"csv": str(source), "description": "Pima Indians Diabetes."},
        features=[
            {
                "name": "ogtt_glucose",
                "column": "glucose",
                "fact": "ogtt_2h_glucose",
                "unit": "mg/dL",
                "missing_values": zero_missing,
            },
            {
                "name": "diastolic_bp",
                "column": "blood_pressure",
                "fact": "diastolic_bp",
                "unit": "mm[Hg]",
                "missing_values": zero_missing,
            },
            {
                "name": "bmi",
                "column": "bmi",
                "fact": "bmi",
                "unit": "kg/m2",
                "missing_values": zero_missing,
            },
            {"name": "age", "column": "age", "fact": "age", "unit": "a"},
        ],
        calibration="sigmoid",
        cv_folds=4,
    )
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))

    card = train_model(path)

    with source.open() as handle:
        rows = list(csv.DictReader(handle))
    zeros = sum(
        any(float(r[c]) == 0 for c in ("glucose", "blood_pressure", "bmi"))
        for r in rows
    )
    cv = card.cross_validation
    assert cv.folds == 4 and len(cv.roc_auc_folds) == 4
    assert 0.5 < cv.roc_auc_mean < 1.0 and cv.roc_auc_sd > 0
    assert card.dataset.n_rows_dropped == zeros > 0
    assert card.dataset.n_rows == len(rows) - zeros
    assert card.dataset.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (tmp_path / "model.skops").is_file()


def test_relative_csv_path_is_read_beside_the_spec(tmp_path: Path) -> None:
    card = train_model(_write(tmp_path, _small_spec()))
    assert card.dataset.source == "csv: data.csv"
    assert card.dataset.n_rows_dropped == 5
    assert card.calibration == "none"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"features": [{"name": "b", "column": "bmi", "fact": "bmii", "unit": "x"}]},
            "features[0] (b): unknown quantity fact 'bmii'; did you mean 'bmi'?",
        ),
        (
            {"features": [{"name": "b", "column": "bmi", "fact": "bmi", "unit": "kg"}]},
            "unit 'kg' but fact 'bmi' is given in 'kg/m2'; write unit: 'kg/m2'",
        ),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"version": "1"}, "version: String should match pattern"),
        ({"calibration": "platt"}, "calibration: Input should be"),
        ({"estimator": {"name": "svm"}}, "estimator.name: Input should be"),
        ({"cv_folds": 1}, "cv_folds: Input should be greater than or equal to 2"),
        (
            {"target": {**_small_spec()["target"], "positive_if": "above 1"}},
            "target.positive_if: Value error, got 'above 1'",
        ),
        (
            {"excluded_columns": [{"column": "bmi", "reason": "no"}]},
            "excluded column used as a feature: ['bmi']",
        ),
        (
            {
                "dataset": {
                    "sklearn": "load_diabetes",
                    "kwargs": {"return_X_y": True},
                    "description": "d",
                }
            },
            "set by the trainer, remove: return_X_y",
        ),
    ],
)
def test_invalid_spec_names_file_and_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path, _small_spec(**change))
    with pytest.raises(ModelError) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_spec_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("id: [unclosed")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_spec(path)
    path.write_text("- a list")
    with pytest.raises(ModelError, match="must be a mapping"):
        load_spec(path)
    with pytest.raises(ModelError, match="cannot read the model spec"):
        load_spec(tmp_path / "absent.yaml")


def test_dataset_problems_are_model_errors(tmp_path: Path) -> None:
    features = [{"name": "age", "column": "years", "fact": "age", "unit": "a"}]
    path = _write(tmp_path, _small_spec(features=features))
    with pytest.raises(ModelError, match="no column 'years'; columns are age, bmi"):
        train_model(path)

    target = {**_small_spec()["target"], "positive_if": "> 5"}
    path = _write(tmp_path, _small_spec(target=target))
    with pytest.raises(ModelError, match="gives a single class"):
        train_model(path)

    path = _write(
        tmp_path,
        _small_spec(estimator={"name": "logistic_regression", "params": {"colour": 1}}),
    )
    with pytest.raises(ModelError, match="bad parameter"):
        train_model(path)


def test_bad_csv_cells_are_located(tmp_path: Path) -> None:
    path = _write(tmp_path, _small_spec())
    (tmp_path / "data.csv").write_text("age,bmi,outcome\n50,27,1\n51,n/a,0\n")
    with pytest.raises(ModelError, match=r"data.csv:3: column 'bmi': not a number"):
        train_model(path)
    (tmp_path / "data.csv").write_text("age,bmi,outcome\n50,27\n")
    with pytest.raises(ModelError, match=r"data.csv:2: 2 fields, the header has 3"):
        train_model(path)
    (tmp_path / "data.csv").unlink()
    with pytest.raises(ModelError, match="cannot read the dataset"):
        train_model(path)


def test_calibration_fit_recovers_slope_one_on_calibrated_predictions() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 20_000)
    y = (rng.random(p.size) < p).astype(np.int64)
    logit = np.log(p / (1 - p))

    intercept, slope = _logistic_fit(logit, y, fixed_slope=False)
    offset_intercept, fixed = _logistic_fit(logit, y, fixed_slope=True)

    assert slope == pytest.approx(1.0, abs=0.05)
    assert intercept == pytest.approx(0.0, abs=0.05)
    assert offset_intercept == pytest.approx(0.0, abs=0.05) and fixed == 1.0
