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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from tasks import schemas
from tasks.plan.claims import first_claims
from tasks.store import CheckpointStore


@dataclass(frozen=True)
class ReuseDecision:
    """The units of a run that take an existing vector (``keys``, an Arrow array: a run may
    reuse millions) and what embedding them would have cost (``saved_usd``)."""

    keys: pa.Array
    saved_usd: float


def _earlier_vectors(store: CheckpointStore, config_hash: str, digests: pa.Array) -> pa.Table:
    """The newest run (``run_id``) and key (``key``) that embedded each of ``digests`` found
    under ``config_hash``, one row per ``digest``."""
    directory = store.digests_dir(config_hash)
    selector = pafs.FileSelector(directory, allow_not_found=True)
    files = [
        info.path
        for info in store.filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File and info.path.endswith(".parquet")
    ]
    if not files:
        return schemas.DIGESTS.empty_table().select(["digest", "run_id", "key"])
    dataset = ds.dataset(files, schema=schemas.DIGESTS, filesystem=store.filesystem)
    found = dataset.to_table(filter=pc.field("digest").isin(digests))
    newest_first = found.sort_by([("run_id", "descending")])
    # Unthreaded, "first" is the first row of each digest in that order: the newest run's.
    newest = newest_first.group_by("digest", use_threads=False).aggregate(
        [("run_id", "first"), ("key", "first")]
    )
    return newest.rename_columns(["digest", "run_id", "key"])


def reuse_decision(store: CheckpointStore, run_id: str, config_hash: str) -> ReuseDecision:
    """Decide which of run ``run_id``'s planned sync units reuse a vector; write the decision
    (:meth:`CheckpointStore.reused_units_path`) and return it.

    A unit reuses the newest earlier run's vector of its digest, else (a copy within the run)
    the vector of the run's first unit with that digest. Decided column by column in Arrow:
    no Python object per unit."""
    wanted = pa.schema([schemas.SYNC_UNITS.field(name) for name in ("key", "digest", "cost_usd")])
    units = store.read_table(store.sync_units_path(run_id), wanted)
    earlier = _earlier_vectors(store, config_hash, pc.unique(units["digest"]))
    positioned = units.select(["digest"]).append_column(
        "position", pa.array(np.arange(units.num_rows, dtype=np.int64))
    )
    first_of_digest, first_position = first_claims(positioned, "position", key="digest")
    in_earlier = pc.index_in(units["digest"], value_set=earlier["digest"])
    from_earlier = pc.is_valid(in_earlier)
    reused = pc.or_(from_earlier, pc.invert(first_of_digest))
    decision = pa.table(
        {
            "key": units["key"],
            "source_run": pc.if_else(
                from_earlier, earlier["run_id"].take(in_earlier), pa.scalar(run_id)
            ),
            "source_key": pc.if_else(
                from_earlier, earlier["key"].take(in_earlier), units["key"].take(first_position)
            ),
        }
    ).filter(reused)
    store.write_table(store.reused_units_path(run_id), decision.cast(schemas.REUSED_UNITS))
    saved = pc.sum(units["cost_usd"].filter(reused)).as_py() or 0.0
    return ReuseDecision(decision["key"].combine_chunks(), float(saved))
