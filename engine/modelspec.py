"""Model specs and model cards: what to train, and what was trained.

A *spec* (``spec.yaml`` in a model folder) says which data to train on, how the
target is made binary, which facts feed which dataset column, and which
estimator to fit. A *card* (``card.json``, written by the trainer) records what
came out: the features with their training ranges, the held-out and
cross-validated metrics, the library versions and the artifact's sha256.
Scoring reads only the card and the artifact, never the spec.

Both are frozen pydantic models that refuse unknown keys, so a misspelt key in
a spec fails loudly instead of being ignored.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .catalogue import default_catalogue
from .errors import ModelError, display_path

__all__ = [
    "ESTIMATOR_NAMES",
    "SKLEARN_LOADERS",
    "Artifact",
    "CardDataset",
    "CardFeature",
    "CrossValidation",
    "CsvDataset",
    "EstimatorSpec",
    "ExcludedColumn",
    "FeatureSpec",
    "HeldOutMetrics",
    "Libraries",
    "LnDerive",
    "MeanArterialPressureDerive",
    "ModelCard",
    "ModelSpec",
    "RatioDerive",
    "ReliabilityBin",
    "SklearnDataset",
    "SplitSpec",
    "TargetSpec",
    "describe_validation_error",
    "load_spec",
]

#: Estimators a spec may name; training maps each to a scikit-learn class.
ESTIMATOR_NAMES = ("logistic_regression", "gradient_boosting", "random_forest")

#: scikit-learn loaders whose data ships inside the package (no download).
SKLEARN_LOADERS = ("load_diabetes", "load_breast_cancer", "load_wine", "load_iris")

_IDENT = r"^[a-z][a-z0-9_]*$"
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?\d+(?:\.\d+)?)\s*$")

Scalar = bool | int | float | str | None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- spec ---------------------------------------------------------------------


class SklearnDataset(_Frozen):
    """A dataset bundled with scikit-learn, e.g. ``sklearn: load_diabetes``.

    The loader's features keep their ``feature_names``; the target column is
    named ``target``.
    """

    sklearn: Literal["load_diabetes", "load_breast_cancer", "load_wine", "load_iris"]
    kwargs: dict[str, Scalar] = Field(default_factory=dict)
    description: str = Field(min_length=1)

    @field_validator("kwargs")
    @classmethod
    def _no_shape_kwargs(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        # The trainer decides the return shape; letting a spec change it would
        # break column look-up in ways that are hard to explain.
        taken = sorted({"return_X_y", "as_frame"} & value.keys())
        if taken:
            raise ValueError(f"set by the trainer, remove: {', '.join(taken)}")
        return value

    def source(self) -> str:
        """Return the call that loads the data, for cards and logs."""
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        return f"sklearn.datasets.{self.sklearn}({args})"


class CsvDataset(_Frozen):
    """A CSV file with a header row; ``csv`` is relative to the spec's folder."""

    csv: str = Field(min_length=1)
    description: str = Field(min_length=1)

    def source(self) -> str:
        """Return the file as written in the spec, for cards and logs."""
        return f"csv: {self.csv}"


class TargetSpec(_Frozen):
    """How the binary outcome is made from a dataset column.

    Attributes:
        column: The column holding the outcome (``target`` for scikit-learn data).
        positive_if: A comparison with a number, e.g. ``"> 140"`` to binarise a
            regression target or ``"== 1"`` for a class column.
        positive_label: What the positive class means, e.g. ``high progression``.
        description: The definition in words, as it goes on the card.
    """

    column: str = Field(min_length=1)
    positive_if: str
    positive_label: str = Field(min_length=1)
    description: str = Field(min_length=1)

    @field_validator("positive_if")
    @classmethod
    def _parse_condition(cls, value: str) -> str:
        if not _CONDITION.match(value):
            raise ValueError(
                f"got {value!r}; write an operator (> >= < <= == !=) and a "
                'number, e.g. "> 140"'
            )
        return value.strip()

    def is_positive(self, value: float) -> bool:
        """Return whether one target value belongs to the positive class."""
        found = _CONDITION.match(self.positive_if)
        assert found is not None  # checked by the validator
        return bool(_OPERATORS[found.group(1)](value, float(found.group(2))))


class RatioDerive(_Frozen):
    """The feature is ``fact / denominator`` (both in the feature's unit)."""

    kind: Literal["ratio"]
    denominator: str = Field(pattern=_IDENT)


class LnDerive(_Frozen):
    """The feature is the natural log of the fact's value in the feature's unit."""

    kind: Literal["ln"]


class MeanArterialPressureDerive(_Frozen):
    """The feature is ``(fact + 2 * diastolic) / 3``; ``fact`` is the systolic."""

    kind: Literal["mean_arterial_pressure"]
    diastolic: str = Field(default="diastolic_bp", pattern=_IDENT)


Derive = Annotated[
    RatioDerive | LnDerive | MeanArterialPressureDerive, Field(discriminator="kind")
]


class FeatureSpec(_Frozen):
    """One model input: the dataset column it trains on, the facts it reads.

    Attributes:
        name: The feature's name in scores and cards.
        column: The dataset column it is trained on.
        fact: The catalogue fact read at scoring (the numerator of a ratio,
            the systolic of a mean arterial pressure).
        unit: The unit every fact of this feature is given in; it must be the
            fact's canonical catalogue unit.
        derive: How the feature is computed from its facts; absent means the
            fact's latest value as is.
        missing_values: Column values that mean "not recorded" in the dataset
            (rows holding them are left out of training, never imputed).
    """

    name: str = Field(pattern=_IDENT)
    column: str = Field(min_length=1)
    fact: str = Field(pattern=_IDENT)
    unit: str = Field(min_length=1)
    derive: Derive | None = None
    missing_values: tuple[float, ...] = ()

    def facts(self) -> tuple[str, ...]:
        """Return every fact the feature reads, primary first."""
        if isinstance(self.derive, RatioDerive):
            return (self.fact, self.derive.denominator)
        if isinstance(self.derive, MeanArterialPressureDerive):
            return (self.fact, self.derive.diastolic)
        return (self.fact,)

    def derived_unit(self) -> str:
        """Return the unit of the derived value (a ratio has none)."""
        if isinstance(self.derive, RatioDerive):
            return "1"
        if isinstance(self.derive, LnDerive):
            return f"ln({self.unit})"
        return self.unit

    def describe(self) -> str:
        """Return how the value is computed from facts, for cards."""
        if isinstance(self.derive, RatioDerive):
            return f"{self.fact} / {self.derive.denominator}"
        if isinstance(self.derive, LnDerive):
            return f"ln({self.fact})"
        if isinstance(self.derive, MeanArterialPressureDerive):
            return f"({self.fact} + 2 * {self.derive.diastolic}) / 3"
        return self.fact


class ExcludedColumn(_Frozen):
    """A dataset column deliberately not used, and why."""

    column: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class EstimatorSpec(_Frozen):
    """The classifier: a name from :data:`ESTIMATOR_NAMES` and its parameters."""

    name: Literal["logistic_regression", "gradient_boosting", "random_forest"]
    params: dict[str, Scalar] = Field(default_factory=dict)


class SplitSpec(_Frozen):
    """How the data is split and cross-validated."""

    test_size: float = Field(gt=0.0, lt=1.0)
    random_state: int = Field(ge=0)
    cv_folds: int = Field(ge=2, le=20)


class ModelSpec(_Frozen):
    """A model spec as written in ``spec.yaml``."""

    id: str = Field(pattern=_IDENT)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    title: str = Field(min_length=1)
    intended_use: str = Field(min_length=1)
    limitations: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    excluded_columns: tuple[ExcludedColumn, ...] = ()
    dataset: SklearnDataset | CsvDataset
    target: TargetSpec
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    estimator: EstimatorSpec
    calibration: Literal["sigmoid", "isotonic", "none"] = "none"
    test_size: float = Field(default=0.25, gt=0.0, lt=1.0)
    random_state: int = Field(default=0, ge=0)
    cv_folds: int = Field(default=5, ge=2, le=20)

    @field_validator("calibration", mode="before")
    @classmethod
    def _null_is_none(cls, value: object) -> object:
        # YAML `calibration: null` and `calibration: none` mean the same.
        return "none" if value is None else value

    @model_validator(mode="after")
    def _columns_distinct(self) -> ModelSpec:
        names = [f.name for f in self.features]
        columns = [f.column for f in self.features]
        for label, values in (("name", names), ("column", columns)):
            doubled = sorted({v for v in values if values.count(v) > 1})
            if doubled:
                raise ValueError(f"features: {label} used twice: {', '.join(doubled)}")
        if self.target.column in columns:
            raise ValueError(f"target column {self.target.column!r} is also a feature")
        excluded = {e.column for e in self.excluded_columns} & set(columns)
        if excluded:
            raise ValueError(f"excluded column used as a feature: {sorted(excluded)}")
        return self

    def split(self) -> SplitSpec:
        """Return the split settings as their own value."""
        return SplitSpec(
            test_size=self.test_size,
            random_state=self.random_state,
            cv_folds=self.cv_folds,
        )


def describe_validation_error(err: ValidationError) -> str:
    """Return ``field: message`` for each problem, joined by ``; ``."""
    parts = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def load_spec(path: Path) -> ModelSpec:
    """Read and check a model spec.

    Besides the schema, every fact must be a quantity in the fact catalogue and
    each feature's unit must be that fact's canonical unit, since the engine
    hands models facts in canonical units.

    Args:
        path: The ``spec.yaml`` file.

    Returns:
        The validated spec.

    Raises:
        ModelError: The file cannot be read, is not YAML, or a field is invalid
            (the message names the file and the field).
    """
    shown = display_path(path)
    try:
        data = YAML(typ="safe").load(path.read_text("utf-8"))
    except OSError as err:
        raise ModelError(f"{shown}: cannot read the model spec: {err}") from err
    except YAMLError as err:
        raise ModelError(f"{shown}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ModelError(f"{shown}: a model spec must be a mapping of fields")
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as err:
        detail = describe_validation_error(err)
        raise ModelError(f"{shown}: invalid model spec: {detail}") from err
    _check_facts(spec, shown)
    return spec


def _check_facts(spec: ModelSpec, shown: str) -> None:
    catalogue = default_catalogue()
    for index, feature in enumerate(spec.features):
        for fact in feature.facts():
            known = catalogue.quantities.get(fact)
            if known is None:
                near = catalogue.nearest(fact, kinds=("quantity",))
                hint = f"; did you mean {near!r}?" if near else ""
                raise ModelError(
                    f"{shown}: features[{index}] ({feature.name}): unknown "
                    f"quantity fact {fact!r}{hint}"
                )
            if known.unit != feature.unit:
                raise ModelError(
                    f"{shown}: features[{index}] ({feature.name}): unit "
                    f"{feature.unit!r} but fact {fact!r} is given in "
                    f"{known.unit!r}; write unit: {known.unit!r}"
                )


# --- card ---------------------------------------------------------------------


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


class CardFeature(FeatureSpec):
    """A feature as trained: the spec's fields plus what the training data held.

    ``formula`` and ``value_unit`` repeat :meth:`describe` and
    :meth:`derived_unit` so the card reads on its own. ``train_min``,
    ``train_max`` and ``train_mean`` are of the derived value over the training
    split.
    """

    formula: str
    value_unit: str
    train_min: float
    train_max: float
    train_mean: float

    @field_validator("train_min", "train_max", "train_mean")
    @classmethod
    def _finite_stats(cls, value: float) -> float:
        return _finite(value)

    @model_validator(mode="after")
    def _consistent(self) -> CardFeature:
        # A hand-edited card must not describe a feature other than the one
        # scoring will compute.
        if self.formula != self.describe() or self.value_unit != self.derived_unit():
            raise ValueError(
                f"formula/value_unit {self.formula!r}/{self.value_unit!r} do not "
                f"match derive: expected {self.describe()!r}/{self.derived_unit()!r}"
            )
        if not self.train_min <= self.train_mean <= self.train_max:
            raise ValueError("train_min <= train_mean <= train_max does not hold")
        return self


class CardDataset(_Frozen):
    """Where the training data came from and how much of it was used."""

    source: str
    description: str
    sha256: str | None = None
    n_rows: int = Field(ge=0)
    n_rows_dropped: int = Field(ge=0)


class ReliabilityBin(_Frozen):
    """One group of held-out patients by predicted risk (equal-count groups)."""

    lower: float
    upper: float
    n: int = Field(ge=1)
    mean_predicted: float
    observed: float


class HeldOutMetrics(_Frozen):
    """Metrics on the held-out test split only.

    ``calibration_slope`` is the coefficient of logit(p) in a logistic model of
    the outcome; ``calibration_intercept`` is calibration-in-the-large (the
    intercept with the slope fixed at 1). Perfect calibration is slope 1,
    intercept 0.
    """

    roc_auc: float = Field(ge=0.0, le=1.0)
    brier_score: float = Field(ge=0.0, le=1.0)
    calibration_slope: float
    calibration_intercept: float
    reliability: tuple[ReliabilityBin, ...]
    n_train: int = Field(ge=1)
    n_test: int = Field(ge=1)
    prevalence_train: float = Field(ge=0.0, le=1.0)
    prevalence_test: float = Field(ge=0.0, le=1.0)


class CrossValidation(_Frozen):
    """Cross-validated ROC AUC on the training split (sd with ddof=1)."""

    folds: int = Field(ge=2)
    roc_auc_mean: float = Field(ge=0.0, le=1.0)
    roc_auc_sd: float = Field(ge=0.0)
    roc_auc_folds: tuple[float, ...]

    @model_validator(mode="after")
    def _one_score_per_fold(self) -> CrossValidation:
        if len(self.roc_auc_folds) != self.folds:
            raise ValueError(
                f"roc_auc_folds has {len(self.roc_auc_folds)} scores for "
                f"{self.folds} folds"
            )
        return self


class Libraries(_Frozen):
    """Versions the artifact was trained with."""

    python: str
    scikit_learn: str = Field(pattern=r"^\d+\.\d+")
    numpy: str
    skops: str


class Artifact(_Frozen):
    """The saved model file beside the card."""

    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    trusted_types: tuple[str, ...]


class ModelCard(_Frozen):
    """What was trained, how well it did, and how to load it (``card.json``)."""

    card_format: Literal[1] = 1
    id: str = Field(pattern=_IDENT)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    title: str
    intended_use: str
    limitations: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    excluded_columns: tuple[ExcludedColumn, ...] = ()
    dataset: CardDataset
    target: TargetSpec
    features: tuple[CardFeature, ...] = Field(min_length=1)
    estimator: EstimatorSpec
    calibration: Literal["sigmoid", "isotonic", "none"]
    split: SplitSpec
    held_out: HeldOutMetrics
    cross_validation: CrossValidation
    trained_at: datetime
    libraries: Libraries
    artifact: Artifact
