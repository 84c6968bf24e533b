"""Tests for engine.scoring: safe loading and batch scoring."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from engine import KnowledgeBase
from engine.errors import ModelError, ModelIntegrityError, ModelVersionWarning
from engine.scoring import ScoringModel, load_model, load_models
from engine.training import train_model

ROOT = Path(__file__).resolve().parents[1]
DIABETES = ROOT / "models" / "diabetes_progression"

PATIENT: dict[str, float | None] = {
    "age": 50,
    "bmi": 27.0,
    "systolic_bp": 130,
    "diastolic_bp": 80,
    "total_cholesterol": 190,
    "ldl_cholesterol": 115,
    "hdl_cholesterol": 50,
    "triglycerides": 150,
    "random_glucose": 95,
}


@pytest.fixture(scope="module")
def model() -> ScoringModel:
    return load_model(DIABETES)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A writable copy of the committed model folder."""
    folder = tmp_path / "diabetes_progression"
    shutil.copytree(DIABETES, folder)
    return folder


def _edit_card(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "card.json"
    card = json.loads(path.read_text())
    edit(card)
    path.write_text(json.dumps(card))


def _random_rows(n: int, seed: int = 0) -> list[dict[str, float | None]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, float | None]] = []
    for i in range(n):
        row: dict[str, float | None] = {
            "age": float(rng.integers(20, 90)),
            "bmi": float(rng.uniform(18, 45)),
            "systolic_bp": float(rng.uniform(100, 180)),
            "diastolic_bp": float(rng.uniform(60, 110)),
            "total_cholesterol": float(rng.uniform(120, 300)),
            "ldl_cholesterol": float(rng.uniform(50, 200)),
            "hdl_cholesterol": float(rng.uniform(25, 90)),
            "triglycerides": float(rng.uniform(40, 400)),
            "random_glucose": float(rng.uniform(60, 130)),
        }
        if i % 7 == 0:
            row["hdl_cholesterol"] = None
        rows.append(row)
    return rows


def test_committed_artifact_loads_and_matches_its_card(model: ScoringModel) -> None:
    digest = hashlib.sha256((DIABETES / "model.skops").read_bytes()).hexdigest()
    assert digest == model.card.artifact.sha256
    assert (model.id, model.version) == ("diabetes_progression", "1.0.0")
    assert model.facts_needed() == [
        "age",
        "bmi",
        "systolic_bp",
        "diastolic_bp",
        "total_cholesterol",
        "ldl_cholesterol",
        "hdl_cholesterol",
        "triglycerides",
        "random_glucose",
    ]


def test_complete_row_is_scored_with_derived_inputs(model: ScoringModel) -> None:
    score = model.score(PATIENT)

    assert score.value is not None and 0.0 < score.value < 1.0
    assert (score.missing, score.invalid, score.out_of_range) == ([], [], [])
    assert score.inputs["mean_arterial_pressure"] == pytest.approx(290 / 3)
    assert score.inputs["cholesterol_hdl_ratio"] == pytest.approx(3.8)
    assert score.inputs["ln_triglycerides"] == pytest.approx(math.log(150))
    assert len(score.contributions) == 3
    magnitudes = [abs(c) for _, c in score.contributions]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_linear_contribution_is_coefficient_times_standardised_value(
    model: ScoringModel,
) -> None:
    pipeline = model.estimator.calibrated_classifiers_[0].estimator
    scaler, logistic = pipeline.named_steps["scale"], pipeline.named_steps["model"]
    score = model.score(PATIENT)
    names = [f.name for f in model.card.features]
    x = np.array([score.inputs[n] for n in names])
    expected = logistic.coef_[0] * (x - scaler.mean_) / scaler.scale_

    for name, contribution in score.contributions:
        assert contribution == pytest.approx(expected[names.index(name)])


def test_missing_fact_gives_no_value_and_is_named(model: ScoringModel) -> None:
    score = model.score({**PATIENT, "diastolic_bp": None, "bmi": None})

    assert score.value is None
    assert score.missing == ["bmi", "diastolic_bp"]
    assert "mean_arterial_pressure" not in score.inputs
    assert score.contributions == []


def test_absent_key_counts_as_missing(model: ScoringModel) -> None:
    row = {k: v for k, v in PATIENT.items() if k != "random_glucose"}
    score = model.score(row)
    assert score.value is None and score.missing == ["random_glucose"]


@pytest.mark.parametrize(
    ("change", "invalid"),
    [
        ({"triglycerides": 0.0}, ["triglycerides"]),
        ({"hdl_cholesterol": 0.0}, ["hdl_cholesterol"]),
        ({"bmi": math.nan}, ["bmi"]),
    ],
)
def test_unusable_value_gives_no_value_and_is_named(
    model: ScoringModel, change: dict[str, float], invalid: list[str]
) -> None:
    score = model.score({**PATIENT, **change})
    assert score.value is None
    assert score.invalid == invalid and score.missing == []


def test_out_of_range_age_is_flagged_and_still_scored(model: ScoringModel) -> None:
    score = model.score({**PATIENT, "age": 110})
    assert score.value is not None
    assert score.out_of_range == ["age"]


def test_batch_uses_one_predict_proba_call_and_equals_row_by_row(
    model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _random_rows(1000)
    expected = [model.score(row) for row in rows]
    calls: list[int] = []
    original = model.estimator.predict_proba

    def spy(x: Any) -> Any:
        calls.append(len(x))
        return original(x)

    monkeypatch.setattr(model.estimator, "predict_proba", spy)
    scores = model.score_many(rows)

    assert calls == [sum(1 for r in rows if r["hdl_cholesterol"] is not None)]
    assert len(scores) == 1000
    for got, want in zip(scores, expected, strict=True):
        assert got.model_dump(exclude={"value", "contributions"}) == want.model_dump(
            exclude={"value", "contributions"}
        )
        if want.value is None:
            assert got.value is None and got.contributions == []
            continue
        assert got.value == pytest.approx(want.value, rel=1e-12)
        assert [n for n, _ in got.contributions] == [n for n, _ in want.contributions]
        for (_, g), (_, w) in zip(got.contributions, want.contributions, strict=True):
            assert g == pytest.approx(w, rel=1e-12)


def test_batch_without_complete_rows_skips_prediction(model: ScoringModel) -> None:
    assert model.score_many([]) == []
    scores = model.score_many([{}])
    assert scores[0].value is None and len(scores[0].missing) == 9


def test_non_linear_contribution_is_change_at_training_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = (DIABETES / "spec.yaml").read_text()
    spec = spec.replace("name: logistic_regression", "name: random_forest")
    spec = spec.replace(
        "params: {C: 1.0, max_iter: 1000}", "params: {n_estimators: 20}"
    )
    spec = spec.replace("calibration: sigmoid", "calibration: isotonic")
    (tmp_path / "spec.yaml").write_text(spec)
    train_model(tmp_path / "spec.yaml")
    forest = load_model(tmp_path)
    calls: list[int] = []
    original = forest.estimator.predict_proba

    def spy(x: Any) -> Any:
        calls.append(len(x))
        return original(x)

    monkeypatch.setattr(forest.estimator, "predict_proba", spy)
    score = forest.score_many([PATIENT, PATIENT])[0]

    assert calls == [2 * 10]  # 2 rows, each with itself and 9 copies
    names = [f.name for f in forest.card.features]
    x = np.array([[score.inputs[n] for n in names]])
    for name, contribution in score.contributions:
        at_mean = x.copy()
        j = names.index(name)
        at_mean[0, j] = forest.card.features[j].train_mean
        change = original(x)[0, 1] - original(at_mean)[0, 1]
        assert contribution == pytest.approx(change)


def test_tampered_artifact_is_refused_naming_both_hashes(copy: Path) -> None:
    artifact = copy / "model.skops"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    expected = json.loads((copy / "card.json").read_text())["artifact"]["sha256"]

    with pytest.raises(ModelIntegrityError) as caught:
        load_model(copy)

    message = str(caught.value)
    assert str(artifact) in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert expected in message
    assert "retrain with `cdss models train <spec>` or restore the artifact" in message


def test_missing_artifact_is_an_integrity_error(copy: Path) -> None:
    (copy / "model.skops").unlink()
    with pytest.raises(ModelIntegrityError, match="cannot read the artifact"):
        load_model(copy)


def test_other_sklearn_minor_version_is_refused(copy: Path) -> None:
    _edit_card(copy, lambda c: c["libraries"].update(scikit_learn="1.7.2"))
    with pytest.raises(ModelIntegrityError) as caught:
        load_model(copy)
    message = str(caught.value)
    assert "trained with scikit-learn 1.7.2, running 1.9." in message
    assert "retrain with `cdss models train <spec>`" in message
    assert "install scikit-learn 1.7" in message


def test_other_sklearn_patch_version_warns(copy: Path) -> None:
    _edit_card(copy, lambda c: c["libraries"].update(scikit_learn="1.9.999"))
    with pytest.warns(ModelVersionWarning, match="trained with scikit-learn 1.9.999"):
        load_model(copy)


def _dump_with_card(copy: Path, estimator: Any, trusted: list[str]) -> None:
    sio.dump(estimator, copy / "model.skops")
    digest = hashlib.sha256((copy / "model.skops").read_bytes()).hexdigest()
    _edit_card(
        copy, lambda c: c["artifact"].update(sha256=digest, trusted_types=trusted)
    )


def test_artifact_needing_an_untrusted_type_is_refused(copy: Path) -> None:
    # The card is rewritten to match the hostile file, as an attacker with
    # write access to the folder could; the type check must still refuse it.
    clip = FunctionTransformer(functools.partial(np.clip, a_min=0, a_max=None))
    hostile = Pipeline([("clip", clip), ("model", LogisticRegression())])
    hostile.fit(np.eye(9)[[0, 1, 2, 3]], [0, 1, 0, 1])
    _dump_with_card(copy, hostile, sio.get_untrusted_types(data=sio.dumps(hostile)))

    with pytest.raises(ModelIntegrityError) as caught:
        load_model(copy)

    message = str(caught.value)
    assert "refused" in message and "functools.partial" in message
    assert "arbitrary code" in message


def test_card_trusting_an_unaccepted_type_is_refused(copy: Path) -> None:
    _edit_card(copy, lambda c: c["artifact"]["trusted_types"].append("builtins.eval"))
    with pytest.raises(ModelIntegrityError, match="refused.*builtins.eval"):
        load_model(copy)


def test_artifact_needing_a_type_the_card_omits_is_refused(copy: Path) -> None:
    _edit_card(copy, lambda c: c["artifact"].update(trusted_types=[]))
    with pytest.raises(ModelIntegrityError, match="the card does not list"):
        load_model(copy)


def test_non_classifier_or_wrong_width_is_refused(copy: Path) -> None:
    narrow = LogisticRegression().fit(np.eye(3)[[0, 1, 2, 0]], [0, 1, 0, 1])
    _dump_with_card(copy, narrow, [])
    with pytest.raises(ModelError, match="takes 3 features, the card lists 9"):
        load_model(copy)

    _dump_with_card(copy, LogisticRegression(), [])
    with pytest.raises(ModelError, match="not a fitted binary classifier"):
        load_model(copy)


def test_damaged_zip_is_a_model_error(copy: Path) -> None:
    (copy / "model.skops").write_bytes(b"not a zip")
    digest = hashlib.sha256(b"not a zip").hexdigest()
    _edit_card(copy, lambda c: c["artifact"].update(sha256=digest))
    with pytest.raises(ModelError, match="not a readable skops artifact"):
        load_model(copy)


def test_missing_or_invalid_card_names_file_and_field(copy: Path) -> None:
    _edit_card(copy, lambda c: c["artifact"].pop("sha256"))
    with pytest.raises(ModelError, match=r"card.json: invalid model card: artifact"):
        load_model(copy)

    (copy / "card.json").write_text("{\n  oops")
    with pytest.raises(ModelError, match=r"card.json:2:3: not valid JSON"):
        load_model(copy)

    (copy / "card.json").unlink()
    with pytest.raises(ModelError, match=r"card.json: no model card"):
        load_model(copy)


def test_hand_edited_feature_formula_is_refused(copy: Path) -> None:
    _edit_card(copy, lambda c: c["features"][2].update(formula="systolic_bp"))
    with pytest.raises(ModelError, match=r"features\.2: Value error, formula"):
        load_model(copy)


def test_load_models_reads_every_folder_with_a_card(copy: Path) -> None:
    (copy.parent / "notes").mkdir()
    models = load_models(copy.parent)
    assert list(models) == ["diabetes_progression"]

    shutil.copytree(copy, copy.parent / "second")
    with pytest.raises(ModelError, match="model id 'diabetes_progression' is also"):
        load_models(copy.parent)

    with pytest.raises(ModelError, match="not a folder of models"):
        load_models(copy.parent / "absent")


def test_a_models_folder_that_does_not_exist_is_a_model_error(tmp_path: Path) -> None:
    # It was read as "no models", and every rule using a model was blamed.
    with pytest.raises(ModelError, match="no such folder"):
        KnowledgeBase.load(models=tmp_path / "nowhere")
