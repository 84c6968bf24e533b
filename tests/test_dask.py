"""Batch evaluation on a Dask LocalCluster: the same lines as a serial run.

The cluster has 2 worker processes (processes=True), one thread each, on
127.0.0.1, started and closed by the test module. The inputs are the shared
bundles when present (else small bundles written here), plus broken files, an
NDJSON file and a bulk export, so error records are compared too.
"""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from distributed import Client  # noqa: E402
from test_batch import (  # noqa: E402
    broken_files,
    bulk_export,
    bundle,
    flat,
    hypertensive,
    lines,
    long_batch,
    many_cases,
)

from cli import EXIT_BATCH_FAILED, EXIT_INTERRUPTED, main  # noqa: E402
from engine.batch import KnowledgeBaseSpec, Settings, plan_inputs, run_batch  # noqa: E402
from engine.dask_batch import DaskBackend, dask_client  # noqa: E402
from engine.errors import EvaluationError  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fhir"
SETTINGS = Settings(KnowledgeBaseSpec(), "last")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with dask_client(None, 2) as c:
        yield c


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("dask-inputs")
    broken_files(root / "broken")
    bulk_export(root / "export")
    lines = [json.dumps(bundle(hypertensive(f"nd{i}"))) for i in range(20)]
    (root / "cases.ndjson").write_text("\n".join([*lines, "{oops"]) + "\n")
    first = str(SHARED) if SHARED.is_dir() else str(many_cases(root / "many", 40))
    return [
        first,
        str(root / "broken"),
        str(root / "cases.ndjson"),
        str(root / "export"),
    ]


@pytest.fixture(scope="module")
def serial(inputs: list[str]) -> str:
    """The lines of the inputs evaluated in this process."""
    out = io.StringIO()
    run_batch(plan_inputs(inputs), out, SETTINGS, workers=1)
    return out.getvalue()


@pytest.fixture(scope="module")
def dask_lines(client: Client, inputs: list[str]) -> str:
    kb = SETTINGS.knowledge_base.load()
    backend = DaskBackend(client, SETTINGS, kb.info.content_hash)
    out = io.StringIO()
    summary = run_batch(plan_inputs(inputs), out, SETTINGS, backend=backend)
    assert summary.cases == len(out.getvalue().splitlines())
    return out.getvalue()


def test_dask_run_writes_exactly_the_serial_lines(
    client: Client, dask_lines: str, serial: str
) -> None:
    assert list(client.nthreads().values()) == [1, 1]  # 2 processes, 1 thread each
    workers = client.run(os.getpid)
    assert len(set(workers.values())) == 2
    # The same driver keeps the input order, and chunks do not depend on the
    # backend, so even the scores' last bits agree: whole lines are compared.
    assert dask_lines == serial
    docs = [json.loads(line) for line in dask_lines.splitlines()]
    assert sum(d["status"] == "error" for d in docs) == 3 + 1 + 3
    assert sum(d["status"] == "complete" for d in docs) == len(docs) - 7
    if SHARED.is_dir():  # scored cases too, so the scores' bits were compared
        scores = [s for d in docs if d["status"] == "complete" for s in d["scores"]]
        assert any(s["value"] is not None for s in scores)


def test_the_workers_of_a_local_cluster_never_receive_ctrl_c(client: Client) -> None:
    # Blocked from the start (inherited), not only once the plugin ignores it:
    # a Ctrl-C while the cluster started killed workers mid-import.
    masks = client.run(signal.pthread_sigmask, signal.SIG_BLOCK, [])
    assert len(masks) == 2
    assert all(signal.SIGINT in mask for mask in masks.values())


def test_a_worker_with_another_knowledge_base_refuses_the_run(client: Client) -> None:
    with pytest.raises(EvaluationError, match="another knowledge base"):
        DaskBackend(client, SETTINGS, "0" * 64)


def test_cdss_batch_dask_starts_a_local_cluster_and_matches_serial(
    tmp_path: Path, inputs: list[str], serial: str
) -> None:
    out = tmp_path / "r.ndjson"
    result = CliRunner().invoke(
        main,
        ["batch", *inputs, "--out", str(out), "--as-of", "last"]
        + ["--workers", "2", "--dask"],
    )
    assert result.exit_code == EXIT_BATCH_FAILED, result.stderr
    assert out.read_text() == serial


def test_cdss_batch_dask_then_inputs_runs_them_on_a_local_cluster(
    tmp_path: Path,
    inputs: list[str],
    serial: str,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str | None, int]] = []

    @contextmanager
    def module_cluster(
        address: str | None, workers: int, *, quiet: bool = False
    ) -> Iterator[Client]:
        asked.append((address, workers))  # the local cluster cdss would start
        yield client

    monkeypatch.setattr("engine.dask_batch.dask_client", module_cluster)
    out = tmp_path / "r.ndjson"

    result = CliRunner().invoke(
        main,
        ["batch", "--dask", *inputs, "--out", str(out), "--as-of", "last"]
        + ["--workers", "2"],
    )

    assert result.exit_code == EXIT_BATCH_FAILED, result.stderr
    assert asked == [(None, 2)]
    assert out.read_text() == serial


def test_ctrl_c_on_a_local_cluster_says_only_how_far_it_got(tmp_path: Path) -> None:
    proc, path, out = long_batch(tmp_path, 2, "--dask")

    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == EXIT_INTERRUPTED, err
    docs = lines(out)
    assert 0 < len(docs) < 20_000
    assert {d["case_id"] for d in docs} == {"cc"}
    # Closing the cluster under running tasks logged a warning per task, and
    # could log a CommClosedError traceback; only the summary remains.
    assert f"{len(docs)} of about 20000 cases written" in flat(err)
    assert f"the last was {path}:{len(docs)}" in flat(err)
    for noise in ("Traceback", "CancelledError", "CommClosedError"):
        assert noise not in err
