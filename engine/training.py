"""Training: from a model spec to a saved artifact and its model card.

``train_model`` reads ``spec.yaml``, loads the data, splits it once (stratified,
seeded), fits a plain scikit-learn pipeline on the training split, measures it
on the held-out split only, and writes ``model.skops``, ``card.json`` and
``MODEL_CARD.md``. The same spec gives the same split, model and metrics.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn  # type: ignore[import-untyped]
import sklearn.datasets  # type: ignore[import-untyped]
import skops  # type: ignore[import-untyped]
import skops.io as sio  # type: ignore[import-untyped]
from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.metrics import brier_score_loss, roc_auc_score  # type: ignore[import-untyped]
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

from .errors import ModelError, display_path
from .modelspec import (
    Artifact,
    CardDataset,
    CardFeature,
    CrossValidation,
    CsvDataset,
    EstimatorSpec,
    HeldOutMetrics,
    Libraries,
    ModelCard,
    ModelSpec,
    ReliabilityBin,
    load_spec,
)
from .scoring import ACCEPTED_TYPES, ARTIFACT_FILE, CARD_FILE, load_model

__all__ = [
    "MARKDOWN_FILE",
    "TrainingData",
    "build_estimator",
    "load_training_data",
    "render_card_markdown",
    "split_training_data",
    "train_model",
]

logger = logging.getLogger(__name__)

MARKDOWN_FILE = "MODEL_CARD.md"
_RELIABILITY_GROUPS = 5
_ESTIMATORS: dict[str, type[Any]] = {
    "logistic_regression": LogisticRegression,
    "gradient_boosting": GradientBoostingClassifier,
    "random_forest": RandomForestClassifier,
}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainingData:
    """The usable rows of a dataset, as features and a 0/1 outcome.

    Attributes:
        x: One column per spec feature, in spec order (dataset values).
        y: 1 for the positive class, 0 otherwise.
        source: Where the data came from, as it goes on the card.
        sha256: The CSV file's hash, or None for bundled data.
        n_rows_dropped: Rows left out for a missing feature or target.
    """

    x: FloatArray
    y: IntArray
    source: str
    sha256: str | None
    n_rows_dropped: int


def load_training_data(spec: ModelSpec, base_dir: Path) -> TrainingData:
    """Load the spec's dataset and keep the rows with every value recorded.

    Rows with a missing value (empty, NaN, or one of the feature's
    ``missing_values``) are dropped, not imputed, matching scoring, which never
    imputes either.

    Args:
        spec: The model spec.
        base_dir: The folder a relative ``csv`` path is resolved against.

    Returns:
        The features and outcome.

    Raises:
        ModelError: The data cannot be loaded, a column is absent or not
            numeric, or the outcome has a single class.
    """
    if isinstance(spec.dataset, CsvDataset):
        columns, sha256 = _read_csv(base_dir / spec.dataset.csv)
    else:
        columns, sha256 = _read_sklearn(spec), None

    wanted = [f.column for f in spec.features] + [spec.target.column]
    absent = [c for c in wanted if c not in columns]
    if absent:
        raise ModelError(
            f"{spec.dataset.source()}: no column {', '.join(map(repr, absent))}; "
            f"columns are {', '.join(sorted(columns))}"
        )

    x = np.column_stack([columns[f.column] for f in spec.features]).astype(np.float64)
    target = columns[spec.target.column]
    usable = ~np.isnan(target) & ~np.isnan(x).any(axis=1)
    for index, feature in enumerate(spec.features):
        if feature.missing_values:
            usable &= ~np.isin(x[:, index], feature.missing_values)
    y = np.array([spec.target.is_positive(float(v)) for v in target], dtype=np.int64)
    x, y = x[usable], y[usable]
    if len(np.unique(y)) != 2:
        raise ModelError(
            f"{spec.dataset.source()}: target {spec.target.positive_if!r} gives a "
            "single class; choose a cut that leaves both classes"
        )
    dropped = int((~usable).sum())
    if dropped:
        logger.info("%s: dropped %d rows with a missing value", spec.id, dropped)
    return TrainingData(x, y, spec.dataset.source(), sha256, dropped)


def _read_sklearn(spec: ModelSpec) -> dict[str, FloatArray]:
    dataset = spec.dataset
    assert not isinstance(dataset, CsvDataset)
    loader = getattr(sklearn.datasets, dataset.sklearn)
    try:
        bunch = loader(**dataset.kwargs)
    except TypeError as err:
        raise ModelError(f"{dataset.source()}: bad loader arguments: {err}") from err
    data = np.asarray(bunch.data, dtype=np.float64)
    columns = {str(n): data[:, i] for i, n in enumerate(bunch.feature_names)}
    columns["target"] = np.asarray(bunch.target, dtype=np.float64)
    return columns


def _read_csv(path: Path) -> tuple[dict[str, FloatArray], str]:
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ModelError(f"{shown}: cannot read the dataset: {err}") from err
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    if len(rows) < 2:
        raise ModelError(f"{shown}: needs a header row and data rows")
    header, body = rows[0], rows[1:]
    values: dict[str, list[float]] = {name: [] for name in header}
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ModelError(
                f"{shown}:{line}: {len(row)} fields, the header has {len(header)}"
            )
        for name, cell in zip(header, row, strict=True):
            try:
                values[name].append(float(cell) if cell.strip() else math.nan)
            except ValueError as err:
                raise ModelError(
                    f"{shown}:{line}: column {name!r}: not a number: {cell!r}"
                ) from err
    columns = {k: np.array(v, dtype=np.float64) for k, v in values.items()}
    return columns, hashlib.sha256(raw).hexdigest()


def split_training_data(
    spec: ModelSpec, data: TrainingData
) -> tuple[FloatArray, FloatArray, IntArray, IntArray]:
    """Split into training and held-out parts, stratified and seeded by the spec.

    Args:
        spec: The model spec (``test_size``, ``random_state``).
        data: The loaded rows.

    Returns:
        ``x_train, x_test, y_train, y_test``.
    """
    parts = train_test_split(
        data.x,
        data.y,
        test_size=spec.test_size,
        random_state=spec.random_state,
        stratify=data.y,
    )
    return parts[0], parts[1], parts[2], parts[3]


def build_estimator(spec: ModelSpec) -> Any:
    """Build the unfitted estimator: scaler + classifier, calibrated if asked.

    Calibration uses ``ensemble=False``: the calibrator is fitted on
    cross-validated predictions and a single pipeline is refitted on the whole
    training split, so there is one set of coefficients to explain a score by.

    Args:
        spec: The model spec.

    Returns:
        A scikit-learn ``Pipeline`` or ``CalibratedClassifierCV`` around one.

    Raises:
        ModelError: A parameter is not one the estimator accepts.
    """
    classifier = _ESTIMATORS[spec.estimator.name]()
    params = _effective_params(spec, classifier)
    try:
        classifier.set_params(**params)
    except ValueError as err:
        raise ModelError(
            f"estimator {spec.estimator.name}: bad parameter: {err}"
        ) from err
    pipeline = Pipeline([("scale", StandardScaler()), ("model", classifier)])
    if spec.calibration == "none":
        return pipeline
    return CalibratedClassifierCV(
        pipeline, method=spec.calibration, cv=spec.cv_folds, ensemble=False
    )


def _effective_params(spec: ModelSpec, classifier: Any) -> dict[str, Any]:
    # Seed every estimator that takes a seed with the spec's random_state, so
    # the same spec gives the same model even when params do not say it.
    params: dict[str, Any] = dict(spec.estimator.params)
    if "random_state" in classifier.get_params() and "random_state" not in params:
        params["random_state"] = spec.random_state
    return dict(sorted(params.items()))


def train_model(spec_path: Path, out_dir: Path | None = None) -> ModelCard:
    """Train the model a spec describes and write its artifact and card.

    Args:
        spec_path: The ``spec.yaml`` file.
        out_dir: Where ``model.skops``, ``card.json`` and ``MODEL_CARD.md``
            go; the spec's folder by default.

    Returns:
        The model card written.

    Raises:
        ModelError: The spec or data is unusable, or the fitted model would
            need a type the loader refuses.
    """
    spec = load_spec(spec_path)
    target_dir = spec_path.parent if out_dir is None else out_dir
    data = load_training_data(spec, spec_path.parent)
    x_train, x_test, y_train, y_test = split_training_data(spec, data)

    # Cross-validation sees only the training split; the held-out split is
    # touched once, by the final model, to measure it.
    folds = StratifiedKFold(
        n_splits=spec.cv_folds, shuffle=True, random_state=spec.random_state
    )
    cv_scores = cross_val_score(
        build_estimator(spec), x_train, y_train, cv=folds, scoring="roc_auc"
    )
    model = build_estimator(spec).fit(x_train, y_train)
    positive = list(model.classes_).index(1)
    p_test = np.asarray(model.predict_proba(x_test)[:, positive], dtype=np.float64)

    target_dir.mkdir(parents=True, exist_ok=True)
    artifact = _save_artifact(model, target_dir / ARTIFACT_FILE)
    copied = spec.model_dump(
        include={"id", "version", "title", "intended_use", "limitations"}
        | {"assumptions", "excluded_columns", "target", "calibration"}
    )
    classifier = _ESTIMATORS[spec.estimator.name]()
    card = ModelCard(
        **copied,
        dataset=CardDataset(
            source=data.source,
            description=spec.dataset.description,
            sha256=data.sha256,
            n_rows=len(data.y),
            n_rows_dropped=data.n_rows_dropped,
        ),
        features=_card_features(spec, x_train),
        estimator=EstimatorSpec(
            name=spec.estimator.name, params=_effective_params(spec, classifier)
        ),
        split=spec.split(),
        held_out=_held_out_metrics(y_train, y_test, p_test),
        cross_validation=CrossValidation(
            folds=spec.cv_folds,
            roc_auc_mean=float(np.mean(cv_scores)),
            roc_auc_sd=float(np.std(cv_scores, ddof=1)),
            roc_auc_folds=tuple(float(s) for s in cv_scores),
        ),
        trained_at=datetime.now(UTC).replace(microsecond=0),
        libraries=Libraries(
            python=platform.python_version(),
            scikit_learn=sklearn.__version__,
            numpy=np.__version__,
            skops=skops.__version__,
        ),
        artifact=artifact,
    )
    text = json.dumps(card.model_dump(mode="json"), indent=2, ensure_ascii=False)
    (target_dir / CARD_FILE).write_text(text + "\n", "utf-8")
    (target_dir / MARKDOWN_FILE).write_text(render_card_markdown(card), "utf-8")

    # Load what was written, as scoring will, so a card that cannot be served
    # is found now rather than at the first patient.
    reloaded = load_model(target_dir)
    p_reloaded = reloaded.estimator.predict_proba(x_test)[:, positive]
    if not np.array_equal(p_reloaded, p_test):
        raise ModelError(f"{display_path(target_dir)}: reloaded model scores differ")
    logger.info(
        "trained %s %s: held-out ROC AUC %.3f, CV ROC AUC %.3f",
        card.id,
        card.version,
        card.held_out.roc_auc,
        card.cross_validation.roc_auc_mean,
    )
    return card


def _save_artifact(model: Any, path: Path) -> Artifact:
    # Write beside the final name and rename, so a crash never leaves a
    # half-written artifact under the name the card points at.
    partial = path.with_name(path.name + ".partial")
    sio.dump(model, partial)
    untrusted = sorted(sio.get_untrusted_types(file=partial))
    refused = sorted(set(untrusted) - ACCEPTED_TYPES)
    if refused:
        partial.unlink()
        raise ModelError(
            f"the fitted model needs types the loader refuses: {', '.join(refused)}"
        )
    os.replace(partial, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Artifact(file=path.name, sha256=digest, trusted_types=tuple(untrusted))


def _card_features(spec: ModelSpec, x_train: FloatArray) -> tuple[CardFeature, ...]:
    return tuple(
        CardFeature(
            **feature.model_dump(),
            formula=feature.describe(),
            value_unit=feature.derived_unit(),
            train_min=float(x_train[:, i].min()),
            train_max=float(x_train[:, i].max()),
            train_mean=float(x_train[:, i].mean()),
        )
        for i, feature in enumerate(spec.features)
    )


def _held_out_metrics(
    y_train: IntArray, y_test: IntArray, p_test: FloatArray
) -> HeldOutMetrics:
    slope_fit = _logistic_fit(_logit(p_test), y_test, fixed_slope=False)
    intercept_fit = _logistic_fit(_logit(p_test), y_test, fixed_slope=True)
    return HeldOutMetrics(
        roc_auc=float(roc_auc_score(y_test, p_test)),
        brier_score=float(brier_score_loss(y_test, p_test)),
        calibration_slope=slope_fit[1],
        calibration_intercept=intercept_fit[0],
        reliability=_reliability(y_test, p_test),
        n_train=len(y_train),
        n_test=len(y_test),
        prevalence_train=float(y_train.mean()),
        prevalence_test=float(y_test.mean()),
    )


def _logit(p: FloatArray) -> FloatArray:
    # Isotonic calibration can output exactly 0 or 1; clip so logit is finite.
    clipped = np.clip(p, 1e-9, 1.0 - 1e-9)
    return np.asarray(np.log(clipped / (1.0 - clipped)), dtype=np.float64)


def _logistic_fit(
    score: FloatArray, y: IntArray, *, fixed_slope: bool
) -> tuple[float, float]:
    """Fit ``logit P(y=1) = a + b * score`` by Newton's method.

    With ``fixed_slope`` b is held at 1 (``score`` is an offset) and only ``a``
    is fitted. A dozen lines of Newton steps avoid a penalised scikit-learn fit
    whose default regularisation would bias the slope.
    """
    design = (
        np.ones((len(score), 1))
        if fixed_slope
        else np.column_stack([np.ones(len(score)), score])
    )
    offset = score if fixed_slope else np.zeros(len(score))
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        eta = np.clip(offset + design @ beta, -30.0, 30.0)
        mu = 1.0 / (1.0 + np.exp(-eta))
        weight = mu * (1.0 - mu)
        gradient = design.T @ (y - mu)
        hessian = design.T @ (design * weight[:, None])
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        beta = beta + step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return float(beta[0]), 1.0 if fixed_slope else float(beta[1])


def _reliability(y: IntArray, p: FloatArray) -> tuple[ReliabilityBin, ...]:
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, min(_RELIABILITY_GROUPS, len(p)))
    return tuple(
        ReliabilityBin(
            lower=float(p[g].min()),
            upper=float(p[g].max()),
            n=len(g),
            mean_predicted=float(p[g].mean()),
            observed=float(y[g].mean()),
        )
        for g in groups
    )


def render_card_markdown(card: ModelCard) -> str:
    """Render a model card as Markdown for people to read.

    Args:
        card: The card (as ``train_model`` returns or ``card.json`` holds).

    Returns:
        The Markdown text, ending in a newline.
    """
    held, cv = card.held_out, card.cross_validation
    lines = [
        f"# {card.title}",
        "",
        f"Model `{card.id}` version {card.version}. Generated from `card.json` "
        "by `engine.training.render_card_markdown`; do not edit by hand.",
        "",
        "## Intended use",
        "",
        card.intended_use,
        "",
    ]
    lines += _bullets("Limitations", card.limitations)
    lines += _bullets("Assumptions", card.assumptions)
    lines += _bullets(
        "Columns not used",
        tuple(f"`{e.column}`: {e.reason}" for e in card.excluded_columns),
    )
    lines += [
        "## Dataset",
        "",
        card.dataset.description,
        "",
        f"- Source: `{card.dataset.source}`",
        f"- Rows used: {card.dataset.n_rows} "
        f"({card.dataset.n_rows_dropped} dropped for a missing value)",
    ]
    if card.dataset.sha256:
        lines.append(f"- File sha256: `{card.dataset.sha256}`")
    lines += [
        "",
        "## Target",
        "",
        f"Positive class ({card.target.positive_label}): column "
        f"`{card.target.column}` {card.target.positive_if}. "
        f"{card.target.description}",
        "",
        "## Features",
        "",
        "| feature | column | computed from facts | unit | training min | "
        "training max |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f.name} | {f.column} | `{f.formula}` | {f.value_unit} "
        f"| {_num(f.train_min)} | {_num(f.train_max)} |"
        for f in card.features
    ]
    params = ", ".join(f"{k}={v!r}" for k, v in card.estimator.params.items())
    lines += [
        "",
        "Facts are read in the unit of the fact catalogue; a value outside the "
        "training range is still scored and flagged.",
        "",
        "## Model",
        "",
        f"StandardScaler then `{card.estimator.name}` ({params or 'defaults'}); "
        f"calibration: {card.calibration}. Split: test size "
        f"{card.split.test_size}, random state {card.split.random_state}, "
        f"{card.split.cv_folds} cross-validation folds.",
        "",
        "## Performance",
        "",
        f"Held-out test split (n = {held.n_test}; training n = {held.n_train}; "
        f"prevalence {held.prevalence_test:.1%} test, "
        f"{held.prevalence_train:.1%} training):",
        "",
        "| metric | value |",
        "|---|---|",
        f"| ROC AUC | {held.roc_auc:.3f} |",
        f"| Brier score | {held.brier_score:.3f} |",
        f"| calibration slope | {held.calibration_slope:.2f} |",
        f"| calibration intercept | {held.calibration_intercept:.2f} |",
        f"| cross-validated ROC AUC (training split, {cv.folds} folds) | "
        f"{cv.roc_auc_mean:.3f} ± {cv.roc_auc_sd:.3f} |",
        "",
        "Reliability on the held-out split, by equal-size groups of predicted risk:",
        "",
        "| predicted risk | n | mean predicted | observed |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {b.lower:.2f}–{b.upper:.2f} | {b.n} | {b.mean_predicted:.2f} "
        f"| {b.observed:.2f} |"
        for b in held.reliability
    ]
    libs = card.libraries
    lines += [
        "",
        "## Provenance",
        "",
        f"- Trained: {card.trained_at.isoformat()}",
        f"- Python {libs.python}, scikit-learn {libs.scikit_learn}, "
        f"numpy {libs.numpy}, skops {libs.skops}",
        f"- Artifact: `{card.artifact.file}`, sha256 `{card.artifact.sha256}`",
        "- Types trusted when loading: "
        + (", ".join(f"`{t}`" for t in card.artifact.trusted_types) or "none"),
        "",
    ]
    return "\n".join(lines)


def _bullets(title: str, items: tuple[str, ...]) -> list[str]:
    if not items:
        return []
    return [f"## {title}", "", *(f"- {item}" for item in items), ""]


def _num(value: float) -> str:
    return f"{value:.4g}"
