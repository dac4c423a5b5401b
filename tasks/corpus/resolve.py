"""Corpus input: a manifest or a crawl, turned into resolved Items, streaming, row by row.

    rows  = manifest_rows("corpus.jsonl")                 # or crawled_rows("s3://bucket/docs")
    items = resolved_items(rows, corpus_root=manifest_directory("corpus.jsonl"))

Nothing here holds the manifest or the listing whole: every function is a generator, and
nothing grows with the rows read. A row that cannot become an item is yielded as
``Failure(stage="manifest", code=..., message=...)`` in its place, never raised, so one bad row
never stops a run. The codes:

``malformed_row``     the row cannot be parsed or breaks a rule: invalid JSON line, missing or
                      empty ``uri``, a value of the wrong type, a CSV row with the wrong number
                      of fields, bytes that are not UTF-8, an id that is empty, over 900
                      characters or holds "#" (given, or derived from a path), an unknown text
                      encoding, an unsupported URI scheme, a relative path without a root, a
                      NUL in a path, an S3 location S3 cannot hold (bad bucket name, long key)
``bad_metadata``      ``metadata`` is not valid JSON or not a JSON object
``unknown_modality``  the declared ``modality`` is not text, pdf, image, audio or video
``outside_root``      the path resolves (after symlinks) outside the corpus root
``not_found``         no such file, S3 object or bucket
``unreadable``        permission denied (or HTTP 403), or another I/O error
``empty_file``        the file or object has 0 bytes
``unsupported_type``  no modality declared and none can be inferred; or a directory, a device

For a Failure, ``uri`` is the row's URI as given and ``item_id`` its id (given or derived; ""
when there is none yet).

Which of several rows with one id keeps it is decided later, by the plan, a part of the id hash
at a time (``tasks.plan.claims``: the first row that claims an id keeps it, the others are
``duplicate_id``), since telling here would mean holding every id of the corpus. A row claims
its id as follows: a given id before anything else about the row is checked (bar an empty or
non-UTF-8 uri, and the id itself), so which row keeps an id depends only on manifest order,
never on whether a file happens to be readable; an id derived from a path once the path
resolves. So an Item carries its row's ``position``, and a Failure of a row that had claimed
its id carries it as ``claimed_at``. (A ``duplicate_id`` row that resolved names the file it
resolved to as its ``uri``.) The module is split by concern: ``corpus_manifest`` (reading
manifests), ``corpus_local`` and ``corpus_s3`` (where items live), ``corpus_modality``.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterable, Iterator
from urllib.parse import unquote, urlsplit

from botocore.client import BaseClient

from tasks import aws_clients
from tasks.corpus import manifest as corpus_manifest
from tasks.corpus.inventory import inventory_rows, is_inventory_manifest, read_inventory_manifest
from tasks.corpus.known_files import KnownFiles
from tasks.corpus.local import (
    CrawledFile,
    LocalFile,
    LocalRoot,
    crawled_item,
    crawled_local_file,
    crawled_local_rows,
    local_file,
    local_item,
)
from tasks.corpus.manifest import ManifestRow, Rejection, json_type_name
from tasks.corpus.modality import infer_modality
from tasks.corpus.s3 import (
    ListedObject,
    S3Object,
    S3Prefix,
    crawled_s3_rows,
    s3_item,
    s3_object,
    s3_object_under,
)
from tasks.records import MODALITIES, Failure, Item, Modality, metadata_json

__all__ = [
    "MAX_ITEM_ID_CHARS",
    "ListedObject",
    "ManifestRow",
    "crawled_rows",
    "infer_modality",
    "manifest_directory",
    "manifest_rows",
    "resolved_items",
    "shown_id",
]

MAX_ITEM_ID_CHARS = 900
"""Longest item id: S3 Vectors keys hold 1,024 characters and units add ``#page=12`` and the
like."""

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SHOWN_ID_CHARS = 80


def manifest_rows(
    manifest: str, s3_client: BaseClient | None = None
) -> Iterator[ManifestRow | Failure]:
    """Each row of ``manifest``: see :func:`tasks.corpus.manifest.manifest_rows`. An S3
    Inventory ``manifest.json`` (see :mod:`tasks.corpus.inventory`) gives the rows a crawl of
    its whole source bucket would, read through ``s3_client`` (default
    :func:`tasks.aws_clients.s3_client`)."""
    if is_inventory_manifest(manifest):
        client = s3_client or aws_clients.s3_client()
        return inventory_rows(read_inventory_manifest(manifest, client), client)
    return corpus_manifest.manifest_rows(manifest)


def manifest_directory(manifest: str, s3_client: BaseClient | None = None) -> str:
    """The directory (local) or prefix (``s3://…/``) a manifest sits in: the corpus root to pass
    to :func:`resolved_items` when none is declared, so relative paths are read from there.
    For an S3 Inventory ``manifest.json`` it is ``s3://<source bucket>/`` (which reads the
    manifest, through ``s3_client``)."""
    if is_inventory_manifest(manifest):
        client = s3_client or aws_clients.s3_client()
        return read_inventory_manifest(manifest, client).source_root
    if "://" in manifest:
        return manifest.rsplit("/", 1)[0] + "/"
    return os.path.dirname(os.path.abspath(manifest))


def crawled_rows(corpus: str, s3_client: BaseClient | None = None) -> Iterator[ManifestRow]:
    """Every file under ``corpus`` as a row, ``position`` counting from 1: a local directory
    (absolute paths, sorted, hidden files and directories skipped, directory links not
    followed) or an ``s3://bucket/prefix`` (key order, via the ``list_objects_v2`` paginator;
    the rows are :class:`ListedObject` and carry the listing's ETag and size). Pass ``corpus``
    as the ``corpus_root`` of :func:`resolved_items`, so ids are paths relative to it.

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a local corpus that is not a
    directory; an empty S3 prefix yields nothing."""
    if corpus[:5].lower() == "s3://":
        yield from crawled_s3_rows(S3Prefix.of(corpus), s3_client or aws_clients.s3_client())
        return
    yield from crawled_local_rows(corpus)


def resolved_items(
    rows: Iterable[ManifestRow | Failure],
    corpus_root: str | None,
    s3_client: BaseClient | None = None,
    known: KnownFiles | None = None,
) -> Iterator[Item | Failure]:
    """Each row, in order, as the Item it names, or as the Failure saying exactly what is wrong
    with it; Failures passed in are passed through. Lazy: a row is read only when its result is
    asked for.

    ``corpus_root`` is a local directory or an ``s3://bucket/prefix``. Relative paths are read
    from it, local paths must resolve (after symlinks) inside it, S3 URIs must lie under it when
    it is on S3, and ids not given are paths relative to it. ``None`` sets no bounds and allows
    only absolute paths and S3 URIs. An Item's ``uri`` is the real absolute path or
    ``s3://bucket/key``; its ``metadata_json`` is canonical; a given ``encoding`` is checked and
    normalised (``UTF8`` becomes ``utf-8``). ``s3_client`` defaults to
    :func:`tasks.aws_clients.s3_client`, made on first use. With ``known`` (the record of the
    last crawl of ``corpus_root``, :mod:`tasks.corpus.known_files`), a crawled file whose status
    is unchanged since is not read again.

    Rows repeating an id are not told apart here: see the module's notes on claims.

    Raises ``FileNotFoundError`` when a local ``corpus_root`` is not a directory.
    """
    root = _corpus_root(corpus_root)
    client = _OnDemandS3Client(s3_client)
    for row in rows:
        if isinstance(row, Failure):
            yield row
        else:
            yield _resolved_item(row, root, client, known)


class _OnDemandS3Client:
    """The given client, or a default one made the first time an S3 row needs it."""

    def __init__(self, client: BaseClient | None) -> None:
        self._client = client

    def __call__(self) -> BaseClient:
        if self._client is None:
            self._client = aws_clients.s3_client()
        return self._client


def _resolved_item(
    row: ManifestRow,
    root: LocalRoot | S3Prefix | None,
    s3_client: _OnDemandS3Client,
    known: KnownFiles | None,
) -> Item | Failure:
    claimed_at = 0

    def failure(rejection: Rejection, item_id: str | None) -> Failure:
        return Failure(
            item_id=_utf8_safe(item_id or rejection.derived_id or ""),
            uri=_utf8_safe(row.uri),
            stage="manifest",
            code=rejection.code,
            message=_utf8_safe(rejection.message),
            claimed_at=claimed_at,
        )

    if not row.uri:
        return failure(Rejection("malformed_row", "the row's uri is empty"), row.item_id)
    if not _is_utf8(row.uri):
        # Such a URI could not be written to the Parquet checkpoints; file names from a crawl
        # that are not UTF-8 arrive here with their bad bytes as lone surrogates.
        message = f"uri '{_utf8_safe(row.uri)}' is not valid UTF-8 text"
        return failure(Rejection("malformed_row", message), row.item_id)
    # A given id is claimed before anything else is checked, so which row keeps an id depends
    # only on manifest order, never on whether a file happens to be readable.
    if row.item_id is not None:
        if problem := _id_problem(row.item_id):
            shown = shown_id(row.item_id)
            return failure(Rejection("malformed_row", f"id {shown} {problem}"), row.item_id)
        claimed_at = row.position
    location: LocalFile | S3Object | Rejection
    status: os.stat_result | None = None
    crawled = None
    if isinstance(row, CrawledFile) and isinstance(root, LocalRoot):
        crawled = crawled_local_file(row, root)
    if crawled is None:
        location = _location(row.uri, root)
    else:
        location, status = crawled
    if isinstance(location, Rejection):
        return failure(location, row.item_id)
    item_id = row.item_id
    if item_id is None:
        if problem := _id_problem(location.derived_id):
            message = (
                f"the id derived from its path, {shown_id(location.derived_id)}, {problem}; "
                "give the row an explicit 'id'"
            )
            return failure(Rejection("malformed_row", message), None)
        item_id = location.derived_id
        claimed_at = row.position
    checked = _checked_fields(row)
    if isinstance(checked, Rejection):
        return failure(checked, item_id)
    declared, canonical_metadata, encoding = checked
    if (
        isinstance(location, LocalFile)
        and status is not None  # found by a crawl, on its fast path
        and known is not None
        and declared is None
    ):
        resolved = crawled_item(
            location, status, known, item_id, canonical_metadata, encoding, row.position
        )
    elif isinstance(location, LocalFile):
        resolved = local_item(
            location, item_id, declared, canonical_metadata, encoding, status, row.position
        )
    else:
        listed = row if isinstance(row, ListedObject) else None
        resolved = s3_item(
            location,
            s3_client(),
            item_id,
            declared,
            canonical_metadata,
            encoding,
            listed,
            row.position,
        )
    return failure(resolved, item_id) if isinstance(resolved, Rejection) else resolved


def _corpus_root(corpus_root: str | None) -> LocalRoot | S3Prefix | None:
    if corpus_root is None:
        return None
    if corpus_root[:5].lower() == "s3://":
        return S3Prefix.of(corpus_root)
    if corpus_root.startswith("file://"):
        return LocalRoot.of(unquote(urlsplit(corpus_root).path))
    if _URI_SCHEME.match(corpus_root):
        raise ValueError(f"corpus root must be a local directory or s3://…: {corpus_root}")
    return LocalRoot.of(corpus_root)


def _location(uri: str, root: LocalRoot | S3Prefix | None) -> LocalFile | S3Object | Rejection:
    if uri[:5].lower() == "s3://":
        return s3_object(uri, root if isinstance(root, S3Prefix) else None)
    scheme = _URI_SCHEME.match(uri)
    path = uri
    if scheme is not None:
        parts = urlsplit(uri)
        if scheme.group(1).lower() != "file" or parts.netloc not in ("", "localhost"):
            return Rejection(
                "malformed_row",
                f"unsupported URI {uri!r}: use s3://bucket/key, file:///path or a local path",
            )
        path = unquote(parts.path)
    if isinstance(root, S3Prefix):
        return s3_object_under(path, root)
    return local_file(path, root)


def _id_problem(item_id: str) -> str | None:
    """Why ``item_id`` cannot prefix S3 Vectors keys, or None if it can."""
    if not item_id:
        return f"is empty: ids must be 1–{MAX_ITEM_ID_CHARS} characters"
    if len(item_id) > MAX_ITEM_ID_CHARS:
        return (
            f"is {len(item_id)} characters long: ids must be 1–{MAX_ITEM_ID_CHARS} characters "
            "(unit keys add suffixes such as '#page=12')"
        )
    if "#" in item_id:
        return "contains '#', which is reserved to separate an item id from its unit"
    if not _is_utf8(item_id):
        return "is not valid UTF-8 text"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_safe(text: str) -> str:
    """``text`` with anything UTF-8 cannot hold (lone surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown_id(item_id: str) -> str:
    """``item_id`` as a message quotes it: in quotes, cut to 80 characters."""
    if len(item_id) <= _SHOWN_ID_CHARS:
        return repr(item_id)
    return repr(item_id[:_SHOWN_ID_CHARS] + "…")


def _checked_fields(row: ManifestRow) -> tuple[Modality | None, str, str | None] | Rejection:
    """The row's declared modality, canonical metadata JSON and normalised encoding."""
    declared: Modality | None = None
    if row.modality is not None:
        wanted = row.modality.strip().lower()
        if wanted not in MODALITIES:
            known = ", ".join(MODALITIES)
            return Rejection("unknown_modality", f"modality {row.modality!r} is not one of {known}")
        declared = wanted  # type: ignore[assignment]  # checked against MODALITIES above
    metadata = _canonical_metadata(row.metadata_json)
    if isinstance(metadata, Rejection):
        return metadata
    encoding = None
    if row.encoding is not None:
        try:
            codec = codecs.lookup(row.encoding.strip())
        except LookupError:
            codec = None
        # Python also registers bytes-to-bytes codecs (base64, zlib) under codec names.
        if codec is None or not getattr(codec, "_is_text_encoding", True):
            return Rejection(
                "malformed_row", f"encoding {row.encoding!r} is not a known text encoding"
            )
        encoding = codec.name
    return declared, metadata, encoding


def _canonical_metadata(text: str | None) -> str | Rejection:
    if text is None:
        return metadata_json(None)
    try:
        value = json.loads(text, parse_constant=_rejected_constant)
    except ValueError as error:
        return Rejection("bad_metadata", f"metadata is not valid JSON: {error}")
    if not isinstance(value, dict):
        return Rejection(
            "bad_metadata", f"metadata must be a JSON object, got {json_type_name(value)}"
        )
    return metadata_json(value)


def _rejected_constant(name: str) -> float:
    # NaN and Infinity are not JSON, and S3 Vectors would refuse them in metadata.
    raise ValueError(f"{name} is not a JSON value")
