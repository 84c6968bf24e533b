"""The benchmark script runs, and its baselines agree with the engine.

Not a timing test: no figure of speed is asserted. ``bench/run.py --quick``
is run on the shared bundles (skipped when they are absent), and what is
checked is what the figures rest on: every baseline fires exactly the rules
the engine reports, on every case that reaches the rules.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fhir"

pytestmark = pytest.mark.skipif(
    not any(SHARED.glob("*.json")), reason=f"no shared bundles at {SHARED}"
)


def test_the_quick_benchmark_runs_and_its_baselines_fire_the_engines_rules() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = done.stdout
    for part in (
        "(a) full pipeline",
        "(b) prepared facts",
        "(c) durable-rules",
        "(c1)",
        "(c0)",
        "(d) plain Python",
        "(e) batch",
        "(f) evaluations",
    ):
        assert part in report, part
    agree = re.search(
        r"rules_fired`: \(c\) (\d+) of (\d+), \(c1\) (\d+) of \d+, "
        r"\(c0\) (\d+) of \d+, \(d\) (\d+) of \d+",
        report,
    )
    assert agree, report[:2000]
    reached = int(agree.group(2))
    assert reached > 0
    assert [int(agree.group(i)) for i in (1, 3, 4, 5)] == [reached] * 4
