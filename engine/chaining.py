"""The adapter that drives durable-rules: one session per case, no globals.

What it handles, from ``durable-rules-notes.md`` (each pinned by a test in
``tests/test_chaining.py``):

- The module-level DSL's global registry is not used: a private host gets a
  ruleset definition under a name unique to this knowledge base load.
- The stock host starts dispatch and timer threads that race session deletion;
  this host starts none, so every action runs inside the asserting call.
- Every evaluation has its own session id, deleted afterwards (sessions are
  capped at 1024 and cost memory).
- Facts no rule matches raise ``MessageNotHandledException``: only facts some
  pattern uses are asserted, and the exception is still caught as normal.
- Asserting an identical fact twice raises ``MessageObservedException``: a
  finding is asserted once per session (our own record dedupes).
- Exceptions inside actions are swallowed by durable into the session state:
  every action catches its own errors and records them for the assessment.
- An action that keeps re-asserting could run for ever: a firing cap stops it.
- Deleting a session in which no action ran has crashed the process: in a
  session where no rule fired, a start fact matched by a no-op rule makes an
  action run before the session is deleted.
- A finding that cannot be determined is asserted as ``u: true`` before the
  gates of a higher stratum, so that "not F" does not fire on an F that might
  hold; positive patterns ask for ``u: false``.
- Values: only booleans, small integers and ids reach the matcher, never a
  measured number (text comparison of numbers, NaN and numpy types).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from durable.engine import Host, MessageNotHandledException, MessageObservedException

__all__ = ["Matcher", "Session"]

log = logging.getLogger(__name__)

_names = itertools.count(1)


class _QuietHost(Host):  # type: ignore[misc]
    """A durable host that starts no background threads."""

    def _run(self) -> None:
        return None


@dataclass
class Session:
    """The record of one evaluation inside the matcher."""

    sid: str
    fired: list[tuple[int, int]] = field(default_factory=list)
    asserted: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    firings: int = 0
    capped: bool = False
    ran: bool = False  # an action ran in the session


class Matcher:
    """One durable-rules ruleset and the sessions that run on it.

    Args:
        build: ``build(action_for) -> (definition, info)``; ``action_for(ri, ci)``
            returns the action to put in the definition.
        on_fire: Called inside the action with (session, rule index, conjunct
            index); returns the finding ids to assert.
        findings_used: Findings some pattern tests; only those are asserted.
        max_firings: Firing cap per session.
    """

    def __init__(
        self,
        definition_for: Callable[
            [Callable[[int, int], Callable[[Any], None]]], dict[str, Any]
        ],
        on_fire: Callable[[Session, int, int], list[str]],
        findings_used: Callable[[], set[str]],
        max_firings: int,
    ) -> None:
        self.name = f"cdss_kb_{next(_names)}"
        self._sessions: dict[str, Session] = {}
        self._on_fire = on_fire
        self._max_firings = max_firings
        self._lock = threading.Lock()
        self._sids = itertools.count(1)
        definition = definition_for(self._action)
        definition["__start"] = {"all": [{"m": {"t": "start"}}], "run": _noop}
        self._findings_used = findings_used()
        self._host = _QuietHost()
        self._host.register_rulesets({self.name: definition})

    def _action(self, rule_index: int, conjunct: int) -> Callable[[Any], None]:
        def act(c: Any) -> None:
            session = self._sessions.get(str(c.s.sid))
            if session is None:
                return
            session.ran = True
            try:
                session.firings += 1
                if session.firings > self._max_firings:
                    session.capped = True
                    return
                session.fired.append((rule_index, conjunct))
                for finding in self._on_fire(session, rule_index, conjunct):
                    if finding in session.asserted:
                        continue
                    session.asserted.add(finding)
                    if finding in self._findings_used:
                        c.assert_fact({"t": "finding", "f": finding, "u": False})
            except (MessageObservedException, MessageNotHandledException):
                pass
            except Exception as err:  # recorded: durable would swallow it
                session.errors.append(
                    f"rule action failed: {type(err).__name__}: {err}"
                )

        return act

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open one case's session; it is deleted when the block ends.

        Use :meth:`assert_facts` inside the block, in the order the case needs
        (leaf facts first, then each stratum's gates).
        """
        with self._lock:
            sid = f"s{next(self._sids)}"
            session = Session(sid)
            self._sessions[sid] = session
            try:
                yield session
            finally:
                if not session.ran:
                    # Deleting a session in which no action ran can crash
                    # durable: the start fact's no-op rule makes one run.
                    self._assert({"t": "start", "sid": sid}, session)
                try:
                    self._host.delete_state(self.name, sid)
                except Exception as err:  # the case result stands; say so
                    session.errors.append(f"could not delete matcher session: {err}")
                del self._sessions[sid]

    def assert_facts(self, session: Session, facts: list[dict[str, Any]]) -> None:
        """Assert facts one by one into an open session (chaining runs inside)."""
        for fact in facts:
            self._assert({**fact, "sid": session.sid}, session)

    def run(self, leaves: list[dict[str, Any]], gates: list[list[str]]) -> Session:
        """Run one case in one go: leaf facts, then each stratum's gates."""
        with self.session() as session:
            self.assert_facts(session, leaves)
            for stratum in gates:
                self.assert_facts(session, [{"t": "gate", "g": g} for g in stratum])
        return session

    def _assert(self, fact: dict[str, Any], session: Session) -> None:
        try:
            self._host.assert_fact(self.name, fact)
        except MessageNotHandledException:
            pass
        except MessageObservedException:
            pass
        except Exception as err:
            session.errors.append(f"matcher error: {type(err).__name__}: {err}")


def _noop(c: Any) -> None:
    return None
