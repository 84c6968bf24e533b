"""Serving a knowledge base that can be replaced while evaluations run.

An embedding application keeps one :class:`ReloadableKnowledgeBase`. A reload
builds the new knowledge base completely (all or nothing) before it becomes
current; an evaluation already under way keeps the one it started with, so it
finishes on the old version. A reload that fails leaves the old one serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .assessment import Assessment
from .knowledge import AsOf, CaseInput, KnowledgeBase

__all__ = ["ReloadableKnowledgeBase"]

log = logging.getLogger(__name__)


class ReloadableKnowledgeBase:
    """A knowledge base that can be swapped for a newer version atomically.

    Args:
        rules: Rule folder or files (default: the bundled rules).
        models: Models folder (default: the bundled models).
        **options: Passed to :meth:`KnowledgeBase.load` (``approved_only``...).

    Raises:
        RuleFileError: If the first load fails.
    """

    def __init__(
        self,
        rules: Path | str | None = None,
        models: Path | str | None = None,
        **options: Any,
    ) -> None:
        self._rules = rules
        self._models = models
        self._options = options
        self._lock = threading.Lock()
        self._current = KnowledgeBase.load(rules, models, **options)

    @property
    def current(self) -> KnowledgeBase:
        """The knowledge base new evaluations use."""
        return self._current

    def reload(self) -> KnowledgeBase:
        """Load the rule and model folders again and make them current.

        Returns:
            The new knowledge base.

        Raises:
            RuleFileError: If the new version has errors; the old one stays.
            ModelError: If a model cannot be loaded; the old one stays.
        """
        with self._lock:
            new = KnowledgeBase.load(self._rules, self._models, **self._options)
            old = self._current
            self._current = new
        log.info(
            "knowledge base reloaded: %s -> %s",
            old.info.content_hash[:12],
            new.info.content_hash[:12],
        )
        return new

    def evaluate(
        self, case: CaseInput, *, as_of: AsOf = None, use_conditions: bool = True
    ) -> Assessment:
        """Evaluate on the knowledge base current when the call starts (see
        :meth:`KnowledgeBase.evaluate`)."""
        kb = self._current
        return kb.evaluate(case, as_of=as_of, use_conditions=use_conditions)

    def evaluate_many(
        self,
        cases: Sequence[CaseInput],
        *,
        as_of: AsOf = None,
        use_conditions: bool = True,
    ) -> list[Assessment]:
        """Evaluate several cases, all on the knowledge base current when the
        call starts (see :meth:`KnowledgeBase.evaluate_many`)."""
        kb = self._current
        return kb.evaluate_many(cases, as_of=as_of, use_conditions=use_conditions)
