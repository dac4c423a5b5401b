"""``novaflow backfill --batch-inference`` as a user runs it against a separate stand-in, killed
with SIGKILL while its batch job runs and started again: the job is polled and collected, never
created a second time, and the index ends equal to the corpus without a model call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.e2e.emulator_process import (
    BIN,
    index_keys,
    model_calls,
    novaflow_env,
    running_emulator,
)

NOTES, SHARD_SIZE = 120, 20  # one job: Bedrock's default minimum is 100 records
BACKFILL_ID = "bf-batch"
RUN_ID = f"{BACKFILL_ID}-p00001"


@pytest.fixture
def slow_jobs(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A separate ``novaflow emulator`` whose batch jobs run 6 s: time enough to be killed."""
    options = ("--in-memory", "--batch-job-seconds", "6")
    with running_emulator(options, novaflow_env(tmp_path), tmp_path) as env:
        yield env


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 240
    while not condition():
        assert process.poll() is None, f"the backfill ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.05)  # polling the store, not synchronising: the kill point is arbitrary


def _created(job_file: Path) -> bool:
    try:
        return json.loads(job_file.read_text())["status"] == "created"
    except (OSError, ValueError):
        return False


def _client(stand_in: dict[str, str], service: str) -> Any:
    endpoint = stand_in[f"AWS_ENDPOINT_URL_{service.upper()}"]
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip


def _jobs(stand_in: dict[str, str]) -> list[dict[str, Any]]:
    answer = _client(stand_in, "bedrock").list_model_invocation_jobs()
    return list(answer["invocationJobSummaries"])


@pytest.mark.slow
def test_a_batch_backfill_killed_while_its_job_runs_resumes_without_creating_it_again(
    tmp_path: Path, slow_jobs: dict[str, str]
) -> None:
    _client(slow_jobs, "s3").create_bucket(Bucket="novaflow-async")  # batch inputs and outputs
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(NOTES):
        (corpus / f"note-{n:03d}.txt").write_text(f"note number {n} about topic {n % 7}")
    env = novaflow_env(
        tmp_path, **slow_jobs, NOVAFLOW_EVALUATION__ENABLED="false",
        NOVAFLOW_THROUGHPUT__SHARD_SIZE=str(SHARD_SIZE),
        NOVAFLOW_BATCH_INFERENCE__ROLE_ARN="arn:aws:iam::123456789012:role/novaflow-batch",
        NOVAFLOW_BATCH_INFERENCE__POLL_INITIAL_SECONDS="0.5",
        NOVAFLOW_BATCH_INFERENCE__POLL_MAX_SECONDS="1",
    )  # fmt: skip
    command = [
        str(BIN / "novaflow"), "backfill", "--corpus", str(corpus), "--store", "store",
        "--backend", "aws", "--index", "batch-test", "--backfill-id", BACKFILL_ID,
        "--batch-inference",
    ]  # fmt: skip
    job_file = tmp_path / "store" / "runs" / RUN_ID / "batch" / "job-00001.json"

    killed = subprocess.Popen(
        command, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: _created(job_file), killed, "a created batch job")
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    [job] = _jobs(slow_jobs)
    assert job["status"] not in ("Completed", "PartiallyCompleted")  # killed while it ran
    assert not list((tmp_path / "store" / "embeddings").glob("run=*/*.parquet"))

    resumed = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [job] = _jobs(slow_jobs)  # the same job, not a second one
    assert job["status"] == "Completed"
    assert model_calls(slow_jobs) == 0  # every unit through the job, none through InvokeModel
    keys = index_keys(slow_jobs, "batch-test")
    assert sorted(keys) == [f"note-{n:03d}.txt#chunk=0" for n in range(NOTES)]
    summary = json.loads((tmp_path / "store" / "runs" / RUN_ID / "summary.json").read_text())
    assert (summary["batch_jobs"], summary["batch_jobs_created"]) == (1, 0)
    assert (summary["batch_records"], summary["units_embedded"]) == (NOTES, NOTES)
    ledger = json.loads(job_file.read_text())
    assert (ledger["status"], ledger["job_arn"]) == ("collected", job["jobArn"])
