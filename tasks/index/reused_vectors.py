"""The checkpoint rows of a run's reused units: the vectors its plan chose to take instead of
embedding again (:mod:`tasks.plan.reuse`), copied from the checkpoints that hold them under the
reusing unit's own key and metadata. Written once, before the run's vectors are loaded, so the
load and the commit see them as the run's own.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from tasks import schemas
from tasks.records import Failure, metadata_json
from tasks.store import CheckpointStore
from tasks.tables import failures_table, units_from_table, vector_metadata

log = logging.getLogger(__name__)

SOURCE_MISSING = "reuse_source_missing"


def _source_rows(
    store: CheckpointStore, run_id: str, keys: set[str], config_hash: str
) -> dict[str, list[tuple[str, str, list[float]]]]:
    """The checkpoint rows of ``keys`` in run ``run_id``: per unit key, (key suffix, embedding
    type, vector) — a suffix for a unit embedded as separate audio and video vectors."""
    found: dict[str, list[tuple[str, str, list[float]]]] = {}
    columns = ["key", "embedding_type", "embedding", "config_hash"]
    wanted_keys = pa.array(sorted(keys), pa.string())
    for path in store.list_files(store.embeddings_dir(run_id)):
        if path == store.reused_embeddings_path(run_id):
            continue
        for batch in store.batches(path, columns):
            unit_keys = [
                _unit_key(key, embedding_type)
                for key, embedding_type in zip(
                    batch.column("key").to_pylist(),
                    batch.column("embedding_type").to_pylist(),
                    strict=True,
                )
            ]
            # Only the wanted rows' vectors become Python lists.
            wanted = pc.and_(
                pc.is_in(pa.array(unit_keys, pa.string()), value_set=wanted_keys),
                pc.equal(batch.column("config_hash"), config_hash),
            )
            kept_keys = [
                key for key, keep in zip(unit_keys, wanted.to_pylist(), strict=True) if keep
            ]
            for unit_key, row in zip(kept_keys, batch.filter(wanted).to_pylist(), strict=True):
                found.setdefault(unit_key, []).append(
                    (row["key"][len(unit_key) :], row["embedding_type"], row["embedding"])
                )
    return found


def _unit_key(key: str, embedding_type: str) -> str:
    """The unit a checkpoint row belongs to: its key without the ``#audio``/``#video`` suffix
    of a unit embedded as separate vectors."""
    return key.removesuffix(f"#{embedding_type.lower()}")


def written_reused_vectors(
    store: CheckpointStore, run_id: str, dimension: int, config_hash: str
) -> int:
    """Write run ``run_id``'s reused vectors as its checkpoint rows (once); returns how many
    units took a vector. A unit whose source is gone (its checkpoints deleted, or the copy it
    waited for in this run failed) is recorded as a failure the next run retries."""
    reused_path = store.reused_units_path(run_id)
    if not store.exists(reused_path) or store.exists(store.reused_embeddings_path(run_id)):
        return 0
    reused = store.read_table(reused_path, schemas.REUSED_UNITS)
    if reused.num_rows == 0:
        return 0
    planned = store.read_table(store.sync_units_path(run_id), schemas.SYNC_UNITS)
    planned = planned.filter(pc.is_in(planned["key"], value_set=reused["key"]))
    units = {unit.key: unit for unit in units_from_table(planned.select(schemas.UNITS.names))}
    by_source: dict[str, list[tuple[str, str]]] = {}
    for row in reused.to_pylist():
        by_source.setdefault(row["source_run"], []).append((row["key"], row["source_key"]))
    rows: list[dict[str, object]] = []
    failures: list[Failure] = []
    for source_run, pairs in by_source.items():
        wanted = {source for _, source in pairs}
        sources = _source_rows(store, source_run, wanted, config_hash)
        for key, source_key in pairs:
            unit = units[key]
            if source_key not in sources:
                failures.append(Failure(unit.item_id, unit.uri, "embed", SOURCE_MISSING,
                    f"the vector of {source_key} (run {source_run}) this unit would reuse is "
                    "not in the checkpoints; the next run embeds it", unit_key=key))  # fmt: skip
                continue
            for suffix, embedding_type, vector in sources[source_key]:
                rows.append({
                    "key": key + suffix, "item_id": unit.item_id,
                    "embedding_type": embedding_type, "embedding": vector,
                    "metadata_json": metadata_json(vector_metadata(unit, embedding_type)),
                    "config_hash": config_hash,
                })  # fmt: skip
    if failures:
        log.warning("%d reused units had no vector to take", len(failures))
        store.write_table(store.reused_failures_path(run_id), failures_table(failures))
    table = pa.Table.from_pylist(rows, schema=schemas.embeddings_schema(dimension))
    store.write_table(store.reused_embeddings_path(run_id), table)
    return reused.num_rows - len(failures)


def recorded_digests(store: CheckpointStore, run_id: str, config_hash: str) -> int:
    """Record the input digest of every unit run ``run_id`` embedded itself (not those it
    reused), so later runs reuse its vectors; returns how many."""
    path = store.sync_units_path(run_id)
    if not store.exists(path):
        return 0
    embedded: set[str] = set()
    for file in store.list_files(store.embeddings_dir(run_id)):
        if file == store.reused_embeddings_path(run_id):
            continue
        for batch in store.batches(file, ["key", "embedding_type"]):
            for key, embedding_type in zip(
                batch.column("key").to_pylist(),
                batch.column("embedding_type").to_pylist(),
                strict=True,
            ):
                embedded.add(_unit_key(key, embedding_type))
    planned = store.read_table(path, schemas.SYNC_UNITS).select(["digest", "key"])
    mine = planned.filter(
        pc.is_in(planned["key"], value_set=pa.array(sorted(embedded), pa.string()))
    )
    table = mine.append_column("run_id", pa.array([run_id] * mine.num_rows, pa.string()))
    store.write_table(
        f"{store.digests_dir(config_hash)}/run={run_id}.parquet",
        table.cast(schemas.DIGESTS).sort_by("digest"),
    )
    return table.num_rows
