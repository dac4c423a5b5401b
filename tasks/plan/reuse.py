"""Pay once per distinct input: which of a run's units take a vector that already exists.

Every synchronous unit has the digest of what it would send the model (:func:`input_digest`).
Under one embedding config an input has one vector, so a unit whose digest an earlier run
embedded takes that run's vector (a renamed or moved file, a copy, an unchanged page of a
changed PDF), and of the units of one run that share a digest only the first is embedded, the
others take its vector once it is. The digests of what each run embedded are kept per config
(:meth:`CheckpointStore.digests_dir`), so a config that changes the vectors never reuses
another's. The lookup reads only the digests of this run's units, with pyarrow's dataset
filter; nothing holds the history in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from tasks import schemas
from tasks.store import CheckpointStore


@dataclass(frozen=True)
class ReuseDecision:
    """The units of a run that take an existing vector (``keys``) and what embedding them
    would have cost (``saved_usd``)."""

    keys: frozenset[str]
    saved_usd: float


def _earlier_vectors(
    store: CheckpointStore, config_hash: str, digests: pa.Array
) -> dict[str, tuple[str, str]]:
    """The newest run and key that embedded each of ``digests`` under ``config_hash``."""
    directory = store.digests_dir(config_hash)
    selector = pafs.FileSelector(directory, allow_not_found=True)
    files = [
        info.path
        for info in store.filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File and info.path.endswith(".parquet")
    ]
    if not files:
        return {}
    dataset = ds.dataset(files, schema=schemas.DIGESTS, filesystem=store.filesystem)
    found = dataset.to_table(filter=pc.field("digest").isin(digests))
    found = found.sort_by([("run_id", "descending")])
    earlier: dict[str, tuple[str, str]] = {}
    for digest, key, run_id in zip(
        found["digest"].to_pylist(), found["key"].to_pylist(), found["run_id"].to_pylist(),
        strict=True,
    ):  # fmt: skip
        earlier.setdefault(digest, (run_id, key))
    return earlier


def reuse_decision(store: CheckpointStore, run_id: str, config_hash: str) -> ReuseDecision:
    """Decide which of run ``run_id``'s planned sync units reuse a vector; write the decision
    (:meth:`CheckpointStore.reused_units_path`) and return it."""
    units = store.read_table(store.sync_units_path(run_id), schemas.SYNC_UNITS).select(
        ["key", "digest", "cost_usd"]
    )
    earlier = _earlier_vectors(store, config_hash, pc.unique(units["digest"]))
    first_in_run: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    saved = 0.0
    for key, digest, cost in zip(
        units["key"].to_pylist(), units["digest"].to_pylist(), units["cost_usd"].to_pylist(),
        strict=True,
    ):  # fmt: skip
        if digest in earlier:
            source_run, source_key = earlier[digest]
        elif digest in first_in_run:
            source_run, source_key = run_id, first_in_run[digest]
        else:
            first_in_run[digest] = key
            continue
        rows.append({"key": key, "source_run": source_run, "source_key": source_key})
        saved += cost
    store.write_table(
        store.reused_units_path(run_id), pa.Table.from_pylist(rows, schema=schemas.REUSED_UNITS)
    )
    return ReuseDecision(frozenset(row["key"] for row in rows), saved)
