"""Shared fixtures: the bundled knowledge base, loaded once for the session."""

from __future__ import annotations

import pytest

from engine import KnowledgeBase


@pytest.fixture(scope="session")
def kb() -> KnowledgeBase:
    """The bundled rules and models (read-only: tests must not change it)."""
    return KnowledgeBase.load()
