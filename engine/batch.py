"""Batch evaluation: many inputs, one NDJSON line per case, on several processes.

:func:`run_batch` streams the items of a :class:`~engine.bulk.Plan` in chunks
of :data:`CHUNK_SIZE` cases to a backend (this process, a process pool, or a
Dask cluster in :mod:`engine.dask_batch`); each model scores a chunk in one
call (:func:`engine.evaluation.evaluate_cases`). It guarantees:

- one line per input case, in input order: the assessment (the JSON of
  ``cdss evaluate --format json``) or an error record naming the input
  (``file``, ``line`` for NDJSON) and the ``reason``;
- a bad record never stops the batch, and a worker process that dies is
  replaced and its chunk retried input by input, so no input is lost;
- bounded memory: at most two chunks per worker are in flight;
- ``stop()`` is polled between chunks and only whole lines are written, so an
  interrupted run leaves a valid, partial file.

Chunks do not depend on the backend or the number of workers, so scores agree
to the last bit between runs (one case scored alone, as ``cdss evaluate`` does,
can differ in the last bit: a product over many rows rounds differently).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import IO, Final, Literal, Protocol

from .assessment import Assessment, BatchError
from .bulk import Family, Plan, WorkItem, plan_inputs
from .errors import CdssError, EvaluationError, InputError, UnitError
from .evaluation import evaluate_cases
from .facts import Case
from .knowledge import KnowledgeBase

__all__ = [
    "CHUNK_SIZE",
    "Backend",
    "BatchSummary",
    "InProcess",
    "KnowledgeBaseSpec",
    "Outcome",
    "Plan",
    "ProcessPool",
    "Settings",
    "WorkItem",
    "default_workers",
    "evaluate_chunk",
    "one_by_one",
    "plan_inputs",
    "run_batch",
]

log = logging.getLogger(__name__)

CHUNK_SIZE: Final = 16
"""Cases per chunk: enough to share a model call, small enough to balance."""

AsOf = datetime | Literal["last"]


# --- what a worker needs -------------------------------------------------------


_loaded: dict[KnowledgeBaseSpec, KnowledgeBase] = {}
_load_lock = threading.Lock()


@dataclass(frozen=True)
class KnowledgeBaseSpec:
    """Where a worker finds the knowledge base; loaded once per process.

    Attributes:
        rules: Rule files or folders; None for the bundled ``rules/``.
        models: The models folder; None for the bundled ``models/``.
        approved_only: Refuse rules that are not approved (as ``--approved-only``).
    """

    rules: tuple[str, ...] | None = None
    models: str | None = None
    approved_only: bool = False

    def load(self) -> KnowledgeBase:
        """Return this process's knowledge base for the spec, loading it once.

        Raises:
            RuleFileError: If the rule files are refused.
            ModelError: If a model cannot be loaded.
        """
        with _load_lock:
            kb = _loaded.get(self)
            if kb is None:
                rules = [Path(r) for r in self.rules] if self.rules else None
                models = Path(self.models) if self.models else None
                kb = KnowledgeBase.load(rules, models, approved_only=self.approved_only)
                _loaded[self] = kb
            return kb

    def prepare(self) -> None:
        """Load the knowledge base, then exempt it from garbage collection.

        Everything alive now (the knowledge base, the imported libraries) lives
        as long as the process, yet each full collection would walk it again;
        frozen, parsing a bundle takes half the time. For worker processes.

        Raises:
            RuleFileError: If the rule files are refused.
            ModelError: If a model cannot be loaded.
        """
        self.load()
        gc.collect()
        gc.freeze()

    def remember(self, kb: KnowledgeBase) -> None:
        """Use an already loaded knowledge base for this spec in this process.

        Worker processes started by fork inherit it instead of loading it.
        """
        with _load_lock:
            _loaded[self] = kb


@dataclass(frozen=True)
class Settings:
    """How every case of a batch is evaluated.

    Attributes:
        knowledge_base: Where the knowledge base is.
        as_of: The evaluation time, or ``last`` for each record's last entry.
        use_conditions: False leaves each record's problem list out.
    """

    knowledge_base: KnowledgeBaseSpec
    as_of: AsOf
    use_conditions: bool = True


@dataclass(frozen=True)
class Outcome:
    """One output line and what the summary counts of it.

    Attributes:
        line: The JSON document, without the newline.
        failed: True for an error record.
        status: The assessment's status, or ``error``.
        diagnoses: Diagnosis ids.
        recommendations: (id, status) of each recommendation.
        undetermined: Ids of the rules that could not be determined.
    """

    line: str
    failed: bool
    status: str
    diagnoses: tuple[str, ...] = ()
    recommendations: tuple[tuple[str, str], ...] = ()
    undetermined: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: Assessment) -> Outcome:
        """The outcome of an assessment."""
        return cls(
            line=result.model_dump_json(),
            failed=False,
            status=result.status,
            diagnoses=tuple(d.id for d in result.diagnoses),
            recommendations=tuple((r.id, r.status) for r in result.recommendations),
            undetermined=tuple(u.rule_id for u in result.undetermined),
        )

    @classmethod
    def error(
        cls, item: WorkItem, family: Family, reason: str, case_id: str | None = None
    ) -> Outcome:
        """An error record naming the input, and the case once it was read."""
        record = BatchError(
            file=item.file,
            line=item.line,
            case_id=case_id or item.case_id,
            error=family,
            reason=reason,
        )
        return cls(record.model_dump_json(), failed=True, status="error")


def _failure(item: WorkItem, err: BaseException, case_id: str | None = None) -> Outcome:
    family: Family
    if isinstance(err, InputError):
        family, reason = "input", str(err)
    elif isinstance(err, UnitError):
        family, reason = "unit", str(err)
    elif isinstance(err, CdssError):
        family, reason = "evaluation", str(err)
    else:
        family, reason = "internal", f"{type(err).__name__}: {err}"
        # A bug, not bad data; the type only: the message may name the patient.
        log.warning("an input failed with %s; see its error record", type(err).__name__)
    log.debug("%s failed: %s", item.label, reason)
    return Outcome.error(item, family, reason, case_id)


# --- the work of one chunk (runs in a worker) ----------------------------------


def _when(case: Case, as_of: AsOf) -> datetime:
    if as_of != "last":
        return as_of
    last = case.last_time()
    if last is None:
        raise InputError(
            case.source,
            "",
            "--as-of last: the record has no dated entries",
            "give an evaluation date with --as-of",
        )
    return last


def evaluate_chunk(items: Sequence[WorkItem], settings: Settings) -> list[Outcome]:
    """Read and evaluate a chunk of inputs; one outcome per item, in order.

    Every failure of one input becomes that input's error record; the models
    score the chunk's readable cases in one call per model.

    Args:
        items: The chunk.
        settings: How to evaluate.

    Returns:
        The outcomes, in the order of ``items``.

    Raises:
        RuleFileError: If this process cannot load the knowledge base.
        ModelError: Likewise, for a model.
    """
    kb = settings.knowledge_base.load()
    outcomes: list[Outcome | None] = [None] * len(items)
    ready: list[tuple[int, Case, datetime]] = []
    for i, item in enumerate(items):
        if item.kind == "error":
            outcomes[i] = Outcome.error(item, item.family, item.reason)
            continue
        case: Case | None = None
        try:
            case = item.read(kb.catalogue)
            if not settings.use_conditions:
                case = case.without_conditions()
            ready.append((i, case, _when(case, settings.as_of)))
        except Exception as err:  # one bad input must not end the chunk: recorded
            outcomes[i] = _failure(item, err, case.case_id if case else None)

    try:
        results = evaluate_cases(kb, [c for _, c, _ in ready], [t for *_, t in ready])
        for (i, _, _), result in zip(ready, results, strict=True):
            outcomes[i] = Outcome.of(result)
    except Exception:  # find the case that failed: evaluate them one by one
        log.debug("a chunk failed; evaluating its cases one by one", exc_info=True)
        for i, case, when in ready:
            try:
                outcomes[i] = Outcome.of(evaluate_cases(kb, [case], when)[0])
            except Exception as err:  # recorded as this case's error
                outcomes[i] = _failure(items[i], err, case.case_id)
    return [o for o in outcomes if o is not None]


def _start_worker(spec: KnowledgeBaseSpec) -> None:
    # Ctrl-C reaches the whole process group, and a service manager's SIGTERM
    # often does too; the parent decides when to stop, and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spec.prepare()


# --- backends --------------------------------------------------------------------


class Pending(Protocol):
    """A chunk's outcomes to come: a concurrent or a Dask future."""

    def result(self) -> list[Outcome]: ...
    def done(self) -> bool: ...
    def cancel(self) -> bool: ...


class Backend(Protocol):
    """Where chunks run: ``submit`` starts one; ``recover`` gives the outcomes
    of one whose run failed as a whole; ``close`` releases what it started."""

    slots: int

    def submit(self, chunk: list[WorkItem]) -> Pending: ...
    def recover(self, chunk: list[WorkItem], error: BaseException) -> list[Outcome]: ...
    def close(self) -> None: ...


def one_by_one(
    chunk: list[WorkItem], run: Callable[[list[WorkItem]], list[Outcome]], why: str
) -> list[Outcome]:
    """Run a failed chunk's inputs one at a time; one that fails again gets an
    error record of family ``worker`` saying ``why``.

    Args:
        chunk: The inputs.
        run: Runs a chunk and returns its outcomes, or raises.
        why: What went wrong, for the error records.

    Returns:
        One outcome per input.
    """
    out: list[Outcome] = []
    for item in chunk:
        try:
            out += run([item])
        except Exception as err:  # this input's run failed: recorded, not lost
            out.append(Outcome.error(item, "worker", f"{why} ({type(err).__name__})"))
    return out


class InProcess:
    """Run chunks in this process, one at a time (``--workers 1``)."""

    slots = 1

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.knowledge_base.prepare()

    def submit(self, chunk: list[WorkItem]) -> Pending:
        """Run the chunk now; the future is already done."""
        future: Future[list[Outcome]] = Future()
        try:
            future.set_result(evaluate_chunk(chunk, self.settings))
        except Exception as err:  # handed to recover() by the driver
            future.set_exception(err)
        return future

    def recover(self, chunk: list[WorkItem], error: BaseException) -> list[Outcome]:
        """Run the chunk's inputs one by one; each failure becomes its record."""
        run = functools.partial(evaluate_chunk, settings=self.settings)
        return one_by_one(chunk, run, "the evaluation failed")

    def close(self) -> None:
        """Nothing to release."""


def default_workers() -> int:
    """The cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _start_method() -> str:
    # fork is instant and shares the loaded knowledge base; it is only safe
    # while no other thread could hold a lock at the moment of the fork.
    methods = get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


class ProcessPool:
    """Run chunks on worker processes of this machine.

    Args:
        settings: How to evaluate.
        workers: The number of processes.
        start_method: ``fork``, ``forkserver`` or ``spawn``; by default, at
            each (re)start, fork when this process runs a single thread, else
            forkserver.
    """

    def __init__(
        self, settings: Settings, workers: int, start_method: str | None = None
    ) -> None:
        self.settings = settings
        self.slots = workers
        self.start_method = start_method
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        method = self.start_method or _start_method()
        context = get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(["engine.batch"])
        return ProcessPoolExecutor(
            self.slots,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.settings.knowledge_base,),
        )

    def _submit(self, chunk: list[WorkItem]) -> Future[list[Outcome]]:
        try:
            return self._pool.submit(evaluate_chunk, chunk, self.settings)
        except BrokenProcessPool:
            log.warning("a worker process ended; starting a new pool")
            # Wait for the old pool's threads, so that the new one can fork.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new()
            return self._pool.submit(evaluate_chunk, chunk, self.settings)

    def submit(self, chunk: list[WorkItem]) -> Pending:
        """Queue a chunk on the pool."""
        return self._submit(chunk)

    def recover(self, chunk: list[WorkItem], error: BaseException) -> list[Outcome]:
        """Retry the chunk, then input by input; an input that kills a worker
        gets an error record."""
        log.warning(
            "a chunk of %d inputs failed (%s); retrying it",
            len(chunk),
            type(error).__name__,
        )
        try:
            return self._submit(chunk).result()
        except Exception:  # isolate the input that fails
            log.debug("the chunk failed again; inputs one by one", exc_info=True)
        return one_by_one(
            chunk,
            lambda items: self._submit(items).result(),
            "the worker process ended while evaluating this input",
        )

    def close(self) -> None:
        """Stop the worker processes (running chunks finish first)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- the driver ------------------------------------------------------------------


@dataclass
class BatchSummary:
    """What a batch did, for the progress bar and the final table.

    Attributes:
        total: The number of lines the batch writes: estimated at the start
            (:meth:`Plan.estimate`), counted once every input is planned.
        cases: Lines written.
        failures: Error records among them.
        statuses: Lines by status (``complete``, ``partial``, ...,
            ``error``).
        diagnoses: Cases per diagnosis id.
        recommendations: Cases per (recommendation id, status).
        undetermined: Cases per rule that could not be determined.
        interrupted: True when ``stop()`` ended the batch early.
        last: The last input written (``file`` or ``file:line``).
        elapsed: Seconds since the start.
    """

    total: int = 0
    cases: int = 0
    failures: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    diagnoses: Counter[str] = field(default_factory=Counter)
    recommendations: Counter[tuple[str, str]] = field(default_factory=Counter)
    undetermined: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False
    last: str = ""
    elapsed: float = 0.0

    def add(self, item: WorkItem, outcome: Outcome) -> None:
        """Count one written line."""
        self.cases += 1
        self.failures += outcome.failed
        self.statuses[outcome.status] += 1
        self.diagnoses.update(outcome.diagnoses)
        self.recommendations.update(outcome.recommendations)
        self.undetermined.update(outcome.undetermined)
        self.last = item.label


def _chunks(items: Iterator[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    chunk: list[WorkItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_batch(
    plan: Plan,
    out: IO[str],
    settings: Settings,
    *,
    workers: int = 1,
    chunk_size: int = CHUNK_SIZE,
    backend: Backend | None = None,
    progress: Callable[[BatchSummary], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> BatchSummary:
    """Evaluate every input of a plan and write one line per case to ``out``.

    Args:
        plan: The inputs (:func:`plan_inputs`).
        out: A text file; each line is written whole, and flushed per chunk.
        settings: How to evaluate.
        workers: Processes when no backend is given: 1 runs in this process.
        chunk_size: Cases per chunk.
        backend: Where chunks run (e.g. :class:`engine.dask_batch.DaskBackend`);
            not closed here. By default one is started and closed.
        progress: Called after each chunk is written, and when the total
            changes once every input is planned.
        stop: Polled between chunks; once true, the batch ends after the lines
            already done (``interrupted`` is then set).

    Returns:
        The summary.

    Raises:
        RuleFileError: If the knowledge base cannot be loaded.
        ModelError: Likewise, for a model.
    """
    summary = BatchSummary(total=plan.estimate())
    started = time.monotonic()
    own = backend is None
    runner: Backend = backend or (
        InProcess(settings) if workers <= 1 else ProcessPool(settings, workers)
    )
    # In this process a chunk is done when submitted; elsewhere keep two queued.
    window = 1 if isinstance(runner, InProcess) else 2 * max(1, runner.slots)
    chunks = _chunks(plan.items(stop), chunk_size)
    planned_all = False
    pending: deque[tuple[list[WorkItem], Pending]] = deque()

    def write(chunk: list[WorkItem], outcomes: list[Outcome]) -> None:
        for item, outcome in zip(chunk, outcomes, strict=True):
            out.write(outcome.line + "\n")
            summary.add(item, outcome)
        out.flush()
        summary.elapsed = time.monotonic() - started
        if progress is not None:
            progress(summary)

    try:
        while True:
            if stop is not None and stop():
                summary.interrupted = True
                break
            if len(pending) < window and not planned_all:
                chunk = next(chunks, None)
                if chunk is not None:
                    pending.append((chunk, runner.submit(chunk)))
                    continue
                # The plan is exhausted, unless stop() cut it short: what is
                # written and in flight is now the total, error records of a
                # bulk export's other files included.
                planned_all = True
                total = summary.cases + sum(len(c) for c, _ in pending)
                if total != summary.total and (stop is None or not stop()):
                    summary.total = total
                    if progress is not None:
                        progress(summary)
            if not pending:
                break
            chunk, future = pending.popleft()
            write(chunk, _outcomes(runner, chunk, future))
        if stop is not None and stop():
            # Also when the stop came while the plan was being read (a bulk
            # export is grouped before its first chunk): the plan then ended
            # early, with nothing or part of it written.
            summary.interrupted = True
        # Stopped: keep what is already done, in order, then give up the rest.
        while pending and pending[0][1].done():
            chunk, future = pending.popleft()
            write(chunk, _outcomes(runner, chunk, future))
    finally:
        for _chunk, future in pending:
            future.cancel()
        if own:
            runner.close()
    summary.elapsed = time.monotonic() - started
    log.info(
        "batch: %d cases, %d failed, %.1f s%s",
        summary.cases,
        summary.failures,
        summary.elapsed,
        " (interrupted)" if summary.interrupted else "",
    )
    return summary


def _outcomes(runner: Backend, chunk: list[WorkItem], future: Pending) -> list[Outcome]:
    try:
        outcomes = future.result()
    except Exception as err:  # a dead worker or a lost task: no input is dropped
        return runner.recover(chunk, err)
    if len(outcomes) != len(chunk):
        return runner.recover(chunk, EvaluationError("a chunk came back incomplete"))
    return outcomes
