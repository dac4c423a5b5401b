"""The async job ledger: what was recorded survives a reopen, the newest change wins, compaction
folds the log into one snapshot, and a crash half-way through compaction loses nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tasks import job_ledger
from tasks.job_ledger import JobLedger, JobRecord, jobs_table
from tasks.store import CheckpointStore

RUN_ID = "run-ledger"
ARN = "arn:aws:bedrock:us-east-1:123456789012:async-invoke/abc123def456"


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    """A checkpoint store in a fresh directory."""
    return CheckpointStore(str(tmp_path))


def submitting(unit_key: str, attempt: int = 1) -> JobRecord:
    """An attempt written before its StartAsyncInvoke call."""
    return JobRecord(
        unit_key=unit_key,
        item_id=unit_key,
        uri=f"/corpus/{unit_key}.mp4",
        attempt=attempt,
        token=f"tok-{unit_key}-{attempt}",
        status="submitting",
        input_uri=f"s3://in/{unit_key}",
        output_uri="s3://novaflow-async/output",
    )


def running(unit_key: str, attempt: int = 1) -> JobRecord:
    """An attempt the service accepted."""
    return replace(
        submitting(unit_key, attempt), status="running", invocation_arn=ARN, submitted_at=100.0
    )


def log_dir(store: CheckpointStore) -> str:
    """Where the ledger's log files go."""
    return store.jobs_log_dir(RUN_ID)


def by_key(ledger: JobLedger) -> dict[tuple[str, int], JobRecord]:
    """The ledger's records by (unit, attempt)."""
    return {(record.unit_key, record.attempt): record for record in ledger.records()}


def test_records_survive_a_reopen(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)
    stored = ledger.record([submitting("a"), submitting("b")])
    stored += ledger.record([running("a")])

    reopened = JobLedger(store, RUN_ID)

    assert [r.sequence for r in stored] == [1, 2, 3]
    assert reopened.records() == [stored[2], stored[1]]
    assert reopened.latest("a") == stored[2]
    assert reopened.latest("missing") is None
    assert len(store.list_files(log_dir(store))) == 2


def test_sequences_continue_after_a_reopen(store: CheckpointStore) -> None:
    JobLedger(store, RUN_ID).record([submitting("a"), submitting("b")])

    (later,) = JobLedger(store, RUN_ID).record([running("a")])

    assert later.sequence == 3
    assert JobLedger(store, RUN_ID).latest("a") == later


def test_the_highest_sequence_wins_whatever_the_file_order(store: CheckpointStore) -> None:
    newest = replace(running("a"), status="collected", sequence=9)
    older = replace(running("a"), sequence=4)
    store.write_table(f"{log_dir(store)}/log-000000001.parquet", jobs_table([newest]))
    store.write_table(f"{log_dir(store)}/log-000000002.parquet", jobs_table([older]))

    ledger = JobLedger(store, RUN_ID)

    assert ledger.latest("a") == newest
    (next_record,) = ledger.record([replace(newest, status="quarantined")])
    assert next_record.sequence == 10


def test_compaction_folds_the_log_into_one_snapshot(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)
    ledger.record([submitting("a"), submitting("b")])
    ledger.record([running("a"), running("b")])
    before = ledger.records()

    ledger.compact()

    assert store.exists(store.jobs_path(RUN_ID))
    assert not Path(log_dir(store)).exists()
    assert JobLedger(store, RUN_ID).records() == before
    (after,) = ledger.record([replace(running("a"), status="collected")])
    assert after.sequence == 5
    assert JobLedger(store, RUN_ID).latest("a") == after


def test_many_writes_compact_themselves(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)
    for attempt in range(1, job_ledger.LOG_FILES_BEFORE_COMPACTION + 1):
        ledger.record([submitting("a", attempt)])

    assert store.exists(store.jobs_path(RUN_ID))
    assert store.list_files(log_dir(store)) == []
    assert len(JobLedger(store, RUN_ID).records()) == job_ledger.LOG_FILES_BEFORE_COMPACTION


def test_a_crash_between_snapshot_and_log_removal_loses_nothing(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)
    ledger.record([submitting("a"), submitting("b"), submitting("c")])
    ledger.record([running("a"), running("b")])
    ledger.record([replace(running("a"), status="collected", segments_embedded=40)])
    # Compaction's first half: the snapshot is written; the process dies before the logs go.
    store.write_table(store.jobs_path(RUN_ID), jobs_table(ledger.records()))
    assert len(store.list_files(log_dir(store))) == 3

    reopened = JobLedger(store, RUN_ID)

    assert reopened.records() == ledger.records()
    assert {k: r.status for k, r in reopened.latest_by_unit().items()} == {
        "a": "collected",
        "b": "running",
        "c": "submitting",
    }
    (later,) = reopened.record([replace(running("b"), status="collected")])
    reopened.compact()
    final = JobLedger(store, RUN_ID)
    assert final.latest("b") == later
    assert final.latest("a") == reopened.latest("a")
    assert not Path(log_dir(store)).exists()


def test_a_stale_snapshot_under_newer_logs_yields_the_newest_states(
    store: CheckpointStore,
) -> None:
    ledger = JobLedger(store, RUN_ID)
    ledger.record([submitting("a")])
    ledger.compact()
    (newer,) = ledger.record([running("a")])

    assert JobLedger(store, RUN_ID).latest("a") == newer


def test_counters_folded_by_compaction_survive_a_crash_before_log_removal(
    store: CheckpointStore,
) -> None:
    ledger = JobLedger(store, RUN_ID)
    ledger.record([running("a")])
    ledger.remember_unwritten(replace(running("a"), status_calls=7, throttled_calls=2))
    store.write_table(store.jobs_path(RUN_ID), jobs_table(ledger.records()))

    reopened = JobLedger(store, RUN_ID).latest("a")

    assert reopened is not None
    assert (reopened.status_calls, reopened.throttled_calls) == (7, 2)


def test_unwritten_counters_are_carried_by_the_next_write(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)
    (first,) = ledger.record([running("a")])
    ledger.remember_unwritten(replace(first, status_calls=5, throttled_calls=1))

    assert len(store.list_files(log_dir(store))) == 1
    on_disk = JobLedger(store, RUN_ID).latest("a")
    assert on_disk is not None
    assert on_disk.status_calls == 0
    in_memory = ledger.latest("a")
    assert in_memory is not None
    assert (in_memory.status_calls, in_memory.sequence) == (5, first.sequence)

    ledger.record([replace(in_memory, status="collected")])

    reopened = JobLedger(store, RUN_ID).latest("a")
    assert reopened is not None
    assert (reopened.status, reopened.status_calls, reopened.throttled_calls) == (
        "collected",
        5,
        1,
    )


def test_unwritten_counters_are_carried_by_compaction(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)
    ledger.record([running("a"), running("b")])
    ledger.remember_unwritten(replace(running("a"), status_calls=3))
    ledger.record([replace(running("b"), status="collected")])

    ledger.compact()

    reopened = JobLedger(store, RUN_ID)
    a_record, b_record = reopened.latest("a"), reopened.latest("b")
    assert a_record is not None
    assert b_record is not None
    assert (a_record.status, a_record.status_calls) == ("running", 3)
    assert b_record.status == "collected"


def test_latest_is_the_highest_attempt_not_the_newest_write(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)
    ledger.record([replace(running("a", 1), status="failed", code="job_failed")])
    ledger.record([running("a", 3)])
    ledger.record([replace(running("a", 2), status="failed")])  # written last, lower attempt
    ledger.record([submitting("b", 1)])

    for reader in (ledger, JobLedger(store, RUN_ID)):
        latest = reader.latest_by_unit()
        assert {key: record.attempt for key, record in latest.items()} == {"a": 3, "b": 1}
        assert reader.latest("a") == latest["a"]
        assert [(r.unit_key, r.attempt) for r in reader.records()] == [
            ("a", 1),
            ("a", 2),
            ("a", 3),
            ("b", 1),
        ]


def test_an_empty_write_leaves_no_file(store: CheckpointStore) -> None:
    ledger = JobLedger(store, RUN_ID)

    assert ledger.record([]) == []
    assert store.list_files(log_dir(store)) == []
    assert JobLedger(store, RUN_ID).records() == []
