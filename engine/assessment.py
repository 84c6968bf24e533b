"""The result of evaluating one case: an :class:`Assessment`.

These pydantic models are the JSON output of ``cdss evaluate --format json``
and the return type of the library API; ``Assessment.model_json_schema()`` is
the documented schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NOTICE",
    "Assessment",
    "Diagnosis",
    "Evidence",
    "FactUsed",
    "Finding",
    "KnowledgeBaseInfo",
    "PatientSummary",
    "Recommendation",
    "RuleRef",
    "Score",
    "Block",
    "Component",
    "Undetermined",
]

NOTICE = (
    "Decision support only, not a medical device: every conclusion must be "
    "checked by a qualified clinician against the full record."
)

SNOMED = "http://snomed.info/sct"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FactUsed(_Out):
    """A fact a rule used, as it was used."""

    name: str
    value: float | str | bool | None
    unit: str | None = None
    time: datetime | None = None
    aggregate: str = Field("latest", description="latest, mean, min, max, count")
    readings: int = Field(1, description="How many readings the value stands for.")
    source: str = ""
    age_days: int | None = Field(
        None, description="How old the (latest) reading is at the evaluation time."
    )


class RuleRef(_Out):
    """A rule that supported a conclusion."""

    rule_id: str
    ruleset: str
    ruleset_version: str
    title: str
    source: str
    file: str
    line: int


class Evidence(_Out):
    """Why a conclusion was reached."""

    rules: list[RuleRef]
    facts: list[FactUsed] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    scores: list[str] = Field(default_factory=list)


class Component(_Out):
    """One item of a point score: its points and the facts behind them."""

    id: str
    title: str
    points: float | None = Field(description="None: cannot be determined.")
    facts: list[FactUsed] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)


class Finding(_Out):
    """A derived fact: asserted by a rule, or a point score with its items."""

    id: str
    display: str | None = None
    evidence: Evidence
    value: float | None = Field(
        None, description="A point score's total; None when it cannot be determined."
    )
    range: tuple[float, float] | None = Field(
        None, description="A point score's lowest and highest possible total."
    )
    components: list[Component] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)


class Diagnosis(_Out):
    """A diagnosis with its SNOMED CT code and certainty."""

    id: str
    display: str
    system: str = SNOMED
    code: str
    certainty: float = Field(ge=0.0, le=1.0)
    evidence: Evidence


class Block(_Out):
    """Why a recommendation is blocked."""

    rule_id: str
    reason: str


class Recommendation(_Out):
    """An action for the clinician, or one blocked as contraindicated."""

    id: str
    text: str
    strength: str
    certainty: float = Field(ge=0.0, le=1.0)
    status: Literal["recommended", "blocked"]
    blocked_by: list[Block] = Field(default_factory=list)
    evidence: Evidence
    certainty_method: str = ""
    disagreement: bool = Field(
        False, description="The rules and the model score disagree strongly."
    )


class Score(_Out):
    """A model score: the probability the model gives, and how it got it."""

    name: str
    model_id: str
    model_version: str
    value: float | None
    missing: list[str] = Field(default_factory=list)
    out_of_range: list[str] = Field(default_factory=list)
    inputs: dict[str, float] = Field(default_factory=dict)
    input_times: dict[str, datetime] = Field(
        default_factory=dict,
        description="When each input was recorded: its latest reading (the "
        "oldest of them for an input worked out from two facts).",
    )
    contributions: list[tuple[str, float]] = Field(default_factory=list)


class Undetermined(_Out):
    """A rule that could not be decided: "cannot be determined"."""

    rule_id: str
    ruleset: str
    title: str
    missing: list[str]
    reason: str


class PatientSummary(_Out):
    """What the assessment knows of the patient (no identifying details)."""

    age: int | None
    sex: str | None
    readings: int = Field(description="Number of readings of known facts.")
    conditions: list[str] = Field(default_factory=list)
    medications: list[str] = Field(default_factory=list)


class KnowledgeBaseInfo(_Out):
    """Which knowledge base produced the assessment."""

    content_hash: str
    rulesets: dict[str, str] = Field(description="Ruleset id to version.")
    models: dict[str, str] = Field(default_factory=dict)


class Assessment(_Out):
    """The engine's conclusion for one case."""

    notice: str = NOTICE
    case_id: str
    source: str
    as_of: datetime
    status: Literal["complete", "partial", "not_evaluable"]
    problems: list[str] = Field(
        default_factory=list, description="What failed, when status is not complete."
    )
    patient: PatientSummary
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    recommendations: list[Recommendation] = Field(default_factory=list)
    scores: list[Score] = Field(default_factory=list)
    undetermined: list[Undetermined] = Field(default_factory=list)
    rules_fired: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    knowledge_base: KnowledgeBaseInfo


class BatchError(_Out):
    """A line of `cdss batch` output for an input that gave no assessment."""

    status: Literal["error"] = "error"
    file: str = Field(description="The input file.")
    line: int | None = Field(description="The line, for NDJSON and bulk exports.")
    case_id: str | None = Field(
        description="The patient's id, once the record was read."
    )
    error: Literal["input", "unit", "evaluation", "internal", "worker"] = Field(
        description="input: the record cannot be read; unit: a unit does not "
        "convert; evaluation: the engine refused it; internal: a bug; worker: "
        "the process evaluating it ended."
    )
    reason: str
    notice: str = NOTICE
