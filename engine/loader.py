"""Reading rule files: bytes to validated :class:`RuleFile` with located problems.

Every problem names ``path:line:column``. YAML is read twice: once with the safe
constructor (which refuses unknown tags and duplicate keys) and once with the
round-trip reader, which keeps the line and column of every key so that a schema
error deep in a rule can be pointed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from . import ruleformat as rf
from .errors import Problem
from .nearest import suggest

__all__ = ["LoadedFile", "MAX_RULE_FILE_BYTES", "locate", "read_rule_file"]

MAX_RULE_FILE_BYTES = 2_000_000

_M = TypeVar("_M", bound=BaseModel)


@dataclass
class LoadedFile:
    """A rule file that parsed, with its raw tree for locating later checks.

    A *partial* file had schema errors; ``model`` then holds only the rules
    that are valid on their own (``rule_index`` gives each one's place in the
    file), so that their other problems are found in the same run. A partial
    file is checked, never loaded.
    """

    path: str
    text: str
    raw: Any
    model: rf.RuleFile
    rule_index: tuple[int, ...] | None = None

    @property
    def partial(self) -> bool:
        """True when some of the file's rules did not validate."""
        return self.rule_index is not None

    def raw_rule(self, i: int) -> Any:
        """The raw node of the model's ``i``-th rule."""
        return self.raw["rules"][self.rule_place(i)]

    def rule_place(self, i: int) -> int:
        """The position in the file's ``rules`` of the model's ``i``-th rule."""
        return self.rule_index[i] if self.rule_index else i


def _problem(path: str, line: int, col: int, msg: str, **kw: Any) -> Problem:
    return Problem(path=path, line=line, column=col, message=msg, **kw)


def locate(raw: Any, loc: tuple[Any, ...]) -> tuple[int, int]:
    """Return the 1-based (line, column) of the deepest node ``loc`` reaches.

    Steps that are not keys of the tree (pydantic's union tags) are skipped.
    """
    line, col = 1, 1
    node = raw
    for k, step in enumerate(loc):
        if (
            isinstance(node, dict)
            and step in node
            and k + 1 < len(loc)
            and not isinstance(node[step], dict | list)
        ):
            # A union tag that is also a key with a plain value (`fact: bmi`):
            # the next step is a key of this same mapping.
            continue
        if isinstance(node, dict) and step in node:
            try:
                kl, kc = cast(Any, node).lc.key(step)
                line, col = kl + 1, kc + 1
            except (AttributeError, KeyError, TypeError):
                pass
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            try:
                il, ic = cast(Any, node).lc.item(step)
                line, col = il + 1, ic + 1
            except (AttributeError, KeyError, TypeError):
                pass
            node = node[step]
        elif step == "not_" and isinstance(node, dict) and "not" in node:
            kl, kc = cast(Any, node).lc.key("not")
            line, col = kl + 1, kc + 1
            node = node["not"]
    return line, col


def _rule_id_at(raw: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        try:
            rule = raw["rules"][loc[1]]
            return str(rule.get("id")) if isinstance(rule, dict) else None
        except (KeyError, IndexError, TypeError):
            return None
    return None


_MODELS_BY_TAG: dict[str, type[BaseModel]] = {
    "at_least_of": rf.AtLeastOf,
    "all": rf.AllOf,
    "any": rf.AnyOf,
    "not": rf.Not,
    "fact": rf.FactComparison,
    "finding": rf.FindingTest,
    "score": rf.ScoreTest,
    "condition": rf.ConditionTest,
    "taking": rf.MedicationTest,
    "allergic_to": rf.AllergyTest,
    "diagnosis": rf.DiagnosisSpec,
    "recommendation": rf.RecommendationSpec,
    "block": rf.BlockSpec,
}


def _fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _allowed_keys(raw: Any, loc: tuple[Any, ...]) -> list[str]:
    """Guess which model an unknown key was found in, and list its keys."""
    parent = loc[:-1]
    if parent == ():
        return _fields(rf.RuleFile)
    if parent == ("ruleset",):
        return _fields(rf.Header)
    if len(parent) == 2 and parent[0] == "rules":
        return _fields(rf.Rule)
    if len(parent) == 2 and parent[0] == "calculations":
        return _fields(rf.Calculation)
    last = [s for s in parent if isinstance(s, str)]
    if last and last[-1] in _MODELS_BY_TAG:
        return _fields(_MODELS_BY_TAG[last[-1]])
    return []


def _explain(err: dict[str, Any], raw: Any) -> tuple[str, str]:
    """Turn one pydantic error into (message, hint) an author can act on."""
    loc = tuple(err["loc"])
    kind = err["type"]
    key = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        allowed = _allowed_keys(raw, loc)
        msg = f"unknown key `{key}`"
        if allowed:
            msg += f"; allowed here: {', '.join(allowed)}"
        return msg, suggest(key, allowed)
    if kind == "missing":
        return f"missing required key `{key}`", f"add `{key}:`"
    if kind in ("condition", "action"):
        return err["msg"], ""
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        got = err.get("input")
        return f"`{key}` is `{got}`; allowed: {expected}", ""
    if kind == "string_pattern_mismatch":
        got = err.get("input")
        if key in ("id", "finding", "recommendation"):
            return (
                f"`{key}` is `{got}`; an id is lower-case letters, digits and _",
                f"write `{str(got).strip().lower().replace(' ', '_')}`",
            )
        if key == "snomed":
            return f"`snomed` is `{got}`; a SNOMED CT code is 6 to 18 digits", ""
    got = err.get("input")
    shown = f" (got `{got}`)" if not isinstance(got, dict | list) else ""
    return f"`{key}`: {err['msg'].lower()}{shown}", ""


def _yaml_problem(path: str, err: YAMLError) -> Problem:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = mark.line + 1 if mark is not None else 0
    col = mark.column + 1 if mark is not None else 0
    text = str(getattr(err, "problem", None) or err).strip()
    hint = "fix the YAML syntax at that place"
    if "\\t" in text or "tab" in text.lower():
        text = "a tab character; YAML indentation must use spaces"
        hint = "replace the tab with spaces"
    elif "duplicate key" in text.lower() or "found duplicate key" in str(err):
        text = "a key appears twice in the same mapping; " + text
        hint = "remove or rename one of them"
    elif (
        "constructor for the tag" in text
        or "could not determine a constructor" in str(err)
    ):
        text = "a YAML tag (`!...`) that rule files do not allow"
        hint = "remove the tag; rule files hold plain values only"
    return _problem(path, line, col, f"not valid YAML: {text}", hint=hint, code="yaml")


def read_rule_file(path: Path) -> tuple[LoadedFile | None, list[Problem]]:
    """Read and validate one rule file.

    Returns:
        The loaded file (None when it is unusable) and every problem found.
    """
    shown = str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, [_problem(shown, 0, 0, f"cannot read the file: {err.strerror}")]
    if len(data) > MAX_RULE_FILE_BYTES:
        return None, [
            _problem(
                shown,
                0,
                0,
                f"the file is {len(data):,} bytes; a rule file may be at most "
                f"{MAX_RULE_FILE_BYTES:,}",
                hint="split it into several rulesets",
                code="too-large",
            )
        ]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return None, [
            _problem(
                shown,
                line,
                col,
                f"byte 0x{data[err.start]:02x} is not UTF-8",
                hint="save the file as UTF-8",
                code="encoding",
            )
        ]
    if not text.strip():
        return None, [
            _problem(
                shown,
                1,
                1,
                "the file is empty",
                hint="a rule file starts with `ruleset:` and has `rules:`",
                code="empty",
            )
        ]

    try:
        YAML(typ="safe", pure=True).load(text)
        raw = YAML(typ="rt").load(text)
    except MarkedYAMLError as err:
        return None, [_yaml_problem(shown, err)]
    except YAMLError as err:
        return None, [_yaml_problem(shown, err)]
    if not isinstance(raw, dict):
        return None, [
            _problem(
                shown,
                1,
                1,
                f"the top level is a {type(raw).__name__}, not a mapping",
                hint="a rule file starts with `ruleset:` and has `rules:`",
                code="schema",
            )
        ]

    try:
        model = rf.RuleFile.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = tuple(e["loc"])
            line, col = locate(raw, loc)
            msg, hint = _explain(dict(e), raw)
            problems.append(
                _problem(
                    shown,
                    line,
                    col,
                    msg,
                    hint=hint,
                    rule_id=_rule_id_at(raw, loc),
                    code="schema",
                )
            )
        return _salvage(shown, text, raw), _dedupe(problems)
    return LoadedFile(shown, text, raw, model), []


def _salvage(path: str, text: str, raw: dict[str, Any]) -> LoadedFile | None:
    """The rules of a file with schema errors that are valid on their own.

    Checked like a whole file, they show the author the file's other problems
    (an unknown fact, a unit of the wrong kind) in the same run, not one fix
    later. Needs a valid header; calculations and point scores are kept only
    when all of them are valid, since checks find them by position (rules
    that name a point score left out are not reported for it: see
    ``KnowledgeBase.load``).
    """
    rules = raw.get("rules")
    if not isinstance(rules, list):
        return None
    try:
        header = rf.Header.model_validate(raw.get("ruleset"))
    except ValidationError:
        return None
    calculations = _all_or_none(rf.Calculation, raw.get("calculations"))
    point_scores = _all_or_none(rf.PointScore, raw.get("point_scores"))
    kept: list[rf.Rule] = []
    index: list[int] = []
    for i, item in enumerate(rules):
        try:
            kept.append(rf.Rule.model_validate(item))
        except ValidationError:
            continue
        index.append(i)
    if not kept:
        return None
    model = rf.RuleFile.model_construct(
        ruleset=header,
        calculations=calculations,
        point_scores=point_scores,
        rules=kept,
    )
    return LoadedFile(path, text, raw, model, tuple(index))


def _all_or_none(model: type[_M], items: Any) -> list[_M]:
    try:
        return [model.model_validate(item) for item in items or []]
    except (ValidationError, TypeError):
        return []


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for p in problems:
        key = (p.line, p.column, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
