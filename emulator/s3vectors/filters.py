"""Vector metadata: what PutVectors may store, and the QueryVectors filters that select on it.

Metadata (``shared/reference/aws-apis.md`` §2.4-§2.5) is a JSON object of at most 50 keys of
1-63 characters whose values are strings, numbers, booleans or arrays of those (no nested
objects or arrays, no null), at most 40 KB in all and 2 KB without the keys the index declares
non-filterable. ⚠ Sizes are measured as the UTF-8 byte length of the compact JSON encoding
(``json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)``; the filterable size of the
object without its non-filterable keys), so ``{"a":"b"}`` is 9 bytes. Numbers must be finite.
An index declares 1-10 distinct non-filterable keys of 1-63 characters, or none.

Filter grammar (``shared/reference/aws-apis.md`` §2.4)::

    filter     := { member, ... }                       all members must hold (AND)
    member     := "$and": [filter, ...] | "$or": [filter, ...]     (non-empty arrays, nestable)
                | key: scalar                            same as key: {"$eq": scalar}
                | key: { operator: operand, ... }        all operators must hold (AND)
    operator   := $eq | $ne (string, number, boolean)    $gt | $gte | $lt | $lte (number)
                | $in | $nin (non-empty array of strings, numbers, booleans)
                | $exists (boolean) | $startsWith (string; ENHANCED indexes or queryMode only)

A stored value that is an array matches ``$eq`` when any element equals the operand; the other
element-wise operators (``$gt``…, ``$in``, ``$startsWith``) likewise match when any element does.
Filtering on a key declared non-filterable, an unknown operator or a malformed operand is a
``ValidationException``.

Choices where the documentation is silent (⚠):

- ``$ne`` and ``$nin`` are the negations of ``$eq`` and ``$in``, so they match vectors that lack
  the key, and an array matches ``$ne`` only when no element equals the operand (MongoDB's rules).
- Values compare by JSON type: a boolean never equals a number (although Python has
  ``True == 1``), and ``1`` equals ``1.0``. ``$gt`` and friends never match strings or booleans.
- An empty filter document ``{}`` matches every vector; an empty operator object ``{"k": {}}``, an
  object mixing operators with plain members, and ``null`` operands are rejected.
- On ENHANCED queries the filter may hold at most 100 constraints (each compared value counts, so
  ``$in`` with 3 values is 3; ``$exists`` is 1), as documented for ENHANCED indexes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emulator.errors import ServiceError, s3vectors_validation

Metadata = Mapping[str, Any]
Predicate = Callable[[Metadata], bool]

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 63
MAX_METADATA_BYTES = 40 * 1024
MAX_FILTERABLE_METADATA_BYTES = 2 * 1024
MAX_NON_FILTERABLE_KEYS = 10
MAX_ENHANCED_FILTER_CONSTRAINTS = 100

_MISSING = object()
_ELEMENT_OPERATORS = frozenset(
    {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$startsWith"}
)
_LOGICAL_OPERATORS = frozenset({"$and", "$or"})


@dataclass(frozen=True)
class MetadataFilter:
    """A parsed filter: ``matches(metadata)`` tells whether a vector's metadata satisfies it;
    ``keys`` are the metadata keys it reads; ``constraint_count`` counts compared values."""

    matches: Predicate
    keys: frozenset[str]
    constraint_count: int


def parse_filter(
    document: Any,
    *,
    non_filterable_keys: frozenset[str],
    allow_starts_with: bool,
    max_constraints: int | None,
) -> MetadataFilter:
    """Parse a QueryVectors ``filter`` member into a ``MetadataFilter``.

    ``allow_starts_with`` is true for ENHANCED indexes or queries; ``max_constraints`` (None for no
    limit) bounds the number of compared values. Raises ``ValidationException`` for any filter the
    grammar does not allow.
    """
    parser = _FilterParser(non_filterable_keys, allow_starts_with)
    predicate = parser.filter(document, "filter")
    if max_constraints is not None and parser.constraint_count > max_constraints:
        raise _invalid(
            f"filter has {parser.constraint_count} constraints; at most {max_constraints} are "
            "allowed (each compared value counts)"
        )
    return MetadataFilter(predicate, frozenset(parser.keys), parser.constraint_count)


def encoded_size(metadata: Mapping[str, Any]) -> int:
    """Bytes of the compact UTF-8 JSON encoding of a metadata object (the size the limits use)."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _storable_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_storable_value(v) and not isinstance(v, list) for v in value)
    if _json_type(value) == "number":
        return math.isfinite(value)
    return _json_type(value) in ("string", "boolean")


def stored_metadata(
    document: Any, non_filterable_keys: frozenset[str], subject: str
) -> dict[str, Any]:
    """The metadata of one PutVectors record (``{}`` when absent) if it keeps the rules above;
    ``subject`` starts every error message (e.g. "Invalid record for key 'k'")."""

    def refuse(rule: str) -> ServiceError:
        return s3vectors_validation(f"{subject}: {rule}", "vectors")

    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise refuse("metadata must be a JSON object")
    if len(document) > MAX_METADATA_KEYS:
        raise refuse(f"metadata has {len(document)} keys; at most {MAX_METADATA_KEYS} allowed")
    for key, value in document.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
            raise refuse(f"metadata key '{key[:80]}' must be 1-{MAX_METADATA_KEY_LENGTH} chars")
        if not _storable_value(value):
            raise refuse(
                f"metadata value of '{key}' must be a string, number, boolean or an array of those"
            )
    total = encoded_size(document)
    if total > MAX_METADATA_BYTES:
        raise refuse(f"metadata is {total} bytes; at most {MAX_METADATA_BYTES} allowed")
    filterable = {k: v for k, v in document.items() if k not in non_filterable_keys}
    filterable_size = encoded_size(filterable)
    if filterable_size > MAX_FILTERABLE_METADATA_BYTES:
        raise refuse(
            f"filterable metadata is {filterable_size} bytes; at most "
            f"{MAX_FILTERABLE_METADATA_BYTES} allowed (declare large keys non-filterable)"
        )
    return dict(document)


def declared_non_filterable_keys(configuration: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The ``nonFilterableMetadataKeys`` of a CreateIndex ``metadataConfiguration``: 1-10
    distinct keys of 1-63 characters when given. (``text_rules`` reads its
    ``textSearchConfigurations``.)"""
    if configuration is None:
        return ()
    keys = configuration.get("nonFilterableMetadataKeys")
    if keys is None:
        return ()
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_NON_FILTERABLE_KEYS:
        raise s3vectors_validation(
            f"nonFilterableMetadataKeys must be an array of 1-{MAX_NON_FILTERABLE_KEYS} keys",
            "nonFilterableMetadataKeys",
        )
    for key in keys:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
            raise s3vectors_validation(
                f"Invalid non-filterable metadata key {key!r}: use 1-{MAX_METADATA_KEY_LENGTH} "
                "characters",
                "nonFilterableMetadataKeys",
            )
    if len(set(keys)) != len(keys):
        raise s3vectors_validation(
            "nonFilterableMetadataKeys holds a key twice", "nonFilterableMetadataKeys"
        )
    return tuple(keys)


def _invalid(message: str) -> ServiceError:
    return s3vectors_validation(f"Invalid filter: {message}", "filter")


_PRIMITIVE_TYPES = frozenset({"boolean", "number", "string"})


# Kept apart from novaflow's own copy on purpose: the stand-in follows the API reference on
# its own, so a mistake on either side shows up as a failing test.
def json_type(value: Any) -> str:
    """The JSON type name of a parsed JSON value, as used in error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _json_type(value: Any) -> str:
    """``json_type`` with every non-primitive (null, array, object) folded into ``"other"``."""
    kind = json_type(value)
    return kind if kind in _PRIMITIVE_TYPES else "other"


def _is_number(value: Any) -> bool:
    return _json_type(value) == "number"


def _primitive_equal(stored: Any, operand: Any) -> bool:
    stored_type = _json_type(stored)
    return stored_type != "other" and stored_type == _json_type(operand) and stored == operand


def _any_element(stored: Any, test: Callable[[Any], bool]) -> bool:
    if isinstance(stored, list):
        return any(test(element) for element in stored)
    return test(stored)


class _FilterParser:
    def __init__(self, non_filterable_keys: frozenset[str], allow_starts_with: bool) -> None:
        self._non_filterable_keys = non_filterable_keys
        self._allow_starts_with = allow_starts_with
        self.keys: set[str] = set()
        self.constraint_count = 0

    def filter(self, document: Any, where: str) -> Predicate:
        if not isinstance(document, Mapping):
            raise _invalid(f"{where} must be a JSON object, got {_json_type(document)}")
        predicates = [self._member(name, operand, where) for name, operand in document.items()]
        return _all_of(predicates)

    def _member(self, name: str, operand: Any, where: str) -> Predicate:
        if name in _LOGICAL_OPERATORS:
            return self._logical(name, operand, where)
        if name.startswith("$"):
            raise _invalid(f"unknown logical operator '{name}' in {where}")
        self._check_key(name)
        if isinstance(operand, Mapping):
            return self._operators(name, operand)
        return self._element("$eq", name, operand)

    def _logical(self, name: str, operand: Any, where: str) -> Predicate:
        if not isinstance(operand, list) or not operand:
            raise _invalid(f"'{name}' in {where} needs a non-empty array of filters")
        parts = [self.filter(part, f"{name}[{i}]") for i, part in enumerate(operand)]
        return _all_of(parts) if name == "$and" else _any_of(parts)

    def _check_key(self, key: str) -> None:
        if not key:
            raise _invalid("metadata key names must not be empty")
        if key in self._non_filterable_keys:
            raise _invalid(f"metadata key '{key}' is non-filterable for this index")
        self.keys.add(key)

    def _operators(self, key: str, operators: Mapping[str, Any]) -> Predicate:
        if not operators:
            raise _invalid(f"the operator object for key '{key}' is empty")
        predicates = []
        for operator, operand in operators.items():
            if operator not in _ELEMENT_OPERATORS:
                raise _invalid(f"unknown operator '{operator}' for key '{key}'")
            predicates.append(self._element(operator, key, operand))
        return _all_of(predicates)

    def _element(self, operator: str, key: str, operand: Any) -> Predicate:
        if operator == "$startsWith" and not self._allow_starts_with:
            raise _invalid(
                "$startsWith is supported only on ENHANCED indexes or with queryMode ENHANCED"
            )
        check = _OPERAND_CHECKS[operator]
        if not check.accepts(operand):
            raise _invalid(f"{operator} on key '{key}' needs {check.description}")
        self.constraint_count += len(operand) if isinstance(operand, list) else 1
        return _OPERATOR_PREDICATES[operator](key, operand)


def _all_of(predicates: Sequence[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda metadata: all(predicate(metadata) for predicate in predicates)


def _any_of(predicates: Sequence[Predicate]) -> Predicate:
    return lambda metadata: any(predicate(metadata) for predicate in predicates)


@dataclass(frozen=True)
class _OperandCheck:
    accepts: Callable[[Any], bool]
    description: str


def _is_primitive(value: Any) -> bool:
    return _json_type(value) != "other"


def _is_primitive_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_primitive(v) for v in value)


_PRIMITIVE = _OperandCheck(_is_primitive, "a string, number or boolean")
_NUMBER = _OperandCheck(_is_number, "a number")
_OPERAND_CHECKS: Mapping[str, _OperandCheck] = {
    "$eq": _PRIMITIVE,
    "$ne": _PRIMITIVE,
    "$gt": _NUMBER,
    "$gte": _NUMBER,
    "$lt": _NUMBER,
    "$lte": _NUMBER,
    "$in": _OperandCheck(_is_primitive_list, "a non-empty array of strings, numbers or booleans"),
    "$nin": _OperandCheck(_is_primitive_list, "a non-empty array of strings, numbers or booleans"),
    "$exists": _OperandCheck(lambda v: isinstance(v, bool), "a boolean"),
    "$startsWith": _OperandCheck(lambda v: isinstance(v, str), "a string"),
}


def _equals(key: str, operand: Any) -> Predicate:
    def matches(metadata: Metadata) -> bool:
        stored = metadata.get(key, _MISSING)
        return _any_element(stored, lambda value: _primitive_equal(value, operand))

    return matches


def _one_of(key: str, operands: list[Any]) -> Predicate:
    def matches(metadata: Metadata) -> bool:
        stored = metadata.get(key, _MISSING)
        return _any_element(
            stored, lambda value: any(_primitive_equal(value, operand) for operand in operands)
        )

    return matches


def _negated(positive: Callable[[str, Any], Predicate]) -> Callable[[str, Any], Predicate]:
    def build(key: str, operand: Any) -> Predicate:
        matches_positive = positive(key, operand)
        return lambda metadata: not matches_positive(metadata)

    return build


def _numeric(compare: Callable[[float, float], bool]) -> Callable[[str, Any], Predicate]:
    def build(key: str, operand: Any) -> Predicate:
        def matches(metadata: Metadata) -> bool:
            stored = metadata.get(key, _MISSING)
            return _any_element(stored, lambda v: _is_number(v) and compare(v, operand))

        return matches

    return build


def _exists(key: str, operand: Any) -> Predicate:
    return lambda metadata: (key in metadata) is operand


def _starts_with(key: str, operand: Any) -> Predicate:
    def matches(metadata: Metadata) -> bool:
        stored = metadata.get(key, _MISSING)
        return _any_element(stored, lambda v: isinstance(v, str) and v.startswith(operand))

    return matches


_OPERATOR_PREDICATES: Mapping[str, Callable[[str, Any], Predicate]] = {
    "$eq": _equals,
    "$ne": _negated(_equals),
    "$gt": _numeric(lambda stored, operand: stored > operand),
    "$gte": _numeric(lambda stored, operand: stored >= operand),
    "$lt": _numeric(lambda stored, operand: stored < operand),
    "$lte": _numeric(lambda stored, operand: stored <= operand),
    "$in": _one_of,
    "$nin": _negated(_one_of),
    "$exists": _exists,
    "$startsWith": _starts_with,
}
