"""The cdss benchmark: one command, every figure of docs/benchmark.md.

    .venv/bin/python bench/run.py                       # the full run (~10 min)
    .venv/bin/python bench/run.py --memory-cases 10000  # a shorter memory test
    .venv/bin/python bench/run.py --parts e             # (e) alone
    .venv/bin/python bench/run.py --quick               # a smoke run (~20 s)

It measures, on the shared Synthea bundles (../shared/data/fhir, or --data):

(a) the full pipeline per bundle: read (JSON, FHIR reader) and evaluate, both
    as ``kb.evaluate(path)`` one bundle at a time and as the batch does it
    (``evaluate_chunk``: chunks of 16, one model call per chunk, JSON out);
(b) evaluation from prepared facts (Case objects already read), one case at a
    time and in chunks, with the time of each stage;
(c) thresholds in the matcher: durable-rules doing the work the engine moves
    out of it. The engine's compiled rulesets (the same conjuncts, gates and
    finding patterns), registered afresh on a host of their own, in which each
    pattern on a *flat* leaf (one numeric fact against cut points, on one
    reading, no duration; the report gives their number) is a durable test
    (``$gte``, ``$lt``...) on a value fact ``{"t": "val", "k": L, "x": n}``.
    Per case it times: a fresh session, the start fact, the case's prepared
    facts one at a time (a value fact per flat leaf with a value, a truth fact
    per other decided leaf some pattern uses, the engine's unknown findings
    and gates), the chaining they set off, and deleting the session. The
    actions only note the rule and assert its findings once per session. Not
    timed: evaluating the leaves (with the engine's own code, in full, with no
    short-circuit) and building the facts, done once per case beforehand;
(c1) (c) from the case: (c)'s facts worked out from the prepared Case objects
    (b) is given, inside the timing, then (c)'s durable run. Per chunk of 16
    cases (the chunks of (b)): each case's view with its calculations
    (``_view``), one ``score_many`` call per model for the chunk, then per
    case that reaches the rules, with no evidence and no short-circuit: the
    point scores (on demand), each flat leaf's value (its numeric readings in
    the window, the latest one or their aggregate, rounded and converted into
    the leaf's cut unit as the engine compares it), every other leaf some
    pattern uses decided by the engine's evidence-free decision
    (``engine.decisions.decider``), the unknown findings and gates appended,
    and the same durable run as (c). Not timed:
    the plan (flat leaves, cut units, windows parsed, leaves patterns use),
    done once per knowledge base as (c)'s ruleset is compiled; which cases
    reach the rules; and the unknown-finding and gate facts, recorded from the
    engine, as (c) has them: they come from the engine's three-valued pass,
    which neither (c) nor (c1) performs (bench/casefacts.py). It runs over
    all the cases, as (b) chunked does, and its latency is per chunk;
(c0) the matcher alone, with the leaf results given: the engine's own ruleset
    and host, driven with exactly the facts the engine asserted for the case
    (its leaf truth facts, unknown findings, gates; recorded from one real
    evaluation). This is a floor under (b)'s matcher share, which (b)
    contains, so (b) can never be faster than (c0);
(d) plain Python, on (c)'s prepared values and truth values: the flat
    comparisons in Python (the same cut points and units as (c)'s patterns),
    then the three-valued pass (``engine.truth.truth``) over every rule in
    dependency order;
(e) batch throughput (``run_batch``) with 1 and 2 worker processes, best of 3;
(f) resident memory after 1k, 10k and 100k evaluations.

(c), (c0) and (d) run over the same cases (those that reach the rules); (c),
(c1), (c0) and (d) make 3x the passes of (a) and (b). Each is checked once,
untimed, against the rules the engine reports as fired for each case, and
(c1)'s values and facts against (c)'s. It is not part of the test suite.
Figures go to stdout as Markdown.

Method: one process loads the knowledge base, reads the bundles into Case
objects, then sets up its garbage collector exactly as a batch worker process
does (``engine.batch.KnowledgeBaseSpec.prepare``: ``gc.collect()`` then
``gc.freeze()``), so that (a)-(d), and (f), run under the batch workers'
settings; the worker processes of (e) set up their own the same way.
Latencies are ``time.perf_counter()`` around each call.
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
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import durable  # noqa: E402

import engine.evaluation as evaluation  # noqa: E402
from bench import baselines  # noqa: E402
from bench.baselines import as_of  # noqa: E402
from bench.casefacts import CaseFacts  # noqa: E402
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

SHARED = ROOT.parent / "shared" / "data" / "fhir"

Row = dict[str, Any]
Fact = dict[str, Any]


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


# --- the measurements ---------------------------------------------------------------


def pipeline(kb: KnowledgeBase, paths: list[Path], repeat: int) -> dict[str, Row]:
    settings = Settings(KnowledgeBaseSpec(), "last")
    items = [WorkItem(str(p), None, "path") for p in paths]
    chunks = [items[i : i + CHUNK_SIZE] for i in range(0, len(items), CHUNK_SIZE)]

    def one(path: Path) -> Callable[[], Any]:
        def call() -> Any:
            case = read_input(path, catalogue=kb.catalogue)
            return kb.evaluate(case, as_of=as_of(case)).model_dump_json()

        return call

    def chunk(c: list[WorkItem]) -> Callable[[], Any]:
        return lambda: evaluate_chunk(c, settings)

    library = timed([one(p) for p in paths], repeat)
    batched = timed([chunk(c) for c in chunks], repeat)
    batched["rate"] *= len(items) / len(chunks)  # cases, not chunks
    return {"library": library, "batch": batched}


def prepared(kb: KnowledgeBase, cases: list[Case], repeat: int) -> dict[str, Row]:
    def one(case: Case) -> Callable[[], Any]:
        return lambda: evaluation.evaluate_case(kb, case, as_of(case))

    chunks = [cases[i : i + CHUNK_SIZE] for i in range(0, len(cases), CHUNK_SIZE)]

    def chunk(c: list[Case]) -> Callable[[], Any]:
        times = [as_of(x) for x in c]
        return lambda: evaluation.evaluate_cases(kb, c, times)

    single = timed([one(c) for c in cases], repeat)
    together = timed([chunk(c) for c in chunks], repeat)
    together["rate"] *= len(cases) / len(chunks)
    return {"single": single, "chunked": together}


def stages(
    kb: KnowledgeBase,
    cases: list[Case],
    recorded: list[baselines.Recorded | None],
    repeat: int,
) -> Row:
    """Mean ms per case of the stages of (b), chunked as the batch does.

    The leaves are evaluated as the three-valued pass reads them, so the two
    are one stage, left in "the rest" with point scores and the assessment.
    (c0) is shown beside the adapter, over the same cases; it is not a stage.
    """
    out: dict[str, float] = {}
    n = len(cases) * repeat

    def mean(call: Callable[[Case, int], Any]) -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            for i, case in enumerate(cases):
                call(case, i)
        return (time.perf_counter() - start) / n * 1000

    views = [evaluation._view(kb, c, as_of(c)) for c in cases]
    out["case view and calculations"] = mean(
        lambda c, _i: evaluation._view(kb, c, as_of(c))
    )
    start = time.perf_counter()
    for _ in range(repeat):
        for name, model in kb.models.items():
            for i in range(0, len(views), CHUNK_SIZE):
                rows = [
                    evaluation._row(kb, v, name, model)[0]
                    for v in views[i : i + CHUNK_SIZE]
                ]
                model.score_many(rows)
    out["model scores (one call per chunk)"] = (time.perf_counter() - start) / n * 1000

    # A case that reaches no rule asserts nothing, in the engine as here.
    def adapter(_c: Case, i: int) -> None:
        r = recorded[i]
        if r is not None:
            with kb.matcher.session() as session:
                for batch in r.batches:
                    kb.matcher.assert_facts(session, batch)

    def floor(_c: Case, i: int) -> None:
        r = recorded[i]
        if r is not None:
            baselines.raw_durable(kb, r.batches, f"stage{i}")

    out["matcher through the engine's adapter"] = mean(adapter)
    out[FLOOR] = mean(floor)
    return out


FLOOR = "(c0) the matcher alone, same facts (not a stage: inside the adapter)"


class Baselines:
    """(c), (c1), (c0) and (d), their per-case inputs, and their agreement.

    Built once, untimed: the (c) ruleset, the prepared facts of every case
    that reaches the rules, (c1)'s plan and chunks, and one run of each
    baseline per case compared with the rules the engine reported as fired;
    (c1)'s facts are compared with (c)'s.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        cases: list[Case],
        recorded: list[baselines.Recorded | None],
    ) -> None:
        self.kb = kb
        self.flats = baselines.flat_leaves(kb)
        self.thresholds = baselines.ThresholdMatcher(kb, self.flats)
        self.ruled = [i for i, r in enumerate(recorded) if r is not None]
        self.recorded = [r for r in recorded if r is not None]
        self.prepared = [
            baselines.prepare(kb, cases[i], r, self.flats)
            for i, r in zip(self.ruled, self.recorded, strict=True)
        ]
        self._runs = 0

        # (c1) chunks all the cases as (b) chunked does, from the same Case
        # objects and evaluation times.
        self.from_case = CaseFacts(kb, self.flats, self.thresholds, recorded)
        times = [as_of(c) for c in cases]
        self.chunks = [
            (i, cases[i : i + CHUNK_SIZE], times[i : i + CHUNK_SIZE])
            for i in range(0, len(cases), CHUNK_SIZE)
        ]
        made = [f for chunk in self.chunks for f in self.from_case.chunk(*chunk)]
        fired_c1 = [f for n in range(len(self.chunks)) for f in self.c1(n)]
        self.values_equal = self.facts_equal = 0
        self.values_differ: list[str] = []
        self.check_values(cases, made)

        # Rule ids, as the assessment gives them.
        def ids(fired: set[int]) -> frozenset[str]:
            return frozenset(kb.rules[ri].rule.id for ri in fired)

        self.agree: dict[str, int] = {"c": 0, "c1": 0, "c0": 0, "d": 0}
        self.differ: dict[str, list[str]] = {"c": [], "c1": [], "c0": [], "d": []}
        for n, r in enumerate(self.recorded):
            c1 = fired_c1[self.ruled[n]]
            got = {
                "c": ids(self.c(n)),
                "c1": ids(c1) if c1 is not None else frozenset({"(no run)"}),
                "c0": ids(self.c0(n)),
                "d": ids(self.d(n)),
            }
            for part, fired in got.items():
                if fired == r.rules_fired:
                    self.agree[part] += 1
                else:
                    extra, lacking = fired - r.rules_fired, r.rules_fired - fired
                    self.differ[part].append(
                        f"{cases[self.ruled[n]].case_id}: +{sorted(extra)} "
                        f"-{sorted(lacking)}"
                    )

        reached = [i for i, f in enumerate(fired_c1) if f is not None]
        if reached != self.ruled:
            self.differ["c1"].append(f"cases run {reached}, not {self.ruled}")

    def check_values(self, cases: list[Case], made: list[list[Fact] | None]) -> None:
        """Compare (c1)'s facts, case by case, with those (c) is given.

        Counts in ``values_equal`` and ``facts_equal`` the cases on which
        (c1)'s flat-leaf values, and its whole list of facts in order, equal
        (c)'s, and adds each differing value to ``values_differ``, as text.
        """
        for n, i in enumerate(self.ruled):
            facts, given = made[i] or [], self.prepared[n]
            mine = {f["k"]: f["x"] for f in facts if f["t"] == "val"}
            if mine == given.values:
                self.values_equal += 1
            for k in sorted(mine.keys() | given.values.keys()):
                if mine.get(k) != given.values.get(k):
                    self.values_differ.append(
                        f"{cases[i].case_id}: leaf {k}: (c1) {mine.get(k)!r}, "
                        f"(c) {given.values.get(k)!r}"
                    )
            if facts == given.facts:
                self.facts_equal += 1

    def c(self, n: int) -> set[int]:
        """(c) on the n-th case that reaches the rules."""
        return self.thresholds.run(self.prepared[n].facts)

    def c1(self, n: int) -> list[set[int] | None]:
        """(c1) on the n-th chunk of all the cases (None: reaches no rule)."""
        return self.from_case.run(*self.chunks[n])

    def c0(self, n: int) -> set[int]:
        """(c0) on the n-th case that reaches the rules."""
        self._runs += 1
        return baselines.raw_durable(
            self.kb, self.recorded[n].batches, f"raw{self._runs}"
        )

    def d(self, n: int) -> set[int]:
        """(d) on the n-th case that reaches the rules."""
        return baselines.plain_python(self.kb, self.flats, self.prepared[n])


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
            evaluation.evaluate_cases(kb, part, [as_of(c) for c in part])
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
    c1: Row,
    c0: Row,
    d: Row,
    parts: dict[str, float],
    base: Baselines,
    total: int,
) -> None:
    print("| measurement | throughput | p50 ms | p99 ms | calls |")
    print("|---|---|---|---|---|")
    print(line("(a) full pipeline, `kb.evaluate` per bundle", a["library"]))
    print(line("(a) full pipeline, batch chunks of 16 (latency per chunk)", a["batch"]))
    print(line("(b) prepared facts, one case at a time", b["single"]))
    print(line("(b) prepared facts, chunks of 16 (latency per chunk)", b["chunked"]))
    print(line("(c) durable-rules, flat threshold tests in the matcher", c))
    print(
        line(
            "(c1) (c) from the case: values prepared from the readings, then "
            "durable (latency per chunk of 16)",
            c1,
        )
    )
    print(line("(c0) the matcher alone, leaf results given (floor of (b))", c0))
    print(line("(d) plain Python, flat comparisons and three-valued pass", d))
    ruled = len(base.ruled)
    if ruled < total:
        print(
            f"\n(c), (c0) and (d) run over the {ruled} cases that reach the rules; "
            f"{total - ruled} are concluded without them (the patient died "
            f"before the evaluation time). (c1), like (b) chunked, runs over all "
            f"{total}, in the same chunks; those {total - ruled} get their view and "
            "model scores, then nothing."
        )
    prepared = base.prepared
    asserted = statistics.mean(len(p.facts) for p in prepared)
    valued = statistics.mean(len(p.values) for p in prepared)
    engine = statistics.mean(sum(len(x) for x in r.batches) for r in base.recorded)
    print(
        f"\nFacts per case: (c) {asserted:.1f}, {valued:.1f} of them value facts "
        f"(of {len(base.flats)} flat leaves); (c0) {engine:.1f}, those the engine "
        "asserted."
    )
    agree = ", ".join(
        f"({part}) {base.agree[part]} of {ruled}" for part in ("c", "c1", "c0", "d")
    )
    print(f"\nCases whose fired rules equal the engine's `rules_fired`: {agree}.")
    for part, differ in base.differ.items():
        for text in differ:
            print(f"- ({part}) differs on {text}")
    print(
        f"\n(c1)'s flat-leaf values equal those (c) is given on {base.values_equal} "
        f"of {ruled} cases; its facts, in order, on {base.facts_equal} of {ruled}."
    )
    for text in base.values_differ:
        print(f"- value differs on {text}")
    whole = 1000 / b["chunked"]["rate"]
    print(f"\n(b) chunked / (c1): {whole / (1000 / c1['rate']):.1f}x  ")
    print(f"(b) chunked / (c): {whole / (1000 / c['rate']):.1f}x  ")
    print(f"(b) chunked / (c0): {whole / (1000 / c0['rate']):.1f}x  ")
    print(f"(c1) / (c): {(1000 / c1['rate']) / (1000 / c['rate']):.1f}x  ")
    print(f"(c) / (d): {(1000 / c['rate']) / (1000 / d['rate']):.1f}x\n")
    print("| stage of (b), ms per case | ms |")
    print("|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.3f} |")
    known = sum(ms for name, ms in parts.items() if name != FLOOR)
    print(
        "| leaves and three-valued pass, point scores, assessment (the rest) "
        f"| {whole - known:.3f} |"
    )
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
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED,
        help=f"a folder of FHIR bundles (default: {SHARED})",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.batch_copies, args.memory_cases = 1, 1, 1_000
    run = set(args.parts)
    speed = bool(run & set("abcd"))

    paths = sorted(args.data.glob("*.json"))
    if not paths:
        sys.exit(f"no bundles in {args.data}; name the folder with --data")
    began = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    kb = KnowledgeBase.load()
    KnowledgeBaseSpec().remember(kb)
    with step("reading the bundles"):
        cases = [read_input(p, catalogue=kb.catalogue) for p in paths]
    # The collector as a batch worker sets it (freeze what is alive). After
    # reading: the cases live for the whole run, as no case does in a worker,
    # and frozen they are not walked by full collections a worker would not
    # make.
    KnowledgeBaseSpec().prepare()
    with step("recording what each case asserts"):
        recorded = baselines.record(kb, cases)
    with step("preparing (c), (c1) and (d), checking them against the engine"):
        base = Baselines(kb, cases, recorded)
    ruled = range(len(base.ruled))
    # Warm up: the unit parser, validators and caches fill on first use.
    pipeline(kb, paths[:20], 1)

    if speed:
        with step("(a) full pipeline"):
            a = pipeline(kb, paths, args.repeat)
        with step("(b) prepared facts"):
            b = prepared(kb, cases, args.repeat)
            parts = stages(kb, cases, recorded, args.repeat)
        # (c), (c1), (c0) and (d) are short: three times the passes, for
        # steadier figures.
        with step("(c) thresholds in the matcher"):
            c = timed([partial(base.c, n) for n in ruled], args.repeat * 3)
        with step("(c1) (c) from the case"):
            c1 = timed(
                [partial(base.c1, n) for n in range(len(base.chunks))],
                args.repeat * 3,
            )
            c1["rate"] *= len(cases) / len(base.chunks)  # cases, not chunks
        with step("(c0) the matcher alone"):
            c0 = timed([partial(base.c0, n) for n in ruled], args.repeat * 3)
        with step("(d) plain Python"):
            d = timed([partial(base.d, n) for n in ruled], args.repeat * 3)
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

    facts = statistics.mean(sum(len(b) for b in r.batches) for r in base.recorded)
    print(f"# cdss benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"Machine: {machine()}  ")
    print(f"Command: `.venv/bin/python bench/run.py {' '.join(sys.argv[1:])}`  ")
    print(
        f"Knowledge base: {len(kb.rules)} rules in {len(kb.files)} rulesets, "
        f"{len(kb.models)} models, {len(kb.leaves)} leaves ({len(base.flats)} flat), "
        f"{len(kb.gates)} strata; the engine asserts {facts:.1f} facts per case on "
        f"average; content hash "
        f"{kb.info.content_hash[:12]}  "
    )
    took = time.perf_counter() - began
    print(
        f"Data: {len(paths)} bundles in {args.data}; run took {took:.0f} s; "
        f"load average {load_at_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end\n"
    )
    if speed:
        report_speed(a, b, c, c1, c0, d, parts, base, len(cases))
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
