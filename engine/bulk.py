"""The inputs of a batch: files, folders, patterns, NDJSON and FHIR bulk exports.

:func:`plan_inputs` expands the command line into a :class:`Plan`, whose
:meth:`Plan.items` streams one :class:`WorkItem` per input case. NDJSON is read
line by line. A FHIR bulk export (``Patient.ndjson``, ``Observation.ndjson``,
... one resource type per file) is grouped by patient through shard files on
disk, so memory stays bounded by one shard and an index of patient ids:

1. Patient files are read first: each Patient gets an ordinal, and ordinals
   are cut into ranges of about :data:`SHARD_BYTES` of resources each.
2. Every other line of a type the reader uses goes to its patient's shard
   (``subject.reference`` or ``patient.reference``); Medication resources are
   kept in memory (they are few) for the requests that refer to them.
3. Shard by shard, each patient's lines become one item, in Patient-file order.

Resources of types the reader does not use (Claim, Encounter, ...) are skipped
unread: a file whose first record is of such a type is only searched for
resources of the types read (a file that mixes types, which the bulk data
specification does not allow), and read line by line if it holds any. A line
that is not JSON, a resource without a patient reference, a duplicate Patient
and resources of a patient with no Patient resource each give an error item,
so nothing is lost silently.
"""

from __future__ import annotations

import glob
import itertools
import logging
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import orjson

from .catalogue import Catalogue
from .errors import InputError
from .facts import Case
from .inputs import MAX_BYTES, read_input, read_input_data

__all__ = [
    "Family",
    "Plan",
    "SHARD_BYTES",
    "WorkItem",
    "bundle_of",
    "names_input",
    "plan_inputs",
]

log = logging.getLogger(__name__)

CASE_SUFFIXES: Final = (".json", ".yaml", ".yml")
NDJSON_SUFFIXES: Final = (".ndjson", ".jsonl")
SHARD_BYTES: Final = 64_000_000
"""About this many bytes of resources are grouped in memory at a time."""

_SUFFIXES: Final = CASE_SUFFIXES + NDJSON_SUFFIXES
_PATTERN_CHARS: Final = frozenset("*?[")
_MAX_SHARDS: Final = 256
# The resource types engine.fhir reads besides Patient and Medication.
_READ_TYPES: Final = frozenset(
    {
        "Observation",
        "Condition",
        "MedicationRequest",
        "MedicationStatement",
        "AllergyIntolerance",
    }
)
# A resource of a type read, found in a file's bytes (see _holds_read_types).
_READ_TYPE_TEXT: Final = re.compile(
    rb'"resourceType"\s*:\s*"(?:'
    + b"|".join(t.encode() for t in sorted({*_READ_TYPES, "Patient", "Medication"}))
    + rb')"'
)

Family = Literal["input", "unit", "evaluation", "internal", "worker"]  # BatchError
Stop = Callable[[], bool] | None


@dataclass(frozen=True)
class WorkItem:
    """One input case, as it travels to a worker.

    Attributes:
        file: The input file, as given.
        line: The 1-based line for NDJSON, else None.
        kind: ``path`` (read the file), ``text`` (one NDJSON line in
            ``payload``), ``resources`` (a patient's bulk-export lines in
            ``payload``, Patient first) or ``error`` (found while planning).
        payload: The line or lines, for ``text`` and ``resources``.
        case_id: The case id when known before reading (bulk exports).
        family: For ``error``: the error family.
        reason: For ``error``: what is wrong.
    """

    file: str
    line: int | None
    kind: Literal["path", "text", "resources", "error"]
    payload: bytes | tuple[bytes, ...] = b""
    case_id: str | None = None
    family: Family = "input"
    reason: str = ""

    @property
    def label(self) -> str:
        """``file:line`` for NDJSON, else the file."""
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def read(self, catalogue: Catalogue) -> Case:
        """Read the case (in the worker).

        Raises:
            InputError: If the input is not a readable bundle or case file.
        """
        if self.kind == "path":
            return read_input(Path(self.file), catalogue=catalogue)
        if isinstance(self.payload, tuple):
            data: dict[str, Any] | str = bundle_of(self.payload)
        else:
            try:
                data = self.payload.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                raise InputError(
                    self.label,
                    f"byte {err.start} of the line",
                    f"the line is not UTF-8 (byte 0x{self.payload[err.start]:02x})",
                    "write NDJSON as UTF-8",
                ) from None
        return read_input_data(data, source=self.label, catalogue=catalogue)


# --- planning -------------------------------------------------------------------


@dataclass
class Plan:
    """The inputs of a batch, in order.

    Attributes:
        sources: ``(kind, files)`` in input order: ``case`` (one file, one
            case), ``ndjson`` (one file, a case per line) or ``bulk`` (the
            bulk-export files of one folder).
    """

    sources: list[tuple[Literal["case", "ndjson", "bulk"], list[Path]]] = field(
        default_factory=list
    )
    # Files of the folders and patterns given that are not inputs by their
    # name (notes.txt, SOURCE.md): not read, and said so.
    skipped: list[Path] = field(default_factory=list)

    def estimate(self) -> int:
        """The number of output lines, counted before the batch (for progress).

        Exact for case files and NDJSON (blank lines give no output line). A
        bulk export counts the records of its Patient files; error records for
        bad lines of its other files, found while grouping, come on top.
        """
        total = 0
        for kind, files in self.sources:
            if kind == "case":
                total += 1
            elif kind == "ndjson":
                total += _count_records(files[0])
            else:
                total += sum(_count_records(f) for f in files if _first(f) == "Patient")
        return total

    def items(self, stop: Stop = None) -> Iterator[WorkItem]:
        """Every input case, in order; ends early once ``stop()`` is true."""
        for kind, files in self.sources:
            if stop is not None and stop():
                return
            if kind == "case":
                yield WorkItem(str(files[0]), None, "path")
            elif kind == "ndjson":
                yield from _ndjson_items(files[0])
            else:
                yield from _Grouping(files, stop).items()


def _count_records(path: Path) -> int:
    """The lines that are not blank: one item each, as the readers skip blank
    lines; an unreadable file gives one error item."""
    count = 0
    try:
        with path.open("rb") as f:
            for line in f:
                # isspace() is strip() == b"" for the non-empty lines a file
                # yields, without copying a long line.
                if not line.isspace():
                    count += 1
    except OSError:
        return count + 1
    return count


def _ndjson_items(path: Path) -> Iterator[WorkItem]:
    shown = str(path)
    number = 0
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if not line:
                    continue
                if len(line) > MAX_BYTES:
                    reason = (
                        f"the line is {len(line) / 1e6:.1f} MB; "
                        "inputs over 50 MB are refused"
                    )
                    yield WorkItem(shown, number, "error", reason=reason)
                    continue
                yield WorkItem(shown, number, "text", line)
    except OSError as err:
        reason = f"the file cannot be read: {err.strerror or err}"
        yield WorkItem(shown, number + 1 if number else None, "error", reason=reason)


def _holds_read_types(path: Path) -> bool:
    """Whether a file holds a resource of a type the reader uses anywhere.

    Searched as bytes, without parsing: a skipped file (a bulk export's
    ExplanationOfBenefit.ndjson) is often the largest of the export.
    """
    tail = b""
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                if _READ_TYPE_TEXT.search(tail + block):
                    return True
                tail = block[-64:]  # a match cut by the block's end
    except OSError:
        return True  # read, so that its error is reported
    return False


def _first(path: Path) -> str | None:
    """The resourceType of a file's first readable record, if it has one.

    A broken first line must not decide what the whole file is (a bulk
    export's Patient.ndjson read as NDJSON of bundles loses every patient):
    the first of the first 50 records that parses decides.
    """
    try:
        with path.open("rb") as f:
            lines = (line for line in f if line.strip())
            for line in itertools.islice(lines, 50):
                try:
                    document = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                kind = (
                    document.get("resourceType") if isinstance(document, dict) else None
                )
                return kind if isinstance(kind, str) else None
    except OSError:
        return None
    return None


def _expand(text: str) -> tuple[list[Path], list[Path]]:
    """The input files a command-line input names, and the files it skipped."""
    path = Path(text)
    if path.is_file():
        return [path], []
    if path.is_dir():
        found = [
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
    elif _PATTERN_CHARS & set(text):
        found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
    else:
        raise _no_input(text, "no such file or folder", "check the path")
    chosen = sorted(p for p in found if p.suffix.lower() in _SUFFIXES)
    if not chosen:
        raise _no_input(
            text,
            "holds no input files",
            "folders and patterns take .json, .yaml, .yml, .ndjson and .jsonl files",
        )
    return chosen, sorted(p for p in found if p.suffix.lower() not in _SUFFIXES)


def names_input(text: str) -> bool:
    """Whether the text names an input: an existing file or folder, or a glob
    pattern that matches a file.

    It says nothing of what the files hold; :func:`plan_inputs` does.
    """
    path = Path(text)
    if not text:  # Path("") is the current folder
        return False
    if path.is_file() or path.is_dir():
        return True
    if not _PATTERN_CHARS & set(text):
        return False
    return any(Path(p).is_file() for p in glob.iglob(text, recursive=True))


def _no_input(text: str, reason: str, hint: str) -> InputError:
    return InputError(text, "", reason, hint)


def plan_inputs(inputs: Iterable[str | Path]) -> Plan:
    """Expand files, folders and glob patterns into a plan.

    A file given by name is taken whatever its name; folders (searched
    recursively, hidden entries skipped) and patterns take ``.json``,
    ``.yaml``, ``.yml``, ``.ndjson`` and ``.jsonl`` files. A file given twice
    counts once. NDJSON whose first record is a FHIR resource other than a
    Bundle is a bulk export; its files are grouped by folder.

    Args:
        inputs: Files, folders and patterns, in order.

    Returns:
        The plan.

    Raises:
        InputError: If an input names nothing, or a folder or pattern holds no
            input files.
    """
    plan = Plan()
    seen: set[Path] = set()
    bulk: dict[Path, list[Path]] = {}
    for text in inputs:
        chosen, skipped = _expand(str(text))
        plan.skipped += skipped
        for path in chosen:
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            kind = _first(path) if path.suffix.lower() in NDJSON_SUFFIXES else None
            if path.suffix.lower() not in NDJSON_SUFFIXES:
                plan.sources.append(("case", [path]))
            elif kind is None or kind == "Bundle":
                plan.sources.append(("ndjson", [path]))
            elif key.parent in bulk:
                bulk[key.parent].append(path)
            else:
                bulk[key.parent] = [path]
                plan.sources.append(("bulk", bulk[key.parent]))
    return plan


# --- bulk export ------------------------------------------------------------------


def _patient_id(reference: str) -> str | None:
    if reference.startswith("urn:uuid:"):
        return reference[9:] or None
    parts = reference.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "Patient" and parts[i + 1]:
            return parts[i + 1]
    return None


def _reference(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


class _Grouping:
    """One folder's bulk export, grouped by patient (see the module docstring)."""

    def __init__(self, files: list[Path], stop: Stop) -> None:
        kinds = {f: _first(f) for f in files}
        patients = [f for f in files if kinds[f] == "Patient"]
        media = [f for f in files if kinds[f] == "Medication"]
        # A file whose first line is not JSON is read: its lines get records.
        readable = [
            f
            for f in files
            if kinds[f] in _READ_TYPES
            or kinds[f] is None
            or (kinds[f] not in ("Patient", "Medication") and _holds_read_types(f))
        ]
        self.skipped = len(files) - len(patients) - len(media) - len(readable)
        self.order = [*patients, *media, *readable]
        self.names = [str(f) for f in self.order]
        self.stop = stop
        self.index: dict[str, tuple[int, int, int]] = {}  # id: ordinal, file, line
        self.media: dict[str, bytes] = {}
        self.orphans: dict[str, list[int]] = {}  # id: [count, file, line]
        n = max(1, sum(_count_records(f) for f in patients))
        size = max(1, sum(f.stat().st_size for f in readable))
        self.per_shard = max(math.ceil(n * SHARD_BYTES / size), -(-n // _MAX_SHARDS))

    def stopped(self) -> bool:
        return self.stop is not None and self.stop()

    def items(self) -> Iterator[WorkItem]:
        if self.skipped:
            log.info("bulk export: %d files of unread types skipped", self.skipped)
        with tempfile.TemporaryDirectory(prefix="cdss-bulk-") as tmp:
            shards: dict[int, IO[bytes]] = {}
            try:
                yield from self._route(Path(tmp), shards)
            finally:
                for f in shards.values():
                    f.close()
            for k in sorted(shards):
                if self.stopped():
                    return
                yield from self._shard(Path(tmp) / f"{k}.tsv")
        for pid, (count, file, line) in self.orphans.items():
            if self.stopped():
                return
            reason = (
                f"{count} resource(s) refer to Patient/{pid}, which no Patient "
                "resource of the export has; export the Patient resources too"
            )
            yield WorkItem(self.names[file], line, "error", case_id=pid, reason=reason)

    def _route(self, tmp: Path, shards: dict[int, IO[bytes]]) -> Iterator[WorkItem]:
        count = 0
        for file, path in enumerate(self.order):
            try:
                with path.open("rb") as f:
                    for number, raw in enumerate(f, 1):
                        count += 1
                        if count % 4096 == 0 and self.stopped():
                            return
                        line = raw.strip()
                        problem, pid = self._place(line, file, number, tmp, shards)
                        if problem:
                            yield WorkItem(
                                self.names[file],
                                number,
                                "error",
                                case_id=pid,
                                reason=problem,
                            )
            except OSError as err:
                reason = f"the file cannot be read: {err.strerror or err}"
                yield WorkItem(self.names[file], None, "error", reason=reason)

    def _place(
        self,
        line: bytes,
        file: int,
        number: int,
        tmp: Path,
        shards: dict[int, IO[bytes]],
    ) -> tuple[str, str | None]:
        """Index, keep or shard one line; return what is wrong, if anything,
        and the patient it is about, if known."""
        if not line:
            return "", None
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            return f"not JSON: {err}", None
        if not isinstance(document, dict):
            return "a bulk-export line must be a FHIR resource (a JSON object)", None
        kind = document.get("resourceType")
        rid = document.get("id")
        if kind == "Patient":
            if not isinstance(rid, str) or not rid:
                return "the Patient has no id", None
            if rid in self.index:
                _, f, n = self.index[rid]
                first = f"{self.names[f]}:{n}"
                return f"a second Patient/{rid}; the first is at {first}", rid
            self.index[rid] = (len(self.index), file, number)
            self._write(rid, b"P", file, number, rid, line, tmp, shards)
        elif kind == "Medication":
            if isinstance(rid, str) and rid:
                self.media[f"Medication/{rid}"] = line
        elif kind in _READ_TYPES:
            ref = _reference(document, "subject") or _reference(document, "patient")
            if ref is None:
                return f"the {kind} has no subject.reference or patient.reference", None
            pid = _patient_id(ref)
            if pid is None:
                return f"the {kind} is about `{ref}`, not a Patient", None
            if pid not in self.index:
                entry = self.orphans.setdefault(pid, [0, file, number])
                entry[0] += 1
                return "", None
            media = _reference(document, "medicationReference") or ""
            self._write(pid, b"R", file, number, media, line, tmp, shards)
        return "", None  # anything else is a type the reader does not use

    def _write(
        self,
        pid: str,
        kind: bytes,
        file: int,
        number: int,
        note: str,
        line: bytes,
        tmp: Path,
        shards: dict[int, IO[bytes]],
    ) -> None:
        # One record per line: ordinal, P(atient) or R(esource), file, line
        # number, the patient id (P) or medication reference (R), the JSON.
        ordinal = self.index[pid][0]
        k = ordinal // self.per_shard
        if k not in shards:
            shards[k] = (tmp / f"{k}.tsv").open("ab")
        text = note.replace("\t", "").encode()
        head = b"%d\t%s\t%d\t%d\t%s\t" % (ordinal, kind, file, number, text)
        shards[k].write(head + line + b"\n")

    def _shard(self, path: Path) -> Iterator[WorkItem]:
        groups: dict[int, list[tuple[bytes, bytes]]] = {}
        heads: dict[int, tuple[int, int, str]] = {}
        with path.open("rb") as f:
            for record in f:
                fields = record.split(b"\t", 5)
                o = int(fields[0])
                if fields[1] == b"P":
                    heads[o] = (int(fields[2]), int(fields[3]), fields[4].decode())
                groups.setdefault(o, []).append((fields[4], fields[5].rstrip(b"\n")))
        for o in sorted(groups):
            records = groups.pop(o)
            file, number, pid = heads[o]
            refs = dict.fromkeys(n.decode() for n, _ in records[1:] if n)
            media = [self.media[r] for r in refs if r in self.media]
            lines = [line for _, line in records]
            yield WorkItem(
                self.names[file], number, "resources", (*lines, *media), case_id=pid
            )


def bundle_of(lines: tuple[bytes, ...]) -> dict[str, Any]:
    """A collection Bundle of one patient's bulk-export lines.

    Args:
        lines: The resources as JSON, the Patient first.

    Returns:
        The Bundle, each entry with a ``fullUrl`` of ``Type/id``.
    """
    entries = []
    for line in lines:
        resource = orjson.loads(line)
        entry: dict[str, Any] = {"resource": resource}
        rid, kind = resource.get("id"), resource.get("resourceType")
        if isinstance(rid, str) and isinstance(kind, str):
            entry["fullUrl"] = f"{kind}/{rid}"
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
