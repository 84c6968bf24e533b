"""Errors raised by the engine.

Every error the engine raises on purpose derives from :class:`CdssError`, so an
embedding application can catch one root. The tree::

    CdssError
    ├── KnowledgeBaseError        a rule file or model folder is unusable
    │   ├── RuleFileError         one or more located problems in rule files
    │   └── ModelError            a model artifact or card is unusable
    │       └── ModelIntegrityError   artifact hash or library version mismatch
    ├── InputError                a patient input (FHIR bundle, case file) is unusable
    ├── UnitError                 a unit is unknown or cannot convert to the one needed
    └── EvaluationError           the engine failed while evaluating a case

Warnings:

    CdssWarning
    └── ModelVersionWarning       a model was trained with another library version

Each error keeps its parts as attributes (``path``, ``problems``, ``where``) so
that callers and tests need not parse the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CdssError",
    "CdssWarning",
    "EvaluationError",
    "InputError",
    "KnowledgeBaseError",
    "ModelError",
    "ModelIntegrityError",
    "ModelVersionWarning",
    "Problem",
    "RuleFileError",
    "UnitError",
]


class CdssError(Exception):
    """Root of every error raised by the engine."""


class CdssWarning(UserWarning):
    """Root of every warning issued by the engine."""


class ModelVersionWarning(CdssWarning):
    """A model artifact was trained with a different scikit-learn version."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a rule file.

    Attributes:
        path: The file.
        line: 1-based line, or 0 when the problem concerns the whole file.
        column: 1-based column, or 0 when unknown.
        rule_id: The rule (or point score) the problem is in, if any.
        subject: What ``rule_id`` names: ``rule`` or ``point score``.
        message: What was found and what is allowed.
        hint: What to write instead (may be empty).
        severity: ``error`` (refuses the knowledge base) or ``warning``.
        code: A short stable identifier of the check, e.g. ``unknown-fact``.
    """

    path: str
    line: int
    column: int
    message: str
    rule_id: str | None = None
    hint: str = ""
    severity: str = "error"
    code: str = "invalid"
    subject: str = "rule"

    def location(self) -> str:
        """Return ``path:line:column`` as editors expect it (the path alone
        for a problem of the whole file or folder, such as a missing one)."""
        if self.line <= 0:
            return str(self.path)
        return f"{self.path}:{self.line}:{self.column}"

    def __str__(self) -> str:
        rule = f" [{self.subject} {self.rule_id}]" if self.rule_id else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.location()}: {self.severity}{rule}: {self.message}{hint}"


class KnowledgeBaseError(CdssError):
    """A knowledge base (rules and models) cannot be loaded."""


@dataclass
class RuleFileError(KnowledgeBaseError):
    """Rule files hold problems; the knowledge base is refused whole."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        errors = [p for p in self.problems if p.severity == "error"]
        lines = [f"{len(errors)} problem(s) in rule files:"]
        lines.extend(str(p) for p in self.problems)
        return "\n".join(lines)


class ModelError(KnowledgeBaseError):
    """A model artifact, spec or card cannot be used."""


class ModelIntegrityError(ModelError):
    """A model artifact does not match its card (hash or library version)."""


@dataclass
class InputError(CdssError):
    """A patient input cannot be read.

    Attributes:
        source: The file or a label of the input.
        where: The place inside it (line, field path or resource id).
        reason: What is wrong.
        hint: What to do about it.
    """

    source: str
    where: str
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        where = f" at {self.where}" if self.where else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.source}{where}: {self.reason}{hint}"


class UnitError(CdssError):
    """A unit is not known, or cannot be converted for the fact at hand."""


class EvaluationError(CdssError):
    """The engine failed while evaluating a case."""


def display_path(path: str | Path) -> str:
    """Return a path as it should appear in a message (as given, never resolved)."""
    return str(path)
