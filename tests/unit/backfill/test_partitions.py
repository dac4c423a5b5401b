"""Cutting a backfill's source into partitions: slices, date ranges, rejected rows, the same
partitions every time, and one streamed pass whatever the source's size."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tasks.backfill.modified import in_range, modified_time
from tasks.backfill.partitions import (
    PartitionSet,
    _Tally,
    partition_rows,
    partitioned_source,
    selected_rows,
)
from tasks.backfill.records import BackfillRecord, new_backfill_record
from tasks.corpus.manifest import ManifestRow
from tasks.corpus.resolve import manifest_rows
from tasks.records import Failure
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore

JAN = datetime(2025, 1, 1, tzinfo=UTC)


def _no_s3() -> BaseClient:
    raise AssertionError("no S3 client is needed here")


def _record(
    tmp_path: Path, backfill_id: str = "bf-1", *, partition_size: int = 10, **source: Any
) -> BackfillRecord:
    fields: dict[str, Any] = {
        "manifest": None, "corpus": None, "root": None, "row_start": 0, "row_stop": None,
        "modified_after": None, "modified_before": None,
    }  # fmt: skip
    fields.update(source)
    return new_backfill_record(
        backfill_id,
        partition_size=partition_size,
        settings=NovaflowSettings(store=str(tmp_path / "store")),
        **fields,
    )


def _jsonl(path: Path, rows: Sequence[dict[str, Any] | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _partition(store: CheckpointStore, backfill_id: str, number: int) -> list[dict[str, Any]]:
    return pq.read_table(store.partition_manifest_path(backfill_id, number)).to_pylist()


def test_rows_are_cut_in_source_order_into_manifests_the_corpus_reader_reads(
    tmp_path: Path,
) -> None:
    rows = [
        {"uri": f"docs/n-{n:02d}.txt", "id": f"n{n}", "metadata": {"n": n}, "modality": "text"}
        for n in range(25)
    ]
    rows[3]["encoding"] = "latin-1"
    manifest = _jsonl(tmp_path / "corpus.jsonl", rows)
    store = CheckpointStore(str(tmp_path / "store"))

    cut = partitioned_source(store, _record(tmp_path, manifest=str(manifest)), _no_s3)

    assert cut == PartitionSet(
        partitions=3, partition_size=10, rows_read=25, rows_selected=25, rows_outside_dates=0,
        rows_rejected=0, rows_partitioned=25, rows_undated=0,
    )  # fmt: skip
    assert cut.adds_up
    assert [partition_rows(store, "bf-1", n) for n in (1, 2, 3)] == [10, 10, 5]
    read_back = [
        row
        for number in (1, 2, 3)
        for row in manifest_rows(store.partition_manifest_path("bf-1", number))
    ]
    assert all(isinstance(row, ManifestRow) for row in read_back)
    assert [(row.uri, row.item_id) for row in read_back] == [(r["uri"], r["id"]) for r in rows]
    assert [json.loads(row.metadata_json or "") for row in read_back] == [
        {"n": n} for n in range(25)
    ]
    assert read_back[3].encoding == "latin-1"
    assert {row.modality for row in read_back} == {"text"}
    assert [row["source_row"] for row in _partition(store, "bf-1", 3)] == list(range(20, 25))


def test_a_slice_takes_rows_start_to_stop_and_reads_nothing_past_it() -> None:
    read: list[int] = []

    def source() -> Iterator[ManifestRow]:
        for n in range(100):
            read.append(n)
            yield ManifestRow(position=n + 1, uri=f"f-{n}.txt")

    tally = _Tally()
    kept = list(selected_rows(source(), 5, 17, (None, None), None, tally, _unexpected))

    assert [number for number, _ in kept] == list(range(5, 17))
    assert [row.uri for _, row in kept] == [f"f-{n}.txt" for n in range(5, 17)]
    assert read == list(range(17))
    assert (tally.rows_read, tally.rows_selected) == (17, 12)


def _unexpected(failure: Failure) -> None:
    raise AssertionError(f"nothing should be rejected: {failure}")


def test_a_date_range_keeps_files_modified_at_or_after_its_start_and_before_its_end(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for day in range(1, 11):
        path = corpus / f"day-{day:02d}.txt"
        path.write_text(f"written on day {day}")
        moment = JAN.replace(day=day).timestamp()
        os.utime(path, (moment, moment))
    store = CheckpointStore(str(tmp_path / "store"))
    record = _record(
        tmp_path,
        corpus=str(corpus),
        modified_after=JAN.replace(day=3),
        modified_before=datetime(2025, 1, 7),  # naive: UTC
        partition_size=3,
    )

    cut = partitioned_source(store, record, _no_s3)

    kept = [row["uri"] for n in (1, 2) for row in _partition(store, "bf-1", n)]
    assert kept == [str(corpus / f"day-{day:02d}.txt") for day in (3, 4, 5, 6)]
    assert (cut.partitions, cut.rows_outside_dates, cut.rows_partitioned) == (2, 6, 4)
    assert cut.adds_up


def test_a_row_whose_time_cannot_be_read_is_kept_for_its_run_to_reject(tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("present")
    old = JAN.timestamp()
    os.utime(tmp_path / "here.txt", (old, old))
    manifest = _jsonl(tmp_path / "m.jsonl", [{"uri": "here.txt"}, {"uri": "gone.txt"}])
    store = CheckpointStore(str(tmp_path / "store"))
    record = _record(tmp_path, manifest=str(manifest), modified_after=JAN.replace(month=6))

    cut = partitioned_source(store, record, _no_s3)

    assert [row["uri"] for row in _partition(store, "bf-1", 1)] == ["gone.txt"]
    assert (cut.rows_outside_dates, cut.rows_undated, cut.rows_partitioned) == (1, 1, 1)


def test_malformed_rows_and_ids_an_earlier_partition_has_are_rejected_with_reasons(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, Any] | str] = [{"uri": f"f-{n}.txt", "id": f"id-{n}"} for n in range(6)]
    rows[2] = "{not json"
    rows[5] = {"uri": "other.txt", "id": "id-1"}  # in partition 2, id-1 is partition 1's
    manifest = _jsonl(tmp_path / "m.jsonl", rows)
    store = CheckpointStore(str(tmp_path / "store"))

    cut = partitioned_source(
        store, _record(tmp_path, manifest=str(manifest), partition_size=2), _no_s3
    )

    kept = [row["id"] for n in range(1, cut.partitions + 1) for row in _partition(store, "bf-1", n)]
    assert kept == ["id-0", "id-1", "id-3", "id-4"]
    rejected = pq.read_table(store.backfill_rejected_path("bf-1")).to_pylist()
    assert [(row["code"], row["item_id"]) for row in rejected] == [
        ("malformed_row", ""),
        ("duplicate_id", "id-1"),
    ]
    assert "line 3: invalid JSON" in rejected[0]["message"]
    assert "already used by row 1" in rejected[1]["message"]
    assert (cut.rows_rejected, cut.rows_partitioned) == (2, 4)
    assert cut.adds_up


def test_the_same_source_gives_the_same_partitions_and_they_are_cut_once(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    for n in range(17):
        (corpus / ("sub" if n % 3 else "") / f"f-{n:02d}.txt").write_text(f"file {n}")
    store = CheckpointStore(str(tmp_path / "store"))
    for backfill_id in ("first", "second"):
        partitioned_source(store, _record(tmp_path, backfill_id, corpus=str(corpus)), _no_s3)
    assert [_partition(store, "first", n) for n in (1, 2)] == [
        _partition(store, "second", n) for n in (1, 2)
    ]

    (corpus / "f-99.txt").write_text("added after the partitions were cut")
    again = partitioned_source(store, _record(tmp_path, "first", corpus=str(corpus)), _no_s3)

    assert again.rows_partitioned == 17  # read back from partitions.json, not cut again
    assert sum(len(_partition(store, "first", n)) for n in (1, 2)) == 17


def test_an_empty_selection_gives_no_partition(tmp_path: Path) -> None:
    manifest = _jsonl(tmp_path / "m.jsonl", [{"uri": "a.txt"}, {"uri": "b.txt"}])
    store = CheckpointStore(str(tmp_path / "store"))

    cut = partitioned_source(store, _record(tmp_path, manifest=str(manifest), row_start=5), _no_s3)

    assert (cut.partitions, cut.rows_read, cut.rows_selected) == (0, 2, 0)
    assert not store.list_files(store.partition_manifest_path("bf-1", 1).rsplit("/", 1)[0])


def test_partitioning_streams_the_source(tmp_path: Path) -> None:
    """Python's allocations for 10x the rows stay within 1.5x: nothing holds the source, nor
    every id it gives (which telling repeated ids apart needs)."""
    peaks = []
    for count in (4_000, 40_000):
        manifest = tmp_path / f"m-{count}.jsonl"
        manifest.write_text(
            "".join(
                f'{{"uri": "docs/f-{n:06d}.txt", "id": "{n if n % 1_000 else n - 1:08d}"}}\n'
                for n in range(1, count + 1)
            )
        )
        store = CheckpointStore(str(tmp_path / f"store-{count}"))
        record = _record(tmp_path, manifest=str(manifest), partition_size=1_500)
        tracemalloc.start()
        try:
            cut = partitioned_source(store, record, _no_s3)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert (cut.rows_partitioned, cut.rows_rejected) == (count - count // 1_000, count // 1_000)

    assert peaks[1] < 1.5 * peaks[0]


class _Heads:
    """An S3 client that answers HEAD requests from a table."""

    def __init__(self, answers: dict[str, datetime | str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803  (boto3's names)
        self.asked.append(f"s3://{Bucket}/{Key}")
        answer = self.answers[f"s3://{Bucket}/{Key}"]
        if isinstance(answer, str):
            status = int(answer)
            error = {
                "Error": {"Code": answer, "Message": "no"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }
            raise ClientError(error, "HeadObject")  # type: ignore[arg-type]
        return {"LastModified": answer}


def test_s3_times_come_from_head_requests_and_relative_paths_read_under_an_s3_root() -> None:
    heads = _Heads(
        {
            "s3://corpus/docs/a.txt": JAN,
            "s3://corpus/docs/b.txt": "404",
            "s3://corpus/docs/c.txt": "503",
        }
    )
    client: Any = heads

    def s3() -> BaseClient:
        return client

    assert modified_time(ManifestRow(1, "s3://corpus/docs/a.txt"), "/unused", s3) == JAN
    assert modified_time(ManifestRow(2, "a.txt"), "s3://corpus/docs/", s3) == JAN
    assert modified_time(ManifestRow(3, "s3://corpus/docs/b.txt"), "/unused", s3) is None
    with pytest.raises(ClientError):  # an outage says nothing about the row: it stops the cut
        modified_time(ManifestRow(4, "s3://corpus/docs/c.txt"), "/unused", s3)
    assert modified_time(ManifestRow(5, "https://example.com/x"), "/unused", s3) is None


def test_ranges_include_their_start_exclude_their_end_and_keep_unknown_times() -> None:
    start, end = JAN, JAN.replace(day=2)
    assert in_range(start, start, end)
    assert not in_range(end, start, end)
    assert in_range(None, start, end)
    assert in_range(end, None, None)
