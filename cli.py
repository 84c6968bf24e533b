"""The ``cdss`` command: evaluate cases, check rules, train models.

Exit codes: 0 success; 1 problems found (``rules check``); 2 unusable
arguments; 3 unreadable patient input; 4 knowledge base refused (rule files);
5 model unusable; 6 evaluation failed.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from engine import (
    NOTICE,
    Assessment,
    InputError,
    KnowledgeBase,
    ModelError,
    RuleFileError,
    read_input,
)
from engine.errors import CdssError, Problem
from engine.knowledge import default_rules_dir, rule_file_paths

EXIT_PROBLEMS, EXIT_USAGE, EXIT_INPUT, EXIT_RULES, EXIT_MODEL, EXIT_EVAL = (
    1,
    2,
    3,
    4,
    5,
    6,
)

err_console = Console(stderr=True)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    sys.exit(code)


def _as_of(value: str | None, last_recorded: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value == "last":
        if last_recorded is None:
            _fail(
                "--as-of last: the record has no dated entries; give a date", EXIT_USAGE
            )
        return last_recorded
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), time(23, 59, 59))
        except ValueError:
            _fail(
                f"--as-of `{value}` is not a date (YYYY-MM-DD), a date-time or `last`",
                EXIT_USAGE,
            )
            raise
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


@click.group()
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
    help="Evaluation time: YYYY-MM-DD, a date-time, or `last` (the record's "
    "last entry). Default: now.",
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
    help="Refuse rules not approved or whose review date has passed.",
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
    when = _as_of(as_of, case.last_recorded)
    try:
        result = kb.evaluate(case, as_of=when, use_conditions=not without_conditions)
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
        parts.append(f"{f.name} {value}{unit}{agg}{when}")
    if len(result_facts) > 4:
        parts.append(f"+{len(result_facts) - 4} more")
    return "; ".join(parts)


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
        console.print(f"[yellow]partial:[/] {problem}", highlight=False)

    table = Table(title="Diagnoses", show_lines=False, expand=True)
    for col in ("diagnosis", "SNOMED CT", "certainty", "rules", "evidence"):
        table.add_column(col)
    for d in result.diagnoses:
        table.add_row(
            d.display,
            d.code,
            f"{d.certainty:.2f}",
            ", ".join(r.rule_id for r in d.evidence.rules),
            _facts_text(d.evidence.facts),
        )
    console.print(table if result.diagnoses else "[dim]No diagnoses.[/]")

    if result.findings:
        ft = Table(title="Findings", expand=True)
        ft.add_column("finding")
        ft.add_column("rule")
        ft.add_column("evidence")
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
                ft.add_row(f"{f.display or f.id} {total}", "point score", items)
                continue
            ft.add_row(
                f.display or f.id,
                f.evidence.rules[0].rule_id,
                _facts_text(f.evidence.facts),
            )
        console.print(ft)

    rt = Table(title="Recommendations", expand=True)
    for col in ("id", "recommendation", "strength", "certainty", "status"):
        rt.add_column(col)
    for r in result.recommendations:
        status = (
            "[green]recommended[/]"
            if r.status == "recommended"
            else ("[red]blocked[/]: " + "; ".join(b.reason for b in r.blocked_by))
        )
        rt.add_row(r.id, r.text, r.strength, f"{r.certainty:.2f}", status)
    console.print(rt if result.recommendations else "[dim]No recommendations.[/]")

    for s in result.scores:
        if s.value is None:
            console.print(
                f"Score [bold]{s.name}[/] ({s.model_id} {s.model_version}): "
                f"not available, missing {', '.join(s.missing)}",
                highlight=False,
            )
        else:
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
        ut = Table(title="Cannot be determined", expand=True)
        ut.add_column("rule")
        ut.add_column("missing")
        ut.add_column("why")
        for u in result.undetermined:
            ut.add_row(u.rule_id, ", ".join(u.missing), u.reason)
        console.print(ut)
    for note in result.notes:
        console.print(f"[dim]note: {note}[/]", highlight=False)
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
    help="Refuse rules not approved or whose review date has passed.",
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
    problems = [p for p in problems if str(Path(p.path).resolve()) in shown]
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
    if any(p.severity == "error" for p in problems):
        sys.exit(EXIT_PROBLEMS)


@rules.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The knowledge base to test (default: the bundled rules/).",
)
@click.option("--models", type=click.Path(path_type=Path), default=None)
def rules_test(
    paths: tuple[Path, ...], rules_dir: Path | None, models: Path | None
) -> None:
    """Run rule tests (*.test.yaml); show expected versus got for each failure.

    Exit code 0 all passed, 1 failures, 2 unusable arguments, 4 rules refused.
    """
    from engine.ruletests import run_rule_tests

    missing = [p for p in paths if not p.exists()]
    if missing:
        _fail(f"no such file or folder: {', '.join(map(str, missing))}", EXIT_USAGE)
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
    failed = sum(1 for r in results if not r.passed)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
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
def schema() -> None:
    """Print the JSON Schema of the assessment (the --format json output)."""
    sys.stdout.write(json.dumps(Assessment.model_json_schema(), indent=2) + "\n")


if __name__ == "__main__":
    main()
