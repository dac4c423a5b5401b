"""The batch job ledger: a job survives a restart exactly as it was last recorded, each change
replaces the job's one file, jobs come back in number order, and the cut is absent until it is
recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.batch.ledger import BatchCut, BatchJob, BatchLedger
from tasks.store import CheckpointStore

RUN_ID = "run-batch-ledger"
ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    """A checkpoint store in a fresh directory."""
    return CheckpointStore(str(tmp_path))


def recorded(number: int, shards: tuple[int, ...] = (1, 2)) -> BatchJob:
    """A job as the stage records it before creating it."""
    return BatchJob(
        number=number,
        shards=shards,
        records=240,
        input_bytes=98_765,
        token=f"token-{number:05d}",
        name=f"novaflow-{RUN_ID}-{number:05d}",
        input_uri=f"s3://novaflow-async/batch-input/{RUN_ID}/job-{number:05d}/",
        output_uri=f"s3://novaflow-async/batch-output/{RUN_ID}/job-{number:05d}",
    )


def collected(number: int) -> BatchJob:
    """A job with every field set, as it stands once collected."""
    return replace(
        recorded(number, (3, 4, 5)),
        status="collected",
        job_arn=ARN,
        service_status="PartiallyCompleted",
        message="3 of 240 records were not processed.",
        created_at=1_700_000_000.25,
        ended_at=1_700_003_600.5,
        status_calls=17,
        throttled_calls=2,
        embedded=237,
        quarantined=3,
    )


def test_a_job_reads_back_from_its_ledger_file_exactly_as_written() -> None:
    for job in (recorded(1), collected(7)):
        assert BatchJob.from_json(job.to_json()) == job


def test_a_ledger_file_with_fields_this_version_does_not_know_still_reads() -> None:
    document = json.loads(collected(3).to_json())
    document["priority"] = "high"

    assert BatchJob.from_json(json.dumps(document)) == collected(3)


def test_a_run_without_batch_jobs_has_no_jobs_and_no_cut(store: CheckpointStore) -> None:
    ledger = BatchLedger(store, RUN_ID)

    assert ledger.jobs() == []
    assert ledger.cut() is None


def test_recorded_jobs_survive_a_restart_in_number_order(store: CheckpointStore) -> None:
    ledger = BatchLedger(store, RUN_ID)
    for number in (12, 3, 1, 100):
        assert ledger.record(recorded(number, (number,))) == recorded(number, (number,))

    reopened = BatchLedger(store, RUN_ID)

    assert [job.number for job in reopened.jobs()] == [1, 3, 12, 100]
    assert reopened.jobs()[2] == recorded(12, (12,))


def test_each_change_replaces_what_the_ledger_had_of_the_job(store: CheckpointStore) -> None:
    ledger = BatchLedger(store, RUN_ID)
    job = ledger.record(recorded(1))
    ledger.record(recorded(2))
    ledger.record(replace(job, status="created", job_arn=ARN, created_at=1_700_000_000.0))
    ledger.record(collected(1))

    jobs = BatchLedger(store, RUN_ID).jobs()

    assert jobs == [collected(1), recorded(2)]


def test_the_cut_is_read_back_once_recorded_and_is_not_taken_for_a_job(
    store: CheckpointStore,
) -> None:
    ledger = BatchLedger(store, RUN_ID)
    ledger.record(recorded(1))
    ledger.record_cut(BatchCut(jobs=1, on_demand=(3, 4)))

    reopened = BatchLedger(store, RUN_ID)

    assert reopened.cut() == BatchCut(jobs=1, on_demand=(3, 4))
    assert [job.number for job in reopened.jobs()] == [1]


def test_runs_keep_their_jobs_apart(store: CheckpointStore) -> None:
    BatchLedger(store, RUN_ID).record(recorded(1))
    BatchLedger(store, RUN_ID).record_cut(BatchCut(1, ()))

    other = BatchLedger(store, "another-run")

    assert other.jobs() == []
    assert other.cut() is None
