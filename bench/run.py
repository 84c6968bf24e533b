"""The cdss benchmark: one command, every figure of docs/benchmark.md.

    .venv/bin/python bench/run.py                       # the full run (~10 min)
    .venv/bin/python bench/run.py --memory-cases 10000  # a shorter memory test
    .venv/bin/python bench/run.py --parts e             # (e) alone
    .venv/bin/python bench/run.py --quick               # a smoke run (~20 s)

It measures, on the shared Synthea bundles (../shared/data/fhir):

(a) the full pipeline per bundle: read (JSON, FHIR reader) and evaluate, both
    as ``kb.evaluate(path)`` one bundle at a time and as the batch does it
    (``evaluate_chunk``: chunks of 16, one model call per chunk, JSON out);
(b) evaluation from prepared facts (Case objects already read), one case at a
    time and in chunks, with the time of each stage;
(c) raw durable-rules: the knowledge base's compiled ruleset on its own host,
    driven directly with the leaf facts, unknown findings and gates each case
    asserts (recorded from a real evaluation), and nothing else;
(d) plain Python: the engine's three-valued pass alone over the same rules,
    with the same leaf values;
(e) batch throughput (``run_batch``) with 1 and 2 worker processes, best of 3;
(f) resident memory after 1k, 10k and 100k evaluations.

It is not part of the test suite. Figures go to stdout as Markdown.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import durable  # noqa: E402

import engine.evaluation as evaluation  # noqa: E402
from engine import Case, KnowledgeBase, read_input  # noqa: E402
from engine.batch import (  # noqa: E402
    CHUNK_SIZE,
    KnowledgeBaseSpec,
    Plan,
    Settings,
    evaluate_chunk,
    run_batch,
)
from engine.bulk import WorkItem  # noqa: E402
from engine.chaining import Session  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "fhir"

Row = dict[str, Any]


# --- measuring ---------------------------------------------------------------------


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return statistics.median(ms), p99


def timed(calls: list[Callable[[], Any]], repeat: int) -> Row:
    """Run every call ``repeat`` times; latency per call and the rate."""
    latencies: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        for call in calls:
            t = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    p50, p99 = percentiles(latencies)
    return {"n": len(latencies), "rate": len(latencies) / total, "p50": p50, "p99": p99}


def rss_mb() -> float:
    """The resident set size now, in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    """The peak resident set size, in MB (ru_maxrss is in kB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1e3


STEPS: list[tuple[str, float, float, float]] = []


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time a step; keep the 1-minute load average at its start and end.

    The machine may be shared: a load above the cores' share of this run
    means other processes took CPU time from the measurement.
    """
    start, load = time.perf_counter(), os.getloadavg()[0]
    print(f"  {name} ...", file=sys.stderr, flush=True)
    yield
    took = time.perf_counter() - start
    STEPS.append((name, took, load, os.getloadavg()[0]))
    print(f"  {name}: {took:.1f} s", file=sys.stderr)


# --- what each case asserts ----------------------------------------------------------


class Recording:
    """Per case: the fact batches asserted into the matcher, and the leaves.

    One real evaluation of each case is watched: the matcher's
    ``assert_facts`` calls give (c) exactly what the engine asserts, and the
    leaf results handed to the three-valued pass give (d) its inputs.
    """

    def __init__(self, kb: KnowledgeBase, cases: list[Case]) -> None:
        self.batches: list[list[list[dict[str, Any]]]] = []
        self.leaves: list[dict[int, Any]] = []
        matcher = kb.matcher
        real_assert, real_truth = matcher.assert_facts, evaluation._truth
        current: list[list[dict[str, Any]]] = []
        seen: list[dict[int, Any]] = []

        def record_assert(session: Session, facts: list[dict[str, Any]]) -> None:
            current.append([dict(f) for f in facts])
            real_assert(session, facts)

        def record_truth(expr: Any, leaves: Any, found: Any) -> Any:
            if not seen:
                seen.append(leaves)
            return real_truth(expr, leaves, found)

        matcher.assert_facts = record_assert  # type: ignore[method-assign]
        evaluation._truth = record_truth
        try:
            for case in cases:
                current.clear()
                seen.clear()
                kb.evaluate(case, as_of=case.last_recorded)
                self.batches.append([list(b) for b in current])
                # A case that reaches no rule (e.g. the patient died before
                # as_of) has no leaves; (c) and (d) leave it out.
                self.leaves.append(seen[0] if seen else {})
        finally:
            matcher.assert_facts = real_assert  # type: ignore[method-assign]
            evaluation._truth = real_truth


def raw_durable(kb: KnowledgeBase, batches: list[list[dict[str, Any]]], n: int) -> Any:
    """(c): the host, the start fact, the recorded facts, the session deleted.

    The ruleset's own actions stay (they assert the findings that chain, and
    need a session record to write to); no lock, context manager, per-fact
    error handling, cross-check or assessment.
    """
    matcher = kb.matcher
    host, name = matcher._host, matcher.name
    sid = f"raw{n}"
    matcher._sessions[sid] = Session(sid)
    try:
        host.assert_fact(name, {"t": "start", "sid": sid})
        for batch in batches:
            for fact in batch:
                try:
                    host.assert_fact(name, {**fact, "sid": sid})
                except Exception:  # durable's "no rule matched": normal
                    pass
    finally:
        host.delete_state(name, sid)
        del matcher._sessions[sid]


def three_valued(kb: KnowledgeBase, leaves: dict[int, Any]) -> dict[str, Any]:
    """(d): the three-valued pass over every rule, in dependency order."""
    found: dict[str, bool | None] = {}
    for ri in kb.order:
        crule = kb.rules[ri]
        value = evaluation._truth(crule.expr, leaves, found)
        for f in crule.produces:
            if value is True:
                found[f] = True
            elif value is None and found.get(f) is not True:
                found[f] = None
            else:
                found.setdefault(f, False)
    return found


# --- the measurements ---------------------------------------------------------------


def pipeline(kb: KnowledgeBase, paths: list[Path], repeat: int) -> dict[str, Row]:
    settings = Settings(KnowledgeBaseSpec(), "last")
    items = [WorkItem(str(p), None, "path") for p in paths]
    chunks = [items[i : i + CHUNK_SIZE] for i in range(0, len(items), CHUNK_SIZE)]

    def one(path: Path) -> Callable[[], Any]:
        def call() -> Any:
            case = read_input(path, catalogue=kb.catalogue)
            return kb.evaluate(case, as_of=case.last_recorded).model_dump_json()

        return call

    def chunk(c: list[WorkItem]) -> Callable[[], Any]:
        return lambda: evaluate_chunk(c, settings)

    library = timed([one(p) for p in paths], repeat)
    batched = timed([chunk(c) for c in chunks], repeat)
    batched["rate"] *= len(items) / len(chunks)  # cases, not chunks
    return {"library": library, "batch": batched}


def prepared(kb: KnowledgeBase, cases: list[Case], repeat: int) -> dict[str, Row]:
    def one(case: Case) -> Callable[[], Any]:
        return lambda: evaluation.evaluate_case(kb, case, case.last_recorded)

    chunks = [cases[i : i + CHUNK_SIZE] for i in range(0, len(cases), CHUNK_SIZE)]

    def chunk(c: list[Case]) -> Callable[[], Any]:
        times = [x.last_recorded for x in c]
        return lambda: evaluation.evaluate_cases(kb, c, times)

    single = timed([one(c) for c in cases], repeat)
    together = timed([chunk(c) for c in chunks], repeat)
    together["rate"] *= len(cases) / len(chunks)
    return {"single": single, "chunked": together}


def stages(kb: KnowledgeBase, cases: list[Case], rec: Recording, repeat: int) -> Row:
    """Mean ms per case of the stages of (b), chunked as the batch does."""
    out: dict[str, float] = {}
    n = len(cases) * repeat

    def mean(call: Callable[[Case, int], Any]) -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            for i, case in enumerate(cases):
                call(case, i)
        return (time.perf_counter() - start) / n * 1000

    views = [evaluation._view(kb, c, c.last_recorded) for c in cases]
    out["case view and calculations"] = mean(
        lambda c, _i: evaluation._view(kb, c, c.last_recorded)
    )
    start = time.perf_counter()
    for _ in range(repeat):
        for name, model in kb.models.items():
            for i in range(0, len(views), CHUNK_SIZE):
                rows = [
                    evaluation._row(kb, v, name, model)
                    for v in views[i : i + CHUNK_SIZE]
                ]
                model.score_many(rows)
    out["model scores (one call per chunk)"] = (time.perf_counter() - start) / n * 1000
    out["three-valued pass"] = mean(
        lambda _c, i: three_valued(kb, rec.leaves[i]) if rec.leaves[i] else None
    )

    def adapter(_c: Case, i: int) -> None:
        with kb.matcher.session() as session:
            for batch in rec.batches[i]:
                kb.matcher.assert_facts(session, batch)

    out["matcher through the engine's adapter"] = mean(adapter)
    out["raw durable-rules (c)"] = mean(
        lambda _c, i: raw_durable(kb, rec.batches[i], i)
    )
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all processes), /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def batch_rate(paths: list[Path], copies: int, workers: int) -> Row:
    plan = Plan([("case", [p]) for p in paths] * copies)
    settings = Settings(KnowledgeBaseSpec(), "last")
    marks: list[tuple[float, int]] = []

    def progress(summary: Any) -> None:
        marks.append((time.perf_counter(), summary.cases))

    with open(os.devnull, "w") as out:
        busy, cpu = machine_busy(), own_cpu()
        start = time.perf_counter()
        summary = run_batch(plan, out, settings, workers=workers, progress=progress)
        wall = time.perf_counter() - start
        cpu, busy = own_cpu() - cpu, machine_busy() - busy
    (t0, c0), (t1, c1) = marks[0], marks[-1]
    return {
        "cases": summary.cases,
        "failures": summary.failures,
        "wall": wall,
        "rate": summary.cases / wall,
        "steady": (c1 - c0) / (t1 - t0) if t1 > t0 else float("nan"),
        "cpu": cpu,
        "others": max(0.0, busy - cpu),
    }


def memory(kb: KnowledgeBase, cases: list[Case], total: int) -> list[tuple[int, float]]:
    """RSS after each milestone of evaluations, in chunks as the batch runs."""
    marks = [m for m in (1_000, 10_000, 100_000) if m <= total] or [total]
    out: list[tuple[int, float]] = []
    done = 0
    while len(out) < len(marks):
        for i in range(0, len(cases), CHUNK_SIZE):
            part = cases[i : i + CHUNK_SIZE]
            evaluation.evaluate_cases(kb, part, [c.last_recorded for c in part])
            done += len(part)
            if done >= marks[len(out)]:
                gc.collect()
                out.append((done, rss_mb()))
                print(f"    {done:,} evaluations: {out[-1][1]:.1f} MB", file=sys.stderr)
                if len(out) == len(marks):
                    break
    return out


# --- report -------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    return (
        f"{model}, {cores} cores; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; durable-rules {durable_version()}"
    )


def durable_version() -> str:
    try:
        from importlib.metadata import version

        return version("durable_rules")
    except Exception:  # the figure is only a label
        return getattr(durable, "__version__", "?")


def line(name: str, row: Row, unit: str = "cases/s") -> str:
    return (
        f"| {name} | {row['rate']:,.0f} {unit} | {row['p50']:.3f} | "
        f"{row['p99']:.3f} | {row['n']} |"
    )


def report_speed(
    a: dict[str, Row],
    b: dict[str, Row],
    c: Row,
    d: Row,
    parts: dict[str, float],
    ruled: int,
    total: int,
) -> None:
    print("| measurement | throughput | p50 ms | p99 ms | calls |")
    print("|---|---|---|---|---|")
    print(line("(a) full pipeline, `kb.evaluate` per bundle", a["library"]))
    print(line("(a) full pipeline, batch chunks of 16 (latency per chunk)", a["batch"]))
    print(line("(b) prepared facts, one case at a time", b["single"]))
    print(line("(b) prepared facts, chunks of 16 (latency per chunk)", b["chunked"]))
    print(line("(c) raw durable-rules, same ruleset and facts", c))
    print(line("(d) plain Python three-valued pass", d))
    if ruled < total:
        print(
            f"\n(c) and (d) run over the {ruled} cases that reach the rules; "
            f"{total - ruled} are concluded without them (the patient died "
            "before the evaluation time)."
        )
    ratio = (1000 / b["chunked"]["rate"]) / (1000 / c["rate"])
    print(f"\n(b) chunked / (c): {ratio:.1f}x\n")
    print("| stage of (b), ms per case | ms |")
    print("|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.3f} |")
    whole = 1000 / b["chunked"]["rate"]
    known = sum(ms for name, ms in parts.items() if not name.startswith("raw"))
    print(f"| leaves, point scores, assessment (the rest) | {whole - known:.3f} |")
    print(f"| whole of (b), chunked | {whole:.3f} |\n")


def report_batch(e1: Row, e2: Row) -> None:
    print(
        "| (e) batch of bundles | cases | wall s | cases/s | steady cases/s "
        "| CPU s (ours) | CPU s (other processes) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in (("1 worker", e1), ("2 workers", e2)):
        print(
            f"| {name} | {row['cases']} | {row['wall']:.2f} | {row['rate']:,.0f} | "
            f"{row['steady']:,.0f} | {row['cpu']:.1f} | {row['others']:.1f} |"
        )
    print(
        f"\n2 workers / 1 worker: {e2['rate'] / e1['rate']:.2f}x wall, "
        f"{e2['steady'] / e1['steady']:.2f}x steady\n"
    )


def report_memory(f: list[tuple[int, float]]) -> None:
    print("| (f) evaluations | RSS MB |")
    print("|---|---|")
    for n, mb in f:
        print(f"| {n:,} | {mb:.1f} |")
    growth = (f[-1][1] - f[0][1]) / f[0][1] * 100
    print(f"\nGrowth from {f[0][0]:,} to {f[-1][0]:,}: {growth:+.1f} %\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over the data")
    parser.add_argument("--batch-copies", type=int, default=5)
    parser.add_argument("--memory-cases", type=int, default=100_000)
    parser.add_argument(
        "--parts", default="abcdef", help="which of (a)-(f) to run, e.g. `e`"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.batch_copies, args.memory_cases = 1, 1, 1_000
    run = set(args.parts)
    speed = bool(run & set("abcd"))

    paths = sorted(SHARED.glob("*.json"))
    if not paths:
        sys.exit(f"no bundles in {SHARED}")
    began = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    kb = KnowledgeBase.load()
    KnowledgeBaseSpec().remember(kb)
    with step("reading the bundles"):
        cases = [read_input(p, catalogue=kb.catalogue) for p in paths]
    gc.collect()
    gc.freeze()  # as the batch workers do (engine.batch.KnowledgeBaseSpec.prepare)
    with step("recording what each case asserts"):
        rec = Recording(kb, cases)
    ruled = [i for i in range(len(cases)) if rec.leaves[i]]
    # Warm up: the unit parser, validators and caches fill on first use.
    pipeline(kb, paths[:20], 1)

    if speed:
        with step("(a) full pipeline"):
            a = pipeline(kb, paths, args.repeat)
        with step("(b) prepared facts"):
            b = prepared(kb, cases, args.repeat)
            parts = stages(kb, cases, rec, args.repeat)
        with step("(c) raw durable-rules"):
            c = timed(
                [
                    (lambda i=i: raw_durable(kb, rec.batches[i], 10**5 + i))
                    for i in ruled
                ],
                args.repeat * 3,
            )
        with step("(d) plain Python"):
            d = timed(
                [(lambda i=i: three_valued(kb, rec.leaves[i])) for i in ruled],
                args.repeat * 3,
            )
    peak_before_batch = peak_mb()
    if "e" in run:
        with step("(e) batch, 1 and 2 workers"):
            # Best of three (the shortest wall time) for each: on a shared
            # machine another process can take a core for seconds at a time.
            tries = 1 if args.quick else 3
            e1 = min((batch_rate(paths, args.batch_copies, 1) for _ in range(tries)),
                     key=lambda r: r["wall"])  # fmt: skip
            e2 = min((batch_rate(paths, args.batch_copies, 2) for _ in range(tries)),
                     key=lambda r: r["wall"])  # fmt: skip
    if "f" in run:
        with step("(f) memory"):
            f = memory(kb, cases, args.memory_cases)

    facts = statistics.mean(sum(len(x) for x in rec.batches[i]) for i in ruled)
    print(f"# cdss benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"Machine: {machine()}  ")
    print(f"Command: `.venv/bin/python bench/run.py {' '.join(sys.argv[1:])}`  ")
    print(
        f"Knowledge base: {len(kb.rules)} rules in {len(kb.files)} rulesets, "
        f"{len(kb.models)} models, {len(kb.leaves)} leaves, {len(kb.gates)} strata; "
        f"{facts:.1f} facts asserted per case on average; content hash "
        f"{kb.info.content_hash[:12]}  "
    )
    took = time.perf_counter() - began
    print(
        f"Data: {len(paths)} shared Synthea bundles; run took {took:.0f} s; "
        f"load average {load_at_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end\n"
    )
    if speed:
        report_speed(a, b, c, d, parts, len(ruled), len(cases))
    if "e" in run:
        report_batch(e1, e2)
    if "f" in run:
        report_memory(f)
    print(
        f"Peak RSS: this process {peak_mb():.0f} MB (before the batch runs "
        f"{peak_before_batch:.0f} MB); largest worker process "
        f"{peak_mb(resource.RUSAGE_CHILDREN):.0f} MB"
    )
    print("\n| step | seconds | load average at start | at end |")
    print("|---|---|---|---|")
    for name, took, load0, load1 in STEPS:
        print(f"| {name} | {took:.1f} | {load0:.2f} | {load1:.2f} |")


if __name__ == "__main__":
    main()
