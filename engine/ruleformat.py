"""The rule file format, as pydantic models.

A rule file is one *ruleset*: a header (id, title, version, source), optional
*calculations* (derived facts such as eGFR) and a list of *rules*. Each rule has
a ``when`` (a tree of conditions) and a ``then`` (what it concludes). The JSON
Schema an editor uses comes from these models.

Condition keys, read as a clinician would say them::

    fact: systolic_bp          a measured fact
      at_least: 140 mmHg       >=      (also: above >, below <, at_most <=)
      value: mean              latest (default), mean, min or max of readings
      within: 12 months        only readings this recent count
      min_readings: 2          a mean needs this many readings on separate days
      readings: 2              this many readings on separate days must pass
      lasting_more_than: 3 months   the latest reading and the unbroken run of
                               passing readings before it span this long
      if_missing: false        decide the comparison when there is no reading
                               (default: "cannot be determined")
    finding: diabetes          a finding asserted by another rule (chaining)
    score: diabetes_progression  a model score, with at_least/above/... numbers
    points: curb65             a point score of the knowledge base, at_least: 3
    condition: hypertension    on the problem list (``for_more_than: 3 months``)
    taking: metformin          an active medication
    allergic_to: metformin     a recorded allergy
    all: [...], any: [...], not: {...}, at_least: 2 + of: [...]
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)

__all__ = [
    "Action",
    "AgainstAction",
    "AgainstSpec",
    "AllOf",
    "AnyOf",
    "AtLeastOf",
    "BlockAction",
    "Calculation",
    "Condition",
    "ConditionTest",
    "DiagnosisAction",
    "FactComparison",
    "FindingAction",
    "FindingTest",
    "Header",
    "MedicationTest",
    "AllergyTest",
    "Not",
    "RecommendationAction",
    "Rule",
    "RuleFile",
    "Band",
    "PointItem",
    "PointScore",
    "PointsTest",
    "ScoreTest",
    "CONDITION_KEYS",
    "ACTION_KEYS",
]

_ID = r"^[a-z][a-z0-9_]*$"
Threshold = Annotated[
    str | float | list[str | float],
    Field(
        description="A value with its unit, e.g. `140 mmHg`, or a list of "
        "the same cut point in several units (`[6.5 %, 48 mmol/mol]`); the "
        "value is compared with the cut point of the unit it arrived in."
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FactComparison(_Strict):
    """Compare a measured fact with thresholds."""

    fact: str = Field(description="A quantity fact of the catalogue.")
    above: Threshold | None = None
    at_least: Threshold | None = None
    below: Threshold | None = None
    at_most: Threshold | None = None
    value: Literal["latest", "mean", "min", "max"] = "latest"
    within: str | None = Field(
        None, description="Only readings this recent count, e.g. `12 months`."
    )
    equals: str | None = Field(None, description="A text fact has this value.")
    one_of: list[str] | None = Field(None, description="A text fact is one of these.")
    min_readings: int = Field(1, ge=1, le=20)
    readings: int = Field(1, ge=1, le=20)
    lasting_more_than: str | None = Field(
        None,
        description="The latest reading passes and so has every reading back "
        "to one more than this long before it, e.g. `3 months`; a shorter run "
        "cannot be determined yet.",
    )
    if_missing: bool | None = Field(
        None,
        description="What the comparison is when the fact has no reading (or "
        "fewer than `min_readings`): by default it cannot be determined; "
        "`false` or `true` decide it (e.g. a test that was not done counts as "
        "not abnormal).",
    )


class FindingTest(_Strict):
    """A finding asserted by another rule."""

    finding: str


class PointsTest(_Strict):
    """Compare a point score of the knowledge base (CURB-65, NEWS2...).

    With known inputs that already force the answer, it is decided even when
    some inputs are missing (spec 0.4); otherwise it cannot be determined.
    """

    points: str = Field(description="The id of a point score.")
    above: float | None = None
    at_least: float | None = None
    below: float | None = None
    at_most: float | None = None
    any_item_at_least: float | None = Field(
        None, description="Some single item scores at least this (NEWS2's 3)."
    )
    determined: bool | None = Field(
        None,
        description="`false`: true when the total cannot be determined "
        "(to fall back on another score, e.g. CRB-65 without urea).",
    )


class ScoreTest(_Strict):
    """Compare a model score (a probability between 0 and 1)."""

    score: str
    above: float | None = None
    at_least: float | None = None
    below: float | None = None
    at_most: float | None = None


class ConditionTest(_Strict):
    """A condition on the patient's problem list."""

    condition: str
    for_more_than: str | None = Field(
        None, description="Recorded onset at least this long ago, e.g. `3 months`."
    )


class MedicationTest(_Strict):
    """An active medication."""

    taking: str


class AllergyTest(_Strict):
    """A recorded allergy or intolerance."""

    allergic_to: str


class AllOf(_Strict):
    """Every condition holds."""

    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    """At least one condition holds."""

    any: list[Condition] = Field(min_length=1)


class Not(_Strict):
    """The condition does not hold."""

    not_: Condition = Field(alias="not")


class AtLeastOf(_Strict):
    """At least ``at_least`` of the conditions hold."""

    at_least: int = Field(ge=1)
    of: list[Condition] = Field(min_length=1)


CONDITION_KEYS = {
    "of": "at_least_of",
    "all": "all",
    "any": "any",
    "not": "not",
    "fact": "fact",
    "finding": "finding",
    "score": "score",
    "points": "points",
    "condition": "condition",
    "taking": "taking",
    "allergic_to": "allergic_to",
}


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        for key, tag in CONDITION_KEYS.items():
            if key in value:
                return tag
        return None
    for attr, tag in (
        ("of", "at_least_of"),
        ("all", "all"),
        ("any", "any"),
        ("not_", "not"),
        ("fact", "fact"),
        ("finding", "finding"),
        ("score", "score"),
        ("points", "points"),
        ("condition", "condition"),
        ("taking", "taking"),
        ("allergic_to", "allergic_to"),
    ):
        if hasattr(value, attr):
            return tag
    return None


Condition = Annotated[
    Annotated[AtLeastOf, Tag("at_least_of")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[FactComparison, Tag("fact")]
    | Annotated[FindingTest, Tag("finding")]
    | Annotated[ScoreTest, Tag("score")]
    | Annotated[PointsTest, Tag("points")]
    | Annotated[ConditionTest, Tag("condition")]
    | Annotated[MedicationTest, Tag("taking")]
    | Annotated[AllergyTest, Tag("allergic_to")],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message=(
            "a condition needs one of the keys: fact, finding, score, points, "
            "condition, taking, allergic_to, all, any, not, at_least with of"
        ),
    ),
]


class DiagnosisSpec(_Strict):
    """A diagnosis with its SNOMED CT code."""

    id: str = Field(pattern=_ID)
    display: str
    snomed: str = Field(pattern=r"^[0-9]{6,18}$")
    certainty: float = Field(ge=0.0, le=1.0)


class RecommendationSpec(_Strict):
    """A recommendation to the clinician."""

    id: str = Field(pattern=_ID)
    text: str
    strength: Literal["strong", "moderate", "weak", "conditional"]
    certainty: float = Field(1.0, ge=0.0, le=1.0)
    adjusted_by: str | None = Field(
        None,
        description="A model score that updates the certainty (log-odds; docs).",
    )
    drug: str | None = Field(
        None,
        description="The medication concept it recommends; never recommended to "
        "a patient with a recorded allergy to it.",
    )


class BlockSpec(_Strict):
    """Block a recommendation: a contraindication or forbidden combination."""

    recommendation: str = Field(pattern=_ID)
    reason: str


class FindingAction(_Strict):
    """Assert a finding other rules can test."""

    finding: str = Field(pattern=_ID)
    display: str | None = None


class DiagnosisAction(_Strict):
    """Conclude a diagnosis."""

    diagnosis: DiagnosisSpec


class RecommendationAction(_Strict):
    """Make a recommendation."""

    recommendation: RecommendationSpec


class BlockAction(_Strict):
    """Block a recommendation as contraindicated."""

    block: BlockSpec


class AgainstSpec(_Strict):
    """Evidence against a diagnosis or recommendation another rule concludes."""

    conclusion: str = Field(pattern=_ID)
    certainty: float = Field(gt=0.0, le=1.0)
    reason: str


class AgainstAction(_Strict):
    """Lower the certainty of a conclusion (contradicting evidence)."""

    against: AgainstSpec


ACTION_KEYS = ("finding", "diagnosis", "recommendation", "block", "against")


def _action_tag(value: Any) -> str | None:
    keys = value.keys() if isinstance(value, dict) else vars(value).keys()
    for key in ACTION_KEYS:
        if key in keys:
            return key
    return None


Action = Annotated[
    Annotated[FindingAction, Tag("finding")]
    | Annotated[DiagnosisAction, Tag("diagnosis")]
    | Annotated[RecommendationAction, Tag("recommendation")]
    | Annotated[BlockAction, Tag("block")]
    | Annotated[AgainstAction, Tag("against")],
    Discriminator(
        _action_tag,
        custom_error_type="action",
        custom_error_message=(
            "a then item needs one of the keys: finding, diagnosis, "
            "recommendation, block, against"
        ),
    ),
]


class Rule(_Strict):
    """One rule: when the conditions hold, then conclude."""

    id: str = Field(pattern=_ID, description="Unique across the knowledge base.")
    title: str
    source: str | None = Field(None, description="Citation; defaults to the ruleset's.")
    when: Condition
    then: list[Action] = Field(min_length=1)
    note: str | None = None
    evidence_grade: str | None = None
    author: str | None = None
    reviewer: str | None = None
    reviewed: date | None = Field(None, description="Last review, YYYY-MM-DD.")
    review_due: date | None = Field(
        None,
        description="Next review due, YYYY-MM-DD; a deployment may refuse "
        "rules past it.",
    )
    status: Literal["draft", "approved", "retired"] | None = Field(
        None,
        description="draft, approved (with reviewer and reviewed) or retired; "
        "unset runs as usual but is not approved.",
    )


class Calculation(_Strict):
    """A derived fact computed by a named formula with stated coefficients."""

    id: str = Field(pattern=_ID)
    fact: str = Field(description="The catalogue fact the result feeds.")
    formula: Literal[
        "ckd_epi_2021_creatinine", "bmi_from_weight_height", "pooled_cohort_2013"
    ]
    parameters: dict[str, Any] = Field(default_factory=dict)
    source: str

    def findings(self) -> dict[str, str]:
        """Parameters naming a finding the calculation reads (``*_finding``).

        A calculation runs before the rules; one that reads a finding is run
        again once the rules have decided it (see engine.evaluation).
        """
        return {k: str(v) for k, v in self.parameters.items() if k.endswith("_finding")}


class Band(_Strict):
    """One band of a banded item: the points for values in it."""

    above: Threshold | None = None
    at_least: Threshold | None = None
    below: Threshold | None = None
    at_most: Threshold | None = None
    equals: str | None = None
    one_of: list[str] | None = None
    points: float

    def comparison(self, fact: str) -> FactComparison:
        """The band as a comparison of the fact (for checks and analysis)."""
        return FactComparison(
            fact=fact,
            above=self.above,
            at_least=self.at_least,
            below=self.below,
            at_most=self.at_most,
            equals=self.equals,
            one_of=self.one_of,
        )


class PointItem(_Strict):
    """One item of a point score: points when a condition holds, or by bands."""

    id: str = Field(pattern=_ID)
    title: str | None = None
    points: float | None = Field(None, description="Points when `when` holds.")
    when: Condition | None = Field(None, description="Facts, or findings of the rules.")
    fact: str | None = Field(None, description="The fact a banded item reads.")
    value: Literal["latest", "mean", "min", "max"] = "latest"
    within: str | None = None
    bands: list[Band] | None = Field(None, description="Points by the fact's value.")
    applies_when: Condition | None = Field(
        None, description="The item counts only when this holds (NEWS2 SpO2 scale 2)."
    )


class PointScore(_Strict):
    """A clinical point score: a finding whose value is a sum of items."""

    id: str = Field(pattern=_ID)
    title: str
    source: str | None = None
    items: list[PointItem] = Field(min_length=1)
    reported_when: Condition | None = Field(
        None,
        description="Show the score in an assessment only when this holds or "
        "cannot be determined (CURB-65 only for pneumonia); default: always.",
    )
    note: str | None = None


class Header(_Strict):
    """The ruleset header."""

    id: str = Field(pattern=_ID)
    title: str
    version: str
    source: str
    description: str | None = None


class RuleFile(_Strict):
    """A whole rule file."""

    ruleset: Header
    calculations: list[Calculation] = Field(default_factory=list)
    point_scores: list[PointScore] = Field(default_factory=list)
    rules: list[Rule] = Field(min_length=1)


PointItem.model_rebuild()
PointScore.model_rebuild()
AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()
AtLeastOf.model_rebuild()
