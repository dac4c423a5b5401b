"""Stage 2 of a run: embed one shard of units and checkpoint the result.

A shard is the unit of work of one task run: hundreds of units, rendered (PDF pages, in a
process pool) and embedded (a bounded thread pool, paced) inside it. Its embeddings file is
written last and atomically, so its presence means the shard is done and a restarted run skips
it; its failures and counters are written just before.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, replace
from functools import lru_cache

import pyarrow as pa

from tasks import schemas
from tasks.aws_clients import bedrock_runtime_client
from tasks.embed.embedder import Embedder
from tasks.media.unit_inputs import shard_renderer, unit_payloads
from tasks.outcomes import ShardOutcome
from tasks.pacing import Pacer, RequestPacer
from tasks.records import Failure
from tasks.settings import SHARDS_IN_PARALLEL, NovaflowSettings
from tasks.store import CheckpointStore
from tasks.tables import embedding_rows, failures_table, units_from_table


@lru_cache(maxsize=4)
def process_pacer(requests_per_second: float) -> Pacer:
    """The one pacer of this process for a rate: shards embedded side by side in one process
    share it, so together they stay under the rate instead of each taking all of it."""
    return Pacer(requests_per_second)


# One shard's embeddings file written at a time in this process; see ``_write_embeddings``.
_embeddings_writes = threading.Lock()


def _write_embeddings(store: CheckpointStore, path: str, table: pa.Table) -> None:
    """Write a shard's embeddings file, one at a time in this process, and hand Arrow's unused
    memory back after it.

    Writing 200 1,024-d vectors takes a few MB for a moment (~25 MB before the store stopped
    trying a dictionary for the vector column, see ``tasks.store.parquet_encoding``), and
    Arrow's allocator keeps it per thread for the next write; shards started together finish
    together, so without the lock their writes coincide and add up in the run's peak. A write
    takes milliseconds: the lock costs nothing."""
    with _embeddings_writes:
        store.write_table(path, table)
        pa.default_memory_pool().release_unused()


def embedded_shard(
    settings: NovaflowSettings, run_id: str, shard: int, pacer: RequestPacer | None = None
) -> ShardOutcome:
    """Embed the units of ``shard`` of ``run_id`` (or skip it if a previous attempt finished).

    Every model call is paced by ``pacer``, by default this process's ``process_pacer`` at
    ``throughput.requests_per_second``; runs that share a budget pass a ``SharedPacer``."""
    store = CheckpointStore(settings.store)
    done_path = store.embeddings_path(run_id, shard)
    outcome_path = store.shard_outcome_path(run_id, shard)
    if store.exists(done_path) and store.exists(outcome_path):
        document = json.loads(store.read_text(outcome_path))
        return ShardOutcome(**{**document, "skipped": True})
    units = units_from_table(store.read_table(store.shard_units_path(run_id, shard), schemas.UNITS))
    by_key = {unit.key: unit for unit in units}
    throughput = settings.throughput
    embedder = Embedder(
        # One client for the process: its pool serves every shard embedded side by side.
        bedrock_runtime_client(throughput.concurrency * SHARDS_IN_PARALLEL),
        settings.embedding,
        throughput,
        pacer if pacer is not None else process_pacer(throughput.requests_per_second),
    )
    rows: list[dict[str, object]] = []
    failures: list[Failure] = []
    config_hash = settings.embedding.config_hash()
    with shard_renderer(units, throughput.render_processes, settings.embedding) as renderer:
        for result in embedder.embed(unit_payloads(units, settings, renderer)):
            if isinstance(result, Failure):
                unit = by_key.get(result.unit_key or "")
                failures.append(replace(result, uri=result.uri or (unit.uri if unit else "")))
            else:
                rows.extend(embedding_rows(by_key[result.key], result.vectors, config_hash))
    counters = embedder.counters
    outcome = ShardOutcome(
        shard=shard,
        units=len(units),
        embedded=len(units) - len(failures),
        quarantined=len(failures),
        model_calls=counters.model_calls,
        retries=counters.retries,
        throttles=counters.throttles,
    )
    store.write_table(store.shard_failures_path(run_id, shard), failures_table(failures))
    store.write_text(outcome_path, json.dumps(asdict(outcome)))
    schema = schemas.embeddings_schema(settings.embedding.dimension)
    _write_embeddings(store, done_path, pa.Table.from_pylist(rows, schema=schema))
    return outcome


def quarantined_shard(
    settings: NovaflowSettings, run_id: str, shard: int, message: str
) -> ShardOutcome:
    """Record every unit of a shard whose task failed for good as quarantined (``shard_failed``,
    a transient code: the next run plans those items again), so nothing is lost silently."""
    store = CheckpointStore(settings.store)
    units = units_from_table(store.read_table(store.shard_units_path(run_id, shard), schemas.UNITS))
    failures = [
        Failure(unit.item_id, unit.uri, "embed", "shard_failed", message, unit_key=unit.key)
        for unit in units
    ]
    store.write_table(store.shard_failures_path(run_id, shard), failures_table(failures))
    return ShardOutcome(shard, len(units), 0, len(units), 0, 0, 0)
