"""Full-text search requests in the S3 Vectors stand-in: the text search configurations of
CreateIndex and UpdateMetadataConfiguration, the ``queryTexts`` of QueryVectors, and how a
configuration's status goes from BUILDING to ACTIVE. (Analysis and ranking: ``text_search``.)

What the service model (botocore 1.44) and the API reference document:

- A ``TextSearchConfiguration`` is ``metadataKey`` (required, 1-63 characters), ``language``
  (``en fr es pt it de nl zh ja ko``; none means the standard analyzer) and ``status``
  (``ACTIVE`` | ``BUILDING``, "returned by GetIndex"). An index has at most 10 of them, "no more
  than one configuration for each metadata key"; a searchable key may also be non-filterable.
- UpdateMetadataConfiguration takes ``add`` (0-10 configurations) or ``delete`` (1-10 keys),
  "either add or delete, but not both", on an index in ENHANCED mode. Once accepted, the service
  "begins building the corresponding full-text indexes": BUILDING means the analyzer "is being
  backfilled and isn't yet serving queries".
- QueryVectors needs ``queryVector``, ``queryTexts`` or both. ``queryTexts`` holds 1-10 entries of
  ``text`` (1-1,024 characters) and ``metadataKey``, "each entry must target a distinct
  searchable metadata key". Full-text and hybrid searches require an ENHANCED index.

Choices where AWS is silent (⚠):

- Every broken rule is a ``ValidationException`` (400), except adding a configuration for a key
  that already has one: ``ConflictException`` (409), the conflict the operation models. Deleting a
  key that has no configuration is a ValidationException.
- A ``status`` sent in a request must be one of the enum's values and is otherwise ignored.
- Configurations given to CreateIndex are ACTIVE at once (there is nothing to backfill); they
  are refused when the new index would be CLASSIC (its bucket's default mode).
- Backfill takes reads, not time, so tests need no sleeps: a configuration added by
  UpdateMetadataConfiguration stays BUILDING for the next ``SearchSettings.text_backfill_reads``
  (default 1) reads of its index, a read being a GetIndex or QueryVectors call that names it,
  whatever its outcome; then it is ACTIVE. A client that polls GetIndex, as it must on AWS, sees
  BUILDING and then ACTIVE; ``queryTexts`` naming a BUILDING key is a ValidationException.
- ``queryTexts`` on a CLASSIC index is refused even with ``queryMode`` ENHANCED.
- A text that analyzes to no terms (only punctuation or stop words) is valid and matches nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emulator.errors import ServiceError, s3vectors_error
from emulator.s3vectors.filters import MAX_METADATA_KEY_LENGTH, json_type
from emulator.s3vectors.store import IndexRecord, TextSearchConfig
from emulator.s3vectors.validation import RequestMembers, invalid

LANGUAGES = ("en", "fr", "es", "pt", "it", "de", "nl", "zh", "ja", "ko")
ANALYZER_STATUSES = ("ACTIVE", "BUILDING")
MAX_TEXT_SEARCH_CONFIGURATIONS = 10
MAX_DELETED_CONFIGURATIONS = 10
MAX_QUERY_TEXTS = 10
MAX_QUERY_TEXT_LENGTH = 1024


@dataclass(frozen=True)
class QueryText:
    """One ``queryTexts`` entry, checked: search ``text`` in the key ``config`` makes searchable."""

    text: str
    config: TextSearchConfig

    @property
    def metadata_key(self) -> str:
        """The searchable metadata key the text is searched in."""
        return self.config.metadata_key


@dataclass(frozen=True)
class MetadataUpdate:
    """An UpdateMetadataConfiguration request, checked: configurations to ``add`` (status not yet
    set) or metadata keys to ``delete``; exactly one of them is not None."""

    add: tuple[TextSearchConfig, ...] | None
    delete: tuple[str, ...] | None


def _string(entry: Mapping[str, Any], name: str, at: str, maximum: int, required: bool) -> Any:
    value = entry.get(name)
    where = f"{at}.{name}"
    if value is None:
        if required:
            raise invalid(f"{where} is required", where)
        return None
    if not isinstance(value, str):
        raise invalid(f"{where} must be a JSON string, got {json_type(value)}", where)
    if not 1 <= len(value) <= maximum:
        bound = f"between 1 and {maximum}"
        raise invalid(f"{where} must have a length {bound}, got {len(value)}", where)
    return value


def _choice(entry: Mapping[str, Any], name: str, allowed: tuple[str, ...], at: str) -> str | None:
    value = entry.get(name)
    if value is not None and value not in allowed:
        where = f"{at}.{name}"
        raise invalid(f"{where} must be one of {', '.join(allowed)}, got {value!r}", where)
    return value


def _entries(items: Any, where: str, minimum: int, maximum: int) -> list[Mapping[str, Any]]:
    if not isinstance(items, list):
        raise invalid(f"{where} must be a JSON array, got {json_type(items)}", where)
    if not minimum <= len(items) <= maximum:
        raise invalid(
            f"{where} must have between {minimum} and {maximum} items, got {len(items)}", where
        )
    for position, entry in enumerate(items):
        if not isinstance(entry, Mapping):
            at = f"{where}[{position}]"
            raise invalid(f"{at} must be a JSON object, got {json_type(entry)}", at)
    return items


def _distinct(keys: Sequence[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise invalid(f"{where} {what} metadata key '{key}' more than once", where)
        seen.add(key)


def _configurations(items: Any, where: str) -> tuple[TextSearchConfig, ...]:
    """A list of TextSearchConfiguration objects (0-10, one per key); status left unset."""
    if items is None:
        return ()
    configs = []
    for position, entry in enumerate(_entries(items, where, 0, MAX_TEXT_SEARCH_CONFIGURATIONS)):
        at = f"{where}[{position}]"
        key = _string(entry, "metadataKey", at, MAX_METADATA_KEY_LENGTH, required=True)
        language = _choice(entry, "language", LANGUAGES, at)
        _choice(entry, "status", ANALYZER_STATUSES, at)
        configs.append(TextSearchConfig(key, language, ""))
    _distinct([config.metadata_key for config in configs], where, "configures")
    return tuple(configs)


def declared_text_search(
    configuration: Mapping[str, Any] | None, index_mode: str
) -> tuple[TextSearchConfig, ...]:
    """The ACTIVE text search configurations of a CreateIndex ``metadataConfiguration``
    (empty when it has none) for an index that will be in ``index_mode``."""
    if configuration is None:
        return ()
    where = "metadataConfiguration.textSearchConfigurations"
    configs = _configurations(configuration.get("textSearchConfigurations"), where)
    if configs and index_mode != "ENHANCED":
        raise invalid(
            "Full-text search requires an ENHANCED index; this vector bucket creates "
            f"{index_mode} indexes (see PutVectorBucketDefaultIndexMode)",
            where,
        )
    return tuple(dataclasses.replace(config, status="ACTIVE") for config in configs)


def metadata_update(members: RequestMembers) -> MetadataUpdate:
    """The checked ``add`` or ``delete`` of an UpdateMetadataConfiguration request."""
    add, delete = members.document("add"), members.document("delete")
    if (add is None) == (delete is None):
        raise invalid("Specify either add or delete, but not both")
    if add is not None:
        added = _configurations(add.get("textSearchConfigurations"), "add.textSearchConfigurations")
        return MetadataUpdate(added, None)
    assert delete is not None
    where = "delete.textSearchConfigurations"
    items = delete.get("textSearchConfigurations")
    if items is None:
        raise invalid(f"{where} is required: name 1-{MAX_DELETED_CONFIGURATIONS} keys", where)
    entries = _entries(items, where, 1, MAX_DELETED_CONFIGURATIONS)
    keys = [
        _string(entry, "metadataKey", f"{where}[{i}]", MAX_METADATA_KEY_LENGTH, required=True)
        for i, entry in enumerate(entries)
    ]
    _distinct(keys, where, "names")
    return MetadataUpdate(None, tuple(keys))


def updated_text_search(
    index: IndexRecord, update: MetadataUpdate, backfill_reads: int
) -> tuple[TextSearchConfig, ...]:
    """The index's text search configurations after ``update``; added ones are BUILDING for
    ``backfill_reads`` reads (ACTIVE at once when it is 0). Raises ServiceError."""
    if index.index_mode != "ENHANCED":
        raise invalid(
            f"Index '{index.name}' must be in ENHANCED mode to change its text search "
            "configurations"
        )
    current = {config.metadata_key for config in index.text_search}
    if update.delete is not None:
        for key in update.delete:
            if key not in current:
                raise invalid(
                    f"Index '{index.name}' has no text search configuration for metadata key "
                    f"'{key}'",
                    "delete.textSearchConfigurations",
                )
        return tuple(c for c in index.text_search if c.metadata_key not in update.delete)
    assert update.add is not None
    for config in update.add:
        if config.metadata_key in current:
            raise _conflict(
                f"Index '{index.name}' already has a text search configuration for metadata key "
                f"'{config.metadata_key}'; delete it before adding it again"
            )
    total = len(current) + len(update.add)
    if total > MAX_TEXT_SEARCH_CONFIGURATIONS:
        raise invalid(
            f"An index can have at most {MAX_TEXT_SEARCH_CONFIGURATIONS} text search "
            f"configurations; index '{index.name}' has {len(current)} and the request adds "
            f"{len(update.add)}",
            "add.textSearchConfigurations",
        )
    status = "BUILDING" if backfill_reads > 0 else "ACTIVE"
    added = (dataclasses.replace(c, status=status, reads_left=backfill_reads) for c in update.add)
    return (*index.text_search, *added)


def _conflict(message: str) -> ServiceError:
    return s3vectors_error("ConflictException", message)


def after_read(configs: Sequence[TextSearchConfig]) -> tuple[TextSearchConfig, ...] | None:
    """The configurations once one more read has reported them, or None when none is BUILDING
    (so nothing changes)."""
    if not any(config.status == "BUILDING" for config in configs):
        return None
    return tuple(
        config
        if config.status != "BUILDING"
        else dataclasses.replace(
            config,
            status="BUILDING" if config.reads_left > 1 else "ACTIVE",
            reads_left=max(config.reads_left - 1, 0),
        )
        for config in configs
    )


def query_texts(members: RequestMembers, index: IndexRecord) -> tuple[QueryText, ...]:
    """The checked ``queryTexts`` of a QueryVectors request on ``index`` (empty when absent):
    each names a distinct key with an ACTIVE text search configuration."""
    if not members.present("queryTexts"):
        return ()
    entries = _entries(members.raw("queryTexts"), "queryTexts", 1, MAX_QUERY_TEXTS)
    parsed: list[tuple[str, str]] = []
    for position, entry in enumerate(entries):
        at = f"queryTexts[{position}]"
        text = _string(entry, "text", at, MAX_QUERY_TEXT_LENGTH, required=True)
        key = _string(entry, "metadataKey", at, MAX_METADATA_KEY_LENGTH, required=True)
        parsed.append((text, key))
    keys = [key for _, key in parsed]
    _distinct(keys, "queryTexts", "names")
    if index.index_mode != "ENHANCED":
        raise invalid(
            f"Full-text and hybrid searches require a vector index in ENHANCED mode; index "
            f"'{index.name}' is {index.index_mode}",
            "queryTexts",
        )
    configs = {config.metadata_key: config for config in index.text_search}
    checked = []
    for position, (text, key) in enumerate(parsed):
        config = configs.get(key)
        where = f"queryTexts[{position}].metadataKey"
        if config is None:
            raise invalid(
                f"Metadata key '{key}' is not full-text searchable in index '{index.name}': it "
                "has no text search configuration",
                where,
            )
        if config.status != "ACTIVE":
            raise invalid(
                f"The text search configuration for metadata key '{key}' is {config.status} "
                "(being backfilled) and not yet serving queries; poll GetIndex until it is ACTIVE",
                where,
            )
        checked.append(QueryText(text, config))
    return tuple(checked)
