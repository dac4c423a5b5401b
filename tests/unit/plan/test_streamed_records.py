"""A plan writes its failures as they come, never holding them all: a corpus with a hundred
million rows may have millions of bad ones."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tasks.plan.stage import planned_run
from tasks.records import Failure, Item
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore
from tasks.tables import StreamedRecords, failures_table


def _failure(n: int) -> Failure:
    return Failure(item_id=f"row-{n}", uri=f"/corpus/{n}.txt", stage="manifest",
                   code="not_found", message=f"no such file: /corpus/{n}.txt")  # fmt: skip


class RecordingWriter:
    """Stands for a Parquet writer: keeps the item ids of each table written, in order."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def write_table(self, table: pa.Table) -> None:
        self.batches.append(table.column("item_id").to_pylist())


def test_records_are_written_a_batch_at_a_time_as_they_come() -> None:
    writer = RecordingWriter()
    records = StreamedRecords(writer, failures_table, batch_rows=2)  # type: ignore[arg-type]

    for n in range(5):
        records.add(_failure(n))

    assert writer.batches == [["row-0", "row-1"], ["row-2", "row-3"]]  # one record waits
    records.flush()
    assert writer.batches[-1] == ["row-4"]
    assert records.count == 5


def test_a_plan_records_every_rejected_row_and_counts_it(tmp_path: Path) -> None:
    settings = NovaflowSettings(store=str(tmp_path / "store"))
    text = tmp_path / "note.txt"
    text.write_text("a note about river deltas")
    item = Item("note", str(text), "text", "sha256:1", text.stat().st_size)
    corpus = [_failure(0), item, *(_failure(n) for n in range(1, 2500))]

    totals = planned_run(settings, lambda: corpus, "run-1")

    store = CheckpointStore(settings.store)
    failures = store.read_table(store.manifest_failures_path("run-1")).to_pylist()
    assert [row["item_id"] for row in failures] == [f"row-{n}" for n in range(2500)]
    assert totals.failures == 2500
    assert totals.items["new"] == 1
