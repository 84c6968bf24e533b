"""Scoring: load trained models safely and score batches of patients.

A model folder holds ``card.json`` and the artifact it names. Loading checks,
before anything is deserialised, that the artifact's sha256 is the card's, that
scikit-learn's major.minor version is the one it was trained with, and that
every type skops would have to trust is on :data:`ACCEPTED_TYPES`. skops never
unpickles, so a file passing these checks cannot run code of its own.

Scores are never imputed: a row missing any fact gets ``value=None`` and the
missing facts named.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn  # type: ignore[import-untyped]
import skops.io as sio  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, ValidationError
from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

from .errors import ModelError, ModelIntegrityError, ModelVersionWarning, display_path
from .modelspec import (
    CardFeature,
    LnDerive,
    MeanArterialPressureDerive,
    ModelCard,
    RatioDerive,
    describe_validation_error,
)

__all__ = [
    "ACCEPTED_TYPES",
    "ARTIFACT_FILE",
    "CARD_FILE",
    "ModelScore",
    "ScoringModel",
    "load_model",
    "load_models",
]

logger = logging.getLogger(__name__)

CARD_FILE = "card.json"
ARTIFACT_FILE = "model.skops"

#: Types outside skops' default trust that our estimators need. Each is a
#: scikit-learn class restored from plain arrays and numbers; none calls code
#: named in the file. Anything else in an artifact refuses the model.
ACCEPTED_TYPES = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.tree._tree.Tree",
    }
)

# What skops raises on a damaged or foreign file: a bad zip, a missing or
# malformed schema, an unknown protocol, a type that cannot be imported.
_SKOPS_ERRORS = (
    zipfile.BadZipFile,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
)

_RETRAIN = "retrain with `cdss models train <spec>` or restore the artifact"
_TOP_CONTRIBUTIONS = 3


class ModelScore(BaseModel):
    """One model's score for one patient.

    Attributes:
        model_id: The model's id.
        model_version: The model's version.
        value: Probability of the positive class, or None when a fact is
            missing or unusable (never imputed).
        missing: Facts with no value, in the order the model reads them.
        invalid: Facts whose value cannot be used (not finite, a log of a value
            <= 0, a ratio over zero).
        out_of_range: Features outside the training min/max (still scored).
        inputs: Feature name to the value computed from the facts.
        contributions: Up to three ``(feature, contribution)`` pairs, largest
            magnitude first. Linear models: coefficient times standardised
            value (log-odds, before calibration). Others: probability minus the
            probability with that feature at its training mean.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str
    model_version: str
    value: float | None
    missing: list[str]
    invalid: list[str] = []
    out_of_range: list[str]
    inputs: dict[str, float]
    contributions: list[tuple[str, float]]


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model and its card, ready to score.

    Attributes:
        card: The model card.
        estimator: The fitted scikit-learn estimator.
        folder: The folder it was loaded from.
    """

    card: ModelCard
    estimator: Any
    folder: Path

    @property
    def id(self) -> str:
        """The model's id."""
        return self.card.id

    @property
    def version(self) -> str:
        """The model's version."""
        return self.card.version

    def facts_needed(self) -> list[str]:
        """Return every fact the features read, once each, in feature order."""
        return list(dict.fromkeys(f for c in self.card.features for f in c.facts()))

    def score(self, row: Mapping[str, float | None]) -> ModelScore:
        """Score one patient; prefer :meth:`score_many` for more than one."""
        return self.score_many([row])[0]

    def score_many(
        self, rows: Sequence[Mapping[str, float | None]]
    ) -> list[ModelScore]:
        """Score patients in one batch.

        Args:
            rows: Per patient, fact name to its latest value in the feature's
                unit, or None when missing. Other keys are ignored.

        Returns:
            One score per row, in order.
        """
        prepared = [_prepare(self.card.features, row) for row in rows]
        complete = [i for i, p in enumerate(prepared) if p.values is not None]
        values: dict[int, float] = {}
        contributions: dict[int, list[tuple[str, float]]] = {}
        if complete:
            x = np.array([prepared[i].values for i in complete], dtype=np.float64)
            probabilities, effects = self._predict(x)
            names = [f.name for f in self.card.features]
            for position, index in enumerate(complete):
                values[index] = float(probabilities[position])
                contributions[index] = _top(names, effects[position])

        return [
            ModelScore(
                model_id=self.id,
                model_version=self.version,
                value=values.get(i),
                missing=p.missing,
                invalid=p.invalid,
                out_of_range=p.out_of_range,
                inputs=p.inputs,
                contributions=contributions.get(i, []),
            )
            for i, p in enumerate(prepared)
        ]

    def _predict(self, x: npt.NDArray[np.float64]) -> tuple[Any, Any]:
        # One predict_proba call per batch: its fixed cost (~0.5 ms) dwarfs the
        # per-row cost, so everything a batch needs goes through a single call.
        positive = list(self.estimator.classes_).index(1)
        linear = _linear_parts(self.estimator)
        if linear is not None:
            coef, mean, scale = linear
            p = self.estimator.predict_proba(x)[:, positive]
            sign = 1.0 if positive == 1 else -1.0
            return p, sign * coef * (x - mean) / scale

        # Non-linear: stack each row with one copy per feature set to its
        # training mean, and score the whole stack at once.
        n, k = x.shape
        means = np.array([f.train_mean for f in self.card.features])
        stack = np.repeat(x[np.newaxis, :, :], k + 1, axis=0)
        for j in range(k):
            stack[j + 1, :, j] = means[j]
        p_all = self.estimator.predict_proba(stack.reshape(-1, k))[:, positive]
        p_all = p_all.reshape(k + 1, n)
        return p_all[0], (p_all[0] - p_all[1:]).T


@dataclass
class _Prepared:
    values: list[float] | None
    missing: list[str]
    invalid: list[str]
    out_of_range: list[str]
    inputs: dict[str, float]


def _prepare(
    features: Sequence[CardFeature], row: Mapping[str, float | None]
) -> _Prepared:
    missing: list[str] = []
    invalid: list[str] = []
    out_of_range: list[str] = []
    inputs: dict[str, float] = {}
    for feature in features:
        value = _derive(feature, row, missing, invalid)
        if value is None:
            continue
        inputs[feature.name] = value
        if not feature.train_min <= value <= feature.train_max:
            out_of_range.append(feature.name)
    missing = list(dict.fromkeys(missing))
    invalid = list(dict.fromkeys(invalid))
    complete = len(inputs) == len(features)
    values = [inputs[f.name] for f in features] if complete else None
    return _Prepared(values, missing, invalid, out_of_range, inputs)


def _derive(
    feature: CardFeature,
    row: Mapping[str, float | None],
    missing: list[str],
    invalid: list[str],
) -> float | None:
    facts = feature.facts()
    raw = [row.get(f) for f in facts]
    absent = [f for f, v in zip(facts, raw, strict=True) if v is None]
    if absent:
        missing.extend(absent)
        return None
    numbers = [float(v) for v in raw if v is not None]
    bad = [f for f, v in zip(facts, numbers, strict=True) if not math.isfinite(v)]
    if bad:
        invalid.extend(bad)
        return None

    derive = feature.derive
    if isinstance(derive, RatioDerive):
        if numbers[1] == 0.0:
            invalid.append(facts[1])
            return None
        return numbers[0] / numbers[1]
    if isinstance(derive, LnDerive):
        if numbers[0] <= 0.0:
            invalid.append(facts[0])
            return None
        return math.log(numbers[0])
    if isinstance(derive, MeanArterialPressureDerive):
        return (numbers[0] + 2.0 * numbers[1]) / 3.0
    return numbers[0]


def _linear_parts(estimator: Any) -> tuple[Any, Any, Any] | None:
    """Return ``(coef, mean, scale)`` when the score is one scaled linear model."""
    pipeline = estimator
    if isinstance(estimator, CalibratedClassifierCV):
        # An ensemble of several pipelines has no single coefficient vector;
        # it falls back to the training-mean method.
        members = estimator.calibrated_classifiers_
        if len(members) != 1:
            return None
        pipeline = members[0].estimator
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    scaler, model = pipeline.steps[0][1], pipeline.steps[1][1]
    coef = getattr(model, "coef_", None)
    if not isinstance(scaler, StandardScaler) or coef is None or coef.shape[0] != 1:
        return None
    scale = scaler.scale_ if scaler.scale_ is not None else 1.0
    mean = scaler.mean_ if scaler.mean_ is not None else 0.0
    return coef[0], mean, scale


def _top(names: Sequence[str], effects: Any) -> list[tuple[str, float]]:
    # Stable sort: equal magnitudes keep the card's feature order.
    ranked = sorted(range(len(names)), key=lambda j: -abs(float(effects[j])))
    return [(names[j], float(effects[j])) for j in ranked[:_TOP_CONTRIBUTIONS]]


def load_model(folder: Path) -> ScoringModel:
    """Load one model folder after checking its artifact against its card.

    Args:
        folder: A folder holding ``card.json`` and the artifact it names.

    Returns:
        The model, ready to score.

    Raises:
        ModelError: The card is missing or invalid (file and field named), or
            the artifact cannot be read or is not a usable classifier.
        ModelIntegrityError: The artifact's sha256 is not the card's, it was
            trained with another scikit-learn major.minor version, or it needs
            a type not on :data:`ACCEPTED_TYPES`.
    """
    card = _read_card(folder / CARD_FILE)
    path = folder / card.artifact.file
    shown = display_path(path)

    # Hash the bytes that will be loaded, so the file cannot change between
    # the check and the load.
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelIntegrityError(
            f"{shown}: cannot read the artifact ({err}); {_RETRAIN}"
        ) from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.artifact.sha256:
        raise ModelIntegrityError(
            f"{shown}: sha256 {digest} does not match the card's "
            f"{card.artifact.sha256}; {_RETRAIN}"
        )
    _check_sklearn_version(card, shown)
    _check_types(card, data, shown)

    try:
        estimator = sio.loads(data, trusted=list(card.artifact.trusted_types))
    except _SKOPS_ERRORS as err:
        raise ModelError(f"{shown}: cannot load the artifact: {err}") from err
    _check_estimator(card, estimator, shown)
    logger.debug("loaded model %s %s from %s", card.id, card.version, shown)
    return ScoringModel(card=card, estimator=estimator, folder=folder)


def load_models(root: Path) -> dict[str, ScoringModel]:
    """Load every subfolder of ``root`` that holds a ``card.json``.

    Args:
        root: The models folder.

    Returns:
        Models by id, in folder-name order.

    Raises:
        ModelError: ``root`` is not a folder, two folders hold the same model
            id, or a model cannot be loaded (see :func:`load_model`).
        ModelIntegrityError: As raised by :func:`load_model`.
    """
    if not root.is_dir():
        raise ModelError(f"{display_path(root)}: not a folder of models")
    models: dict[str, ScoringModel] = {}
    for folder in sorted(p for p in root.iterdir() if (p / CARD_FILE).is_file()):
        model = load_model(folder)
        if model.id in models:
            raise ModelError(
                f"{display_path(folder)}: model id {model.id!r} is also in "
                f"{display_path(models[model.id].folder)}"
            )
        models[model.id] = model
    return models


def _read_card(path: Path) -> ModelCard:
    shown = display_path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as err:
        raise ModelError(f"{shown}: no model card; {_RETRAIN}") from err
    except OSError as err:
        raise ModelError(f"{shown}: cannot read the model card: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelError(
            f"{shown}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}"
        ) from err
    try:
        return ModelCard.model_validate(data)
    except ValidationError as err:
        detail = describe_validation_error(err)
        raise ModelError(f"{shown}: invalid model card: {detail}") from err


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _check_sklearn_version(card: ModelCard, shown: str) -> None:
    trained, running = card.libraries.scikit_learn, sklearn.__version__
    if _major_minor(trained) != _major_minor(running):
        raise ModelIntegrityError(
            f"{shown}: trained with scikit-learn {trained}, running {running}; "
            f"retrain with `cdss models train <spec>` under scikit-learn "
            f"{running}, or install scikit-learn {'.'.join(_major_minor(trained))}"
        )
    if trained != running:
        # Patch releases keep the model format; worth knowing, not refusing.
        warnings.warn(
            f"{shown}: trained with scikit-learn {trained}, running {running}",
            ModelVersionWarning,
            stacklevel=3,
        )


def _check_types(card: ModelCard, data: bytes, shown: str) -> None:
    try:
        needed = set(sio.get_untrusted_types(data=data))
    except _SKOPS_ERRORS as err:
        raise ModelError(f"{shown}: not a readable skops artifact: {err}") from err
    listed = set(card.artifact.trusted_types)
    refused = sorted((needed | listed) - ACCEPTED_TYPES)
    if refused:
        raise ModelIntegrityError(
            f"{shown}: refused: it needs types we do not trust "
            f"({', '.join(refused)}); loading them could run arbitrary code. "
            f"Accepted: {', '.join(sorted(ACCEPTED_TYPES))}"
        )
    unlisted = sorted(needed - listed)
    if unlisted:
        raise ModelIntegrityError(
            f"{shown}: needs types the card does not list ({', '.join(unlisted)}); "
            f"{_RETRAIN}"
        )


def _check_estimator(card: ModelCard, estimator: Any, shown: str) -> None:
    classes = [int(c) for c in getattr(estimator, "classes_", [])]
    if not hasattr(estimator, "predict_proba") or sorted(classes) != [0, 1]:
        raise ModelError(f"{shown}: not a fitted binary classifier with classes 0/1")
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features != len(card.features):
        raise ModelError(
            f"{shown}: the estimator takes {n_features} features, the card lists "
            f"{len(card.features)}"
        )
