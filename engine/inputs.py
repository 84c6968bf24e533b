"""Read a patient input of either kind: a FHIR R4 Bundle or a case file.

The kind is decided by content, not by file name: a JSON object with
``resourceType: Bundle`` is FHIR; any other YAML or JSON mapping without a
``resourceType`` is a case file. JSON is parsed with ``orjson`` (bundles are
large; it takes about 60% of the stdlib's time), falling back to the stdlib
``json`` for what orjson refuses, so both accept and reject the same documents
and messages stay the stdlib's; case files with ruamel.yaml (slower, but it
keeps line numbers for messages).

A file is first tried as a bundle read straight from its bytes
(:func:`~engine.fhir.read_bundle_json`, about a tenth faster in all); anything
that way does not read, every error included, is then read as above, so the
two ways differ only in speed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Final

import orjson

from .casefile import load_yaml, read_case_data, read_case_file
from .catalogue import Catalogue
from .errors import InputError, display_path
from .facts import Case
from .fhir import read_bundle, read_bundle_json

__all__ = ["MAX_BYTES", "read_input", "read_input_data"]

logger = logging.getLogger(__name__)

MAX_BYTES: Final = 50_000_000
"""Inputs larger than this are refused (the largest Synthea record is ~3.5 MB)."""

_BOM: Final = "\ufeff".encode()
# Keys every line of cdss's own output has (an assessment or an error record).
_OUTPUT_KEYS: Final = frozenset({"status", "notice"})
_HINT: Final = (
    "give a FHIR R4 Bundle as JSON, or a case file as YAML or JSON "
    "(see examples/README.md)"
)


def read_input(path: Path | str, *, catalogue: Catalogue | None = None) -> Case:
    """Read a FHIR bundle or case file from disk.

    Args:
        path: The file (a path or its name as text).
        catalogue: The fact catalogue; the shipped one by default.

    Returns:
        The case.

    Raises:
        InputError: If the file is missing, a directory, unreadable, larger
            than 50 MB, not UTF-8, or not a valid bundle or case file.
    """
    path = Path(path)
    source = display_path(path)
    try:
        found = path.exists()
    except OSError as err:  # a name too long, say
        found, why = False, f"not a usable path: {err.strerror or err}"
    else:
        why = "the file does not exist"
    if not found:
        name = str(path)
        if name.lstrip().startswith(("{", "<")) or "\n" in name:
            # A document (JSON, XML, a YAML case file) passed where its path
            # belongs: not echoed back.
            raise InputError(
                "<text>",
                "",
                "this is the text of a document, not a path to a file",
                "pass the parsed document (json.loads or yaml.safe_load of "
                "the text) or the path of the file",
            )
        raise InputError(source[:200], "", why, "check the path")
    if path.is_dir():
        raise InputError(source, "", "this is a directory, not a file", "name a file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(
                source,
                "",
                f"the file is {size / 1e6:.1f} MB; inputs over 50 MB are refused",
                "give one patient's record per file",
            )
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(
            source, "", f"the file cannot be read: {err.strerror or err}"
        ) from None
    case = _read_bundle_bytes(raw, source, catalogue)
    if case is not None:
        return case
    return read_input_data(_decode(raw, source), source=source, catalogue=catalogue)


def _read_bundle_bytes(
    raw: bytes, source: str, catalogue: Catalogue | None
) -> Case | None:
    """Read a bundle file the fast way, or None to read it the usual way.

    The usual way (decode, orjson, :func:`~engine.fhir.read_bundle`) reads
    every input and words every error; this one reads most bundle files in
    nine tenths of its time and gives None for anything it does not read,
    including every input the usual way refuses.
    """
    # As _decode and _read_data take them: any number of byte-order marks.
    start = 0
    while raw.startswith(_BOM, start):
        start += len(_BOM)
    body = raw[start:] if start else raw
    if not body.isascii():
        # pydantic-core's own UTF-8 checks are not documented to be the
        # codec's; text the codec refuses must get _decode's message.
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    case = read_bundle_json(body, source=source, catalogue=catalogue)
    if case is not None:
        logger.debug("read %s as a FHIR bundle", source)
    return case


def _decode(raw: bytes, source: str) -> str:
    try:
        # utf-8-sig: a byte-order mark from Windows editors is not an error.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise InputError(
            source,
            f"byte offset {err.start} (line {line})",
            f"the file is not UTF-8 text (byte 0x{raw[err.start]:02x})",
            "save the file as UTF-8",
        ) from None


def read_input_data(
    data: dict[str, Any] | str,
    *,
    source: str,
    catalogue: Catalogue | None = None,
) -> Case:
    """Read a FHIR bundle or case file given as text or as a parsed mapping.

    Args:
        data: The file's text, or an already-parsed JSON/YAML mapping.
        source: The file name or label, for messages.
        catalogue: The fact catalogue; the shipped one by default.

    Returns:
        The case.

    Raises:
        InputError: If the input is neither a FHIR Bundle nor a case file, a
            FHIR resource of another type, or invalid as either.
    """
    try:
        return _read_data(data, source, catalogue)
    except RecursionError:
        raise InputError(
            source,
            "",
            "the document is nested too deeply to read",
            "a patient record nests a few levels deep; check the export",
        ) from None


def _read_data(
    data: dict[str, Any] | str, source: str, catalogue: Catalogue | None
) -> Case:
    if isinstance(data, dict):
        return _route(data, source, catalogue, text=None)
    if not isinstance(data, str):
        raise InputError(
            source, "", f"expected text or a mapping, got {type(data).__name__}"
        )
    text = data.lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        try:
            parsed = _loads(text)
        except json.JSONDecodeError as err:
            # JSON is YAML: a flow mapping like `{age: 67}` may still be a case.
            try:
                document = load_yaml(text, source=source)
            except InputError:
                raise InputError(
                    source,
                    f"line {err.lineno}, column {err.colno}",
                    # json's messages end "... starting at": the place is
                    # given above, so the sentence ends "here".
                    f"neither JSON nor YAML: {_closed(err.msg)}",
                    _HINT,
                ) from None
            return _route(document, source, catalogue, text=None)
        return _route(parsed, source, catalogue, text=text)
    if text.strip() in ("null", "~", "Null", "NULL"):
        raise InputError(
            source, "", "the document is `null`, not a bundle or case file", _HINT
        )
    return _route(load_yaml(text, source=source), source, catalogue, text=None)


def _closed(message: str) -> str:
    return f"{message.removesuffix(' at')} here" if message.endswith(" at") else message


def _loads(text: str) -> Any:
    """Parse JSON text: orjson, or the stdlib where orjson refuses the text.

    orjson refuses what the stdlib accepts (NaN and Infinity, lone surrogates,
    nesting deeper than 1024), so the stdlib decides those and gives its own
    messages for text that is not JSON at all.

    Raises:
        json.JSONDecodeError: If the text is not JSON.
    """
    # XXX: orjson reads an integer beyond 64 bits as a float where the stdlib
    # keeps an int; FHIR integers are 32-bit, and decimals are floats either
    # way, so no valid bundle reads differently. Pinned by tests/test_batch.py
    # test_json_that_orjson_refuses_reads_as_with_the_stdlib.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _route(
    document: Any, source: str, catalogue: Catalogue | None, *, text: str | None
) -> Case:
    """Send a parsed document to the FHIR or the case-file reader.

    ``text`` is given when the document came from ``json``: a case file is then
    parsed again as YAML, so its messages can name lines and duplicate keys
    (which ``json`` silently drops) are refused.
    """
    if isinstance(document, dict) and "resourceType" in document:
        kind = document["resourceType"]
        if kind == "Bundle" and not _plain(document):
            raise InputError(
                source,
                "resourceType",
                "a FHIR Bundle written as YAML",
                "give FHIR bundles as JSON",
            )
        if kind == "Bundle":
            logger.debug("reading %s as a FHIR bundle", source)
            return read_bundle(document, source=source, catalogue=catalogue)
        raise InputError(
            source,
            "resourceType",
            f"expected a Bundle, got {kind}",
            "export the patient's record as a FHIR R4 Bundle (of type collection, "
            "transaction or searchset) holding the Patient and the resources",
        )
    if isinstance(document, dict) and _OUTPUT_KEYS <= document.keys():
        raise InputError(
            source,
            "",
            "this is a cdss result (an assessment or a batch error record), "
            "not a patient's record",
            "keep earlier results out of the folders and patterns given as inputs",
        )
    if document is None or isinstance(document, dict):
        logger.debug("reading %s as a case file", source)
        if text is not None:
            return read_case_file(text, source=source, catalogue=catalogue)
        return read_case_data(document, source=source, catalogue=catalogue)
    raise InputError(
        source,
        "",
        f"expected a FHIR Bundle or a case-file mapping, got {_kind(document)}",
        _HINT,
    )


def _plain(document: dict[str, Any]) -> bool:
    # A dict from json (or a caller) is plain; ruamel's nodes carry positions.
    return not hasattr(document, "lc")


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    return "a number" if isinstance(value, int | float) else type(value).__name__
