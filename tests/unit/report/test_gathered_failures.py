"""A run's failures, gathered from every stage's parts into one file a batch at a time: every
row once, in the parts' order, in row groups of about GROUP_ROWS however many parts there are."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tasks.records import Failure
from tasks.report.failures import gathered_failures
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore
from tasks.tables import GROUP_ROWS, failures_table


def _failures(stage: str, count: int) -> list[Failure]:
    return [
        Failure(item_id=f"{stage}-{n}", uri=f"/corpus/{n}.txt", stage="embed",
                code="ValidationException", message="refused", unit_key=f"{stage}-{n}#chunk=0")
        for n in range(count)
    ]  # fmt: skip


def test_every_stages_failures_are_gathered_once_in_order(tmp_path: Path) -> None:
    settings = NovaflowSettings(store=str(tmp_path / "store"))
    store = CheckpointStore(settings.store)
    parts = {"a-manifest": 3, "b-plan": 0, "shard-00001": GROUP_ROWS + 5, "shard-00002": 2}
    for name, count in parts.items():
        path = f"{store.run_failures_dir('run-1')}/{name}.parquet"
        store.write_table(path, failures_table(_failures(name, count)))

    gathered = gathered_failures(settings, "run-1")

    assert gathered == sum(parts.values())
    written = pq.ParquetFile(store.failures_path("run-1"))
    ids = written.read(columns=["item_id"]).column("item_id").to_pylist()
    assert ids == [f"{name}-{n}" for name, count in parts.items() for n in range(count)]
    # Parts are grouped (a row group once GROUP_ROWS wait, then the rest), not one per part.
    sizes = [written.metadata.row_group(g).num_rows for g in range(written.num_row_groups)]
    assert sizes == [3 + GROUP_ROWS + 5, 2]


def test_a_run_without_failures_gathers_an_empty_file(tmp_path: Path) -> None:
    settings = NovaflowSettings(store=str(tmp_path / "store"))

    assert gathered_failures(settings, "run-1") == 0
    store = CheckpointStore(settings.store)
    assert store.read_table(store.failures_path("run-1")).num_rows == 0
