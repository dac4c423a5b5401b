"""The data contract: the Parquet schemas of everything novaflow writes to its checkpoint store.

Anyone can read these files with DuckDB, pandas or Polars; novaflow checks them on read.
"""

from __future__ import annotations

import pyarrow as pa

MANIFEST = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("metadata_json", pa.string(), nullable=False),
        pa.field("encoding", pa.string()),
    ]
)
"""``runs/<run_id>/manifest.parquet``: the corpus as resolved at the start of a run."""

UNITS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("route", pa.string(), nullable=False),
        pa.field("page", pa.int32()),
        pa.field("char_start", pa.int64()),
        pa.field("char_end", pa.int64()),
        pa.field("start_seconds", pa.float64()),
        pa.field("end_seconds", pa.float64()),
        pa.field("metadata_json", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("encoding", pa.string()),
    ]
)
"""``runs/<run_id>/shards/shard-<n>.parquet``: the units one embedding task run handles."""

SYNC_UNITS = UNITS.append(pa.field("digest", pa.string(), nullable=False)).append(
    pa.field("cost_usd", pa.float64(), nullable=False)
)
"""``runs/<run_id>/sync_units.parquet``: every sync unit planned, with the digest of its input
and its estimated cost, before reuse is decided."""

REUSED_UNITS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source_run", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
    ]
)
"""``runs/<run_id>/reused_units.parquet``: units that take the vector of ``source_key`` as run
``source_run`` checkpointed it (this run's own, for a copy within it)."""

DIGESTS = pa.schema(
    [
        pa.field("digest", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
"""``digests/config=<hash>/run=<run_id>.parquet``: the input digest of each unit a run embedded."""

PLAN = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("change", pa.string(), nullable=False),  # new | changed | unchanged | removed
        pa.field("reason", pa.string(), nullable=False),
        pa.field("units_to_embed", pa.int64(), nullable=False),
        pa.field("async_units", pa.int64(), nullable=False),
        pa.field("keys_to_delete", pa.list_(pa.string()), nullable=False),
        pa.field("estimated_cost_usd", pa.float64(), nullable=False),
    ]
)
"""``runs/<run_id>/plan.parquet``: per item, what the run will do and why."""


def embeddings_schema(dimension: int) -> pa.Schema:
    """``embeddings/…/part-*.parquet``: a row per vector, ``embedding`` of ``dimension`` floats."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("embedding_type", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dimension), nullable=False),
            pa.field("metadata_json", pa.string(), nullable=False),
            pa.field("config_hash", pa.string(), nullable=False),
        ]
    )


FAILURES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("unit_key", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("attempts", pa.int32(), nullable=False),
    ]
)
"""``failures/<run_id>.parquet`` (and per-shard parts): quarantined items and units."""

STATE = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("keys", pa.list_(pa.string()), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("metadata_json", pa.string(), nullable=False),
        # complete: every unit is in the index; quarantined: some units failed through the
        # input's own fault and are skipped until the item changes.
        pa.field("status", pa.string(), nullable=False),
    ]
)
"""``state/<bucket>/<index>/state.parquet``: what the index holds now, item by item."""

JOBS = pa.schema(
    [
        pa.field("unit_key", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        # submitting | running | collected | failed | quarantined
        pa.field("status", pa.string(), nullable=False),
        pa.field("input_uri", pa.string(), nullable=False),
        pa.field("output_uri", pa.string(), nullable=False),
        pa.field("invocation_arn", pa.string()),
        pa.field("submitted_at", pa.float64()),
        pa.field("ended_at", pa.float64()),
        pa.field("noticed_at", pa.float64()),
        pa.field("status_calls", pa.int32(), nullable=False),
        pa.field("throttled_calls", pa.int32(), nullable=False),
        pa.field("segments_embedded", pa.int32(), nullable=False),
        pa.field("segments_quarantined", pa.int32(), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("sequence", pa.int64(), nullable=False),
    ]
)
"""``jobs/<run_id>.parquet`` (+ ``jobs/<run_id>/log-*.parquet``): the async job ledger, a row per
attempt at a unit's job: token before submission, invocation ARN after, then how it ended."""
