"""A run's quarantined items and units, gathered from every stage into one file."""

from __future__ import annotations

import pyarrow as pa

from tasks import schemas
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore


def gathered_failures(settings: NovaflowSettings, run_id: str) -> int:
    """Gather the run's failure parts into ``failures/<run_id>.parquet``; returns the count."""
    store = CheckpointStore(settings.store)
    paths = store.list_files(store.run_failures_dir(run_id))
    tables = [store.read_table(path, schemas.FAILURES) for path in paths]
    table = pa.concat_tables(tables) if tables else schemas.FAILURES.empty_table()
    store.write_table(store.failures_path(run_id), table)
    return table.num_rows
