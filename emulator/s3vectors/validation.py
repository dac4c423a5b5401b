"""Request checks for the S3 Vectors stand-in, one function per kind of member.

Each check applies a rule the service documents (``shared/reference/aws-apis.md`` §2.3–§2.6) and
returns the value in the form the service keeps, or raises ``ValidationException`` whose message
names the member and the rule. botocore checks only required members, minimums and types before
sending, so every maximum, enum and pattern is checked here.

Choices where the documentation is silent (⚠):

- Names are checked against the full naming rules (§2.6) wherever they appear, not only on
  create: a name that breaks them can never exist, so it is a ``ValidationException``.
- An ARN for another Region or account is ``NotFoundException``: nothing by that ARN exists here.
- Vector values beyond the float32 range (they would become ±Infinity when stored) are rejected
  like Infinity itself. (Metadata rules live in ``filters``.)
- ``nextToken`` values are opaque base64 strings made by this module; their length is not capped.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from emulator.errors import ServiceError, s3vectors_error, s3vectors_validation
from emulator.s3vectors.filters import json_type, stored_metadata
from emulator.s3vectors.store import Encryption, VectorRecord

MAX_DIMENSION = 4096
MAX_VECTORS_PER_WRITE = 500
MAX_KEYS_PER_GET = 100
MAX_VECTOR_KEY_LENGTH = 1024
MAX_LIST_SEGMENTS = 16
MAX_TAGS_PER_RESOURCE = 50
MAX_TAG_KEY_LENGTH = 128
MAX_TAG_VALUE_LENGTH = 256
MAX_KMS_KEY_ARN_LENGTH = 2048

INDEX_MODES = ("CLASSIC", "ENHANCED")
DISTANCE_METRICS = ("cosine", "euclidean")
DATA_TYPES = ("float32",)
SSE_TYPES = ("AES256", "aws:kms")

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ARN = re.compile(
    r"arn:aws[-a-z0-9]*:s3vectors:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"bucket/(?P<bucket>[^/]+)(?:/index/(?P<index>[^/]+))?"
)
_KMS_KEY_ARN = re.compile(r"arn:aws[-a-z0-9]*:kms:[-a-z0-9]*:[0-9]{12}:key/.+")
_TAG_PUNCTUATION = frozenset("_.:/=+-@")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Exact types: bool is a subclass of int, but true is not a vector value.
_NUMBER_TYPES = frozenset({int, float})


def invalid(message: str, member: str | None = None) -> ServiceError:
    """A ``ValidationException`` naming ``member`` in its ``fieldList``."""
    return s3vectors_validation(message, member)


class RequestMembers:
    """Typed, checked access to the members of one request document."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body = body

    def present(self, name: str) -> bool:
        """Whether the request sets ``name`` (JSON null counts as absent)."""
        return self._body.get(name) is not None

    def _typed(self, name: str, expected: str, required: bool) -> Any:
        value = self._body.get(name)
        if value is None:
            if required:
                raise invalid(f"{name} is required", name)
            return None
        if json_type(value) != expected:
            raise invalid(f"{name} must be a JSON {expected}, got {json_type(value)}", name)
        return value

    def text(self, name: str, *, required: bool = False, max_length: int = 0) -> str | None:
        """A non-empty string member of at most ``max_length`` characters (0: no maximum)."""
        value = self._typed(name, "string", required)
        if value is not None and (not value or (max_length and len(value) > max_length)):
            bound = f"between 1 and {max_length}" if max_length else "of at least 1"
            raise invalid(f"{name} must have a length {bound}, got {len(value)}", name)
        return value

    def required_text(self, name: str) -> str:
        """A non-empty string member that must be present."""
        return cast(str, self.text(name, required=True))

    def choice(self, name: str, allowed: tuple[str, ...], *, required: bool = False) -> str | None:
        """A string member that must be one of ``allowed`` (case-sensitive)."""
        value = self.text(name, required=required)
        if value is not None and value not in allowed:
            raise invalid(f"{name} must be one of {', '.join(allowed)}, got '{value}'", name)
        return value

    def required_choice(self, name: str, allowed: tuple[str, ...]) -> str:
        """A string member that must be present and one of ``allowed``."""
        return cast(str, self.choice(name, allowed, required=True))

    def integer(
        self, name: str, minimum: int, maximum: int, *, required: bool = False
    ) -> int | None:
        """An integer member in ``minimum``..``maximum``."""
        value = self._typed(name, "number", required)
        if value is None:
            return None
        if not isinstance(value, int):
            raise invalid(f"{name} must be an integer, got {value}", name)
        if not minimum <= value <= maximum:
            raise invalid(f"{name} must be between {minimum} and {maximum}, got {value}", name)
        return value

    def required_integer(self, name: str, minimum: int, maximum: int) -> int:
        """An integer member that must be present and in ``minimum``..``maximum``."""
        return cast(int, self.integer(name, minimum, maximum, required=True))

    def flag(self, name: str) -> bool:
        """A boolean member; false when absent."""
        return bool(self._typed(name, "boolean", False))

    def array(self, name: str, minimum: int, maximum: int, *, required: bool = False) -> list[Any]:
        """An array member with ``minimum``..``maximum`` items; empty when absent and optional."""
        value = self._typed(name, "array", required)
        if value is None:
            return []
        if not minimum <= len(value) <= maximum:
            raise invalid(
                f"{name} must have between {minimum} and {maximum} items, got {len(value)}", name
            )
        return value

    def document(self, name: str) -> Mapping[str, Any] | None:
        """An object member, or None when absent."""
        return self._typed(name, "object", False)

    def raw(self, name: str) -> Any:
        """A member as sent, unchecked."""
        return self._body.get(name)


# Names, ARNs and addressing


def bucket_name(name: str, member: str = "vectorBucketName") -> str:
    """``name`` if it follows the vector bucket naming rules (§2.6)."""
    if not _BUCKET_NAME.fullmatch(name):
        raise invalid(
            f"Invalid vector bucket name '{name}': use 3-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit",
            member,
        )
    return name


def index_name(name: str, member: str = "indexName") -> str:
    """``name`` if it follows the vector index naming rules (§2.6)."""
    if not _INDEX_NAME.fullmatch(name):
        raise invalid(
            f"Invalid index name '{name}': use 3-63 lowercase letters, digits, hyphens and dots, "
            "starting and ending with a letter or digit",
            member,
        )
    return name


@dataclass(frozen=True)
class ArnParts:
    """What an S3 Vectors ARN names: a bucket, and an index in it when ``index`` is set."""

    bucket: str
    index: str | None


def parse_arn(arn: str, region: str, account_id: str, member: str) -> ArnParts:
    """The bucket and index an ARN names; NotFoundException for another Region or account."""
    match = _ARN.fullmatch(arn)
    if match is None:
        raise invalid(f"Invalid ARN '{arn}' in {member}", member)
    parts = ArnParts(bucket_name(match["bucket"], member), match["index"])
    if parts.index is not None:
        index_name(parts.index, member)
    if match["region"] != region or match["account"] != account_id:
        raise s3vectors_error("NotFoundException", f"No resource with ARN '{arn}' exists here")
    return parts


def bucket_arn(region: str, account_id: str, bucket: str) -> str:
    """The ARN of a vector bucket."""
    return f"arn:aws:s3vectors:{region}:{account_id}:bucket/{bucket}"


def addressed_bucket(members: RequestMembers, region: str, account_id: str) -> str:
    """The bucket a request names by ``vectorBucketName`` or ``vectorBucketArn`` (exactly one)."""
    name = members.text("vectorBucketName")
    arn = members.text("vectorBucketArn")
    if (name is None) == (arn is None):
        raise invalid("Specify either vectorBucketName or vectorBucketArn, but not both")
    if name is not None:
        return bucket_name(name)
    assert arn is not None
    parts = parse_arn(arn, region, account_id, "vectorBucketArn")
    if parts.index is not None:
        raise invalid(f"vectorBucketArn '{arn}' names an index, not a bucket", "vectorBucketArn")
    return parts.bucket


def addressed_index(members: RequestMembers, region: str, account_id: str) -> tuple[str, str]:
    """The (bucket, index) a request names by ``vectorBucketName`` + ``indexName`` or by
    ``indexArn``."""
    arn = members.text("indexArn")
    if arn is not None:
        if members.present("vectorBucketName") or members.present("indexName"):
            raise invalid("Specify either indexArn or vectorBucketName and indexName, not both")
        parts = parse_arn(arn, region, account_id, "indexArn")
        if parts.index is None:
            raise invalid(f"indexArn '{arn}' names a bucket, not an index", "indexArn")
        return parts.bucket, parts.index
    bucket = members.text("vectorBucketName")
    index = members.text("indexName")
    if bucket is None or index is None:
        raise invalid("Specify either indexArn or both vectorBucketName and indexName")
    return bucket_name(bucket), index_name(index)


# Encryption, tags and policies


def encryption(document: Mapping[str, Any] | None) -> Encryption | None:
    """The ``encryptionConfiguration`` member, or None when absent; ``kmsKeyArn`` is allowed if
    and only if ``sseType`` is ``aws:kms``."""
    if document is None:
        return None
    members = RequestMembers(document)
    sse_type = members.choice("sseType", SSE_TYPES) or "AES256"
    key_arn = members.text("kmsKeyArn", max_length=MAX_KMS_KEY_ARN_LENGTH)
    if sse_type == "aws:kms" and key_arn is None:
        raise invalid("kmsKeyArn is required when sseType is aws:kms", "kmsKeyArn")
    if sse_type != "aws:kms" and key_arn is not None:
        raise invalid("kmsKeyArn is allowed only when sseType is aws:kms", "kmsKeyArn")
    if key_arn is not None and not _KMS_KEY_ARN.fullmatch(key_arn):
        raise invalid(f"kmsKeyArn '{key_arn}' is not a KMS key ARN", "kmsKeyArn")
    return Encryption(sse_type, key_arn)


def _tag_text(text: str) -> bool:
    return all(unicodedata.category(char)[0] in "LZN" or char in _TAG_PUNCTUATION for char in text)


def tag_key(key: Any) -> str:
    """A tag key: 1-128 letters, digits, spaces or ``_.:/=+-@``."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_TAG_KEY_LENGTH or not _tag_text(key):
        raise invalid(
            f"Invalid tag key {key!r}: use 1-{MAX_TAG_KEY_LENGTH} letters, digits, spaces or "
            "_.:/=+-@",
            "tags",
        )
    return key


def tags(document: Any, member: str = "tags") -> dict[str, str]:
    """A tag map; values are 0-256 characters of the same alphabet as keys."""
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise invalid(f"{member} must be a JSON object, got {json_type(document)}", member)
    checked: dict[str, str] = {}
    for key, value in document.items():
        ok_value = isinstance(value, str) and len(value) <= MAX_TAG_VALUE_LENGTH
        if not ok_value or not _tag_text(value):
            raise invalid(
                f"Invalid value for tag '{key}': use 0-{MAX_TAG_VALUE_LENGTH} letters, digits, "
                "spaces or _.:/=+-@",
                member,
            )
        checked[tag_key(key)] = value
    return checked


def tag_count(combined: Mapping[str, str]) -> None:
    """Refuse a resource that would carry more than 50 tags."""
    if len(combined) > MAX_TAGS_PER_RESOURCE:
        raise invalid(
            f"A resource can have at most {MAX_TAGS_PER_RESOURCE} tags; this request would leave "
            f"{len(combined)}",
            "tags",
        )


def policy(text: str) -> str:
    """A bucket policy: a string holding a JSON object."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise invalid(f"policy is not valid JSON: {error.msg}", "policy") from error
    if not isinstance(parsed, dict):
        raise invalid("policy must be a JSON object", "policy")
    return text


# Vectors and metadata


_NON_FINITE_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def vector_data(data: Any, dimension: int, metric: str, subject: str, member: str) -> np.ndarray:
    """A ``{"float32": [...]}`` union as a float32 array of length ``dimension``: finite values,
    and not all zero on a cosine index. ``subject`` starts every message (e.g. "Invalid record
    for key 'k'")."""
    if not isinstance(data, Mapping) or set(data) != {"float32"}:
        raise invalid(f"{subject}: data must be an object with the single member float32", member)
    values = data["float32"]
    if isinstance(values, list):
        # AWS JSON protocols carry non-finite floats as these strings; botocore sends them so.
        values = [_NON_FINITE_FLOATS.get(v, v) if isinstance(v, str) else v for v in values]
    if not isinstance(values, list) or not set(map(type, values)) <= _NUMBER_TYPES:
        raise invalid(f"{subject}: float32 must be an array of numbers", member)
    if len(values) != dimension:
        raise invalid(
            f"{subject}: vector must have length {dimension}, but has length {len(values)}", member
        )
    as_float64 = np.asarray(values, dtype=np.float64)
    if not np.isfinite(as_float64).all():
        raise invalid(f"{subject}: vector must not contain NaN or Infinity values", member)
    if np.abs(as_float64).max() > _FLOAT32_MAX:
        raise invalid(f"{subject}: vector values must be within the float32 range", member)
    as_float32 = as_float64.astype(np.float32)
    if metric == "cosine" and not as_float32.any():
        raise invalid(
            f"{subject}: vector must not be all zeros for an index using the cosine metric",
            member,
        )
    return as_float32


def vector_key(key: Any, position: int, member: str) -> str:
    """A vector key: a string of 1-1024 characters."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_VECTOR_KEY_LENGTH:
        raise invalid(
            f"Invalid key at {member}[{position}]: a key is a string of 1-"
            f"{MAX_VECTOR_KEY_LENGTH} characters",
            member,
        )
    return key


def put_batch(
    members: RequestMembers, dimension: int, metric: str, non_filterable: frozenset[str]
) -> list[VectorRecord]:
    """The ``vectors`` of a PutVectors request, every one checked before any is stored."""
    entries = members.array("vectors", 1, MAX_VECTORS_PER_WRITE, required=True)
    records: list[VectorRecord] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise invalid(f"Invalid record at vectors[{position}]: not a JSON object", "vectors")
        key = vector_key(entry.get("key"), position, "vectors")
        if key in seen:
            raise invalid(f"Duplicate key '{key}' in one PutVectors request", "vectors")
        seen.add(key)
        subject = f"Invalid record for key '{key}'"
        if entry.get("data") is None:
            raise invalid(f"{subject}: data is required", "vectors")
        data = vector_data(entry["data"], dimension, metric, subject, "vectors")
        metadata = stored_metadata(entry.get("metadata"), non_filterable, subject)
        records.append(VectorRecord(key, data, metadata))
    return records


def vector_keys(members: RequestMembers, maximum: int) -> list[str]:
    """The ``keys`` member of GetVectors or DeleteVectors: 1..``maximum`` vector keys."""
    keys = members.array("keys", 1, maximum, required=True)
    return [vector_key(key, position, "keys") for position, key in enumerate(keys)]


def list_segment(members: RequestMembers) -> tuple[int, int] | None:
    """The (segmentCount, segmentIndex) of a parallel ListVectors request, or None."""
    count = members.integer("segmentCount", 1, MAX_LIST_SEGMENTS)
    index = members.integer("segmentIndex", 0, MAX_LIST_SEGMENTS - 1)
    if count is None and index is None:
        return None
    if count is None or index is None:
        raise invalid("segmentCount and segmentIndex must be given together")
    if index >= count:
        raise invalid(f"segmentIndex ({index}) must be less than segmentCount ({count})")
    return count, index


# Pagination tokens


def page_token(kind: str, state: Mapping[str, Any]) -> str:
    """An opaque ``nextToken`` carrying ``state`` for the next page of operation ``kind``."""
    payload = json.dumps({"kind": kind, **state}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii")


def page_state(members: RequestMembers, kind: str) -> dict[str, Any] | None:
    """The state carried by the request's ``nextToken``, or None on a first page."""
    token = members.text("nextToken")
    if token is None:
        return None
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error) as error:
        raise invalid("nextToken is not a token this operation issued", "nextToken") from error
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise invalid("nextToken is not a token this operation issued", "nextToken")
    return state


def page_after_name(members: RequestMembers, kind: str, bucket: str | None) -> str:
    """The name a ListVectorBuckets or ListIndexes page continues after ("" on a first page);
    ``bucket`` is the bucket whose indexes are listed (None for buckets)."""
    state = page_state(members, kind)
    if state is None:
        return ""
    after = state.get("after")
    if not isinstance(after, str) or state.get("bucket") != bucket:
        raise invalid("nextToken was issued for another listing", "nextToken")
    return after
