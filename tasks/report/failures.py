"""A run's quarantined items and units, gathered from every stage into one file."""

from __future__ import annotations

import pyarrow as pa

from tasks import schemas
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore
from tasks.tables import GroupedWriter


def gathered_failures(settings: NovaflowSettings, run_id: str) -> int:
    """Gather the run's failure parts into ``failures/<run_id>.parquet``, in the parts' order,
    a batch at a time (a run may quarantine millions of units, in as many parts as it has
    shards); returns the count."""
    store = CheckpointStore(settings.store)
    gathered = 0
    with store.table_writer(store.failures_path(run_id), schemas.FAILURES) as file:
        writer = GroupedWriter(file)
        for path in store.list_files(store.run_failures_dir(run_id)):
            for batch in store.batches(path, schemas.FAILURES.names):
                writer.write(pa.Table.from_batches([batch]).cast(schemas.FAILURES))
                gathered += batch.num_rows
        writer.flush()
    return gathered
