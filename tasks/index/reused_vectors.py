"""The checkpoint rows of a run's reused units: the vectors its plan chose to take instead of
embedding again (:mod:`tasks.plan.reuse`), copied from the checkpoints that hold them under the
reusing unit's own key and metadata. Written once, before the run's vectors are loaded, so the
load and the commit see them as the run's own.

Vectors are copied column to column in Arrow, a source batch at a time, never as Python
numbers; the reused units are taken :data:`REUSE_CHUNK` at a time, each chunk with one pass
over the checkpoints of each run it takes vectors from, so what is held is a chunk's keys and a
batch's vectors however many units reuse one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import schemas
from tasks.records import Failure, Unit, metadata_json
from tasks.store import CheckpointStore
from tasks.tables import failures_table, units_from_table, vector_metadata

log = logging.getLogger(__name__)

SOURCE_MISSING = "reuse_source_missing"

REUSE_CHUNK = 200_000
"""Reused units handled at a time: their keys are held (~100 bytes each), and each chunk reads
the checkpoints of the runs it takes vectors from once."""

_SOURCE_COLUMNS = ["key", "embedding_type", "embedding", "config_hash"]
_SOURCE_BATCH_ROWS = 2_048
"""Checkpoint rows read at a time from a source: ~8 MB of 1,024-d vectors. Measured on 200,000
reused units: 4,096 rows peaked at 477 MB, 2,048 at 393 MB, 1,024 at 325 MB but +18% CPU."""


def written_reused_vectors(
    store: CheckpointStore, run_id: str, dimension: int, config_hash: str
) -> int:
    """Write run ``run_id``'s reused vectors as its checkpoint rows (once); returns how many
    units took a vector. A unit whose source is gone (its checkpoints deleted, or the copy it
    waited for in this run failed) is recorded as a failure the next run retries."""
    reused_path = store.reused_units_path(run_id)
    if not store.exists(reused_path) or store.exists(store.reused_embeddings_path(run_id)):
        return 0
    if pq.ParquetFile(reused_path, filesystem=store.filesystem).metadata.num_rows == 0:
        return 0
    taken = missing = 0
    planned = _planned_units(store, run_id)
    with ExitStack() as files:
        # Entered first, so closed last: the failures (if any) appear before the vectors, whose
        # file says the copy is done.
        vectors = files.enter_context(
            store.table_writer(
                store.reused_embeddings_path(run_id), schemas.embeddings_schema(dimension)
            )
        )
        failures: pq.ParquetWriter | None = None
        for chunk in store.batches(reused_path, batch_size=REUSE_CHUNK):
            pairs = pa.Table.from_batches([chunk]).cast(schemas.REUSED_UNITS)
            units = planned.take(pairs["key"])
            found: list[pa.Array] = []
            for source_run in pc.unique(pairs["source_run"]).to_pylist():
                wanted = pairs.filter(pc.equal(pairs["source_run"], source_run))
                for rows in _copied_rows(store, source_run, wanted, units, config_hash):
                    vectors.write_table(rows.select(vectors.schema.names).cast(vectors.schema))
                    found.append(rows["reusing_unit"].combine_chunks())
            taken_keys = pc.unique(pa.chunked_array(found, pa.string()))
            lost = pairs.filter(pc.invert(pc.is_in(pairs["key"], value_set=taken_keys)))
            taken += pairs.num_rows - lost.num_rows
            if lost.num_rows:
                if failures is None:
                    failures = files.enter_context(
                        store.table_writer(store.reused_failures_path(run_id), schemas.FAILURES)
                    )
                failures.write_table(_missing(lost, units))
                missing += lost.num_rows
    if missing:
        log.warning("%d reused units had no vector to take", missing)
    return taken


class _PlannedUnits:
    """The run's planned sync units, read in order alongside the reused ones, which are a
    subsequence of them (:func:`tasks.plan.reuse.reuse_decision` filters them in order)."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self._rest = schemas.UNITS.empty_table()

    def take(self, keys: pa.ChunkedArray) -> pa.Table:
        """The units of ``keys`` (in the plan's order), reading on as far as the last of them:
        what is held is those units and the rest of one batch."""
        wanted = keys.combine_chunks()
        last = wanted[len(wanted) - 1]
        taken: list[pa.Table] = []
        while True:
            if self._rest.num_rows == 0:
                batch = next(self._batches, None)
                if batch is None:
                    raise ValueError(f"reused unit {last} is not among the run's planned units")
                self._rest = pa.Table.from_batches([batch])
            at = pc.index(self._rest["key"], last).as_py()
            head = self._rest if at < 0 else self._rest.slice(0, at + 1)
            self._rest = self._rest.slice(head.num_rows)
            taken.append(head.filter(pc.is_in(head["key"], value_set=wanted)))
            if at >= 0:
                return pa.concat_tables(taken)


def _planned_units(store: CheckpointStore, run_id: str) -> _PlannedUnits:
    path = store.sync_units_path(run_id)
    return _PlannedUnits(store.batches(path, schemas.UNITS.names))


def _copied_rows(
    store: CheckpointStore, source_run: str, pairs: pa.Table, units: pa.Table, config_hash: str
) -> Iterator[pa.Table]:
    """The checkpoint rows of the reusing units of ``pairs`` (all of ``source_run``), a source
    batch at a time: each source vector under the reusing unit's key (with the source's
    ``#audio``/``#video`` suffix) and metadata, and ``reusing_unit``, the reusing unit's key."""
    wanted = pairs["source_key"].combine_chunks()
    for batch in _own_checkpoints(store, source_run, _SOURCE_COLUMNS, _SOURCE_BATCH_ROWS):
        unit_keys = _unit_keys(batch.column("key"), batch.column("embedding_type"))
        keep = pc.and_(
            pc.is_in(unit_keys, value_set=wanted),
            pc.equal(batch.column("config_hash"), config_hash),
        )
        if not pc.any(keep).as_py():
            continue
        sources = pa.Table.from_batches([batch.filter(keep)])
        # Joined on keys and row numbers only: Arrow's hash join takes no list columns.
        rows = pa.table(
            {
                "source_key": unit_keys.filter(keep),
                "row": pa.array(range(sources.num_rows), pa.int64()),
            }
        )
        matched = pairs.select(["key", "source_key"]).join(rows, "source_key", join_type="inner")
        taken = sources.take(matched["row"])
        yield _rows(matched["key"], matched["source_key"], taken, units)


def _own_checkpoints(
    store: CheckpointStore, run_id: str, columns: list[str], batch_size: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of the checkpoint rows run ``run_id`` embedded itself (not the vectors
    it took from other runs), a batch of ``batch_size`` rows at a time."""
    for path in store.list_files(store.embeddings_dir(run_id)):
        if path != store.reused_embeddings_path(run_id):
            yield from store.batches(path, columns, batch_size)


def _rows(
    reusing: pa.ChunkedArray, source_keys: pa.ChunkedArray, sources: pa.Table, units: pa.Table
) -> pa.Table:
    """Checkpoint rows of the reusing units (keys ``reusing``) from their sources' rows
    (``sources``: ``key``, ``embedding_type``, ``embedding``, ``config_hash``, of the units
    ``source_keys``), with ``reusing_unit``, the reusing unit's key."""
    separate = pc.not_equal(sources["key"], source_keys)
    suffixed = pc.binary_join_element_wise(reusing, pc.utf8_lower(sources["embedding_type"]), "#")
    by_key = _units_by_key(units, reusing)
    owners = [by_key[key] for key in reusing.to_pylist()]
    return pa.table(
        {
            "key": pc.if_else(separate, suffixed, reusing),
            "item_id": pa.array([unit.item_id for unit in owners], pa.string()),
            "embedding_type": sources["embedding_type"],
            "embedding": sources["embedding"],
            "metadata_json": pa.array(
                [
                    metadata_json(vector_metadata(unit, embedding_type))
                    for unit, embedding_type in zip(
                        owners, sources["embedding_type"].to_pylist(), strict=True
                    )
                ],
                pa.string(),
            ),
            "config_hash": sources["config_hash"],
            "reusing_unit": reusing,
        }
    )


def _unit_keys(keys: pa.Array, embedding_types: pa.Array) -> pa.Array:
    """The unit each checkpoint row belongs to: its key without the ``#<embedding type>``
    suffix (``#audio``, ``#video``) of a unit embedded as separate vectors."""
    units = keys
    for embedding_type in pc.unique(embedding_types).to_pylist():
        suffix = f"#{embedding_type.lower()}"
        suffixed = pc.and_(pc.equal(embedding_types, embedding_type), pc.ends_with(keys, suffix))
        units = pc.if_else(suffixed, pc.utf8_slice_codeunits(keys, 0, -len(suffix)), units)
    return units


def _units_by_key(units: pa.Table, keys: pa.ChunkedArray) -> dict[str, Unit]:
    """The units of ``units`` whose key is among ``keys``, by key: Python objects for those
    only (a source batch's, or a chunk's lost ones), not for the whole chunk."""
    wanted = units.filter(pc.is_in(units["key"], value_set=pc.unique(keys)))
    return {unit.key: unit for unit in units_from_table(wanted)}


def _missing(lost: pa.Table, units: pa.Table) -> pa.Table:
    """Failures of the reusing units in ``lost`` whose source vector was not found."""
    by_key = _units_by_key(units, lost["key"])
    return failures_table(
        Failure(
            by_key[key].item_id,
            by_key[key].uri,
            "embed",
            SOURCE_MISSING,
            f"the vector of {source_key} (run {source_run}) this unit would reuse is "
            "not in the checkpoints; the next run embeds it",
            unit_key=key,
        )
        for key, source_run, source_key in zip(
            lost["key"].to_pylist(),
            lost["source_run"].to_pylist(),
            lost["source_key"].to_pylist(),
            strict=True,
        )
    )


def recorded_digests(store: CheckpointStore, run_id: str, config_hash: str) -> int:
    """Record the input digest of every unit run ``run_id`` embedded itself (not those it
    reused), so later runs reuse its vectors; returns how many."""
    path = store.sync_units_path(run_id)
    if not store.exists(path):
        return 0
    embedded = [
        _unit_keys(batch.column("key"), batch.column("embedding_type"))
        for batch in _own_checkpoints(store, run_id, ["key", "embedding_type"])
    ]
    wanted = pa.schema([schemas.SYNC_UNITS.field(name) for name in ("digest", "key")])
    planned = store.read_table(path, wanted)
    mine = planned.filter(
        pc.is_in(planned["key"], value_set=pc.unique(pa.chunked_array(embedded, pa.string())))
    )
    table = mine.append_column("run_id", pa.array([run_id] * mine.num_rows, pa.string()))
    store.write_table(
        f"{store.digests_dir(config_hash)}/run={run_id}.parquet",
        table.cast(schemas.DIGESTS).sort_by("digest"),
    )
    return table.num_rows
