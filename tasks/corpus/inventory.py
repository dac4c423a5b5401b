"""An S3 Inventory report read as the corpus manifest: how a bucket of 100 million objects is
listed in practice, without a LIST request.

Part of corpus input (see :mod:`tasks.corpus.resolve`). The layout followed is the documented
one (https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html and
.../storage-inventory.html, "Amazon S3 Inventory list")::

    <destination-prefix>/<source-bucket>/<config-ID>/YYYY-MM-DDTHH-MMZ/manifest.json
    <destination-prefix>/<source-bucket>/<config-ID>/YYYY-MM-DDTHH-MMZ/manifest.checksum
    <destination-prefix>/<source-bucket>/<config-ID>/data/<name>.csv.gz | .orc | .parquet

``manifest.json`` names ``sourceBucket``, ``destinationBucket`` (an ARN,
``arn:aws:s3:::bucket``), ``version`` ("2016-11-30"), ``creationTimestamp`` (epoch
milliseconds), ``fileFormat`` (``CSV``, ``ORC`` or ``Parquet``), ``fileSchema`` and ``files``
(``[{"key", "size", "MD5checksum"}]``, keys in the destination bucket); ``manifest.checksum``
holds the MD5 of ``manifest.json``. CSV data files are gzip-compressed, have no header, hold
the columns ``fileSchema`` lists in its order (``Bucket, Key, VersionId, IsLatest, …, Size,
LastModifiedDate, ETag, …``) and URL-encode keys (a space as "+"). ORC and Parquet files name
their columns in lower snake case (``bucket``, ``key``, ``is_latest``, ``size``, ``e_tag`` …)
and hold keys as they are. All three formats are read (ORC through ``pyarrow.orc``, which the
pyarrow wheels include, so supporting it costs a branch).

Each listed object becomes the row a crawl of ``s3://<source-bucket>/`` would yield (the same
:func:`tasks.corpus.s3.crawls_key` rule, the same :class:`~tasks.corpus.s3.ListedObject` with
the listed ETag and size), so an inventory and a crawl of the same bucket plan the same items:
same ids, same ``etag:<ETag>:<size>`` fingerprints, no HEAD request. Delete markers, versions
that are not the latest, folder markers and hidden keys are skipped. A report configured
without the ``Size`` or ``ETag`` field still works, but each object then costs a HEAD request.

Nothing holds the report whole: data files are read one at a time, a batch of rows at a time.
Each is downloaded to a temporary file first (one at a time, deleted when read), because its
MD5 checksum and size are checked against ``manifest.json`` before any of its rows is yielded,
and Parquet and ORC need random access. A row that cannot be read is a
``Failure(stage="manifest", code="malformed_row")`` naming the data file and line or row; a
report that cannot be read as a whole (a bad ``manifest.json``, a missing or corrupt data file)
raises :class:`InventoryError` (or ``FileNotFoundError`` for a missing ``manifest.json``),
because read as "fewer rows" it would make the plan delete the missing items from the index.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote_plus

import pyarrow.orc as orc
import pyarrow.parquet as pq
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tasks.corpus.manifest import ManifestRow
from tasks.corpus.s3 import ListedObject, S3Prefix, crawls_key
from tasks.records import Failure
from tasks.service_errors import NOT_FOUND_CODES, error_code, http_status

logger = logging.getLogger(__name__)

InventoryFormat = Literal["CSV", "ORC", "Parquet"]

INVENTORY_FORMATS: tuple[InventoryFormat, ...] = ("CSV", "ORC", "Parquet")
"""The ``fileFormat`` values S3 Inventory writes."""

DATA_BATCH_ROWS = 1024
"""Rows decoded from a Parquet or ORC data file at a time."""

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""A ``manifest.json`` larger than this is refused unread (a real one lists data files only)."""

CHECKSUM_FILE = "manifest.checksum"
"""The file beside ``manifest.json`` holding its MD5; checked when it is there."""

# The CSV fileSchema names of the fields read, and the ORC/Parquet column names they have.
_CSV_FIELDS = {
    "Bucket": "bucket",
    "Key": "key",
    "Size": "size",
    "ETag": "e_tag",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
}
_COLUMNAR_FIELDS = tuple(_CSV_FIELDS.values())
_REQUIRED = ("sourceBucket", "destinationBucket", "fileFormat", "fileSchema", "files")
_BUCKET_ARN = re.compile(r"^arn:[a-z0-9-]+:s3:::([^/:]+)$")
_MD5_HEX = re.compile(r"^[0-9a-fA-F]{32}$")
_DOWNLOAD_CHUNK_BYTES = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class InventoryError(ValueError):
    """An S3 Inventory report that cannot be read as a whole; the message says what is wrong
    and where. It stops the run on purpose: skipping the unreadable part would look like
    objects removed from the bucket, and the plan would delete them from the index."""


_Complaint = Callable[[str], InventoryError]
"""Makes the error for one problem with a manifest.json."""


@dataclass(frozen=True)
class InventoryFile:
    """One data file of the report, as ``manifest.json`` lists it: its key in the destination
    bucket, its size in bytes and the MD5 of its bytes (lower-case hex)."""

    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class InventoryManifest:
    """A parsed ``manifest.json``. ``location`` is where it was read; ``csv_columns`` are the
    CSV columns in file order (empty for ORC and Parquet, whose files name their own);
    ``created_at`` is ``creationTimestamp`` (when the report began scanning the bucket) and
    ``version`` the report's format version, each None when the manifest omits it."""

    location: str
    source_bucket: str
    destination_bucket: str
    file_format: InventoryFormat
    file_schema: str
    files: tuple[InventoryFile, ...]
    version: str | None = None
    created_at: datetime | None = None

    @property
    def source_root(self) -> str:
        """``s3://<source bucket>/``: the corpus root an inventory gives when none is set."""
        return f"s3://{self.source_bucket}/"

    @property
    def csv_columns(self) -> tuple[str, ...]:
        """The CSV columns ``fileSchema`` lists, in file order; () for ORC and Parquet."""
        if self.file_format != "CSV":
            return ()
        return tuple(name.strip() for name in self.file_schema.split(","))

    def data_file_uri(self, file: InventoryFile) -> str:
        """``s3://<destination bucket>/<key>`` of one data file."""
        return f"s3://{self.destination_bucket}/{file.key}"


@dataclass(frozen=True)
class InventoryEntry:
    """One row of a data file, before the corpus rules apply. ``where`` names the data file and
    the line (CSV) or row (ORC, Parquet), 1-based; a field the report does not carry is None."""

    where: str
    key: str
    bucket: str | None = None
    size: int | None = None
    etag: str | None = None
    is_latest: bool | None = None
    is_delete_marker: bool | None = None


def is_inventory_manifest(manifest: str) -> bool:
    """Whether ``manifest`` is to be read as an S3 Inventory ``manifest.json``: its file name
    ends in ``.json`` (no other manifest format does). Looks at the name only."""
    return os.path.splitext(manifest.rstrip("/"))[1].lower() == ".json"


def read_inventory_manifest(manifest: str, s3_client: BaseClient) -> InventoryManifest:
    """The report ``manifest`` (``s3://bucket/…/manifest.json`` or a local path) describes, read
    through ``s3_client`` when on S3. When a ``manifest.checksum`` lies beside it, the manifest's
    MD5 must match it.

    Raises ``FileNotFoundError`` when there is no such manifest and :class:`InventoryError`
    when it is not a valid S3 Inventory manifest, saying which field is wrong."""
    content = _manifest_bytes(manifest, s3_client)
    expected = _checksum_beside(manifest, s3_client)
    if expected is not None:
        actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if actual != expected:
            raise InventoryError(
                f"inventory manifest {manifest} has MD5 {actual}, but its {CHECKSUM_FILE} says "
                f"{expected}: the manifest is damaged or was replaced while being read"
            )
    return parsed_inventory_manifest(content, manifest)


def parsed_inventory_manifest(content: bytes, location: str) -> InventoryManifest:
    """The manifest ``content`` (the bytes of a ``manifest.json``) states; ``location`` is named
    in errors. Raises :class:`InventoryError` saying which field is missing or wrong."""

    def bad(problem: str) -> InventoryError:
        return InventoryError(f"{location} is not a valid S3 Inventory manifest: {problem}")

    try:
        value = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise bad("expected a JSON object")
    missing = [name for name in _REQUIRED if name not in value]
    if missing:
        raise bad(f"it has no {', '.join(repr(name) for name in missing)}")
    source_bucket = _text_field(value, "sourceBucket", bad)
    destination = _text_field(value, "destinationBucket", bad)
    arn = _BUCKET_ARN.match(destination)
    if arn is not None:
        destination = arn.group(1)
    elif destination.startswith("arn:") or "/" in destination:
        raise bad(f"'destinationBucket' {destination!r} is not an S3 bucket ARN")
    wanted_format = _text_field(value, "fileFormat", bad)
    file_format = next((f for f in INVENTORY_FORMATS if f.lower() == wanted_format.lower()), None)
    if file_format is None:
        raise bad(f"'fileFormat' {wanted_format!r} is not one of {', '.join(INVENTORY_FORMATS)}")
    file_schema = _text_field(value, "fileSchema", bad)
    inventory = InventoryManifest(
        location=location,
        source_bucket=source_bucket,
        destination_bucket=destination,
        file_format=file_format,
        file_schema=file_schema,
        files=_files(value["files"], bad),
        version=_optional_text(value, "version", bad),
        created_at=_created_at(value, bad),
    )
    if file_format == "CSV" and "Key" not in inventory.csv_columns:
        raise bad(f"its CSV 'fileSchema' has no Key column: {file_schema!r}")
    return inventory


def inventory_rows(
    inventory: InventoryManifest, s3_client: BaseClient, root: str | None = None
) -> Iterator[ManifestRow | Failure]:
    """Each current object the report lists under ``root`` (an ``s3://`` prefix in the source
    bucket; the whole bucket when None), as the row a crawl of ``root`` yields, data file by
    data file in manifest order: a :class:`ListedObject` carrying the listed ETag and size (a
    plain :class:`ManifestRow` when the report omits either), ``position`` counting the rows
    yielded from 1. A row of a data file that cannot be read is a ``malformed_row`` Failure.

    Pass ``root`` (or :attr:`InventoryManifest.source_root`) as the corpus root of
    :func:`tasks.corpus.resolve.resolved_items`, so ids are keys relative to it, as a crawl's.
    Raises ``ValueError`` at once for a root outside the source bucket; raises
    :class:`InventoryError`, when the rows reach it, for a data file that is missing,
    unreadable or not what the manifest says (size, MD5): the rows of the files before it have
    been yielded by then, but the run stops before it plans any removal."""
    return _inventory_rows(inventory, s3_client, _root_prefix(inventory, root))


def _inventory_rows(
    inventory: InventoryManifest, s3_client: BaseClient, prefix: S3Prefix
) -> Iterator[ManifestRow | Failure]:
    position = 0
    warned = False
    for file in inventory.files:
        for entry in downloaded_entries(inventory, file, s3_client):
            row = entry if isinstance(entry, Failure) else entry_row(entry, prefix, position + 1)
            if row is None:
                continue
            if isinstance(row, ManifestRow):
                position += 1
                if not warned and not isinstance(row, ListedObject):
                    warned = True
                    logger.warning(
                        "inventory %s lists objects without their Size or ETag: each costs a "
                        "HEAD request; configure the report to include both",
                        inventory.location,
                    )
            yield row


def entry_row(entry: InventoryEntry, root: S3Prefix, position: int) -> ManifestRow | Failure | None:
    """The row ``entry`` gives a crawl of ``root`` at ``position``: None when a crawl would not
    list it (a delete marker, an older version, outside the prefix, a folder marker, hidden),
    a ``malformed_row`` Failure when it names another bucket than ``root``'s."""
    if entry.is_delete_marker or entry.is_latest is False:
        return None
    uri = f"s3://{root.bucket}/{entry.key}"
    if entry.bucket is not None and entry.bucket != root.bucket:
        message = (
            f"{entry.where}: lists bucket {entry.bucket!r}, but the inventory is of {root.bucket!r}"
        )
        return _malformed(message, f"s3://{entry.bucket}/{entry.key}")
    if not crawls_key(root, entry.key):
        return None
    if entry.size is None or entry.etag is None:
        return ManifestRow(position=position, uri=uri)
    return ListedObject(position=position, uri=uri, etag=entry.etag, size_bytes=entry.size)


def downloaded_entries(
    inventory: InventoryManifest, file: InventoryFile, s3_client: BaseClient
) -> Iterator[InventoryEntry | Failure]:
    """The entries of one data file, read from a temporary copy once its size and MD5 match
    ``manifest.json``. Raises :class:`InventoryError` when the file is missing, unreadable or
    does not match."""
    uri = inventory.data_file_uri(file)
    with tempfile.TemporaryDirectory(prefix="novaflow-inventory-") as directory:
        path = os.path.join(directory, "data")
        with open(path, "wb") as copy:
            _download(s3_client, inventory, file, copy)
        yield from data_file_entries(path, inventory.file_format, inventory.csv_columns, uri)


def data_file_entries(
    path: str, file_format: InventoryFormat, csv_columns: tuple[str, ...], name: str
) -> Iterator[InventoryEntry | Failure]:
    """The entries of the data file at local ``path`` (``name`` is what messages call it),
    streamed: CSV (gzip-compressed or not) a line at a time, with ``csv_columns`` from the
    manifest's ``fileSchema``; ORC and Parquet ``DATA_BATCH_ROWS`` rows at a time. Raises
    :class:`InventoryError` for a file that cannot be read as that format or lacks a key
    column."""
    try:
        if file_format == "CSV":
            yield from _csv_entries(path, csv_columns, name)
        else:
            yield from _columnar_entries(path, file_format, name)
    except (OSError, EOFError, ValueError) as error:  # pyarrow's errors are ValueError/OSError
        if isinstance(error, InventoryError):
            raise
        message = f"cannot read inventory data file {name} as {file_format}: {error}"
        raise InventoryError(message) from error


def _csv_entries(
    path: str, columns: tuple[str, ...], name: str
) -> Iterator[InventoryEntry | Failure]:
    fields = {column: index for index, column in enumerate(columns) if column in _CSV_FIELDS}
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    stream: io.BufferedIOBase = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
    with stream, io.TextIOWrapper(stream, "utf-8", "surrogateescape", newline="") as text:
        reader = csv.reader(text)
        while True:
            where = f"{name} line {reader.line_num + 1}"
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield _malformed(f"{where}: unreadable CSV: {error}")
                continue
            if not cells:
                continue
            if len(cells) != len(columns):
                yield _malformed(
                    f"{where}: {len(cells)} fields, but the fileSchema has {len(columns)} columns"
                )
                continue
            record = {_CSV_FIELDS[c]: cells[i] or None for c, i in fields.items()}
            yield _csv_entry(record, where)


def _csv_entry(record: Mapping[str, str | None], where: str) -> InventoryEntry | Failure:
    encoded_key = record.get("key") or ""
    bucket = record.get("bucket")
    try:
        key = unquote_plus(encoded_key, errors="strict")
    except UnicodeDecodeError:
        return _malformed(f"{where}: key {encoded_key!r} is not URL-encoded UTF-8")
    uri = f"s3://{bucket}/{key}" if bucket else ""
    if not key or any("\udc80" <= c <= "\udcff" for c in key + (bucket or "")):
        return _malformed(f"{where}: no key, or bytes that are not UTF-8", uri)
    size_text = record.get("size")
    try:
        size = None if size_text is None else int(size_text)
        is_latest = _csv_boolean(record.get("is_latest"))
        is_delete_marker = _csv_boolean(record.get("is_delete_marker"))
    except ValueError as error:
        return _malformed(f"{where}: {error}", uri)
    if size is not None and size < 0:
        return _malformed(f"{where}: Size {size} is negative", uri)
    return InventoryEntry(
        where=where,
        key=key,
        bucket=bucket,
        size=size,
        etag=record.get("e_tag"),
        is_latest=is_latest,
        is_delete_marker=is_delete_marker,
    )


def _csv_boolean(text: str | None) -> bool | None:
    if text is None:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ValueError(f"{text!r} is neither true nor false")


def _columnar_entries(
    path: str, file_format: InventoryFormat, name: str
) -> Iterator[InventoryEntry | Failure]:
    if file_format == "Parquet":
        # pre_buffer would fetch every row group's column chunks up front.
        parquet = pq.ParquetFile(path, pre_buffer=False)
        columns = _columns(parquet.schema_arrow.names, name)
        batches = (
            batch.to_pylist()
            for batch in parquet.iter_batches(batch_size=DATA_BATCH_ROWS, columns=columns)
        )
    else:
        reader = orc.ORCFile(path)
        batches = _orc_batches(reader, _columns(reader.schema.names, name))
    number = 0
    for batch in batches:
        for record in batch:
            number += 1
            yield _columnar_entry(record, f"{name} row {number}")


def _orc_batches(reader: orc.ORCFile, columns: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The file's rows, ``DATA_BATCH_ROWS`` at a time, decoding one stripe at a time."""
    for index in range(reader.nstripes):
        stripe = reader.read_stripe(index, columns=columns)
        for start in range(0, stripe.num_rows, DATA_BATCH_ROWS):
            yield stripe.slice(start, DATA_BATCH_ROWS).to_pylist()


def _columns(names: Sequence[str], name: str) -> list[str]:
    present = [column for column in names if column in _COLUMNAR_FIELDS]
    if "key" not in present:
        raise InventoryError(f"inventory data file {name} has no 'key' column: {list(names)}")
    return present


def _columnar_entry(record: Mapping[str, Any], where: str) -> InventoryEntry | Failure:
    key, bucket = record.get("key"), record.get("bucket")
    uri = f"s3://{bucket}/{key}" if isinstance(bucket, str) and isinstance(key, str) else ""
    if not isinstance(key, str) or not key:
        return _malformed(f"{where}: no key", uri)
    size, etag = record.get("size"), record.get("e_tag")
    is_latest, is_delete_marker = record.get("is_latest"), record.get("is_delete_marker")
    expected: tuple[tuple[str, object, type | tuple[type, ...]], ...] = (
        ("bucket", bucket, str),
        ("size", size, int),
        ("e_tag", etag, str),
        ("is_latest", is_latest, bool),
        ("is_delete_marker", is_delete_marker, bool),
    )
    for column, value, kind in expected:
        if value is not None and not isinstance(value, kind):
            return _malformed(f"{where}: '{column}' is a {type(value).__name__}", uri)
    if isinstance(size, bool) or (size is not None and size < 0):
        return _malformed(f"{where}: size {size!r} is not a byte count", uri)
    return InventoryEntry(
        where=where,
        key=key,
        bucket=bucket,
        size=size,
        etag=etag,
        is_latest=is_latest,
        is_delete_marker=is_delete_marker,
    )


def _download(
    client: BaseClient, inventory: InventoryManifest, file: InventoryFile, into: BinaryIO
) -> None:
    """Copies one data file into ``into`` and checks its size and MD5 against the manifest."""
    uri = inventory.data_file_uri(file)
    try:
        response = client.get_object(Bucket=inventory.destination_bucket, Key=file.key)
    except ClientError as error:
        code, status = error_code(error), http_status(error)
        if code in NOT_FOUND_CODES or status == 404:
            raise InventoryError(
                f"inventory data file {uri}, listed in {inventory.location}, does not exist "
                f"({code or status}): the report may be incomplete or already expired"
            ) from None
        if status == 403:
            raise InventoryError(
                f"access denied reading inventory data file {uri} ({code or status})"
            ) from None
        raise
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    for chunk in response["Body"].iter_chunks(_DOWNLOAD_CHUNK_BYTES):
        digest.update(chunk)
        into.write(chunk)
        size += len(chunk)
    if size != file.size:
        raise InventoryError(
            f"inventory data file {uri} is {size} bytes, but {inventory.location} says "
            f"{file.size}: the file is truncated or was replaced"
        )
    if digest.hexdigest() != file.md5:
        raise InventoryError(
            f"inventory data file {uri} has MD5 {digest.hexdigest()}, but "
            f"{inventory.location} says {file.md5}: the file is damaged or was replaced"
        )


def _root_prefix(inventory: InventoryManifest, root: str | None) -> S3Prefix:
    if root is None:
        return S3Prefix.of(inventory.source_root)
    if root[:5].lower() != "s3://":
        raise ValueError(
            f"the corpus root of an S3 Inventory must be an s3:// prefix in its source bucket "
            f"{inventory.source_root}, not {root!r}"
        )
    prefix = S3Prefix.of(root)
    if prefix.bucket != inventory.source_bucket:
        raise ValueError(
            f"the corpus root {root} is not in bucket {inventory.source_bucket!r}, "
            f"which the inventory {inventory.location} lists"
        )
    return prefix


def _manifest_bytes(manifest: str, client: BaseClient) -> bytes:
    if manifest[:5].lower() == "s3://":
        bucket, _, key = manifest[5:].partition("/")
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES or http_status(error) == 404:
                raise FileNotFoundError(f"manifest not found: {manifest}") from None
            raise
        content: bytes = response["Body"].read(MAX_MANIFEST_BYTES + 1)
    elif "://" in manifest:
        raise ValueError(f"cannot read {manifest}: an inventory manifest is s3://… or a local path")
    else:
        try:
            with open(manifest, "rb") as stream:
                content = stream.read(MAX_MANIFEST_BYTES + 1)
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(f"manifest not found: {manifest}") from None
    if len(content) > MAX_MANIFEST_BYTES:
        raise InventoryError(
            f"{manifest} is over {MAX_MANIFEST_BYTES} bytes: not an S3 Inventory manifest"
        )
    return content


def _checksum_beside(manifest: str, client: BaseClient) -> str | None:
    """The MD5 the ``manifest.checksum`` beside ``manifest`` holds, or None when there is none."""
    location = manifest.rsplit("/", 1)[0] + "/" + CHECKSUM_FILE
    if manifest[:5].lower() == "s3://":
        bucket, _, key = location[5:].partition("/")
        try:
            content: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read(1024)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES or http_status(error) in (403, 404):
                return None
            raise
    else:
        location = os.path.join(os.path.dirname(os.path.abspath(manifest)), CHECKSUM_FILE)
        try:
            with open(location, "rb") as stream:
                content = stream.read(1024)
        except OSError:
            return None
    words = content.decode("ascii", "replace").split()
    if not words or not _MD5_HEX.match(words[0]):
        raise InventoryError(f"{location} does not hold an MD5 checksum: {content[:80]!r}")
    return words[0].lower()


def _text_field(value: Mapping[str, Any], name: str, bad: _Complaint) -> str:
    text = value[name]
    if not isinstance(text, str) or not text.strip():
        raise bad(f"{name!r} must be a non-empty string, got {text!r}")
    return text.strip()


def _optional_text(value: Mapping[str, Any], name: str, bad: _Complaint) -> str | None:
    return None if value.get(name) is None else _text_field(value, name, bad)


def _created_at(value: Mapping[str, Any], bad: _Complaint) -> datetime | None:
    stamp = value.get("creationTimestamp")
    if stamp is None:
        return None
    if isinstance(stamp, bool) or not isinstance(stamp, str | int) or not str(stamp).isdigit():
        raise bad(f"'creationTimestamp' must be epoch milliseconds, got {stamp!r}")
    return datetime.fromtimestamp(int(stamp) / 1000, UTC)


def _files(files: object, bad: _Complaint) -> tuple[InventoryFile, ...]:
    if not isinstance(files, list):
        raise bad(f"'files' must be a list, got {type(files).__name__}")
    listed = []
    for index, entry in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be an object")
        for name in ("key", "size", "MD5checksum"):
            if name not in entry:
                raise bad(f"{where} has no {name!r}")
        key, size, md5 = entry["key"], entry["size"], entry["MD5checksum"]
        if not isinstance(key, str) or not key or key.endswith("/"):
            raise bad(f"{where} 'key' must name an object, got {key!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise bad(f"{where} 'size' must be a byte count, got {size!r}")
        if not isinstance(md5, str) or not _MD5_HEX.match(md5):
            raise bad(f"{where} 'MD5checksum' must be 32 hex digits, got {md5!r}")
        listed.append(InventoryFile(key=key, size=size, md5=md5.lower()))
    return tuple(listed)


def _malformed(message: str, uri: str = "") -> Failure:
    return Failure(item_id="", uri=uri, stage="manifest", code="malformed_row", message=message)
