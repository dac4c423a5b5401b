"""Arrow tables of the shared records, and the record a vector carries into the index.

Used by several stages (the plan writes units and failures, the embed and jobs stages read units
and write failures and vector metadata), so they live with the shared contracts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import schemas
from tasks.records import Failure, Unit, metadata_json
from tasks.store import CheckpointStore


def units_table(units: Iterable[Unit]) -> pa.Table:
    """Units as a table in the ``schemas.UNITS`` layout."""
    names = schemas.UNITS.names
    rows = [{name: getattr(unit, name) for name in names} for unit in units]
    return pa.Table.from_pylist(rows, schema=schemas.UNITS)


GROUP_ROWS = 16_384
"""Rows of one row group of a :class:`GroupedWriter`'s file (the last one holds the rest): the
plan, its sync units, a run's gathered failures."""


class GroupedWriter:
    """A Parquet writer fed tables of any size that writes row groups of :data:`GROUP_ROWS`."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self._writer = writer
        self._waiting: list[pa.Table] = []
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        """Add ``table``'s rows; written once a row group's worth waits."""
        if table.num_rows == 0:
            return
        self._waiting.append(table)
        self._rows += table.num_rows
        if self._rows >= GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the rows waiting, as one row group."""
        if self._waiting:
            waiting = pa.concat_tables(self._waiting)
            self._writer.write_table(waiting, row_group_size=waiting.num_rows)
        self._waiting, self._rows = [], 0


_Record = TypeVar("_Record")


class StreamedRecords(Generic[_Record]):
    """Records written to an open Parquet file as they come, ``batch_rows`` at a time, so that
    however many there are (a corpus's failures, a plan's async units), at most ``batch_rows``
    are held; ``count`` says how many were added. :meth:`flush` before the file closes."""

    def __init__(
        self,
        writer: pq.ParquetWriter,
        to_table: Callable[[Iterable[_Record]], pa.Table],
        batch_rows: int = 1000,
    ) -> None:
        self._writer = writer
        self._to_table = to_table
        self._batch_rows = batch_rows
        self._waiting: list[_Record] = []
        self.count = 0

    def add(self, record: _Record) -> None:
        """Add ``record``; the waiting ones are written once ``batch_rows`` wait."""
        self._waiting.append(record)
        self.count += 1
        if len(self._waiting) >= self._batch_rows:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        """Write the records waiting, then ``table`` (rows already in the file's layout)."""
        self.flush()
        self._writer.write_table(table)
        self.count += table.num_rows

    def flush(self) -> None:
        """Write the records waiting."""
        if self._waiting:
            self._writer.write_table(self._to_table(self._waiting))
            self._waiting = []


def units_from_table(table: pa.Table) -> list[Unit]:
    """The inverse of :func:`units_table`."""
    return [Unit(**row) for row in table.to_pylist()]


def failures_table(failures: Iterable[Failure]) -> pa.Table:
    """Failures as a table in the ``schemas.FAILURES`` layout."""
    names = schemas.FAILURES.names
    rows = [{name: getattr(failure, name) for name in names} for failure in failures]
    return pa.Table.from_pylist(rows, schema=schemas.FAILURES)


_MODALITY_OF_KIND = {
    "text_chunk": "text",
    "text": "text",
    "pdf_page": "pdf",
    "image": "image",
    "audio": "audio",
    "video": "video",
}


def vector_metadata(unit: Unit, embedding_type: str) -> dict[str, object]:
    """The metadata a vector carries: the item's own, then where in the item it comes from
    (novaflow's keys win over the user's of the same name, so a search can always say it)."""
    metadata: dict[str, object] = json.loads(unit.metadata_json)
    metadata.update(
        item_id=unit.item_id,
        source_uri=unit.uri,
        modality=_MODALITY_OF_KIND[unit.kind],
        embedding_type=embedding_type,
    )
    if unit.page is not None:
        metadata["page"] = unit.page
    if unit.char_start is not None and unit.char_end is not None:
        metadata["char_start"], metadata["char_end"] = unit.char_start, unit.char_end
    if unit.start_seconds is not None and unit.end_seconds is not None:
        metadata["start_seconds"] = round(unit.start_seconds, 3)
        metadata["end_seconds"] = round(unit.end_seconds, 3)
    return metadata


def async_units(store: CheckpointStore, run_id: str) -> list[Unit]:
    """The run's async units, as its plan wrote them."""
    path = store.async_units_path(run_id)
    if not store.exists(path):
        return []
    return units_from_table(store.read_table(path, schemas.UNITS))


def embedding_rows(
    unit: Unit, vectors: Sequence[tuple[str, np.ndarray]], config_hash: str
) -> list[dict[str, object]]:
    """The checkpoint rows (``schemas.embeddings_schema``) of ``unit``'s ``(embeddingType,
    vector)`` pairs: one row keyed by the unit, or one per type (``<key>#video``…) when the
    model returned several."""
    many = len(vectors) > 1
    return [
        {
            "key": f"{unit.key}#{embedding_type.lower()}" if many else unit.key,
            "item_id": unit.item_id,
            "embedding_type": embedding_type,
            "embedding": vector,
            "metadata_json": metadata_json(vector_metadata(unit, embedding_type)),
            "config_hash": config_hash,
        }
        for embedding_type, vector in vectors
    ]
