"""Read a hand-written case file (YAML, or JSON, which is YAML) into a Case.

The format (see ``examples/README.md``)::

    id: example-ckd-diabetes          # optional; default: the file name stem
    patient: {age: 67, sex: female}   # or birth_date: 1957-03-02; deceased: date
    facts:
      systolic_bp: 142 mmHg           # "value unit", "value unit @ date"
      diastolic_bp: {value: 88, unit: mmHg, time: 2024-03-01}
      hba1c: [7.1 % @ 2024-01-10, {value: 53, unit: mmol/mol, time: 2024-04-02}]
    conditions: [hypertension]        # or {name, onset, end, active}
    medications: [metformin]          # catalogue names or free text
    allergies: [penicillin]

Files are parsed with the ruamel.yaml round-trip loader because it keeps the
line and column of every node, so each error names ``line L, column C`` and the
path of the offending value. The same checks run on a plain mapping (no
positions) for callers that hold already-parsed data.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Any, Final, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .catalogue import Catalogue, QuantityFact, default_catalogue
from .errors import InputError, UnitError
from .facts import Case, CodedEntry, Reading, Sex, last_entry
from .nearest import suggest
from .values import (
    accept_unit,
    is_count,
    latest_day,
    parse_datetime,
    plausibility_note,
)

__all__ = ["load_yaml", "read_case_data", "read_case_file"]

logger = logging.getLogger(__name__)

TOP_KEYS: Final = ("id", "patient", "facts", "conditions", "medications", "allergies")
PATIENT_KEYS: Final = ("age", "birth_date", "sex", "deceased")
READING_KEYS: Final = ("value", "unit", "time")
ENTRY_KEYS: Final = ("name", "onset", "end", "active")
_SEXES: Final[tuple[Sex, ...]] = ("female", "male", "other", "unknown")
_READING = re.compile(
    r"\s*(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
    r"\s*(?P<unit>[^@]*?)\s*(?:@\s*(?P<time>.*?)\s*)?"
)
_NOT_TAKEN = re.compile(
    r"^\s*(?:no|not|non|without)\b|\b(?:stopped|discontinued|ceased)\b", re.I
)
_SYNTAX_HINT: Final = (
    "a case file is YAML (or JSON) indented with spaces; see examples/README.md"
)

Pos = tuple[int, int] | None
# onset, end, active of a condition, medication or allergy
Span = tuple[datetime | None, datetime | None, bool]


def load_yaml(text: str, *, source: str) -> Any:
    """Parse YAML text, keeping line and column information.

    Args:
        text: The file's text.
        source: The file name or label, for messages.

    Returns:
        The parsed document (ruamel ``CommentedMap`` and ``CommentedSeq``
        nodes, which carry positions), or None for an empty document.

    Raises:
        InputError: On a tab in the indentation, a duplicate key or any YAML
            syntax error, with its line and column.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            raise InputError(
                source=source,
                where=f"line {number}, column {indent.index(chr(9)) + 1}",
                reason="a tab in the indentation",
                hint="indent with spaces; YAML does not allow tabs there",
            )
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except _BadDateError as err:
        mark = err.problem_mark
        raise InputError(
            source=source,
            where=_where((mark.line + 1, mark.column + 1), "") if mark else "",
            # The value is not repeated: it may be a birth date.
            reason=f"not a real date ({err.problem})",
            hint="write a real date as YYYY-MM-DD (or YYYY-MM-DDThh:mm)",
        ) from None
    except DuplicateKeyError as err:
        mark = err.problem_mark
        raise InputError(
            source=source,
            where=_where((mark.line + 1, mark.column + 1), "") if mark else "",
            reason=f"duplicate key `{_duplicate(str(err.problem))}`",
            hint="each key may appear once in a mapping; merge the two",
        ) from None
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        reason = " ".join(p for p in (err.context, err.problem) if p)
        raise InputError(
            source=source,
            where=_where((mark.line + 1, mark.column + 1), "") if mark else "",
            reason=f"not valid YAML: {reason}",
            hint=_SYNTAX_HINT,
        ) from None
    except YAMLError as err:
        raise InputError(
            source=source, where="", reason=f"not valid YAML: {err}", hint=_SYNTAX_HINT
        ) from None


class _BadDateError(MarkedYAMLError):
    """A YAML timestamp that is no real date (2019-02-30)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Constructor(RoundTripConstructor):
    """ruamel's constructor, with an impossible date as a located error.

    ruamel builds dates itself, and 2019-02-30 raised a bare ValueError
    with no position in the file.
    """

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        try:
            return super().construct_yaml_timestamp(node, values)
        except ValueError as err:
            raise _BadDateError(str(err), node.start_mark) from None


_Constructor.add_constructor(
    "tag:yaml.org,2002:timestamp", _Constructor.construct_yaml_timestamp
)


def _duplicate(problem: str) -> str:
    # ruamel says: found duplicate key "age" with value "61" (original value: "60")
    match = re.search(r'duplicate key "(.*?)"', problem)
    return match[1] if match else problem


def read_case_file(
    text: str, *, source: str, catalogue: Catalogue | None = None
) -> Case:
    """Read a case file's text into a Case.

    Args:
        text: The YAML or JSON text.
        source: The file name or label; its stem is the default case id.
        catalogue: The fact catalogue; the shipped one by default.

    Returns:
        The case, readings oldest first (undated readings last, as current).

    Raises:
        InputError: For any syntax or content problem, with ``where`` like
            ``line 7, column 7 (facts.hba1c[1])``.
    """
    return read_case_data(
        load_yaml(text, source=source), source=source, catalogue=catalogue
    )


def read_case_data(
    data: Any, *, source: str, catalogue: Catalogue | None = None
) -> Case:
    """Read a parsed case-file document (from :func:`load_yaml` or a plain dict).

    Args:
        data: The top-level mapping.
        source: The file name or label.
        catalogue: The fact catalogue; the shipped one by default.

    Returns:
        The case.

    Raises:
        InputError: For any content problem; with line and column when the
            document came from :func:`load_yaml`.
    """
    return _CaseReader(source, catalogue or default_catalogue()).read(data)


def _where(pos: Pos, path: str) -> str:
    if pos is None:
        return path
    place = f"line {pos[0]}, column {pos[1]}"
    return f"{place} ({path})" if path else place


def _key_pos(node: Any, key: Any) -> Pos:
    try:
        line, col = node.lc.key(key)
    except (AttributeError, KeyError, TypeError):
        return None
    return (line + 1, col + 1)


def _default_id(source: str) -> str:
    """The file name without its extension; for a line of an NDJSON file
    (``cases.ndjson:7``), with its line number, so that each line's case has
    its own id."""
    name, _, line = source.rpartition(":")
    if name and line.isdigit():
        return f"{PurePath(name).stem}:{line}"
    return PurePath(source).stem or source


def _value_pos(node: Any, key: Any) -> Pos:
    if isinstance(node, dict) and node.get(key) is None:
        return _key_pos(node, key)  # ruamel places a null at the next token
    try:
        line, col = node.lc.value(key)
    except (AttributeError, KeyError, TypeError):
        return None
    return (line + 1, col + 1)


def _item_pos(node: Any, index: int) -> Pos:
    try:
        line, col = node.lc.item(index)
    except (AttributeError, KeyError, TypeError, IndexError):
        return None
    return (line + 1, col + 1)


def _nearest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    hint = suggest(word, choices)
    return f"; {hint}" if hint else ""


def _snake(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


class _CaseReader:
    """State while reading one case file."""

    def __init__(self, source: str, catalogue: Catalogue) -> None:
        self.source = source
        self.catalogue = catalogue
        self.notes: list[str] = []

    def fail(self, pos: Pos, path: str, reason: str, hint: str = "") -> NoReturn:
        raise InputError(
            source=self.source, where=_where(pos, path), reason=reason, hint=hint
        )

    def mapping(
        self, node: Any, pos: Pos, path: str, keys: tuple[str, ...]
    ) -> dict[str, Any]:
        """Check a mapping's keys; return it with string keys."""
        if not isinstance(node, dict):
            self.fail(pos, path, f"expected a mapping, got {_kind(node)}")
        for key in node:
            if not isinstance(key, str) or key not in keys:
                shown = key if isinstance(key, str) else repr(key)
                at = f"{path}.{shown}" if path else str(shown)
                self.fail(
                    _key_pos(node, key),
                    at,
                    f"unknown key `{shown}`{_nearest(str(shown), keys)}",
                    f"allowed here: {', '.join(keys)}",
                )
        return node

    def read(self, data: Any) -> Case:
        if data is None:
            self.fail(
                None,
                "",
                "the file is empty",
                "give a FHIR R4 Bundle as JSON, or a case file "
                "(see examples/README.md)",
            )
        doc = self.mapping(data, (1, 1) if hasattr(data, "lc") else None, "", TOP_KEYS)
        case_id = _default_id(self.source)
        if "id" in doc:
            raw = doc["id"]
            if isinstance(raw, date):  # id: 2024-01-01, read by YAML as a date
                raw = raw.isoformat()
            if isinstance(raw, bool) or not isinstance(raw, str | int) or raw == "":
                self.fail(_value_pos(doc, "id"), "id", "`id` must be a non-empty text")
            case_id = str(raw)
        patient = self.patient(doc)
        readings = self.facts(doc)
        conditions = self.entries(doc, "conditions", self.condition)
        medications = self.entries(doc, "medications", self.medication)
        allergies = self.entries(doc, "allergies", self.allergy)
        logger.debug("read case file %s", case_id)
        entries = (*conditions, *medications, *allergies)
        last, later = last_entry(readings, entries, datetime.now(UTC))
        if later:
            self.notes.append(later)
        return Case(
            case_id=case_id,
            source=self.source,
            readings=readings,
            conditions=tuple(conditions),
            medications=tuple(medications),
            allergies=tuple(allergies),
            last_recorded=last,
            notes=tuple(self.notes),
            **patient,
        )

    # patient -------------------------------------------------------------

    def patient(self, doc: dict[str, Any]) -> dict[str, Any]:
        if "patient" not in doc:
            return {}
        node = self.mapping(
            doc["patient"], _value_pos(doc, "patient"), "patient", PATIENT_KEYS
        )
        out: dict[str, Any] = {}
        if "age" in node and "birth_date" in node:
            self.fail(
                _key_pos(node, "birth_date"),
                "patient.birth_date",
                "both `age` and `birth_date` are given",
                "give one of them",
            )
        if "age" in node:
            age = node["age"]
            if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 130:
                self.fail(
                    _value_pos(node, "age"),
                    "patient.age",
                    f"age must be whole years from 0 to 130, got {age!r}",
                    "write e.g. `age: 67`",
                )
            out["age"] = int(age)
        if "birth_date" in node:
            pos = _value_pos(node, "birth_date")
            given = node["birth_date"]
            if isinstance(given, int) and not isinstance(given, bool):
                given = str(given)  # birth_date: 1959, a year YAML reads as a number
            born = self.time(given, pos, "patient.birth_date", identifying=True)
            out["birth_date"] = born.date()
            if isinstance(given, str):  # "1959", "1959-02": a span of days
                out["birth_date_latest"] = latest_day(given.strip())
        if "deceased" in node:
            pos = _value_pos(node, "deceased")
            if isinstance(node["deceased"], bool):
                self.fail(
                    pos,
                    "patient.deceased",
                    "`deceased` takes the date of death, not yes or no",
                    "write the date (YYYY-MM-DD); leave `deceased` out while "
                    "the date is not known",
                )
            out["deceased"] = self.time(
                node["deceased"], pos, "patient.deceased", identifying=True
            )
        if "sex" in node:
            sex = node["sex"]
            text = sex.strip().lower() if isinstance(sex, str) else ""
            if text not in _SEXES:
                self.fail(
                    _value_pos(node, "sex"),
                    "patient.sex",
                    # The value is not repeated: a name typed in the wrong
                    # field would reach logs and batch error records.
                    f"sex not recognised{_nearest(text, _SEXES)}",
                    f"use one of: {', '.join(_SEXES)}",
                )
            out["sex"] = text
        return out

    def time(
        self, value: Any, pos: Pos, path: str, *, identifying: bool = False
    ) -> datetime:
        """Read a date or datetime (YAML timestamp or text) as an aware datetime.

        ``identifying``: the date identifies the patient (birth, death), so a
        message about it names the place, never the value.
        """
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, str):
            try:
                return parse_datetime(value.strip())
            except ValueError:
                pass
        self.fail(
            pos,
            path,
            "bad date" if identifying else f"bad date {str(value)!r}",
            "write YYYY-MM-DD, or YYYY-MM-DDThh:mm with an optional +hh:mm offset",
        )

    # facts ---------------------------------------------------------------

    def facts(self, doc: dict[str, Any]) -> dict[str, tuple[Reading, ...]]:
        if "facts" not in doc or doc["facts"] is None:
            return {}
        node = doc["facts"]
        if not isinstance(node, dict):
            self.fail(
                _value_pos(doc, "facts"),
                "facts",
                f"expected a mapping of fact names to values, got {_kind(node)}",
            )
        out: dict[str, tuple[Reading, ...]] = {}
        names = sorted(
            [
                *(n for n in self.catalogue.quantities if n != "age"),
                *self.catalogue.texts,
            ]
        )
        for name in node:
            path = f"facts.{name}"
            if name == "sex":
                self.fail(
                    _key_pos(node, name),
                    path,
                    "sex is a patient detail",
                    "write it as `patient: {sex: female}`",
                )
            if isinstance(name, str) and name in self.catalogue.texts:
                out[name] = self.text_readings(node, name, path)
                continue
            fact = self.fact(node, name, path, names)
            value = node[name]
            items: list[tuple[Any, Pos, str]]
            if isinstance(value, list):
                if not value:
                    self.fail(_value_pos(node, name), path, "no readings given")
                items = [
                    (v, _item_pos(value, i), f"{path}[{i}]")
                    for i, v in enumerate(value)
                ]
            else:
                items = [(value, _value_pos(node, name), path)]
            readings = [self.reading(fact, *item) for item in items]
            out[fact.name] = tuple(readings)
        return out

    def text_readings(self, node: Any, name: str, path: str) -> tuple[Reading, ...]:
        """Readings of a text fact: ``A``, ``A @ 2024-01-10`` or {value, time}."""
        allowed = self.catalogue.texts[name].values
        value = node[name]
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            pos = (
                _item_pos(value, i)
                if isinstance(value, list)
                else _value_pos(node, name)
            )
            where = f"{path}[{i}]" if isinstance(value, list) else path
            when: datetime | None = None
            if isinstance(item, dict):
                entry = self.mapping(item, pos, where, ("value", "time"))
                text, raw_time = entry.get("value"), entry.get("time")
                if raw_time is not None:
                    when = self.time(raw_time, pos, f"{where}.time")
            else:
                text, _, stamp = str(item).partition("@")
                if stamp.strip():
                    when = self.time(stamp.strip(), pos, where)
            word = str(text).strip()
            match = [v for v in allowed if v.casefold() == word.casefold()]
            if not match:
                self.fail(
                    pos,
                    where,
                    f"`{word}` is not a value of {name}",
                    f"write one of: {', '.join(allowed)}",
                )
            label = f"case file line {pos[0]}" if pos else "case file"
            out.append(Reading(value=match[0], unit=None, time=when, source=label))
        return tuple(out)

    def fact(self, node: Any, name: Any, path: str, names: list[str]) -> QuantityFact:
        pos = _key_pos(node, name)
        if name == "age":
            self.fail(
                pos, path, "age is a patient detail", "write it as `patient: {age: 67}`"
            )
        if isinstance(name, str) and name in self.catalogue.quantities:
            return self.catalogue.quantities[name]
        kind = self.catalogue.kind_of(name) if isinstance(name, str) else None
        if kind is not None:
            self.fail(
                pos,
                path,
                f"`{name}` is a {kind}, not a measured fact",
                f"list it under `{kind}s`",
            )
        near = _nearest(str(name), names)
        self.fail(
            pos,
            path,
            f"unknown fact `{name}`{near}",
            # With a likely match, the whole list is noise: say where it is.
            "the facts are listed in engine/catalogue.yaml"
            if near
            else f"known facts: {', '.join(names)}",
        )

    def reading(self, fact: QuantityFact, item: Any, pos: Pos, path: str) -> Reading:
        when: datetime | None = None
        unit: str | None
        if isinstance(item, dict):
            node = self.mapping(item, pos, path, READING_KEYS)
            if "value" not in node:
                self.fail(pos, path, "the reading has no `value`")
            value, unit = node["value"], node.get("unit")
            vpos = _value_pos(node, "value") or pos
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(
                    vpos, f"{path}.value", f"value must be a number, got {_kind(value)}"
                )
            if unit is not None and not isinstance(unit, str):
                self.fail(
                    _value_pos(node, "unit") or pos, f"{path}.unit", "unit must be text"
                )
            if node.get("time") is not None:
                when = self.time(
                    node["time"], _value_pos(node, "time") or pos, f"{path}.time"
                )
        elif isinstance(item, bool) or item is None:
            self.fail(pos, path, f"expected a value with a unit, got {_kind(item)}")
        elif isinstance(item, int | float):
            value, unit = item, None
        elif isinstance(item, str):
            match = _READING.fullmatch(item)
            if match is None:
                self.fail(
                    pos,
                    path,
                    f"cannot read {item!r} as a value",
                    f"write `value unit` or `value unit @ date`, e.g. `1 {fact.unit}`",
                )
            value, unit = float(match["value"]), match["unit"] or None
            if unit and re.match(r",\d", unit):
                comma = f"{match['value']}{unit.split()[0]}"
                self.fail(
                    pos,
                    path,
                    f"{comma} has a decimal comma",
                    f"write the decimal with a point: {comma.replace(',', '.')}",
                )
            if match["time"] is not None:
                when = self.time(match["time"], pos, path)
        else:
            self.fail(pos, path, f"expected a value with a unit, got {_kind(item)}")
        if unit is None and is_count(fact.unit):
            unit = fact.unit  # a pure count or score needs no unit
        try:
            recorded, note = accept_unit(unit, fact)
        except UnitError as err:
            self.fail(
                pos,
                path,
                str(err),
                f"record the value in one of: {', '.join(fact.units)}",
            )
        if not math.isfinite(value):
            self.fail(pos, path, f"{value} is not a number", "write a finite value")
        label = f"case file line {pos[0]}" if pos else "case file"
        if note:
            self.notes.append(f"{note} ({label})")
        try:
            # Dated in the note: readings on one line are told apart.
            dated = f"{label}, {when.date().isoformat()}" if when else label
            doubt = plausibility_note(fact, float(value), recorded, dated)
        except UnitError as err:
            self.fail(pos, path, str(err))
        if doubt:
            self.notes.append(doubt)
        return Reading(value=float(value), unit=recorded, time=when, source=label)

    # conditions, medications, allergies -------------------------------------

    def entries(
        self,
        doc: dict[str, Any],
        key: str,
        make: Callable[[str, Span, Pos, str], list[CodedEntry]],
    ) -> list[CodedEntry]:
        if key not in doc or doc[key] is None:
            return []
        node = doc[key]
        if isinstance(node, str):
            # `medications: metformin` means a list of one
            items = [(node, _value_pos(doc, key), f"{key}[0]")]
        elif isinstance(node, list):
            items = [(v, _item_pos(node, i), f"{key}[{i}]") for i, v in enumerate(node)]
        else:
            self.fail(
                _value_pos(doc, key),
                key,
                f"expected a list of names, got {_kind(node)}",
            )
        out: list[CodedEntry] = []
        for item, pos, path in items:
            name, span = self.entry(item, pos, path)
            out.extend(make(name, span, pos, path))
        return out

    def entry(self, item: Any, pos: Pos, path: str) -> tuple[str, Span]:
        if isinstance(item, str) and item.strip():
            return item.strip(), (None, None, True)
        if not isinstance(item, dict):
            self.fail(pos, path, f"expected a name, got {_kind(item)}")
        node = self.mapping(item, pos, path, ENTRY_KEYS)
        name = node.get("name")
        if not isinstance(name, str) or not name.strip():
            self.fail(
                pos,
                path,
                "the entry has no `name`",
                "write e.g. `{name: hypertension}`",
            )
        onset = end = None
        if node.get("onset") is not None:
            onset = self.time(node["onset"], _value_pos(node, "onset"), f"{path}.onset")
        if node.get("end") is not None:
            end = self.time(node["end"], _value_pos(node, "end"), f"{path}.end")
        active = node.get("active", end is None)
        if not isinstance(active, bool):
            self.fail(
                _value_pos(node, "active"),
                f"{path}.active",
                "active must be true or false",
            )
        return name.strip(), (onset, end, active)

    def condition(self, name: str, span: Span, pos: Pos, path: str) -> list[CodedEntry]:
        concept = _snake(name)
        if concept not in self.catalogue.conditions:
            known = sorted(self.catalogue.conditions)
            self.fail(
                pos,
                path,
                f"unknown condition `{name}`{_nearest(concept, known)}",
                f"known conditions: {', '.join(known)}",
            )
        return [_local(concept, name, span, pos)]

    def drugs(self, name: str) -> list[str]:
        # A named concept, and every class its ingredient belongs to (aspirin
        # is also an antiplatelet), as a FHIR product's text would map.
        concept = _snake(name)
        found = self.catalogue.medications_for("", name)
        if concept in self.catalogue.medications:
            return [concept, *(c for c in found if c != concept)]
        return found

    def medication(
        self, name: str, span: Span, pos: Pos, path: str
    ) -> list[CodedEntry]:
        if _NOT_TAKEN.search(name):
            # "no aspirin" would otherwise read as aspirin, taken.
            self.fail(
                pos,
                path,
                f"`{name}` reads as a medication not taken",
                "list the medications taken; give a stopped one with its end, "
                "e.g. {name: metformin, end: 2024-01-01}",
            )
        concepts = self.drugs(name)
        if not concepts:
            at = f"line {pos[0]}" if pos else path
            self.notes.append(
                f"medication `{name}` ({at}) is not one the knowledge base knows; "
                "kept without a concept"
            )
            return [_local(None, name, span, pos)]
        return [_local(c, name, span, pos) for c in concepts]

    def allergy(self, name: str, span: Span, pos: Pos, path: str) -> list[CodedEntry]:
        # Most allergies (penicillin, latex, peanuts) are no catalogue drug; kept as is.
        concepts: list[str | None] = [*self.drugs(name)] or [None]
        return [_local(c, name, span, pos) for c in concepts]


def _local(concept: str | None, name: str, span: Span, pos: Pos) -> CodedEntry:
    return CodedEntry(
        concept=concept,
        system="local",
        code=name,
        display=name,
        onset=span[0],
        end=span[1],
        active=span[2],
        source=f"case file line {pos[0]}" if pos else "case file",
    )


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return "a date"
    return type(value).__name__
