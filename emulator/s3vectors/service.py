"""The S3 Vectors stand-in's operations, without HTTP: ``S3VectorsService.handle`` runs one.

The HTTP layer finds the operation with ``ROUTES``, parses the JSON body and calls ``handle``,
which returns the JSON response document or raises ``ServiceError`` carrying the code and HTTP
status of the service model (``emulator/errors.py``). Requests are checked as
``shared/reference/aws-apis.md`` §2 documents, before anything is stored. One lock serialises all
operations, so a read sees every write that returned before it (S3 Vectors is strongly
consistent).

Every bucket here counts as created after 2026-09-30: its ``defaultIndexMode`` starts ENHANCED and
UpdateIndexMode to CLASSIC is refused. Text search configurations (CreateIndex,
UpdateMetadataConfiguration) and ``queryTexts`` follow ``text_rules``: a configuration added to
an index reports BUILDING to the next ``SearchSettings.text_backfill_reads`` GetIndex or
QueryVectors calls on it, then ACTIVE. Full-text and hybrid ranking is in ``text_search``.

Choices where the documentation is silent (⚠):

- DeleteVectorBucket on a bucket that still has indexes is a ConflictException (409).
- GetVectorBucketPolicy without a policy is a NotFoundException; deleting an absent policy
  succeeds (the operation is idempotent).
- PutVectorBucketDefaultIndexMode accepts CLASSIC (the model documents no restriction); it is the
  one way to get a CLASSIC index, whose filters apply inside the approximate search.
- GetVectors omits keys that do not exist and returns each found key once, in request order.
  DeleteVectors ignores keys that do not exist; they still count against the vector write limit.
- ListVectorBuckets and ListIndexes return up to 500 entries when maxResults is not given, in
  name order. ListVectors pages through vectors in put order without the 1 MB page cut; a segment
  holds the keys whose stable hash modulo ``segmentCount`` is ``segmentIndex``.
- QueryVectors paging and distances are described in ``search``.
- Write limits per index are token buckets holding one second's worth (1,000 PutVectors +
  DeleteVectors requests; 2,500 vectors put + deleted), refilled continuously from ``clock``; a
  request that does not fit is refused whole with TooManyRequestsException (429), never
  ServiceUnavailableException. 10,000 buckets per Region and 10,000 indexes per bucket are
  ServiceQuotaExceededException (402); vectors per index and payload size are not capped here.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.errors import ServiceError, s3vectors_error
from emulator.s3vectors import text_rules
from emulator.s3vectors import validation as check
from emulator.s3vectors.filters import declared_non_filterable_keys
from emulator.s3vectors.search import IndexMatrix, SearchSettings, query_vectors
from emulator.s3vectors.store import BucketRecord, Encryption, IndexRecord, VectorStore
from emulator.s3vectors.validation import RequestMembers, invalid

__all__ = ["ROUTES", "Route", "S3VectorsService", "SearchSettings"]

MAX_BUCKETS = 10_000
MAX_INDEXES_PER_BUCKET = 10_000
MAX_LIST_RESULTS = 500
MAX_LIST_VECTORS_RESULTS = 1000
DEFAULT_LIST_VECTORS_RESULTS = 500
WRITE_REQUESTS_PER_SECOND = 1000
WRITE_VECTORS_PER_SECOND = 2500


@dataclass(frozen=True)
class Route:
    """How one operation is reached over HTTP."""

    method: str
    path: str
    operation: str


_POST_OPERATIONS = (
    *("CreateVectorBucket", "GetVectorBucket", "ListVectorBuckets", "DeleteVectorBucket"),
    *("PutVectorBucketPolicy", "GetVectorBucketPolicy", "DeleteVectorBucketPolicy"),
    *("PutVectorBucketDefaultIndexMode", "CreateIndex", "GetIndex", "ListIndexes"),
    *("DeleteIndex", "UpdateIndexMode", "UpdateMetadataConfiguration"),
    *("PutVectors", "GetVectors", "ListVectors", "DeleteVectors", "QueryVectors"),
)
ROUTES: tuple[Route, ...] = (
    *(Route("POST", f"/{operation}", operation) for operation in _POST_OPERATIONS),
    Route("GET", "/tags/{resourceArn}", "ListTagsForResource"),
    Route("POST", "/tags/{resourceArn}", "TagResource"),
    Route("DELETE", "/tags/{resourceArn}", "UntagResource"),
)
_OPERATIONS = frozenset(route.operation for route in ROUTES)


@dataclass(frozen=True)
class _Request:
    members: RequestMembers
    path_params: Mapping[str, str]
    query: Mapping[str, list[str]]


class _TokenBucket:
    """Up to one second's worth of tokens, refilled continuously at ``rate`` per second."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.tokens, self.updated = rate, rate, now

    def refill(self, now: float) -> float:
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens


def _not_found(message: str) -> ServiceError:
    return s3vectors_error("NotFoundException", message)


class S3VectorsService:
    """The S3 Vectors service logic; thread-safe. With ``state_dir`` everything persists there
    (sqlite, WAL) and a new service on the same directory sees it; ``None`` keeps it in memory."""

    def __init__(
        self,
        state_dir: Path | None,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        search: SearchSettings = SearchSettings(),  # noqa: B008 - frozen, so sharing is safe
        enforce_write_limits: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = VectorStore(state_dir)
        self._region, self._account_id = region, account_id
        self._search = search
        self._enforce_write_limits = enforce_write_limits
        self._clock = clock
        self._lock = threading.RLock()
        self._matrices: dict[int, IndexMatrix] = {}
        self._write_budgets: dict[int, tuple[_TokenBucket, _TokenBucket]] = {}
        self._closed = False

    def handle(
        self,
        operation: str,
        body: Mapping[str, Any],
        path_params: Mapping[str, str],
        query: Mapping[str, list[str]],
    ) -> dict[str, Any]:
        """Run one operation; returns the JSON response document ({} for empty outputs);
        raises ServiceError."""
        if operation not in _OPERATIONS:
            raise invalid(f"Unknown operation '{operation}'")
        if not isinstance(body, Mapping):
            raise invalid("The request body must be a JSON object")
        handler = getattr(self, "_" + re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        with self._lock:
            if self._closed:
                raise s3vectors_error("ServiceUnavailableException", "The service is shut down")
            try:
                return handler(_Request(RequestMembers(body), path_params, query))
            except ServiceError:
                raise
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                raise s3vectors_error("InternalServerException", message) from error

    def close(self) -> None:
        """Release the database; later calls get ServiceUnavailableException."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._store.close()
                self._matrices.clear()

    # Lookups

    def _existing_bucket(self, name: str) -> BucketRecord:
        bucket = self._store.bucket(name)
        if bucket is None:
            raise _not_found(f"Vector bucket '{name}' does not exist")
        return bucket

    def _bucket(self, members: RequestMembers) -> BucketRecord:
        return self._existing_bucket(
            check.addressed_bucket(members, self._region, self._account_id)
        )

    def _existing_index(self, bucket_name: str, index_name: str) -> IndexRecord:
        self._existing_bucket(bucket_name)
        index = self._store.index(bucket_name, index_name)
        if index is None:
            raise _not_found(f"Index '{index_name}' does not exist in '{bucket_name}'")
        return index

    def _index(self, members: RequestMembers) -> IndexRecord:
        return self._existing_index(*check.addressed_index(members, self._region, self._account_id))

    def _matrix(self, index: IndexRecord) -> IndexMatrix:
        if index.id not in self._matrices:
            self._matrices[index.id] = IndexMatrix(index.dimension, self._store.load_vectors(index))
        return self._matrices[index.id]

    def _tagged_arn(self, request: _Request) -> str:
        arn = request.path_params.get("resourceArn") or ""
        parts = check.parse_arn(arn, self._region, self._account_id, "resourceArn")
        if parts.index is None:
            return self._existing_bucket(parts.bucket).arn
        return self._existing_index(parts.bucket, parts.index).arn

    # Buckets

    def _create_vector_bucket(self, request: _Request) -> dict[str, Any]:
        members = request.members
        name = check.bucket_name(members.required_text("vectorBucketName"))
        encryption = check.encryption(members.document("encryptionConfiguration")) or Encryption()
        tags = check.tags(members.raw("tags"))
        check.tag_count(tags)
        if self._store.bucket(name) is not None:
            raise s3vectors_error("ConflictException", f"Vector bucket '{name}' already exists")
        if self._store.bucket_count() >= MAX_BUCKETS:
            message = f"At most {MAX_BUCKETS} vector buckets per Region"
            raise s3vectors_error("ServiceQuotaExceededException", message)
        arn = check.bucket_arn(self._region, self._account_id, name)
        self._store.insert_bucket(
            BucketRecord(name, arn, time.time(), encryption, "ENHANCED"), tags
        )
        return {"vectorBucketArn": arn}

    def _get_vector_bucket(self, request: _Request) -> dict[str, Any]:
        return {"vectorBucket": self._bucket(request.members).to_document()}

    def _list_vector_buckets(self, request: _Request) -> dict[str, Any]:
        members = request.members
        limit = members.integer("maxResults", 1, MAX_LIST_RESULTS) or MAX_LIST_RESULTS
        prefix = members.text("prefix", max_length=63) or ""
        after = check.page_after_name(members, "ListVectorBuckets", None)
        found = self._store.buckets(prefix, after, limit + 1)
        output: dict[str, Any] = {
            "vectorBuckets": [bucket.to_summary() for bucket in found[:limit]]
        }
        if len(found) > limit:
            output["nextToken"] = check.page_token(
                "ListVectorBuckets", {"after": found[limit - 1].name}
            )
        return output

    def _delete_vector_bucket(self, request: _Request) -> dict[str, Any]:
        bucket = self._bucket(request.members)
        if indexes := self._store.index_count(bucket.name):
            message = f"Vector bucket '{bucket.name}' is not empty: delete its {indexes} index(es)"
            raise s3vectors_error("ConflictException", message)
        self._store.delete_bucket(bucket)
        return {}

    def _put_vector_bucket_policy(self, request: _Request) -> dict[str, Any]:
        policy = check.policy(request.members.required_text("policy"))
        self._store.set_policy(self._bucket(request.members), policy)
        return {}

    def _get_vector_bucket_policy(self, request: _Request) -> dict[str, Any]:
        bucket = self._bucket(request.members)
        policy = self._store.policy(bucket)
        if policy is None:
            raise _not_found(f"Vector bucket '{bucket.name}' has no bucket policy")
        return {"policy": policy}

    def _delete_vector_bucket_policy(self, request: _Request) -> dict[str, Any]:
        self._store.set_policy(self._bucket(request.members), None)
        return {}

    def _put_vector_bucket_default_index_mode(self, request: _Request) -> dict[str, Any]:
        mode = request.members.required_choice("defaultIndexMode", check.INDEX_MODES)
        self._store.set_default_index_mode(self._bucket(request.members), mode)
        return {}

    # Indexes

    def _create_index(self, request: _Request) -> dict[str, Any]:
        members = request.members
        bucket_name = check.addressed_bucket(members, self._region, self._account_id)
        name = check.index_name(members.required_text("indexName"))
        members.required_choice("dataType", check.DATA_TYPES)
        dimension = members.required_integer("dimension", 1, check.MAX_DIMENSION)
        metric = members.required_choice("distanceMetric", check.DISTANCE_METRICS)
        metadata_configuration = members.document("metadataConfiguration")
        non_filterable = declared_non_filterable_keys(metadata_configuration)
        encryption = check.encryption(members.document("encryptionConfiguration"))
        tags = check.tags(members.raw("tags"))
        check.tag_count(tags)
        bucket = self._existing_bucket(bucket_name)
        text_search = text_rules.declared_text_search(
            metadata_configuration, bucket.default_index_mode
        )
        if self._store.index(bucket.name, name) is not None:
            message = f"Index '{name}' already exists in '{bucket.name}'"
            raise s3vectors_error("ConflictException", message)
        if self._store.index_count(bucket.name) >= MAX_INDEXES_PER_BUCKET:
            message = f"At most {MAX_INDEXES_PER_BUCKET} indexes per vector bucket"
            raise s3vectors_error("ServiceQuotaExceededException", message)
        index = IndexRecord(
            id=0,
            bucket_name=bucket.name,
            name=name,
            arn=f"{bucket.arn}/index/{name}",
            creation_time=time.time(),
            data_type="float32",
            dimension=dimension,
            distance_metric=metric,
            non_filterable_keys=non_filterable,
            encryption=encryption or bucket.encryption,
            index_mode=bucket.default_index_mode,
            text_search=text_search,
        )
        return {"indexArn": self._store.insert_index(index, tags).arn}

    def _get_index(self, request: _Request) -> dict[str, Any]:
        index = self._index(request.members)
        self._count_read(index)
        return {"index": index.to_document()}

    def _count_read(self, index: IndexRecord) -> None:
        """Let one more read pass for the index's BUILDING text search configurations."""
        advanced = text_rules.after_read(index.text_search)
        if advanced is not None:
            self._store.set_text_search(index, advanced)

    def _list_indexes(self, request: _Request) -> dict[str, Any]:
        members = request.members
        limit = members.integer("maxResults", 1, MAX_LIST_RESULTS) or MAX_LIST_RESULTS
        prefix = members.text("prefix", max_length=63) or ""
        bucket = self._bucket(members)
        after = check.page_after_name(members, "ListIndexes", bucket.name)
        found = self._store.indexes(bucket.name, prefix, after, limit + 1)
        output: dict[str, Any] = {"indexes": [index.to_summary() for index in found[:limit]]}
        if len(found) > limit:
            state = {"bucket": bucket.name, "after": found[limit - 1].name}
            output["nextToken"] = check.page_token("ListIndexes", state)
        return output

    def _delete_index(self, request: _Request) -> dict[str, Any]:
        index = self._index(request.members)
        self._store.delete_index(index)
        self._matrices.pop(index.id, None)
        self._write_budgets.pop(index.id, None)
        return {}

    def _update_index_mode(self, request: _Request) -> dict[str, Any]:
        mode = request.members.required_choice("indexMode", check.INDEX_MODES)
        index = self._index(request.members)
        if mode == "CLASSIC":
            raise invalid(
                "indexMode CLASSIC is allowed only for indexes in vector buckets created before "
                f"2026-09-30; vector bucket '{index.bucket_name}' is newer",
                "indexMode",
            )
        self._store.set_index_mode(index, mode)
        return {}

    def _update_metadata_configuration(self, request: _Request) -> dict[str, Any]:
        update = text_rules.metadata_update(request.members)
        index = self._index(request.members)
        configs = text_rules.updated_text_search(index, update, self._search.text_backfill_reads)
        if configs != index.text_search:
            self._store.set_text_search(index, configs)
        return {"indexArn": index.arn}

    # Tags

    def _list_tags_for_resource(self, request: _Request) -> dict[str, Any]:
        return {"tags": self._store.tags(self._tagged_arn(request))}

    def _tag_resource(self, request: _Request) -> dict[str, Any]:
        if not request.members.present("tags"):
            raise invalid("tags is required", "tags")
        tags = check.tags(request.members.raw("tags"))
        arn = self._tagged_arn(request)
        check.tag_count({**self._store.tags(arn), **tags})
        self._store.add_tags(arn, tags)
        return {}

    def _untag_resource(self, request: _Request) -> dict[str, Any]:
        keys = request.query.get("tagKeys")
        if not keys:
            raise invalid("tagKeys is required", "tagKeys")
        checked = [check.tag_key(key) for key in keys]
        self._store.remove_tags(self._tagged_arn(request), checked)
        return {}

    # Vectors

    def _take_write_budget(self, index: IndexRecord, vector_count: int) -> None:
        if not self._enforce_write_limits:
            return
        now = self._clock()
        if index.id not in self._write_budgets:
            self._write_budgets[index.id] = (
                _TokenBucket(WRITE_REQUESTS_PER_SECOND, now),
                _TokenBucket(WRITE_VECTORS_PER_SECOND, now),
            )
        requests, vectors = self._write_budgets[index.id]
        if requests.refill(now) < 1 or vectors.refill(now) < vector_count:
            raise s3vectors_error(
                "TooManyRequestsException",
                f"Write rate exceeded for index '{index.name}': at most "
                f"{WRITE_REQUESTS_PER_SECOND} PutVectors/DeleteVectors requests and "
                f"{WRITE_VECTORS_PER_SECOND} vectors per second",
            )
        requests.tokens -= 1
        vectors.tokens -= vector_count

    def _put_vectors(self, request: _Request) -> dict[str, Any]:
        index = self._index(request.members)
        non_filterable = frozenset(index.non_filterable_keys)
        records = check.put_batch(
            request.members, index.dimension, index.distance_metric, non_filterable
        )
        self._take_write_budget(index, len(records))
        matrix = self._matrix(index)
        self._store.put_vectors(index, records)
        matrix.upsert(records)
        return {}

    def _delete_vectors(self, request: _Request) -> dict[str, Any]:
        index = self._index(request.members)
        keys = check.vector_keys(request.members, check.MAX_VECTORS_PER_WRITE)
        self._take_write_budget(index, len(keys))
        matrix = self._matrix(index)
        self._store.delete_vectors(index, keys)
        matrix.remove(keys)
        return {}

    def _get_vectors(self, request: _Request) -> dict[str, Any]:
        members = request.members
        index = self._index(members)
        keys = check.vector_keys(members, check.MAX_KEYS_PER_GET)
        with_data, with_metadata = members.flag("returnData"), members.flag("returnMetadata")
        found = [self._matrix(index).get(key) for key in dict.fromkeys(keys)]
        vectors = [record.to_document(with_data, with_metadata) for record in found if record]
        return {"vectors": vectors}

    def _list_vectors(self, request: _Request) -> dict[str, Any]:
        members = request.members
        index = self._index(members)
        limit = members.integer("maxResults", 1, MAX_LIST_VECTORS_RESULTS)
        segment = check.list_segment(members)
        with_data, with_metadata = members.flag("returnData"), members.flag("returnMetadata")
        where = {"index": index.id, "segment": list(segment) if segment else None}
        state = check.page_state(members, "ListVectors") or {**where, "after": 0}
        after = state.get("after")
        if {k: state.get(k) for k in where} != where or not isinstance(after, int):
            raise invalid("nextToken was issued for another index or segment", "nextToken")
        records, continue_after = self._store.list_vectors(
            index, after, segment, limit or DEFAULT_LIST_VECTORS_RESULTS
        )
        vectors = [record.to_document(with_data, with_metadata) for record in records]
        output: dict[str, Any] = {"vectors": vectors}
        if continue_after is not None:
            output["nextToken"] = check.page_token(
                "ListVectors", {**where, "after": continue_after}
            )
        return output

    def _query_vectors(self, request: _Request) -> dict[str, Any]:
        index = self._index(request.members)
        try:
            return query_vectors(request.members, index, self._matrix(index), self._search)
        finally:
            self._count_read(index)
