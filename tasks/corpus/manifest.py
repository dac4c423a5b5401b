"""Reading a corpus manifest one row at a time: JSON Lines, CSV or Parquet, local or on S3.

Part of corpus input (see :mod:`tasks.corpus.resolve`). A row that cannot be parsed becomes a
``Failure(stage="manifest", code="malformed_row")`` whose message names its line (JSON Lines,
CSV) or row (Parquet); the rows after it are read as usual. Whether a parsed row names a real,
readable file is :func:`tasks.corpus.resolve.resolved_items`'s business.

Columns (JSON keys, CSV header names, Parquet column names): ``uri`` (required), ``id``,
``modality``, ``metadata`` (a JSON object, or JSON text holding one) and ``encoding``;
``item_id`` and ``metadata_json`` are accepted for ``id`` and ``metadata``, so a resolved
``manifest.parquet`` reads back in. Other columns are ignored.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tasks.records import Failure

MAX_LINE_BYTES = 16 * 1024 * 1024
"""A JSON Lines or CSV line longer than this is quarantined unread, so memory stays bounded."""

PARQUET_BATCH_ROWS = 1024
"""Rows decoded from a Parquet manifest at a time."""

MANIFEST_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
"""The manifest format each file extension stands for."""

# ManifestRow field -> the column names that fill it, the preferred one first.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "uri": ("uri",),
    "item_id": ("id", "item_id"),
    "modality": ("modality",),
    "metadata_json": ("metadata", "metadata_json"),
    "encoding": ("encoding",),
}
_KNOWN_COLUMNS = frozenset(name for names in _COLUMNS.values() for name in names)
_READ_BUFFER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ManifestRow:
    """One corpus entry as the manifest (or a crawl) states it, not yet checked against storage.

    ``position`` is where it came from, 1-based: the line it starts on (JSON Lines; CSV, where
    the header is line 1), its row number (Parquet) or its place in crawl order. ``uri`` is
    ``s3://bucket/key`` or a local path, absolute or relative to the corpus root. The optional
    fields are None when not given; ``metadata_json`` is the metadata's JSON text as given.
    """

    position: int
    uri: str
    item_id: str | None = None
    modality: str | None = None
    metadata_json: str | None = None
    encoding: str | None = None


@dataclass(frozen=True)
class Rejection:
    """Why a row cannot become an item: a failure ``code`` and a message a person can act on.
    The caller turns it into a ``Failure`` once it knows the row's id; ``derived_id`` is the
    id the row would have had, when it is known although the row is refused."""

    code: str
    message: str
    derived_id: str | None = None


def manifest_rows(manifest: str) -> Iterator[ManifestRow | Failure]:
    """Each row of ``manifest`` in file order: a :class:`ManifestRow`, or a ``malformed_row``
    Failure saying which line or row is wrong and how.

    ``manifest`` is a local path or a URI ``pyarrow.fs`` opens (``s3://bucket/key``, reached
    through the standard ``AWS_*`` variables); its extension picks the format (see
    ``MANIFEST_FORMATS``). The manifest is streamed: JSON Lines and CSV a line at a time,
    Parquet ``PARQUET_BATCH_ROWS`` rows at a time.

    Raises ``FileNotFoundError`` for a missing manifest and ``ValueError`` for one that cannot be
    read as a whole (unknown extension, no ``uri`` column, duplicate CSV columns). Those stop the
    run on purpose: read as "no rows", they would look like an empty corpus, and the plan would
    delete the whole index.
    """
    manifest_format = _manifest_format(manifest)
    filesystem, path = _filesystem_and_path(manifest)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"manifest not found: {manifest}")
    if manifest_format == "parquet":
        yield from _parquet_rows(filesystem, path, manifest)
        return
    with filesystem.open_input_stream(path) as stream:
        lines = io.BufferedReader(stream, _READ_BUFFER_BYTES)  # type: ignore[arg-type]
        if manifest_format == "jsonl":
            yield from _jsonl_rows(lines)
        else:
            yield from _csv_rows(lines, manifest)


def _manifest_format(manifest: str) -> str:
    extension = os.path.splitext(manifest.rstrip("/"))[1].lower()
    if extension not in MANIFEST_FORMATS:
        known = ", ".join(MANIFEST_FORMATS)
        raise ValueError(f"cannot read manifest {manifest}: its extension must be one of {known}")
    return MANIFEST_FORMATS[extension]


def _filesystem_and_path(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _bounded_lines(lines: io.BufferedReader) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes), or (line number, None) for a line over ``MAX_LINE_BYTES``."""
    number = 0
    while line := lines.readline(MAX_LINE_BYTES + 1):
        number += 1
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield number, line
            continue
        while (rest := lines.readline(_READ_BUFFER_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield number, None


def _jsonl_rows(lines: io.BufferedReader) -> Iterator[ManifestRow | Failure]:
    for number, line in _bounded_lines(lines):
        where = f"line {number}"
        if line is None:
            yield _malformed(f"{where}: longer than {MAX_LINE_BYTES} bytes; not read")
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line.rstrip(b"\r\n").decode("utf-8"))
        except UnicodeDecodeError as error:
            yield _malformed(f"{where}: not valid UTF-8 (byte {error.start}: {error.reason})")
            continue
        except json.JSONDecodeError as error:
            yield _malformed(f"{where}: invalid JSON: {error.msg} (column {error.colno})")
            continue
        if not isinstance(value, dict):
            yield _malformed(f"{where}: expected a JSON object, got {json_type_name(value)}")
            continue
        yield _row_from_record(number, value, where)


def _csv_rows(lines: io.BufferedReader, manifest: str) -> Iterator[ManifestRow | Failure]:
    over_long: list[int] = []

    def text_lines() -> Iterator[str]:
        for number, line in _bounded_lines(lines):
            if line is None:
                over_long.append(number)
                yield "\n"  # keeps csv's line count right; an empty row is skipped below
            else:
                # Undecodable bytes survive as lone surrogates, so the row (not the whole file)
                # can be quarantined once csv has found where it ends.
                yield line.decode("utf-8", errors="surrogateescape")

    reader = csv.reader(text_lines())
    header = next(reader, None)
    if header is None:
        return
    columns = [name.strip() for name in header]
    if "uri" not in columns:
        raise ValueError(f"manifest {manifest} has no 'uri' column; its header is {columns}")
    repeated = sorted({name for name in columns if columns.count(name) > 1 and name})
    if repeated:
        raise ValueError(f"manifest {manifest} names columns {repeated} more than once")
    while True:
        start = reader.line_num + 1
        fields: list[str] | csv.Error | None
        try:
            fields = next(reader)
        except StopIteration:
            fields = None
        except csv.Error as error:
            fields = error
        for number in over_long:
            yield _malformed(f"line {number}: longer than {MAX_LINE_BYTES} bytes; not read")
        over_long.clear()
        where = f"line {start}"
        if fields is None:
            break
        if isinstance(fields, csv.Error):
            yield _malformed(f"{where}: unreadable CSV: {fields}")
            continue
        if not fields:
            continue
        if len(fields) != len(columns):
            yield _malformed(
                f"{where}: {len(fields)} fields, but the header has {len(columns)} columns"
            )
            continue
        if any(_has_undecodable_bytes(field) for field in fields):
            yield _malformed(f"{where}: not valid UTF-8")
            continue
        # CSV cannot say null: an empty cell means the column was not given.
        record = {name: value for name, value in zip(columns, fields, strict=True) if value != ""}
        yield _row_from_record(start, record, where)


def _parquet_rows(
    filesystem: pafs.FileSystem, path: str, manifest: str
) -> Iterator[ManifestRow | Failure]:
    with filesystem.open_input_file(path) as source:
        # pre_buffer would fetch every row group's column chunks up front: the whole file.
        parquet = pq.ParquetFile(source, pre_buffer=False)
        columns = [name for name in parquet.schema_arrow.names if name in _KNOWN_COLUMNS]
        if "uri" not in columns:
            names = parquet.schema_arrow.names
            raise ValueError(f"manifest {manifest} has no 'uri' column; its columns are {names}")
        position = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for record in batch.to_pylist():
                position += 1
                yield _row_from_record(position, record, f"row {position}")


def _row_from_record(position: int, record: Mapping[str, Any], where: str) -> ManifestRow | Failure:
    """The row a parsed record (JSON object, CSV cells, Parquet row) states, or why it is
    malformed. Null values count as not given."""
    given_uri = record.get("uri")
    given_id = record.get("id", record.get("item_id"))
    uri_text = given_uri if isinstance(given_uri, str) else ""
    id_text = given_id if isinstance(given_id, str) else ""
    values: dict[str, Any] = {}
    for field, names in _COLUMNS.items():
        present = [name for name in names if record.get(name) is not None]
        if len(present) > 1:
            both = " and ".join(repr(name) for name in present)
            return _malformed(f"{where}: both {both} are given; use one", uri_text, id_text)
        values[field] = record[present[0]] if present else None
    if values["uri"] is None:
        return _malformed(f"{where}: no 'uri'", uri_text, id_text)
    if values["uri"] == "":
        return _malformed(f"{where}: 'uri' is empty", uri_text, id_text)
    for field in ("uri", "item_id", "modality", "encoding"):
        value = values[field]
        if value is not None and not isinstance(value, str):
            column = _COLUMNS[field][0]
            message = f"{where}: '{column}' must be a string, got {json_type_name(value)}"
            return _malformed(message, uri_text, id_text)
    metadata = values["metadata_json"]
    if metadata is not None and not isinstance(metadata, str):
        # An object given inline (JSON, Parquet struct); whether it is an object at all is
        # checked with the text form later, as for CSV.
        try:
            metadata = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as error:
            message = f"{where}: 'metadata' holds values JSON cannot represent: {error}"
            return _malformed(message, uri_text, id_text)
    return ManifestRow(
        position=position,
        uri=values["uri"],
        item_id=values["item_id"],
        modality=values["modality"],
        metadata_json=metadata,
        encoding=values["encoding"],
    )


def _malformed(message: str, uri: str = "", item_id: str = "") -> Failure:
    return Failure(
        item_id=item_id, uri=uri, stage="manifest", code="malformed_row", message=message
    )


def _has_undecodable_bytes(text: str) -> bool:
    return any("\udc80" <= character <= "\udcff" for character in text)


# Kept apart from the stand-in's copy on purpose: each side follows the API reference on its
# own, so a mistake on either side shows up as a failing test.
def json_type_name(value: object) -> str:
    """JSON's name for a value's type ("number", "array", ...), else Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    return type(value).__name__
