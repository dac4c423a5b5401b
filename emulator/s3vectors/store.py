"""What the S3 Vectors stand-in holds: its records and their sqlite persistence.

Everything (buckets, indexes, vectors, metadata, tags, policies) lives in one sqlite database:
``<state_dir>/s3vectors.sqlite3`` in WAL mode, or a private in-memory database when there is no
state directory, so both cases run the same code. A new store on the same directory sees what an
earlier one wrote. One service per directory at a time: the service's in-memory matrices are
caches of the database and would go stale if another process wrote to it.

Vectors are kept in put order (a vector overwritten by a later put keeps its place), which is
the order ListVectors pages through. The in-memory matrices that queries use are built from
``load_vectors`` by the search module. An index's text search configurations are one JSON
column; a database written before that column existed gains it, empty, when opened.

The store checks nothing: callers validate requests first. It is not thread-safe on its own; the
service serialises calls to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DATABASE_FILE_NAME = "s3vectors.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, arn TEXT NOT NULL, creation_time REAL NOT NULL,
    sse_type TEXT NOT NULL, kms_key_arn TEXT, default_index_mode TEXT NOT NULL, policy TEXT
);
CREATE TABLE IF NOT EXISTS indexes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, bucket_name TEXT NOT NULL, name TEXT NOT NULL,
    arn TEXT NOT NULL, creation_time REAL NOT NULL, data_type TEXT NOT NULL,
    dimension INTEGER NOT NULL, distance_metric TEXT NOT NULL, non_filterable_keys TEXT NOT NULL,
    sse_type TEXT NOT NULL, kms_key_arn TEXT, index_mode TEXT NOT NULL,
    text_search TEXT NOT NULL DEFAULT '[]',
    UNIQUE (bucket_name, name)
);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY AUTOINCREMENT, index_id INTEGER NOT NULL, key TEXT NOT NULL,
    segment_hash INTEGER NOT NULL, data BLOB NOT NULL, metadata TEXT NOT NULL,
    UNIQUE (index_id, key)
);
CREATE INDEX IF NOT EXISTS vectors_in_put_order ON vectors (index_id, id);
CREATE TABLE IF NOT EXISTS tags (
    arn TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (arn, key)
);
"""


@dataclasses.dataclass(frozen=True)
class Encryption:
    """Server-side encryption of a bucket or index: ``AES256`` (SSE-S3) or ``aws:kms`` + key."""

    sse_type: str = "AES256"
    kms_key_arn: str | None = None

    def to_document(self) -> dict[str, str]:
        """The ``encryptionConfiguration`` member as the service returns it."""
        document = {"sseType": self.sse_type}
        if self.kms_key_arn is not None:
            document["kmsKeyArn"] = self.kms_key_arn
        return document


@dataclasses.dataclass(frozen=True)
class TextSearchConfig:
    """One full-text searchable metadata key of an index: ``language`` is None for the standard
    analyzer; ``status`` is ``ACTIVE`` or ``BUILDING``, and a BUILDING configuration turns ACTIVE
    once ``reads_left`` more reads of the index have reported it (see ``text_rules``)."""

    metadata_key: str
    language: str | None
    status: str
    reads_left: int = 0

    def to_document(self) -> dict[str, str]:
        """The configuration as GetIndex returns it (``language`` only when one was set)."""
        document = {"metadataKey": self.metadata_key, "status": self.status}
        if self.language is not None:
            document["language"] = self.language
        return document

    def to_json(self) -> dict[str, Any]:
        """What the store keeps: the GetIndex document plus the reads left before ACTIVE."""
        return {**self.to_document(), "readsLeft": self.reads_left}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> TextSearchConfig:
        """The configuration ``to_json`` wrote."""
        return cls(
            document["metadataKey"],
            document.get("language"),
            document["status"],
            document.get("readsLeft", 0),
        )


@dataclasses.dataclass(frozen=True)
class BucketRecord:
    """One vector bucket; ``creation_time`` is epoch seconds."""

    name: str
    arn: str
    creation_time: float
    encryption: Encryption
    default_index_mode: str

    def to_summary(self) -> dict[str, Any]:
        """The bucket as one entry of ListVectorBuckets."""
        return {
            "vectorBucketName": self.name,
            "vectorBucketArn": self.arn,
            "creationTime": self.creation_time,
        }

    def to_document(self) -> dict[str, Any]:
        """The ``vectorBucket`` member of GetVectorBucket."""
        return {
            **self.to_summary(),
            "encryptionConfiguration": self.encryption.to_document(),
            "defaultIndexMode": self.default_index_mode,
        }


@dataclasses.dataclass(frozen=True)
class IndexRecord:
    """One vector index; ``id`` is the store's own number, new for each CreateIndex."""

    id: int
    bucket_name: str
    name: str
    arn: str
    creation_time: float
    data_type: str
    dimension: int
    distance_metric: str
    non_filterable_keys: tuple[str, ...]
    encryption: Encryption
    index_mode: str
    text_search: tuple[TextSearchConfig, ...] = ()

    def to_summary(self) -> dict[str, Any]:
        """The index as one entry of ListIndexes."""
        return {
            "vectorBucketName": self.bucket_name,
            "indexName": self.name,
            "indexArn": self.arn,
            "creationTime": self.creation_time,
        }

    def to_document(self) -> dict[str, Any]:
        """The ``index`` member of GetIndex; ``metadataConfiguration`` only when the index has
        non-filterable keys or text search configurations, each member only when non-empty."""
        document = {
            **self.to_summary(),
            "dataType": self.data_type,
            "dimension": self.dimension,
            "distanceMetric": self.distance_metric,
            "encryptionConfiguration": self.encryption.to_document(),
            "indexMode": self.index_mode,
        }
        configuration: dict[str, Any] = {}
        if self.non_filterable_keys:
            configuration["nonFilterableMetadataKeys"] = list(self.non_filterable_keys)
        if self.text_search:
            configuration["textSearchConfigurations"] = [
                config.to_document() for config in self.text_search
            ]
        if configuration:
            document["metadataConfiguration"] = configuration
        return document


@dataclasses.dataclass(frozen=True, eq=False)
class VectorRecord:
    """One stored vector: ``data`` is a 1-D float32 array, ``metadata`` the JSON object put."""

    key: str
    data: np.ndarray
    metadata: Mapping[str, Any]

    def to_document(self, with_data: bool, with_metadata: bool) -> dict[str, Any]:
        """The vector as GetVectors and ListVectors return it: its key, plus its data and
        metadata when asked for."""
        document: dict[str, Any] = {"key": self.key}
        if with_data:
            document["data"] = {"float32": self.data.tolist()}
        if with_metadata:
            document["metadata"] = dict(self.metadata)
        return document


def segment_hash(key: str) -> int:
    """A stable 32-bit hash of a vector key; ``segment_hash(key) % segmentCount`` is the
    ListVectors segment the key belongs to, so every segmentation partitions the keys."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big")


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class VectorStore:
    """sqlite-backed storage of every S3 Vectors resource; ``state_dir=None`` keeps it in memory."""

    def __init__(self, state_dir: Path | None) -> None:
        if state_dir is None:
            database = ":memory:"
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            database = str(state_dir / DATABASE_FILE_NAME)
        self._db = sqlite3.connect(database, check_same_thread=False)
        if state_dir is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(indexes)")}
        if "text_search" not in columns:
            with self._db:
                self._db.execute(
                    "ALTER TABLE indexes ADD COLUMN text_search TEXT NOT NULL DEFAULT '[]'"
                )

    def close(self) -> None:
        """Release the database; the store cannot be used afterwards."""
        self._db.close()

    # Buckets and policies

    def insert_bucket(self, bucket: BucketRecord, tags: Mapping[str, str]) -> None:
        """Create ``bucket`` with ``tags``."""
        with self._db:
            self._db.execute(
                "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (
                    bucket.name,
                    bucket.arn,
                    bucket.creation_time,
                    bucket.encryption.sse_type,
                    bucket.encryption.kms_key_arn,
                    bucket.default_index_mode,
                ),
            )
            self._write_tags(bucket.arn, tags)

    def bucket(self, name: str) -> BucketRecord | None:
        """The bucket called ``name``, or None."""
        row = self._db.execute(
            "SELECT name, arn, creation_time, sse_type, kms_key_arn, default_index_mode"
            " FROM buckets WHERE name = ?",
            (name,),
        ).fetchone()
        return None if row is None else _bucket_from_row(row)

    def buckets(self, prefix: str, after: str, limit: int) -> list[BucketRecord]:
        """Up to ``limit`` buckets whose names start with ``prefix`` and sort after ``after``,
        in name order."""
        rows = self._db.execute(
            "SELECT name, arn, creation_time, sse_type, kms_key_arn, default_index_mode"
            " FROM buckets WHERE name > ? AND substr(name, 1, ?) = ? ORDER BY name LIMIT ?",
            (after, len(prefix), prefix, limit),
        ).fetchall()
        return [_bucket_from_row(row) for row in rows]

    def bucket_count(self) -> int:
        """How many buckets exist."""
        return int(self._db.execute("SELECT count(*) FROM buckets").fetchone()[0])

    def delete_bucket(self, bucket: BucketRecord) -> None:
        """Remove an (empty) bucket, its policy and its tags."""
        with self._db:
            self._db.execute("DELETE FROM buckets WHERE name = ?", (bucket.name,))
            self._db.execute("DELETE FROM tags WHERE arn = ?", (bucket.arn,))

    def set_default_index_mode(self, bucket: BucketRecord, mode: str) -> None:
        """Set the mode given to indexes created in ``bucket`` from now on."""
        with self._db:
            self._db.execute(
                "UPDATE buckets SET default_index_mode = ? WHERE name = ?", (mode, bucket.name)
            )

    def policy(self, bucket: BucketRecord) -> str | None:
        """The bucket policy JSON string, or None when there is none."""
        row = self._db.execute("SELECT policy FROM buckets WHERE name = ?", (bucket.name,))
        found = row.fetchone()
        return None if found is None else found[0]

    def set_policy(self, bucket: BucketRecord, policy: str | None) -> None:
        """Replace (or with None remove) the bucket policy."""
        with self._db:
            self._db.execute("UPDATE buckets SET policy = ? WHERE name = ?", (policy, bucket.name))

    # Indexes

    def insert_index(self, index: IndexRecord, tags: Mapping[str, str]) -> IndexRecord:
        """Create ``index`` (its ``id`` is ignored) with ``tags``; returns it with its new id."""
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO indexes (bucket_name, name, arn, creation_time, data_type, dimension,"
                " distance_metric, non_filterable_keys, sse_type, kms_key_arn, index_mode,"
                " text_search) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    index.bucket_name,
                    index.name,
                    index.arn,
                    index.creation_time,
                    index.data_type,
                    index.dimension,
                    index.distance_metric,
                    json.dumps(list(index.non_filterable_keys)),
                    index.encryption.sse_type,
                    index.encryption.kms_key_arn,
                    index.index_mode,
                    _text_search_json(index.text_search),
                ),
            )
            self._write_tags(index.arn, tags)
        new_id = cursor.lastrowid
        assert new_id is not None
        return dataclasses.replace(index, id=new_id)

    def index(self, bucket_name: str, name: str) -> IndexRecord | None:
        """The index ``name`` in bucket ``bucket_name``, or None."""
        row = self._db.execute(
            f"SELECT {_INDEX_COLUMNS} FROM indexes WHERE bucket_name = ? AND name = ?",
            (bucket_name, name),
        ).fetchone()
        return None if row is None else _index_from_row(row)

    def indexes(self, bucket_name: str, prefix: str, after: str, limit: int) -> list[IndexRecord]:
        """Up to ``limit`` indexes of a bucket whose names start with ``prefix`` and sort after
        ``after``, in name order."""
        rows = self._db.execute(
            f"SELECT {_INDEX_COLUMNS} FROM indexes WHERE bucket_name = ? AND name > ?"
            " AND substr(name, 1, ?) = ? ORDER BY name LIMIT ?",
            (bucket_name, after, len(prefix), prefix, limit),
        ).fetchall()
        return [_index_from_row(row) for row in rows]

    def index_count(self, bucket_name: str) -> int:
        """How many indexes a bucket holds."""
        query = "SELECT count(*) FROM indexes WHERE bucket_name = ?"
        return int(self._db.execute(query, (bucket_name,)).fetchone()[0])

    def delete_index(self, index: IndexRecord) -> None:
        """Remove an index with its vectors and tags."""
        with self._db:
            self._db.execute("DELETE FROM vectors WHERE index_id = ?", (index.id,))
            self._db.execute("DELETE FROM indexes WHERE id = ?", (index.id,))
            self._db.execute("DELETE FROM tags WHERE arn = ?", (index.arn,))

    def set_index_mode(self, index: IndexRecord, mode: str) -> None:
        """Change the mode of an existing index."""
        with self._db:
            self._db.execute("UPDATE indexes SET index_mode = ? WHERE id = ?", (mode, index.id))

    def set_text_search(self, index: IndexRecord, configs: Sequence[TextSearchConfig]) -> None:
        """Replace the text search configurations of an existing index."""
        with self._db:
            self._db.execute(
                "UPDATE indexes SET text_search = ? WHERE id = ?",
                (_text_search_json(configs), index.id),
            )

    # Tags

    def tags(self, arn: str) -> dict[str, str]:
        """The tags of the resource ``arn``."""
        rows = self._db.execute("SELECT key, value FROM tags WHERE arn = ? ORDER BY key", (arn,))
        return dict(rows.fetchall())

    def add_tags(self, arn: str, tags: Mapping[str, str]) -> None:
        """Add ``tags`` to a resource, replacing the values of keys it already has."""
        with self._db:
            self._write_tags(arn, tags)

    def remove_tags(self, arn: str, keys: Iterable[str]) -> None:
        """Remove the tags with ``keys`` from a resource; absent keys are ignored."""
        with self._db:
            self._db.executemany(
                "DELETE FROM tags WHERE arn = ? AND key = ?", [(arn, key) for key in keys]
            )

    def _write_tags(self, arn: str, tags: Mapping[str, str]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?)",
            [(arn, key, value) for key, value in tags.items()],
        )

    # Vectors

    def load_vectors(self, index: IndexRecord) -> list[VectorRecord]:
        """Every vector of ``index``, in put order."""
        rows = self._db.execute(
            "SELECT key, data, metadata FROM vectors WHERE index_id = ? ORDER BY id", (index.id,)
        )
        return [_vector_from_row(row) for row in rows]

    def put_vectors(self, index: IndexRecord, records: Sequence[VectorRecord]) -> None:
        """Store ``records`` in ``index``; a key already present is overwritten in full but keeps
        its place in ListVectors order."""
        with self._db:
            self._db.executemany(
                "INSERT INTO vectors (index_id, key, segment_hash, data, metadata)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (index_id, key)"
                " DO UPDATE SET data = excluded.data, metadata = excluded.metadata",
                [
                    (
                        index.id,
                        record.key,
                        segment_hash(record.key),
                        record.data.astype(np.float32).tobytes(),
                        _compact_json(record.metadata),
                    )
                    for record in records
                ],
            )

    def delete_vectors(self, index: IndexRecord, keys: Sequence[str]) -> None:
        """Remove the vectors stored under ``keys``; absent keys are ignored."""
        with self._db:
            self._db.executemany(
                "DELETE FROM vectors WHERE index_id = ? AND key = ?",
                [(index.id, key) for key in keys],
            )

    def list_vectors(
        self, index: IndexRecord, after_id: int, segment: tuple[int, int] | None, limit: int
    ) -> tuple[list[VectorRecord], int | None]:
        """Up to ``limit`` vectors of ``index`` put after position ``after_id`` (in put order),
        restricted to ``segment`` = (segmentCount, segmentIndex) when given. Returns the vectors
        and the position to continue after, or None when nothing is left."""
        sql = "SELECT id, key, data, metadata FROM vectors WHERE index_id = ? AND id > ?"
        parameters: list[Any] = [index.id, after_id]
        if segment is not None:
            sql += " AND segment_hash % ? = ?"
            parameters.extend(segment)
        sql += " ORDER BY id LIMIT ?"
        parameters.append(limit + 1)
        rows = self._db.execute(sql, parameters).fetchall()
        page = rows[:limit]
        records = [_vector_from_row(row[1:]) for row in page]
        continue_after = page[-1][0] if len(rows) > limit else None
        return records, continue_after


_INDEX_COLUMNS = (
    "id, bucket_name, name, arn, creation_time, data_type, dimension, distance_metric,"
    " non_filterable_keys, sse_type, kms_key_arn, index_mode, text_search"
)


def _text_search_json(configs: Sequence[TextSearchConfig]) -> str:
    return _compact_json([config.to_json() for config in configs])


def _bucket_from_row(row: Sequence[Any]) -> BucketRecord:
    name, arn, creation_time, sse_type, kms_key_arn, default_index_mode = row
    return BucketRecord(
        name, arn, creation_time, Encryption(sse_type, kms_key_arn), default_index_mode
    )


def _index_from_row(row: Sequence[Any]) -> IndexRecord:
    non_filterable_keys = tuple(json.loads(row[8]))
    text_search = tuple(TextSearchConfig.from_json(config) for config in json.loads(row[12]))
    return IndexRecord(
        *row[:8], non_filterable_keys, Encryption(row[9], row[10]), row[11], text_search
    )


def _vector_from_row(row: Sequence[Any]) -> VectorRecord:
    key, data, metadata = row
    return VectorRecord(key, np.frombuffer(data, dtype=np.float32).copy(), json.loads(metadata))
