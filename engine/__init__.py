"""cdss: a clinical decision-support engine. Decision support only, not a
medical device.

Load a knowledge base once, then evaluate many cases::

    from engine import KnowledgeBase

    kb = KnowledgeBase.load()                       # bundled rules/ and models/
    result = kb.evaluate("bundle.json", as_of=...)  # FHIR R4 Bundle or case file
    codes = [(dx.code, dx.certainty) for dx in result.diagnoses]
"""

from __future__ import annotations

from .assessment import (
    NOTICE,
    Assessment,
    Diagnosis,
    Evidence,
    FactUsed,
    Finding,
    Recommendation,
    Score,
    Undetermined,
)
from .errors import (
    CdssError,
    EvaluationError,
    InputError,
    KnowledgeBaseError,
    ModelError,
    ModelIntegrityError,
    Problem,
    RuleFileError,
    UnitError,
)
from .facts import Case, CodedEntry, Reading
from .inputs import read_input
from .knowledge import KnowledgeBase
from .serving import ReloadableKnowledgeBase

__all__ = [
    "NOTICE",
    "Assessment",
    "Case",
    "CdssError",
    "CodedEntry",
    "Diagnosis",
    "EvaluationError",
    "Evidence",
    "FactUsed",
    "Finding",
    "InputError",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "ModelError",
    "ModelIntegrityError",
    "Problem",
    "Reading",
    "Recommendation",
    "ReloadableKnowledgeBase",
    "RuleFileError",
    "Score",
    "UnitError",
    "Undetermined",
    "read_input",
]
