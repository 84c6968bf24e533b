"""Batch evaluation on a Dask cluster (``dask.distributed``).

:class:`DaskBackend` runs the chunks of :func:`engine.batch.run_batch` as Dask
tasks, so the output and the no-loss guarantee are those of a local run: the
same driver writes the same lines in the same order. Each worker loads the
knowledge base once, when :class:`KnowledgeBasePlugin` is attached to it (and
to any worker that joins later); tasks find it in the process's cache.

Workers read the input files themselves, so they must see them under the same
paths (a shared file system); NDJSON lines and bulk-export groups travel with
their tasks. A worker whose knowledge base differs from the client's (another
content hash) refuses the run before any task is sent.

Ctrl-C is the client's alone: the processes of a local cluster never receive
SIGINT (see :func:`dask_client`), and the client decides when to stop.

Install with ``pip install 'cdss-engine[dask]'``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from multiprocessing import resource_tracker
from typing import Any

from .batch import KnowledgeBaseSpec, Outcome, Pending, Settings, evaluate_chunk
from .bulk import WorkItem
from .errors import EvaluationError

__all__ = ["DaskBackend", "KnowledgeBasePlugin", "dask_client"]

log = logging.getLogger(__name__)

try:
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as err:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "cdss batch --dask needs dask.distributed: pip install 'cdss-engine[dask]'"
    ) from err


class KnowledgeBasePlugin(WorkerPlugin):
    """Loads the knowledge base once on each worker, when attached to it.

    Args:
        spec: Where the knowledge base is, on the workers.
    """

    def __init__(self, spec: KnowledgeBaseSpec) -> None:
        self.spec = spec

    def setup(self, worker: Any) -> None:
        """Load (and freeze) the knowledge base in the worker's process.

        Raises:
            RuleFileError: If the rule files are refused on this worker.
            ModelError: Likewise, for a model.
        """
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C reaches the whole process group; the client decides.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.spec.prepare()


def _content_hash(spec: KnowledgeBaseSpec) -> str:
    return spec.load().info.content_hash


class DaskBackend:
    """Run chunks as tasks on a Dask cluster.

    Args:
        client: A connected client; not closed here.
        settings: How to evaluate.
        content_hash: The client's knowledge base hash; every worker must have
            the same.

    Raises:
        EvaluationError: If the cluster has no workers, or a worker's
            knowledge base differs from the client's.
    """

    def __init__(self, client: Client, settings: Settings, content_hash: str) -> None:
        self.client = client
        self.settings = settings
        spec = settings.knowledge_base
        client.register_plugin(
            KnowledgeBasePlugin(spec), name=f"cdss-knowledge-base-{content_hash[:12]}"
        )
        hashes: dict[str, str] = client.run(_content_hash, spec)
        if not hashes:
            raise EvaluationError("the Dask cluster has no workers")
        others = sorted(w for w, h in hashes.items() if h != content_hash)
        if others:
            raise EvaluationError(
                f"{len(others)} Dask worker(s) have another knowledge base "
                f"(content hash differs from {content_hash[:12]}): "
                f"{', '.join(others)}; give them the same rules and models"
            )
        threads: dict[str, int] = client.nthreads()  # type: ignore[no-untyped-call]
        self.slots = max(1, sum(threads.values()))
        log.info("Dask cluster: %d workers, %d threads", len(hashes), self.slots)

    def submit(self, chunk: list[WorkItem]) -> Pending:
        """Send a chunk to the cluster."""
        future: Pending = self.client.submit(
            evaluate_chunk, chunk, self.settings, pure=False
        )
        return future

    def recover(self, chunk: list[WorkItem], error: BaseException) -> list[Outcome]:
        """Retry the chunk, then input by input; an input that fails every
        retry (e.g. it kills its worker) gets an error record."""
        log.warning(
            "a chunk of %d inputs failed on Dask (%s); retrying it",
            len(chunk),
            type(error).__name__,
        )
        try:
            return self.submit(chunk).result()
        except Exception:  # isolate the input that fails
            log.debug("the chunk failed again; inputs one by one", exc_info=True)
        out: list[Outcome] = []
        for item in chunk:
            try:
                out += self.submit([item]).result()
            except Exception as err:  # the task failed on every worker tried
                reason = f"the Dask task for this input failed ({type(err).__name__})"
                out.append(Outcome.error(item, "worker", reason))
        return out

    def close(self) -> None:
        """Nothing to release: the caller owns the client."""


@contextmanager
def dask_client(
    address: str | None, workers: int, *, quiet: bool = False
) -> Iterator[Client]:
    """Connect to a Dask scheduler, or start a local cluster on loopback.

    Args:
        address: The scheduler's address; None starts a LocalCluster of
            ``workers`` processes (one thread each) on 127.0.0.1, closed on exit.
            Its processes never receive SIGINT.
        workers: Worker processes of the local cluster.
        quiet: Silence the local cluster's logging while it closes (this
            process's too, until it is closed). Workers closed under tasks
            still running, as after an interrupted batch, log a warning per
            task and may log a traceback for a connection closed under them.

    Yields:
        The client.
    """
    if address is not None:
        with Client(address) as client:  # type: ignore[no-untyped-call]
            yield client
        return
    # Steps on exit run in reverse: silence, close the client, close the
    # cluster, then let this process log again.
    with ExitStack() as stack:
        if quiet:
            stack.callback(logging.disable, logging.root.manager.disable)
        cluster = stack.enter_context(_local_cluster(workers))
        client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
        if quiet:
            stack.callback(_silence, client)
        yield client


def _local_cluster(workers: int) -> LocalCluster:
    """Start a local cluster on a thread of its own that never receives SIGINT.

    Threads and processes inherit the signal mask of the thread that starts
    them, so the cluster's workers are deaf to Ctrl-C from their first
    instruction. (:class:`KnowledgeBasePlugin` ignores SIGINT only once a
    worker has started; a Ctrl-C before then killed workers mid-import, with
    their tracebacks, and the cluster failed to start with one more.) This
    thread only waits for the cluster, and runs its signal handlers meanwhile.
    """

    def start() -> LocalCluster:
        return LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address="127.0.0.1:0",
        )

    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no masks to inherit
        return start()
    # The first process the cluster starts would start multiprocessing's
    # resource tracker, which unblocks SIGINT in the thread that starts it;
    # started from here, it leaves the cluster's threads as they are.
    resource_tracker.ensure_running()
    pool = ThreadPoolExecutor(1, thread_name_prefix="cdss-dask-start")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        future = pool.submit(start)  # its thread starts now, with SIGINT blocked
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        pool.shutdown(wait=False)
    try:
        return future.result()
    except BaseException:
        # Interrupted while waiting (KeyboardInterrupt): the cluster still
        # comes up, and is closed then.
        future.add_done_callback(_close_started)
        raise


def _close_started(future: Future[LocalCluster]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _silence(client: Client) -> None:
    """Drop every log record of the workers and of this process from now on."""
    client.run(logging.disable, logging.CRITICAL)
    logging.disable(logging.CRITICAL)
