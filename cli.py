"""The ``cdss`` command: evaluate cases, check rules, train models.

Exit codes: 0 success; 1 problems found (``rules check``); 2 unusable
arguments; 3 unreadable patient input; 4 knowledge base refused (rule files);
5 model unusable; 6 evaluation failed; 7 some batch inputs failed (``batch``:
each has an error record in the output); 130 interrupted by Ctrl-C (a batch's
output holds whole lines up to where it stopped).
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings


def _leave_quietly(_signum: int, _frame: object) -> None:
    sys.exit(130)


# Ctrl-C in the second or two while the libraries below import leaves with
# exit code 130 and no traceback; the usual handling is back once they are in.
_QUIET_START = (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
)
if _QUIET_START:
    signal.signal(signal.SIGINT, _leave_quietly)

import functools
import io
import json
import logging
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO, cast

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from engine import (
    NOTICE,
    Assessment,
    InputError,
    KnowledgeBase,
    ModelError,
    RuleFileError,
    Undetermined,
    read_input,
)
from engine import batch as batch_engine
from engine.bulk import names_input
from engine.errors import CdssError, Problem
from engine.facts import evaluation_time, first_few
from engine.knowledge import default_rules_dir, rule_file_paths
from engine.nearest import suggest
from engine.points import SCORE_FACT_PREFIX

if _QUIET_START:
    signal.signal(signal.SIGINT, signal.default_int_handler)

EXIT_PROBLEMS, EXIT_USAGE, EXIT_INPUT, EXIT_RULES, EXIT_MODEL, EXIT_EVAL = (
    1,
    2,
    3,
    4,
    5,
    6,
)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it

err_console = Console(stderr=True)


def _certainty(value: float) -> str:
    # Two decimals, but never rounded up to certain: 0.998 is not 1.00.
    text = f"{value:.2f}"
    if text == "1.00" and value < 1.0:
        return f"{math.floor(value * 1000) / 1000:.3f}"
    return text


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(code)


def _as_of(value: str | None, last_recorded: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value == "last":
        if last_recorded is None:
            _fail(
                "--as-of last: the record has no dated entries (none up to now; "
                "a later date is a data error); give a date",
                EXIT_USAGE,
            )
        return last_recorded
    try:
        # A date alone is the end of that day, so that the day's readings
        # count. (datetime.fromisoformat also takes a date alone, as midnight:
        # the date is tried first.)
        return evaluation_time(date.fromisoformat(value))
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            _fail(
                f"--as-of `{value}` is not a date (YYYY-MM-DD), a date-time or `last`",
                EXIT_USAGE,
            )
            raise
    return evaluation_time(parsed)


def _load(
    rules: Path | None, models: Path | None, approved_only: bool = False
) -> KnowledgeBase:
    try:
        return KnowledgeBase.load(rules, models, approved_only=approved_only)
    except RuleFileError as err:
        for p in err.problems:
            err_console.print(str(p), highlight=False, markup=False)
        _fail("the knowledge base was refused; fix the problems above", EXIT_RULES)
    except ModelError as err:
        _fail(str(err), EXIT_MODEL)
    raise AssertionError("unreachable")


def _no_rule_concludes(kb: KnowledgeBase, name: str) -> str:
    known = sorted({p for r in kb.rules for p in r.produces})
    return f"no rule concludes `{name}`; " + (
        suggest(name, known)
        or f"the rules conclude {first_few(known, 6)} (each rule's `then:` names "
        "what it concludes)"
    )


class _Commands(click.Group):
    """The cdss group: Ctrl-C anywhere exits 130 (click's own way is exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Commands)
@click.version_option(package_name="cdss-engine", prog_name="cdss")
@click.option(
    "-v", "--verbose", count=True, help="-v for progress, -vv for rule firing."
)
def main(verbose: int) -> None:
    """cdss: clinical decision support. Not a medical device."""
    level = (
        logging.WARNING
        if verbose == 0
        else logging.INFO
        if verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rich", "json"]),
    default="rich",
    show_default=True,
)
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Evaluation time: YYYY-MM-DD (the end of that day, UTC), a date-time, "
    "or `last` (the record's last entry). Default: now.",
)
@click.option(
    "--rules",
    type=click.Path(path_type=Path),
    default=None,
    help="Rule folder or file (default: the bundled rules/).",
)
@click.option(
    "--models",
    type=click.Path(path_type=Path),
    default=None,
    help="Models folder (default: the bundled models/).",
)
@click.option(
    "--without-conditions",
    is_flag=True,
    help="Leave the record's own problem list out of the evaluation.",
)
@click.option(
    "--approved-only",
    is_flag=True,
    help="Run only rules marked approved, with a reviewer and review date, "
    "and not past their review date.",
)
def evaluate(
    file: Path,
    fmt: str,
    as_of: str | None,
    rules: Path | None,
    models: Path | None,
    without_conditions: bool,
    approved_only: bool,
) -> None:
    """Evaluate a FHIR R4 Bundle or a case file."""
    kb = _load(rules, models, approved_only)
    try:
        case = read_input(file, catalogue=kb.catalogue)
    except InputError as err:
        _fail(str(err), EXIT_INPUT)
        return
    when = _as_of(as_of, case.last_time())
    try:
        result = kb.evaluate(case, as_of=when, use_conditions=not without_conditions)
    except InputError as err:  # the record itself (a birth date after as_of)
        _fail(str(err), EXIT_INPUT)
        return
    except CdssError as err:
        _fail(f"{file}: evaluation failed: {err}", EXIT_EVAL)
        return
    if fmt == "json":
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        render(result, Console())


def _facts_text(result_facts: list[Any]) -> str:
    parts = []
    for f in result_facts[:4]:
        value = f"{f.value:g}" if isinstance(f.value, float) else str(f.value)
        unit = f" {f.unit}" if f.unit else ""
        agg = f" ({f.aggregate} of {f.readings})" if f.aggregate != "latest" else ""
        when = f" @ {f.time.date()}" if f.time else ""
        if f.age_days is not None and f.age_days > 90:
            when += f" ({f.age_days} days old)"
        parts.append(f"{f.name} {value}{unit}{agg}{when}")
    if len(result_facts) > 4:
        parts.append(f"+{len(result_facts) - 4} more")
    return escape("; ".join(parts))


def render(result: Assessment, console: Console) -> None:
    """Show an assessment in the terminal."""
    p = result.patient
    status_style = {"complete": "green", "partial": "yellow", "not_evaluable": "red"}
    head = Text()
    head.append(f"Case {result.case_id}  ", style="bold")
    head.append(f"age {p.age if p.age is not None else '?'}, sex {p.sex or '?'}; ")
    head.append(f"{p.readings} readings; as of {result.as_of.date()}; ")
    head.append(result.status, style=status_style[result.status])
    if p.conditions:
        head.append(f"\nproblem list: {', '.join(p.conditions)}")
    if p.medications:
        head.append(f"\nmedications: {', '.join(p.medications)}")
    console.print(Panel(head, title="cdss assessment", expand=False))
    for problem in result.problems:
        console.print(f"[yellow]{result.status}:[/] {escape(problem)}", highlight=False)

    table = Table(title="Diagnoses", show_lines=False, expand=True)
    for col in ("diagnosis", "SNOMED CT", "certainty", "rules", "evidence"):
        table.add_column(col, overflow="fold")
    for d in result.diagnoses:
        table.add_row(
            escape(d.display),
            d.code,
            _certainty(d.certainty),
            ", ".join(r.rule_id for r in d.evidence.rules),
            _facts_text(d.evidence.facts),
        )
    console.print(table if result.diagnoses else "[dim]No diagnoses.[/]")

    if result.findings:
        ft = Table(title="Findings", expand=True)
        ft.add_column("finding", overflow="fold")
        ft.add_column("rule", overflow="fold")
        ft.add_column("evidence", overflow="fold")
        for f in result.findings:
            if f.range is not None:  # a point score: its total and its items
                total = (
                    f"= {f.value:g}"
                    if f.value is not None
                    else f"cannot be determined ({f.range[0]:g} to "
                    f"{f.range[1]:g}; missing {', '.join(f.missing)})"
                )
                items = ", ".join(
                    f"{c.id} {'?' if c.points is None else f'{c.points:g}'}"
                    for c in f.components
                )
                ft.add_row(escape(f"{f.display or f.id} {total}"), "point score", items)
                continue
            ft.add_row(
                escape(f.display or f.id),
                f.evidence.rules[0].rule_id,
                _facts_text(f.evidence.facts),
            )
        console.print(ft)

    rt = Table(title="Recommendations", expand=True)
    for col in ("id", "recommendation", "strength", "certainty", "status"):
        rt.add_column(col, overflow="fold")
    for r in result.recommendations:
        made = bool(r.evidence.rules)
        reasons = escape("; ".join(b.reason for b in r.blocked_by))
        if r.status == "recommended":
            status = "[green]recommended[/]"
        elif made:
            status = f"[red]blocked[/]: {reasons}"
        else:  # no rule made it: a standing "do not", shown with its reason
            status = f"[red]not to be given[/]: {reasons}"
        certainty = _certainty(r.certainty) if made else "-"
        rt.add_row(r.id, escape(r.text), r.strength, certainty, status)
    console.print(rt if result.recommendations else "[dim]No recommendations.[/]")

    # A model whose inputs this record lacks (a breast cytology model for a
    # blood-pressure visit) is one dim line, not a paragraph per patient.
    unscored = [
        f"{s.name} (missing {first_few(s.missing)})"
        for s in result.scores
        if s.value is None
    ]
    if unscored:
        console.print(
            f"[dim]Scores not available: {escape('; '.join(unscored))}[/]",
            highlight=False,
        )
    for s in result.scores:
        if s.value is not None:
            top = ", ".join(f"{n} {v:+.2f}" for n, v in s.contributions)
            flag = (
                f" [yellow]outside training range: {', '.join(s.out_of_range)}[/]"
                if s.out_of_range
                else ""
            )
            console.print(
                f"Score [bold]{s.name}[/] ({s.model_id} {s.model_version}): "
                f"{s.value:.3f}; top inputs: {top}{flag}",
                highlight=False,
            )

    if result.undetermined:
        # One row per ruleset keeps the table readable; JSON has every rule.
        ut = Table(title="Cannot be determined", expand=True)
        ut.add_column("ruleset", overflow="fold")
        ut.add_column("rules", overflow="fold")
        ut.add_column("missing facts", overflow="fold")
        groups: dict[str, list[Undetermined]] = {}
        for u in result.undetermined:
            groups.setdefault(u.ruleset, []).append(u)
        for ruleset, members in groups.items():
            missing = sorted({m for u in members for m in u.missing})
            ut.add_row(
                ruleset,
                escape(", ".join(u.rule_id for u in members)),
                escape(", ".join(missing) or "depends on undetermined findings"),
            )
        console.print(ut)
    for note in result.notes:
        console.print(f"[dim]note: {escape(note)}[/]", highlight=False)
    console.print(Panel(NOTICE, style="bold yellow", expand=False))


@main.group()
def rules() -> None:
    """Work with rule files."""


@rules.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--models", type=click.Path(path_type=Path), default=None)
@click.option(
    "--approved-only",
    is_flag=True,
    help="Run only rules marked approved, with a reviewer and review date, "
    "and not past their review date.",
)
def rules_check(
    paths: tuple[Path, ...], fmt: str, models: Path | None, approved_only: bool
) -> None:
    """Check rule files; every problem of every file, located.

    A single file is checked with the other rule files of its folder as
    context (findings they assert), and only its own problems are shown.
    Exit code 0 clean, 1 problems found, 2 unusable arguments.
    """
    missing = [p for p in paths if not p.exists()]
    if missing:
        _fail(f"no such file or folder: {', '.join(map(str, missing))}", EXIT_USAGE)
    targets = list(paths) or [default_rules_dir()]
    context = sorted({p.parent if p.is_file() else p for p in targets})
    shown = {str(f.resolve()) for f in rule_file_paths(targets)}
    problems: list[Problem] = []
    try:
        kb = KnowledgeBase.load(context, models, approved_only=approved_only)
        problems = kb.warnings
    except RuleFileError as err:
        problems = err.problems
    except ModelError as err:
        _fail(str(err), EXIT_MODEL)
    from engine.ruletests import check_rule_tests, rule_test_paths

    tests = rule_test_paths(targets)
    shown |= {str(t.resolve()) for t in tests}
    loaded = not any(p.severity == "error" for p in problems)
    if loaded:
        problems += check_rule_tests(kb, tests)[1]
    # Problems of the files asked about, or of a folder named itself (one
    # with no rule files).
    asked = shown | {str(t.resolve()) for t in targets}
    elsewhere = sorted(
        {
            Path(p.path).name
            for p in problems
            if p.severity == "error" and str(Path(p.path).resolve()) not in asked
        }
    )
    problems = [p for p in problems if str(Path(p.path).resolve()) in asked]
    if fmt == "json":
        sys.stdout.write(json.dumps([asdict(p) for p in problems], indent=2) + "\n")
    else:
        for p in problems:
            click.echo(str(p))
        errors = sum(1 for p in problems if p.severity == "error")
        click.echo(
            f"{errors} error(s), {len(problems) - errors} warning(s) "
            f"in {len(shown)} file(s)"
        )
        if elsewhere:
            # Checked alone, the file may be clean while its folder is not.
            click.echo(
                f"note: other files of the folder have errors ({first_few(elsewhere)}):"
                " the knowledge base does not load, and rule tests cannot be "
                "checked or run, until they are fixed (`cdss rules check "
                f"{context[0]}`)"
            )
    if any(p.severity == "error" for p in problems):
        sys.exit(EXIT_PROBLEMS)


@rules.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The knowledge base to test (default: the folder of the test files; "
    "with no PATH, the bundled rules/).",
)
@click.option("--models", type=click.Path(path_type=Path), default=None)
def rules_test(
    paths: tuple[Path, ...], rules_dir: Path | None, models: Path | None
) -> None:
    """Run rule tests (*.test.yaml); show expected versus got for each failure.

    The knowledge base is the folder of the test files (or --rules); with no
    PATH, the bundled rules/ and their tests.

    Exit code 0 all passed, 1 failures, 2 unusable arguments, 4 rules refused.
    """
    from engine.ruletests import run_rule_tests

    missing = [p for p in paths if not p.exists()]
    if missing:
        _fail(f"no such file or folder: {', '.join(map(str, missing))}", EXIT_USAGE)
    if rules_dir is None and paths:
        # The rules under test are the ones beside the test files.
        folders = sorted({p if p.is_dir() else p.parent for p in paths})
        if all(rule_file_paths([f]) for f in folders):
            rules_dir = folders[0] if len(folders) == 1 else None
            if len(folders) > 1:
                _fail("test files in several folders: give --rules", EXIT_USAGE)
        else:
            click.echo(
                f"note: no rule files in {first_few([str(f) for f in folders])}: "
                "the tests run against the bundled rules/ (give --rules to "
                "test others)",
                err=True,
            )
    kb = _load(rules_dir, models)
    results, problems = run_rule_tests(
        kb, list(paths) or [rules_dir or default_rules_dir()]
    )
    for p in problems:
        click.echo(str(p))
    for r in results:
        if r.passed:
            click.echo(f"PASS {r.file}:{r.line} {r.name}")
            continue
        click.echo(f"FAIL {r.file}:{r.line} {r.name}")
        for failure in r.failures:
            click.echo(f"     {failure}")
        click.echo(f"     rules fired: {', '.join(r.fired) or 'none'}")
    if not results and not problems:
        named = first_few([str(p) for p in paths]) or str(default_rules_dir())
        click.echo(f"no rule tests (*.test.yaml) found in {named}")
    failed = sum(1 for r in results if not r.passed)
    unrun = len({p.path for p in problems if p.severity == "error"})
    click.echo(
        f"{len(results) - failed} passed, {failed} failed"
        + (f"; {unrun} file(s) not run for the errors above" if unrun else "")
    )
    if failed or problems or not results:
        sys.exit(EXIT_PROBLEMS)


@rules.command("schema")
@click.option("--tests", is_flag=True, help="The schema of rule test files instead.")
def rules_schema(tests: bool) -> None:
    """Print the JSON Schema of rule files (for a YAML language server)."""
    from engine.ruleformat import RuleFile
    from engine.ruletests import RuleTestFile

    model = RuleTestFile if tests else RuleFile
    sys.stdout.write(json.dumps(model.model_json_schema(), indent=2) + "\n")


@main.group()
def models() -> None:
    """Train and inspect models."""


@models.command("train")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default: the spec's folder).",
)
def models_train(spec: Path, out: Path | None) -> None:
    """Train a model from its spec; writes model.skops, card.json, MODEL_CARD.md."""
    from engine.training import train_model

    try:
        card = train_model(spec, out)
    except ModelError as err:
        _fail(str(err), EXIT_MODEL)
        return
    m = card.held_out
    cv = card.cross_validation
    click.echo(
        f"trained {card.id} {card.version}: held-out ROC AUC {m.roc_auc:.3f}, "
        f"Brier {m.brier_score:.3f} (n test {m.n_test}); cross-validated AUC "
        f"{cv.roc_auc_mean:.3f} ± {cv.roc_auc_sd:.3f}"
    )


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("conclusion", required=False)
@click.option(
    "--why-not",
    "why",
    default=None,
    help="A conclusion that was not reached: which rules could reach it "
    "and what stopped each.",
)
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich")
@click.option("--as-of", "as_of", default=None, help="As for `cdss evaluate`.")
@click.option("--rules", type=click.Path(path_type=Path), default=None)
@click.option("--models", type=click.Path(path_type=Path), default=None)
def explain(
    file: Path,
    conclusion: str | None,
    why: str | None,
    fmt: str,
    as_of: str | None,
    rules: Path | None,
    models: Path | None,
) -> None:
    """How each conclusion was reached (a tree), or --why-not one was not."""
    from engine.explain import how, why_not

    if conclusion is not None and why is not None:
        _fail(
            f"give either a conclusion to explain ({conclusion}) or --why-not "
            f"{why}, not both",
            EXIT_USAGE,
        )
        return
    kb = _load(rules, models)
    try:
        case = read_input(file, catalogue=kb.catalogue)
    except InputError as err:
        _fail(str(err), EXIT_INPUT)
        return
    when = _as_of(as_of, case.last_time()) or datetime.now(UTC)
    try:
        result = kb.evaluate(case, as_of=when)
    except InputError as err:
        _fail(str(err), EXIT_INPUT)
        return
    except CdssError as err:
        _fail(f"{file}: evaluation failed: {err}", EXIT_EVAL)
        return
    console = Console()
    if why is not None:
        try:
            answer = why_not(kb, case, why, when, result)
        except KeyError:
            _fail(_no_rule_concludes(kb, why), EXIT_USAGE)
            return
        if fmt == "json":
            sys.stdout.write(answer.model_dump_json(indent=2) + "\n")
            return
        console.print(f"[bold]{escape(answer.message)}[/]", highlight=False)
        for attempt in answer.attempts:
            r = attempt.rule
            node = Tree(
                f"rule [bold]{r.rule_id}[/] ({r.file}:{r.line}) "
                f"[{'green' if attempt.state == 'fired' else 'yellow'}]"
                f"{attempt.state}[/]: {r.title}"
            )
            for o in attempt.obstacles:
                leaf = node.add(escape(f"{o.condition}: {o.state}; {o.actual}"))
                if o.change:
                    leaf.add(f"[cyan]{escape(o.change)}[/]")
            console.print(node)
        console.print(Panel(NOTICE, style="bold yellow", expand=False))
        return
    try:
        trees = how(result, conclusion)
    except KeyError:
        reached = [
            *(d.id for d in result.diagnoses),
            *(f.id for f in result.findings),
            *(r.id for r in result.recommendations if r.status == "recommended"),
        ]
        assert conclusion is not None  # how() names every tree without one
        if any(conclusion in r.produces for r in kb.rules):
            then = f"try --why-not {conclusion}"
        else:
            then = _no_rule_concludes(kb, conclusion)
        _fail(
            f"`{conclusion}` was not reached for this case (reached: "
            f"{', '.join(reached) or 'nothing'}); {then}",
            EXIT_USAGE,
        )
        return
    if fmt == "json":
        document = {
            "notice": NOTICE,
            "conclusions": [t.model_dump(mode="json") for t in trees],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    for tree in trees:
        console.print(_tree(tree))
    if not trees:
        undetermined = len(result.undetermined)
        console.print(
            "Nothing to explain: no finding, diagnosis or recommendation was "
            f"reached ({undetermined} rule{'s' if undetermined != 1 else ''} "
            "cannot be determined; `cdss evaluate` lists what they lack, and "
            "--why-not ID asks about one conclusion).",
            highlight=False,
        )
    console.print(Panel(NOTICE, style="bold yellow", expand=False))


def _fact_line(f: Any) -> str:
    if f.name.startswith(SCORE_FACT_PREFIX):
        score = escape(f.name.removeprefix(SCORE_FACT_PREFIX))
        return f"point score {score} = {f.value:g} ({f.readings} items)"
    shown = f"{f.value:g}" if isinstance(f.value, float) else str(f.value)
    unit = f" {f.unit}" if f.unit else ""
    agg = f", {f.aggregate} of {f.readings}" if f.aggregate != "latest" else ""
    when = f" @ {f.time.date()}" if f.time else ""
    src = f" [dim]{escape(f.source)}[/]" if f.source else ""
    return f"fact {escape(f.name)} = {escape(shown + unit + agg + when)}{src}"


def _tree(node: Any, parent: Tree | None = None) -> Tree:
    if not isinstance(node.value, float):
        value = ""
    elif node.kind == "point_score":
        value = f" = {node.value:g}"
    else:
        value = f" {node.value:.3f}"
    label = f"[bold]{node.kind}[/] {node.id}{value}: {escape(node.label)}"
    branch = parent.add(label) if parent is not None else Tree(label)
    for r in node.rules:
        rule = branch.add(escape(f"rule {r.rule_id} ({r.file}:{r.line}) {r.title}"))
        rule.add(f"[dim]source: {escape(r.source)}[/]")
    # A point score's facts are its items' facts: shown under each item.
    for f in node.facts if not node.components else []:
        branch.add(_fact_line(f))
    for c in node.components:
        if c.points is None:
            scored = f"cannot be determined (missing {', '.join(c.missing)})"
        else:
            scored = f"{c.points:g} point{'s' if c.points != 1 else ''}"
        item = branch.add(
            f"item {escape(c.id)}: {escape(scored)} [dim]{escape(c.title)}[/]"
        )
        for f in c.facts:
            item.add(_fact_line(f))
    for name, weight in node.contributions:
        branch.add(f"input {name} contributes {weight:+.2f}")
    for child in node.because:
        _tree(child, branch)
    return branch


@main.command()
@click.option(
    "--batch",
    is_flag=True,
    help="The schema of a line of `cdss batch` output: an assessment or an "
    "error record.",
)
def schema(batch: bool) -> None:
    """Print the JSON Schema of the assessment (the --format json output)."""
    if batch:
        from pydantic import TypeAdapter

        from engine.assessment import BatchError

        shape = TypeAdapter(Assessment | BatchError).json_schema()
    else:
        shape = Assessment.model_json_schema()
    sys.stdout.write(json.dumps(shape, indent=2) + "\n")


EXIT_BATCH_FAILED = 7
_LOCAL_CLUSTER = "local"  # the value of a bare --dask


class _BatchCommand(click.Command):
    """``batch``: ``--dask`` followed by an input means a local cluster.

    ``--dask`` takes an optional value, so click alone reads ``--dask data/``
    as the scheduler address ``data/`` and finds no inputs. A separate value
    that names an input (:func:`engine.bulk.names_input`) is kept as an input,
    in its place, and ``--dask`` then has no address: as if it came after the
    inputs. ``--dask=VALUE`` is always an address.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._dask_inputs(args))

    def _dask_inputs(self, args: list[str]) -> list[str]:
        # Options whose value is the next argument: a value is never --dask.
        valued = {
            name
            for p in self.params
            if isinstance(p, click.Option)
            and not p.is_flag
            and p.name != "dask_address"
            for name in p.opts
        }
        out: list[str] = []
        i = 0
        while i < len(args):
            arg, value = args[i], args[i + 1] if i + 1 < len(args) else None
            if arg == "--":  # what follows are inputs
                return out + args[i:]
            if arg == "--dask" and value and value[0] != "-" and names_input(value):
                out += [f"--dask={_LOCAL_CLUSTER}", value]
                i += 2
            elif arg in valued:
                out += args[i : i + 2]
                i += 2
            else:
                out.append(arg)
                i += 1
        return out


@main.command(cls=_BatchCommand)
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="The NDJSON output, one line per input case (`-` for stdout).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: all cores).",
)
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Evaluation time: YYYY-MM-DD, a date-time, or `last` (each record's "
    "last entry). Default: now, once for the whole batch.",
)
@click.option("--rules", type=click.Path(path_type=Path), default=None)
@click.option("--models", type=click.Path(path_type=Path), default=None)
@click.option("--without-conditions", is_flag=True)
@click.option("--approved-only", is_flag=True)
@click.option(
    "--dask",
    "dask_address",
    is_flag=False,
    flag_value=_LOCAL_CLUSTER,
    default=None,
    metavar="[ADDRESS]",
    help="Run on a Dask cluster: the scheduler at ADDRESS (tcp://host:port), "
    "or without one a local cluster of --workers processes on 127.0.0.1. A "
    "value naming an existing file or folder, or a pattern matching files, is "
    "an input, not an address; --dask=ADDRESS is always an address.",
)
def batch(
    inputs: tuple[str, ...],
    out_path: Path,
    workers: int | None,
    as_of: str | None,
    rules: Path | None,
    models: Path | None,
    without_conditions: bool,
    approved_only: bool,
    dask_address: str | None,
) -> None:
    """Evaluate many inputs; write one NDJSON line per case.

    INPUTS are FHIR bundles and case files, folders and glob patterns of them,
    NDJSON files of bundles or case files, and FHIR bulk-export NDJSON
    (Patient.ndjson, Observation.ndjson, ...: grouped by patient). Each line is
    the assessment (as `evaluate --format json`) or an error record
    {"status": "error", "file", "line", "case_id", "error", "reason", "notice"}.
    Exit code 0 all
    evaluated, 7 some inputs failed, 130 interrupted; 2, 3, 4, 5 as `evaluate`.
    """
    when: datetime | Literal["last"] = "last"
    if as_of != "last":
        when = _as_of(as_of, None) or datetime.now(UTC)
    try:
        plan = batch_engine.plan_inputs(inputs)
    except InputError as err:
        _fail(str(err), EXIT_INPUT)
        return
    if plan.skipped:
        n = len(plan.skipped)
        named = escape(first_few([str(p) for p in plan.skipped]))
        err_console.print(
            f"[dim]{n} file{'s' if n > 1 else ''} not read (not .json, .yaml, "
            f".yml, .ndjson or .jsonl): {named}[/]",
            highlight=False,
        )
    if str(out_path) != "-" and out_path.exists():
        # The same file by any name: a link, a hard link, another spelling.
        if any(
            os.path.samefile(f, out_path) for _, files in plan.sources for f in files
        ):
            # Opening it for writing would empty an input before it is read.
            _fail(
                f"--out {out_path} is also one of the inputs; writing to it would "
                "destroy it. Write the results to another file",
                EXIT_USAGE,
            )
            return
    kb = _load(rules, models, approved_only)
    spec = batch_engine.KnowledgeBaseSpec(
        (str(rules),) if rules else None, str(models) if models else None, approved_only
    )
    spec.remember(kb)
    settings = batch_engine.Settings(spec, when, not without_conditions)
    try:
        lazy = None if str(out_path) == "-" else _LazyOutput(out_path)
        out: TextIO = sys.stdout if lazy is None else cast(TextIO, lazy)
    except OSError as err:
        hint = (
            f"; the folder {out_path.parent} does not exist: create it first"
            if not out_path.parent.exists()
            else ""
        )
        _fail(
            f"--out {out_path}: cannot write: {err.strerror or err}{hint}", EXIT_USAGE
        )
        return

    # Ctrl-C (or a SIGTERM from a service manager, `timeout`, a CI runner)
    # asks to stop after the chunks in progress and stops the worker
    # processes; a second one quits now.
    stop = threading.Event()
    why: list[int] = []  # the signal that stopped the batch

    def on_interrupt(signum: int, _frame: object) -> None:
        code = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
        if stop.is_set():
            _quit_now(out, out_path, code)
        why.append(code)
        stop.set()
        err_console.print(
            "[yellow]stopping after the cases in progress "
            "(Ctrl-C again quits at once; the last line may then be cut)[/]"
        )

    # Once interrupted, the handlers stay for the rest of the process: a
    # second signal while the summary is shown, or while the process exits,
    # also quits at once with the same exit code.
    previous = {
        s: signal.signal(s, on_interrupt) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        _batch_and_report(
            plan, out, out_path, settings, kb, workers, dask_address, stop, why
        )
    finally:
        if not stop.is_set():
            for s, handler in previous.items():
                signal.signal(s, handler)


def _batch_and_report(
    plan: batch_engine.Plan,
    out: TextIO,
    out_path: Path,
    settings: batch_engine.Settings,
    kb: KnowledgeBase,
    workers: int | None,
    dask_address: str | None,
    stop: threading.Event,
    why: list[int],
) -> None:
    try:
        with _BatchProgress() as progress:
            run = functools.partial(
                batch_engine.run_batch, plan, out, settings, progress=progress.update
            )
            summary = _run_batch(
                run,
                settings,
                workers or batch_engine.default_workers(),
                dask_address,
                kb.info.content_hash,
                stop.is_set,
            )
        if isinstance(out, _LazyOutput):
            out.create()  # the batch ran: its file exists, empty or not
    except OSError as err:
        _fail(f"--out {out_path}: cannot write: {err.strerror or err}", EXIT_USAGE)
        return
    finally:
        if out is not sys.stdout:
            out.close()
    render_batch(summary, err_console)
    if not summary.cases and not summary.interrupted:
        err_console.print(
            "[yellow]note:[/] the inputs hold no cases (empty files, or only "
            "blank lines); nothing was written",
            highlight=False,
        )
    if summary.interrupted:
        code = why[0] if why else EXIT_INTERRUPTED
        said = "terminated" if code == EXIT_TERMINATED else "interrupted"
        err_console.print(
            f"[yellow]{said}:[/] {summary.cases} of about {summary.total} "
            f"cases written to {out_path}; the last was {summary.last or 'none'}",
            highlight=False,
        )
        _leave(code)
    if summary.failures:
        n = summary.failures
        err_console.print(
            f"[red]{n} input{'s' if n > 1 else ''} failed[/]: "
            f"{'each has' if n > 1 else 'it has'} an error record in {out_path} "
            '(status "error"); exit code 7',
            highlight=False,
        )
        sys.exit(EXIT_BATCH_FAILED)


class _LazyOutput(io.TextIOBase):
    """The --out file, emptied and written from the first line on.

    A batch that fails before it evaluates anything (a Dask scheduler that
    cannot be reached) leaves an existing file as it was. Whether the file
    can be written is checked at once, without opening it.

    Raises:
        OSError: If the file or its folder cannot be written.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        folder = path.parent
        if not folder.is_dir():
            raise FileNotFoundError(2, "No such file or directory", str(folder))
        if not os.access(path if path.exists() else folder, os.W_OK):
            raise PermissionError(13, "Permission denied", str(path))
        self.path = path
        self._file: TextIO | None = None

    def create(self) -> TextIO:
        """Open (and empty) the file, once."""
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
        return self._file

    def write(self, text: str) -> int:
        return self.create().write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        super().close()  # flushes first
        if self._file is not None:
            self._file.close()


def _quit_now(out: TextIO, out_path: Path, code: int) -> NoReturn:
    """The second Ctrl-C: stop the worker processes and leave at once.

    Raising KeyboardInterrupt instead could land inside the process pool's
    own bookkeeping and leave the batch waiting for ever on workers that
    ignore Ctrl-C; so nothing is unwound here. Every finished chunk has
    been flushed already; a line being written may be cut.
    """
    # Written straight to the descriptor: a console print from a signal
    # handler can sit in the console's buffer, which os._exit would lose.
    message = (
        f"\nquitting now: {out_path} holds the cases finished so far; "
        "its last line may be cut\n"
    )
    try:
        os.write(sys.stderr.fileno(), message.encode(errors="replace"))
    except (OSError, ValueError):
        pass
    err_console.show_cursor(True)  # the progress bar may have hidden it
    try:
        out.flush()
    except (OSError, ValueError, RuntimeError):  # closed, or mid-write
        pass
    for child in multiprocessing.active_children():
        child.kill()  # they ignore SIGTERM (see engine.batch._start_worker)
    _leave(code)


def _leave(code: int) -> NoReturn:
    """End the process now, with nothing left for the interpreter to unwind.

    After an interrupted batch everything is written and closed; a normal exit
    would still tear the interpreter down, and a Ctrl-C in that window would
    kill the process with the signal instead of exit code 130.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _run_batch(
    run: Callable[..., batch_engine.BatchSummary],
    settings: batch_engine.Settings,
    workers: int,
    dask_address: str | None,
    content_hash: str,
    stop: Callable[[], bool],
) -> batch_engine.BatchSummary:
    if dask_address is None:
        return run(workers=workers, stop=stop)
    try:
        from engine.dask_batch import DaskBackend, dask_client
    except ImportError as err:
        _fail(str(err), EXIT_USAGE)
        raise
    # dask.distributed logs its cluster's comings and goings at INFO on its own
    # handlers; they drown the progress bar unless -v asked for them. Closing
    # the cluster after Ctrl-C logs more; the summary says how far it got.
    quiet = logging.getLogger().level > logging.INFO
    if quiet:
        for name in ("distributed", "dask"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # A chunk of NDJSON lines carries its records (megabytes): the records
        # must travel, and Dask's warning about it for every chunk is noise.
        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
    address = None if dask_address == _LOCAL_CLUSTER else dask_address
    # XXX: a Ctrl-C while a local cluster starts stops the batch only once the
    # cluster is up and its workers have loaded the knowledge base (seconds on
    # a small machine): a LocalCluster cannot be abandoned half started. Seen
    # by hand; no test pins it, as its timing varies.
    try:
        with dask_client(address, workers, quiet=quiet) as client:
            backend = DaskBackend(client, settings, content_hash)
            return run(backend=backend, stop=stop)
    except (OSError, TimeoutError) as err:
        _fail(f"--dask {dask_address}: cannot reach the cluster: {err}", EXIT_USAGE)
        raise
    except CdssError as err:
        _fail(f"--dask: {err}", EXIT_EVAL)
        raise


class _BatchProgress:
    """A progress bar on stderr, redrawn after each chunk.

    It starts no refresh thread, so that worker processes can be forked.
    """

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("cases"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=err_console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task = self.bar.add_task("cases", total=None, rate="")

    def __enter__(self) -> _BatchProgress:
        self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.bar.refresh()
        self.bar.stop()

    def update(self, summary: batch_engine.BatchSummary) -> None:
        rate = summary.cases / summary.elapsed if summary.elapsed else 0.0
        self.bar.update(
            self.task,
            completed=summary.cases,
            total=max(summary.total, summary.cases),
            rate=f"{rate:,.0f} cases/s",
        )
        self.bar.refresh()


def render_batch(summary: batch_engine.BatchSummary, console: Console) -> None:
    """Show a batch summary: cases, failures, diagnoses, recommendations."""
    head = Table(title="Batch", show_header=False)
    rate = summary.cases / summary.elapsed if summary.elapsed else 0.0
    head.add_row("cases written", str(summary.cases))
    for status in ("complete", "partial", "not_evaluable"):
        head.add_row(f"  {status}", str(summary.statuses.get(status, 0)))
    head.add_row("failures (error records)", str(summary.failures))
    head.add_row("time", f"{summary.elapsed:.1f} s ({rate:,.0f} cases/s)")
    console.print(head)
    if summary.diagnoses:
        dt = Table(title="Diagnoses")
        dt.add_column("diagnosis")
        dt.add_column("cases", justify="right")
        for did, n in summary.diagnoses.most_common():
            dt.add_row(did, str(n))
        console.print(dt)
    if summary.recommendations:
        rt = Table(title="Recommendations")
        rt.add_column("recommendation")
        rt.add_column("recommended", justify="right")
        rt.add_column("blocked", justify="right")
        totals: Counter[str] = Counter()
        for (rid, _status), n in summary.recommendations.items():
            totals[rid] += n
        for rid, _n in totals.most_common():
            rt.add_row(
                rid,
                str(summary.recommendations.get((rid, "recommended"), 0)),
                str(summary.recommendations.get((rid, "blocked"), 0)),
            )
        console.print(rt)
    if summary.undetermined:
        ut = Table(title="Cannot be determined")
        ut.add_column("rule")
        ut.add_column("cases", justify="right")
        for rule_id, n in summary.undetermined.most_common():
            ut.add_row(rule_id, str(n))
        console.print(ut)
    console.print(Panel(NOTICE, style="bold yellow", expand=False))


if __name__ == "__main__":
    main()
