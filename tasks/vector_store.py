"""The S3 Vectors loader: make sure the index exists, write and delete vectors in paced batches of
at most 500, fit metadata into the service's limits before sending, and query with pagination.

Limits (``shared/reference/aws-apis.md`` §2.3-§2.5): 500 vectors per PutVectors/DeleteVectors, a
20 MiB request, 2,500 vectors written per second per index, 50 metadata keys of 1-63 characters,
40 KB of metadata of which 2 KB filterable (sizes as UTF-8 bytes of compact JSON), topK ≤ 10,000
at ≤ 100 per page. Throttling (429) and 5xx are retried by botocore; what survives that slows the
pacer down and the batch is sent again, a bounded number of times. The bodies of PutVectors
requests are built, metadata fitted and batches cut in :mod:`tasks.index.put_requests`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tasks.index.put_requests import (
    MAX_BATCH_VECTORS,
    MAX_VECTOR_KEY_CHARS,
    PutOutcome,
    PutRequests,
    VectorBlock,
    wire_floats,
)
from tasks.index.put_requests import FittedMetadata as FittedMetadata  # re-exported
from tasks.index.put_requests import fitted_metadata as fitted_metadata  # re-exported
from tasks.pacing import Pacer
from tasks.service_errors import INDEX_WRITE_RETRY_CODES, error_code
from tasks.settings import IndexSettings

logger = logging.getLogger(__name__)

MAX_TOP_K = 10_000
SEARCHABLE_TEXT_KEY = "searchable_text"
"""The metadata key a unit's searchable text is stored under (IndexSettings.searchable_text)."""
MAX_QUERY_TEXT_CHARS = 1024  # aws-apis.md §2.9: each queryTexts entry holds 1-1,024 characters
RetrievalMode = Literal["vector", "text", "hybrid"]
RETRIEVAL_MODES: tuple[RetrievalMode, ...] = ("vector", "text", "hybrid")
TEXT_SEARCH_WAIT_SECONDS = 600.0
MAX_WRITE_ATTEMPTS = 8


class IndexMismatchError(RuntimeError):
    """The index exists with another dimension, metric or non-filterable keys. S3 Vectors
    cannot change those, so novaflow refuses to write into it."""


class IndexMissingError(RuntimeError):
    """The index (or its vector bucket) is gone while novaflow's state lists items in it: it was
    deleted outside novaflow. Made again empty, it would hold only what changed since."""


def ensure_index(
    client: BaseClient, settings: IndexSettings, dimension: int, held_items: int = 0
) -> frozenset[str]:
    """Create the vector bucket and index of ``settings`` if missing (someone else creating
    them at the same moment is fine), then check the index matches and, with searchable text
    on, that it searches it. Returns the index's non-filterable keys. Raises
    ``IndexMismatchError`` when it has another dimension, metric or non-filterable keys, and
    ``IndexMissingError`` when it is missing though the state lists ``held_items`` items."""
    bucket, name = settings.vector_bucket, settings.index
    bucket_absent = _found(lambda: client.get_vector_bucket(vectorBucketName=bucket)) is None
    index = None if bucket_absent else _index_or_none(client, settings)
    if index is None and held_items:
        raise IndexMissingError(
            f"vector index {bucket}/{name} does not exist, but novaflow's state lists "
            f"{held_items} items in it: it was deleted outside novaflow, and made again it "
            "would hold only what changed. Restore it, or delete its state in the checkpoint "
            f"store (state/{bucket}/{name}/) to embed every item again."
        )
    if bucket_absent:
        _tolerating_conflict(lambda: client.create_vector_bucket(vectorBucketName=bucket))
    if index is None:
        request: dict[str, Any] = {
            "vectorBucketName": bucket,
            "indexName": name,
            "dataType": "float32",
            "dimension": dimension,
            "distanceMetric": settings.metric,
        }
        configuration: dict[str, Any] = {}
        non_filterable = non_filterable_keys(settings)
        if non_filterable:
            configuration["nonFilterableMetadataKeys"] = list(non_filterable)
        if settings.searchable_text:
            configuration["textSearchConfigurations"] = [_text_search_configuration(settings)]
        if configuration:
            request["metadataConfiguration"] = configuration
        _tolerating_conflict(lambda: client.create_index(**request))
        logger.info(
            "created vector index %s/%s (%d-d, %s)", bucket, name, dimension, settings.metric
        )
        index = client.get_index(vectorBucketName=bucket, indexName=name)["index"]
    found_keys = set(index.get("metadataConfiguration", {}).get("nonFilterableMetadataKeys", []))
    differences = []
    if index["dimension"] != dimension:
        differences.append(f"dimension {index['dimension']} (wanted {dimension})")
    if index["distanceMetric"] != settings.metric:
        differences.append(f"metric {index['distanceMetric']} (wanted {settings.metric})")
    # An index made before searchable text was turned on keeps its keys: the text is then
    # filterable metadata and is cut to fit that budget.
    if found_keys not in (set(settings.non_filterable_keys), set(non_filterable_keys(settings))):
        differences.append(
            f"non-filterable keys {sorted(found_keys)} "
            f"(wanted {sorted(settings.non_filterable_keys)})"
        )
    if differences:
        raise IndexMismatchError(
            f"vector index {bucket}/{name} exists with {', '.join(differences)}. S3 Vectors "
            "cannot change these: set a new index name (NOVAFLOW_INDEX__INDEX) to build a "
            "fresh index, or delete this one."
        )
    if settings.searchable_text:
        _ensure_text_search(client, settings, index)
    return frozenset(found_keys)


def put_vectors(
    client: BaseClient,
    settings: IndexSettings,
    rows: Iterable[tuple[str, np.ndarray, Mapping[str, Any]]],
    pacer: Pacer,
) -> PutOutcome:
    """Write ``(key, vector, metadata)`` rows in batches of up to 500 vectors and 20 MiB.

    ``pacer`` counts vectors (one ``acquire(n)`` per batch of ``n``): build it with
    ``ThroughputSettings.index_vectors_per_second``. A key repeated within a batch is sent once,
    last row wins, as a later put would overwrite it. Rows read lazily, a few dozen at a time (a
    row must not change once yielded); metadata is fitted with ``fitted_metadata``; vectors the
    service would refuse (non-finite, all zero on a cosine index, key over 1,024 characters) are
    reported in ``rejected``, not sent. Raises ``ClientError`` when a batch still fails after
    retries (re-running is safe: puts overwrite).
    """
    requests = _put_requests(client, settings, pacer)
    requests.add_rows(rows)
    return requests.outcome()


def put_vector_blocks(
    client: BaseClient, settings: IndexSettings, blocks: Iterable[VectorBlock], pacer: Pacer
) -> PutOutcome:
    """``put_vectors`` of the rows of ``blocks``, in order: the same requests and the same
    outcome, without taking the blocks apart into rows."""
    requests = _put_requests(client, settings, pacer)
    for block in blocks:
        requests.add_block(block)
    return requests.outcome()


def _put_requests(client: BaseClient, settings: IndexSettings, pacer: Pacer) -> PutRequests:
    where = _where(settings)
    return PutRequests(
        lambda entries: _put(client, pacer, where, entries),
        settings.metric,
        settings.non_filterable_keys,
    )


def delete_vectors(
    client: BaseClient, settings: IndexSettings, keys: Iterable[str], pacer: Pacer
) -> int:
    """Delete ``keys`` in batches of up to 500; keys the index does not hold are ignored by the
    service. ``pacer`` counts vectors, as for ``put_vectors``. Returns the number of keys sent
    (a key repeated within one batch is sent and counted once). Raises ``ClientError`` when a
    batch still fails after retries (re-running is safe)."""
    where = _where(settings)
    sent = 0
    batch: dict[str, None] = {}
    for key in _chain(keys):
        batch[key] = None
        if len(batch) == MAX_BATCH_VECTORS:
            _write(client, pacer, "delete_vectors", len(batch), {**where, "keys": list(batch)})
            sent += len(batch)
            batch = {}
    if batch:
        _write(client, pacer, "delete_vectors", len(batch), {**where, "keys": list(batch)})
        sent += len(batch)
    return sent


def query(
    client: BaseClient,
    settings: IndexSettings,
    vector: np.ndarray | None,
    top_k: int,
    metadata_filter: Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
) -> list[dict[str, Any]]:
    """The ``top_k`` best matches (fewer if fewer match ``metadata_filter``), best first, as
    ``{"key", "distance", "metadata", "scores"}`` dicts: nearest to ``vector`` alone, BM25 over
    the searchable text for ``text`` alone, both fused by the service (RRF) for both.
    ``distance`` is None where the service gives none (a text match the vector search did not
    find); ``scores`` is the service's ``returnScores`` (None for a vector search). ``text``
    is cut to the 1,024 characters a query text holds. ``top_k`` over 100 is read page by
    page with botocore's QueryVectors paginator."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be 1-{MAX_TOP_K}, got {top_k}")
    if vector is None and not text:
        raise ValueError("a query is a vector, a text or both")
    request: dict[str, Any] = {
        **_where(settings),
        "topK": top_k,
        "returnMetadata": True,
        "returnDistance": True,
    }
    if vector is not None:
        wire, _ = wire_floats(np.asarray(vector, dtype=np.float32))
        request["queryVector"] = {"float32": wire.tolist()}
    if text:
        request["queryTexts"] = [
            {"text": text[:MAX_QUERY_TEXT_CHARS], "metadataKey": SEARCHABLE_TEXT_KEY}
        ]
        request["returnScores"] = True
    if metadata_filter is not None:
        request["filter"] = dict(metadata_filter)
    results = []
    for page in client.get_paginator("query_vectors").paginate(**request):
        for found in page.get("vectors", []):
            results.append(
                {
                    "key": found["key"],
                    "distance": found.get("distance"),
                    "metadata": found.get("metadata", {}),
                    "scores": found.get("scores"),
                }
            )
    return results


def text_search_status(client: BaseClient, settings: IndexSettings) -> str | None:
    """The status of the index's searchable-text configuration (``ACTIVE``: it answers text
    queries; ``BUILDING``: it is being backfilled), or None when the index has none (or does
    not exist)."""
    index = _index_or_none(client, settings)
    return None if index is None else _text_status(index)


def non_filterable_keys(settings: IndexSettings) -> tuple[str, ...]:
    """The non-filterable keys of an index novaflow creates: the configured ones, and the
    searchable text when it is on (texts run far past the 2 KB of filterable metadata)."""
    keys = tuple(settings.non_filterable_keys)
    if settings.searchable_text and SEARCHABLE_TEXT_KEY not in keys:
        keys += (SEARCHABLE_TEXT_KEY,)
    return keys


def _text_search_configuration(settings: IndexSettings) -> dict[str, str]:
    return {"metadataKey": SEARCHABLE_TEXT_KEY, "language": settings.text_language}


def _text_status(index: Mapping[str, Any]) -> str | None:
    configurations = index.get("metadataConfiguration", {}).get("textSearchConfigurations", [])
    for configuration in configurations:
        if configuration.get("metadataKey") == SEARCHABLE_TEXT_KEY:
            return str(configuration.get("status", "ACTIVE"))
    return None


def _ensure_text_search(
    client: BaseClient, settings: IndexSettings, index: Mapping[str, Any]
) -> None:
    """Make the searchable text of an existing index full-text searchable, and wait until the
    service has built it (it answers text queries only once ACTIVE)."""
    if _text_status(index) is None:
        if index.get("indexMode", "ENHANCED") != "ENHANCED":
            raise IndexMismatchError(
                f"vector index {settings.vector_bucket}/{settings.index} is a CLASSIC index: "
                "full-text search needs an ENHANCED one (UpdateIndexMode, or a new index)"
            )
        _tolerating_conflict(
            lambda: client.update_metadata_configuration(
                **_where(settings),
                add={"textSearchConfigurations": [_text_search_configuration(settings)]},
            )
        )
        logger.info("made %s's searchable text full-text searchable", settings.index)
    waited, pause = 0.0, 0.5
    while text_search_status(client, settings) == "BUILDING":
        if waited > TEXT_SEARCH_WAIT_SECONDS:
            raise TimeoutError(
                f"the searchable text of {settings.index} was still being built after "
                f"{waited:.0f} s; the next run waits again"
            )
        time.sleep(pause)
        waited, pause = waited + pause, min(pause * 2, 15.0)


# -- helpers -------------------------------------------------------------------------------


def _where(settings: IndexSettings) -> dict[str, str]:
    return {"vectorBucketName": settings.vector_bucket, "indexName": settings.index}


class _SerialisedVectors(threading.local):
    """The entries (JSON, one per vector) of the PutVectors request this thread is sending:
    set by ``_put`` for the duration of its call, None otherwise."""

    entries: list[bytes] | None = None


_serialised_vectors = _SerialisedVectors()
# What botocore validates and serialises in place of the vectors, which ``_put`` serialised.
_PLACEHOLDER_VECTORS = ({"key": "placeholder", "data": {"float32": [0.0]}},)


def _put(client: BaseClient, pacer: Pacer, where: Mapping[str, str], vectors: list[bytes]) -> None:
    """One PutVectors request of ``vectors`` already serialised, as ``_write`` sends requests.

    botocore would validate and serialise every float of a batch as a Python object, one call
    each (about 1 ms per 1,024-d vector, most of a load's CPU); the batch goes as JSON made
    from the numpy arrays instead, put into the body botocore built around a placeholder, so
    that its signing, retries, endpoint and error handling stay as they are."""
    client.meta.events.register(
        "before-call.s3vectors.PutVectors",
        _with_serialised_vectors,
        unique_id="novaflow-serialised-vectors",
    )
    _serialised_vectors.entries = vectors
    try:
        _write(
            client, pacer, "put_vectors", len(vectors), {**where, "vectors": _PLACEHOLDER_VECTORS}
        )
    finally:
        _serialised_vectors.entries = None


def _with_serialised_vectors(params: dict[str, Any], **_: Any) -> None:
    """botocore's ``before-call`` hook for PutVectors: the request body with this thread's
    serialised vectors in place of the placeholder's (no change when it has none). Must return
    None, or botocore would take the value as the response."""
    entries = _serialised_vectors.entries
    if entries is None:
        return None
    pieces = [b"{"]
    for name, value in json.loads(params["body"]).items():
        if name != "vectors":
            pieces += (f"{json.dumps(name)}: {json.dumps(value)}".encode(), b", ")
    separated = [b", "] * (2 * len(entries) - 1) if entries else []
    separated[::2] = entries
    # One join: a body is ~11 KB a 1,024-d vector, and each whole copy of it cost ~3 µs of CPU
    # a vector, as much as fitting its metadata.
    params["body"] = b"".join([*pieces, b'"vectors": [', *separated, b"]}"])
    return None


def _write(
    client: BaseClient, pacer: Pacer, operation: str, vectors: int, request: Mapping[str, Any]
) -> None:
    """One PutVectors/DeleteVectors request, paced; re-sent after throttling or 5xx that
    survived botocore's retries, up to ``MAX_WRITE_ATTEMPTS`` times."""
    call = getattr(client, operation)
    for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
        pacer.acquire(vectors)
        try:
            call(**request)
        except ClientError as err:
            code = error_code(err)
            if code not in INDEX_WRITE_RETRY_CODES or attempt == MAX_WRITE_ATTEMPTS:
                raise
            logger.info("%s of %d vectors: %s, slowing down", operation, vectors, code)
            pacer.slow_down()
            continue
        pacer.record_success()
        return


def _index_or_none(client: BaseClient, settings: IndexSettings) -> dict[str, Any] | None:
    """The index's description (GetIndex), or None when there is no such index."""
    found = _found(lambda: client.get_index(**_where(settings)))
    index: dict[str, Any] | None = None if found is None else found["index"]
    return index


def _found(get: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """``get()``'s answer, or None when the service answers that there is no such thing."""
    try:
        return get()
    except ClientError as err:
        if error_code(err) == "NotFoundException":
            return None
        raise


def _tolerating_conflict(create: Any) -> None:
    try:
        create()
    except ClientError as err:
        if error_code(err) != "ConflictException":
            raise


def _chain(keys: Iterable[str]) -> Iterator[str]:
    for key in keys:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_VECTOR_KEY_CHARS:
            raise ValueError(f"not a vector key: {key!r}")
        yield key
