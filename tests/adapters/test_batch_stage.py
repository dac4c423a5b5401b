"""The batch inference stage against the stand-in's S3 (and, where vectors must match, its batch
inference service): whole shards fill each job, a tail too small for a job goes on demand, a
collected shard holds the rows InvokeModel would have given it, a job that ended early
quarantines what it did not embed, and a rerun never makes a job twice."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from botocore.client import BaseClient

from emulator.app import Emulator
from emulator.bedrock.limits import BatchLimits
from emulator.misbehaviour import BatchJobBehaviour
from tasks import schemas
from tasks.batch.inputs import record_id
from tasks.batch.ledger import BatchCut, BatchLedger
from tasks.batch.service import BatchJobState, BatchService, BedrockBatchService
from tasks.batch.stage import embedded_by_batch
from tasks.corpus.source import CorpusSource, corpus_items
from tasks.demo import sample_media
from tasks.embed.stage import embedded_shard
from tasks.plan.stage import planned_run
from tasks.s3_objects import split_s3_uri
from tasks.settings import (
    BatchInferenceSettings,
    EmbeddingSettings,
    NovaflowSettings,
    ThroughputSettings,
)
from tasks.store import CheckpointStore
from tests.unit.jobs.async_fakes import SimulatedClock, SimulatedKill

BUCKET = "novaflow-async"  # of the default batch input_uri and output_uri
ROLE = "arn:aws:iam::123456789012:role/novaflow-batch"
DIMENSION = 256
ARN_PREFIX = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"
QUICK_JOBS = BatchJobBehaviour(phase_seconds=0.05, queue_seconds=0.05, job_seconds=0.2)


@pytest.fixture
def aws_environment(stand_in: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The AWS variables pointed at the stand-in, and the bucket batch jobs use by default."""
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    s3 = stand_in.client("s3")
    if BUCKET not in {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    return stand_in


@pytest.fixture
def batch_stand_in(aws_environment: Emulator) -> Iterator[Emulator]:
    """The stand-in with quick batch jobs and small quotas matching ``_settings``; its defaults
    put back afterwards."""
    limits = BatchLimits(min_records_per_job=4, max_records_per_file=2, max_records_per_job=9)
    aws_environment.configure(batch_jobs=QUICK_JOBS, batch_limits=limits)
    aws_environment.reset_stats()
    yield aws_environment
    aws_environment.configure(batch_jobs=BatchJobBehaviour(), batch_limits=BatchLimits())


def _settings(
    tmp_path: Path,
    name: str,
    *,
    shard_size: int = 3,
    min_records: int = 4,
    max_records: int = 9,
    max_records_per_file: int = 2,
) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / f"store-{name}"),
        backend="aws",
        embedding=EmbeddingSettings(dimension=DIMENSION),
        throughput=ThroughputSettings(
            shard_size=shard_size, concurrency=4, requests_per_second=500, render_processes=1
        ),
        batch_inference=BatchInferenceSettings(
            enabled=True,
            role_arn=ROLE,
            min_records_per_job=min_records,
            max_records_per_job=max_records,
            max_records_per_file=max_records_per_file,
            poll_initial_seconds=0.05,
            poll_max_seconds=0.2,
            poll_jitter=0.0,
        ),
    )


def _notes(root: Path, count: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (root / f"note-{n:02d}.txt").write_text(f"note {n} about topic {n % 3}")
    return root


def _mixed_corpus(root: Path) -> Path:
    """Eleven notes, a picture, a two-page PDF and a PNG no model can take: 15 units."""
    _notes(root, 11)
    (root / "tile.png").write_bytes(sample_media.sample_image(8, "png"))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    document = pymupdf.open()
    for text in ("the harbour at dawn", "the lighthouse at dusk"):
        document.new_page().insert_text((72, 72), text)
    document.save(str(root / "guide.pdf"))
    document.close()
    return root


def _planned(settings: NovaflowSettings, corpus: Path, run_id: str, s3: BaseClient) -> int:
    """Plan the run over ``corpus``; returns its shard count."""
    totals = planned_run(
        settings, lambda: corpus_items(CorpusSource(corpus=str(corpus)), s3), run_id
    )
    return totals.shards


def _run_id() -> str:
    return f"batch-{uuid.uuid4().hex[:10]}"


def _keys(s3: BaseClient, uri: str) -> list[str]:
    bucket, prefix = split_s3_uri(uri)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))


def _units_per_shard(settings: NovaflowSettings, run_id: str, shards: int) -> list[list[str]]:
    store = CheckpointStore(settings.store)
    return [
        store.read_table(store.shard_units_path(run_id, shard), schemas.UNITS)
        .column("key")
        .to_pylist()
        for shard in range(1, shards + 1)
    ]


def _embeddings(settings: NovaflowSettings, run_id: str, shard: int) -> list[dict[str, Any]]:
    store = CheckpointStore(settings.store)
    path = store.embeddings_path(run_id, shard)
    rows = store.read_table(path, schemas.embeddings_schema(DIMENSION)).to_pylist()
    return sorted(rows, key=lambda row: (row["key"], row["embedding_type"]))


def _failures(settings: NovaflowSettings, run_id: str, shard: int) -> list[dict[str, Any]]:
    """The shard's failures, Python object addresses in messages blanked (they differ per
    process and call)."""
    store = CheckpointStore(settings.store)
    rows = store.read_table(store.shard_failures_path(run_id, shard), schemas.FAILURES).to_pylist()
    for row in rows:
        row["message"] = re.sub(r" at 0x[0-9a-f]+", " at 0x…", row["message"])
    return sorted(rows, key=lambda row: row["unit_key"] or "")


def _is_checkpointed(settings: NovaflowSettings, run_id: str, shard: int) -> bool:
    store = CheckpointStore(settings.store)
    return store.exists(store.embeddings_path(run_id, shard))


def _vector(identifier: str) -> list[float]:
    """The scripted vector of a record: exact in float32."""
    seed = int(hashlib.sha256(identifier.encode()).hexdigest()[:8], 16)
    return [((seed >> (n % 24)) % 1000 - 500) / 1024 for n in range(DIMENSION)]


@dataclass(frozen=True)
class Answer:
    """What a scripted job writes for one record: its vector, an error line, or no line."""

    error_code: int | None = None
    message: str = ""
    missing: bool = False


@dataclass
class ScriptedS3Batch:
    """``BatchService`` that ends every job at its first status call with ``status`` and
    ``message``, having written (unless ``write_output`` is off) one ``.out`` file per input
    file into the stand-in's S3, as Bedrock does: a line per record, as ``answers`` says (by
    recordId; a vector by default), then ``extra_lines``. A repeated token gets its job."""

    s3: BaseClient
    status: str = "Completed"
    message: str = ""
    answers: Mapping[str, Answer] = field(default_factory=dict)
    write_output: bool = True
    extra_lines: tuple[bytes, ...] = ()
    created: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, list[str]] = field(default_factory=dict)
    _jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _written: set[str] = field(default_factory=set)

    def create(self, arguments: Mapping[str, Any]) -> str:
        self.created.append(dict(arguments))
        token = str(arguments["clientRequestToken"])
        arn = ARN_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:12]
        if arn not in self._jobs:
            self._jobs[arn] = dict(arguments)
            folder = arguments["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
            self.inputs[arn] = [key.rsplit("/", 1)[-1] for key in _keys(self.s3, folder)]
        return arn

    def state(self, job_arn: str) -> BatchJobState:
        if self.write_output and job_arn not in self._written:
            self._write(job_arn)
            self._written.add(job_arn)
        return BatchJobState(self.status, self.message, ended_at=1_800_000_000.0)

    def _write(self, job_arn: str) -> None:
        arguments = self._jobs[job_arn]
        folder = arguments["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        output = arguments["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"].rstrip("/")
        job_id = job_arn.rsplit("/", 1)[-1]
        in_bucket, prefix = split_s3_uri(folder)
        out_bucket, out_prefix = split_s3_uri(f"{output}/{job_id}/")
        for key in _keys(self.s3, folder):
            body = self.s3.get_object(Bucket=in_bucket, Key=key)["Body"].read()
            lines = [self._line(json.loads(line)) for line in body.splitlines()]
            text = b"".join(line for line in lines if line) + b"".join(self.extra_lines)
            name = key[len(prefix) :]
            self.s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{name}.out", Body=text)

    def _line(self, record: dict[str, Any]) -> bytes:
        identifier = record["recordId"]
        answer = self.answers.get(identifier, Answer())
        if answer.missing:
            return b""
        document: dict[str, Any] = {"recordId": identifier, "modelInput": record["modelInput"]}
        if answer.error_code is not None:
            document["error"] = {"errorCode": answer.error_code, "errorMessage": answer.message}
        else:
            embedding = {"embeddingType": "TEXT", "embedding": _vector(identifier)}
            document["modelOutput"] = {"embeddings": [embedding]}
        return json.dumps(document).encode() + b"\n"


@dataclass
class KilledAfterCreating:
    """The real service, but the process dies after its first CreateModelInvocationJob went
    through and before the ARN was heard."""

    service: BatchService
    arns: list[str] = field(default_factory=list)

    def create(self, arguments: Mapping[str, Any]) -> str:
        self.arns.append(self.service.create(arguments))
        raise SimulatedKill("killed before the job's ARN was recorded")

    def state(self, job_arn: str) -> BatchJobState:
        return self.service.state(job_arn)


def _bedrock(stand_in: Emulator) -> BedrockBatchService:
    return BedrockBatchService(stand_in.client("bedrock"), stand_in.client("bedrock"))


def _calls(stand_in: Emulator, operation: str) -> int:
    calls: dict[str, int] = stand_in.stats()["bedrock"]["calls"]
    return calls.get(operation, 0)


# -- the job cut -------------------------------------------------------------------------------


def test_whole_shards_fill_each_job_up_to_the_record_limit(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    s3 = aws_environment.client("s3")
    settings = _settings(tmp_path, "cut", min_records=4, max_records=7)
    run_id = _run_id()
    shards = _planned(settings, _notes(tmp_path / "corpus", 11), run_id, s3)
    service = ScriptedS3Batch(s3)

    outcome = embedded_by_batch(settings, run_id, service=service, clock=SimulatedClock())

    # Shards of 3, 3, 3 and 2 units; at most 7 records a job: shards 1-2, then 3-4.
    assert [len(keys) for keys in _units_per_shard(settings, run_id, shards)] == [3, 3, 3, 2]
    jobs = BatchLedger(CheckpointStore(settings.store), run_id).jobs()
    assert [(job.shards, job.records, job.status) for job in jobs] == [
        ((1, 2), 6, "collected"),
        ((3, 4), 5, "collected"),
    ]
    assert BatchLedger(CheckpointStore(settings.store), run_id).cut() == BatchCut(2, ())
    assert (outcome.jobs, outcome.created, outcome.collected, outcome.records) == (2, 2, 2, 11)
    assert outcome.on_demand == ()
    # Each shard's records in files of at most max_records_per_file, every file in its job.
    assert list(service.inputs.values()) == [
        ["shard-0000001.2.jsonl", "shard-0000001.jsonl", "shard-0000002.2.jsonl",
         "shard-0000002.jsonl"],
        ["shard-0000003.2.jsonl", "shard-0000003.jsonl", "shard-0000004.jsonl"],
    ]  # fmt: skip
    for job, arguments in zip(jobs, service.created, strict=True):
        assert arguments == {
            "jobName": job.name,
            "roleArn": ROLE,
            "clientRequestToken": job.token,
            "modelId": settings.embedding.model_id,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
            "timeoutDurationInHours": 24,
        }
    assert [(o.shard, o.units, o.embedded, o.quarantined) for o in outcome.shards] == [
        (1, 3, 3, 0),
        (2, 3, 3, 0),
        (3, 3, 3, 0),
        (4, 2, 2, 0),
    ]
    assert _keys(s3, f"{settings.batch_inference.input_uri}/{run_id}/") == []


def test_a_last_job_below_the_minimum_is_left_on_demand_and_its_inputs_removed(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    s3 = aws_environment.client("s3")
    settings = _settings(tmp_path, "tail", min_records=6, max_records=7)
    run_id = _run_id()
    _planned(settings, _notes(tmp_path / "corpus", 11), run_id, s3)
    service = ScriptedS3Batch(s3)

    outcome = embedded_by_batch(settings, run_id, service=service, clock=SimulatedClock())

    # Shards 1-2 make a job of 6; shards 3-4 hold 5 records, fewer than a job takes.
    jobs = BatchLedger(CheckpointStore(settings.store), run_id).jobs()
    assert [(job.shards, job.records) for job in jobs] == [((1, 2), 6)]
    assert len(service.created) == 1
    assert outcome.on_demand == (3, 4)
    assert BatchLedger(CheckpointStore(settings.store), run_id).cut() == BatchCut(1, (3, 4))
    assert [o.shard for o in outcome.shards] == [1, 2]
    assert [_is_checkpointed(settings, run_id, shard) for shard in (1, 2, 3, 4)] == [
        True,
        True,
        False,
        False,
    ]
    assert _keys(s3, f"{settings.batch_inference.input_uri}/{run_id}/") == []


def test_a_run_with_fewer_units_than_a_job_takes_makes_no_job_and_leaves_every_shard_on_demand(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    s3 = aws_environment.client("s3")
    settings = _settings(tmp_path, "small", min_records=12, max_records=20)
    run_id = _run_id()
    _planned(settings, _notes(tmp_path / "corpus", 11), run_id, s3)
    service = ScriptedS3Batch(s3)

    outcome = embedded_by_batch(settings, run_id, service=service, clock=SimulatedClock())

    assert service.created == []
    assert (outcome.jobs, outcome.created, outcome.shards) == (0, 0, ())
    assert outcome.on_demand == (1, 2, 3, 4)
    assert BatchLedger(CheckpointStore(settings.store), run_id).jobs() == []
    assert not any(_is_checkpointed(settings, run_id, shard) for shard in (1, 2, 3, 4))
    assert _keys(s3, f"{settings.batch_inference.input_uri}/{run_id}/") == []


# -- collection ------------------------------------------------------------------------------


def test_a_collected_shard_holds_the_rows_invoke_model_gives_the_same_units(
    batch_stand_in: Emulator, tmp_path: Path
) -> None:
    s3 = batch_stand_in.client("s3")
    corpus = _mixed_corpus(tmp_path / "corpus")
    run_id = _run_id()
    batched = _settings(tmp_path, "batch")
    shards = _planned(batched, corpus, run_id, s3)
    on_demand = _settings(tmp_path, "invoke")
    assert _planned(on_demand, corpus, run_id, s3) == shards

    outcome = embedded_by_batch(batched, run_id, service=_bedrock(batch_stand_in))
    expected = [embedded_shard(on_demand, run_id, shard) for shard in range(1, shards + 1)]

    assert _units_per_shard(batched, run_id, shards) == _units_per_shard(on_demand, run_id, shards)
    assert outcome.on_demand == ()
    assert outcome.jobs == outcome.collected == 2
    assert [(o.shard, o.units, o.embedded, o.quarantined) for o in outcome.shards] == [
        (o.shard, o.units, o.embedded, o.quarantined) for o in expected
    ]
    for shard in range(1, shards + 1):
        assert _embeddings(batched, run_id, shard) == _embeddings(on_demand, run_id, shard)
        assert _failures(batched, run_id, shard) == _failures(on_demand, run_id, shard)
    refused = [row for s in range(1, shards + 1) for row in _failures(batched, run_id, s)]
    assert [(row["unit_key"], row["stage"]) for row in refused] == [("broken.png", "prepare")]
    assert sum(len(_embeddings(batched, run_id, s)) for s in range(1, shards + 1)) == 14


@pytest.mark.parametrize(
    ("status", "unreached", "with_output"),
    [
        ("Completed", "batch_record_missing", True),
        ("PartiallyCompleted", "batch_record_missing", True),
        ("Stopped", "batch_job_stopped", True),
        ("Expired", "batch_job_expired", False),
        ("Failed", "batch_job_failed", False),
    ],
)
def test_an_ended_job_quarantines_each_unit_it_has_no_vector_for_with_the_reason(
    aws_environment: Emulator, tmp_path: Path, status: str, unreached: str, with_output: bool
) -> None:
    s3 = aws_environment.client("s3")
    settings = _settings(tmp_path, "ended", min_records=4, max_records=10)
    run_id = _run_id()
    shards = _planned(settings, _notes(tmp_path / "corpus", 6), run_id, s3)
    keys = _units_per_shard(settings, run_id, shards)
    message = f"The job ended {status} after 3 of 6 records."
    service = ScriptedS3Batch(
        s3,
        status=status,
        message=message,
        write_output=with_output,
        answers={
            record_id(1, 1): Answer(400, "Malformed input request: the text is not valid"),
            record_id(2, 1): Answer(429, "Too many requests, please wait"),
            record_id(1, 2): Answer(missing=True),
            record_id(2, 2): Answer(missing=True),
        },
        # Lines no record of this run wrote are passed over.
        extra_lines=(b"this is not json\n", b'{"recordId": "someone-else", "modelOutput": {}}\n'),
    )

    outcome = embedded_by_batch(settings, run_id, service=service, clock=SimulatedClock())

    [job] = BatchLedger(CheckpointStore(settings.store), run_id).jobs()
    assert (job.status, job.service_status, job.message) == ("collected", status, message)
    missing = f"batch job {job.name} ended {status}: {message}; it has no result for this unit"
    codes: dict[str, tuple[str, str]] = {}
    for shard in (1, 2):
        for row in _failures(settings, run_id, shard):
            assert row["stage"] == "embed"
            codes[row["unit_key"]] = (row["code"], row["message"])
    if with_output:
        assert codes == {
            keys[0][1]: ("ValidationException", "Malformed input request: the text is not valid"),
            keys[1][1]: ("ThrottlingException", "Too many requests, please wait"),
            keys[0][2]: (unreached, missing),
            keys[1][2]: (unreached, missing),
        }
        for shard in (1, 2):
            [row] = _embeddings(settings, run_id, shard)
            assert row["key"] == keys[shard - 1][0]
            assert row["embedding"] == _vector(record_id(shard, 0))
        assert [(o.units, o.embedded, o.quarantined) for o in outcome.shards] == [(3, 1, 2)] * 2
        assert (job.embedded, job.quarantined) == (2, 4)
    else:
        assert codes == {key: (unreached, missing) for key in keys[0] + keys[1]}
        assert [(o.units, o.embedded, o.quarantined) for o in outcome.shards] == [(3, 0, 3)] * 2
        assert (job.embedded, job.quarantined) == (0, 6)
    assert _keys(s3, f"{settings.batch_inference.input_uri}/{run_id}/") == []


# -- reruns ----------------------------------------------------------------------------------


def test_a_second_call_after_every_job_is_collected_creates_no_job(
    batch_stand_in: Emulator, tmp_path: Path
) -> None:
    s3 = batch_stand_in.client("s3")
    settings = _settings(tmp_path, "again")
    run_id = _run_id()
    _planned(settings, _notes(tmp_path / "corpus", 5), run_id, s3)
    first = embedded_by_batch(settings, run_id, service=_bedrock(batch_stand_in))
    assert (first.created, first.collected) == (1, 1)
    assert _calls(batch_stand_in, "CreateModelInvocationJob") == 1
    checkpoints = [_embeddings(settings, run_id, shard) for shard in (1, 2)]
    batch_stand_in.reset_stats()

    again = embedded_by_batch(settings, run_id, service=_bedrock(batch_stand_in))

    assert _calls(batch_stand_in, "CreateModelInvocationJob") == 0
    assert _calls(batch_stand_in, "GetModelInvocationJob") == 0
    assert (again.jobs, again.created, again.resumed, again.collected) == (1, 0, 0, 1)
    assert again.shards == first.shards
    assert [_embeddings(settings, run_id, shard) for shard in (1, 2)] == checkpoints


def test_a_run_killed_before_it_heard_its_job_was_created_gets_the_same_job_on_rerun(
    batch_stand_in: Emulator, tmp_path: Path
) -> None:
    s3 = batch_stand_in.client("s3")
    settings = _settings(tmp_path, "killed")
    run_id = _run_id()
    _planned(settings, _notes(tmp_path / "corpus", 5), run_id, s3)
    dying = KilledAfterCreating(_bedrock(batch_stand_in))
    with pytest.raises(SimulatedKill):
        embedded_by_batch(settings, run_id, service=dying)
    [recorded] = BatchLedger(CheckpointStore(settings.store), run_id).jobs()
    assert (recorded.status, recorded.job_arn) == ("recorded", "")

    outcome = embedded_by_batch(settings, run_id, service=_bedrock(batch_stand_in))

    [job] = BatchLedger(CheckpointStore(settings.store), run_id).jobs()
    assert job.token == recorded.token
    assert job.job_arn == dying.arns[0]
    assert _calls(batch_stand_in, "CreateModelInvocationJob") == 2
    listed = batch_stand_in.client("bedrock").list_model_invocation_jobs(nameContains=run_id)
    assert [summary["jobArn"] for summary in listed["invocationJobSummaries"]] == [job.job_arn]
    assert (job.status, job.service_status) == ("collected", "Completed")
    assert (outcome.created, outcome.collected) == (1, 1)
    assert [(o.units, o.embedded) for o in outcome.shards] == [(3, 3), (2, 2)]


def test_a_run_with_the_longest_run_id_allowed_still_creates_its_job(
    batch_stand_in: Emulator, tmp_path: Path
) -> None:
    s3 = batch_stand_in.client("s3")
    settings = _settings(tmp_path, "long")
    run_id = f"{_run_id()}-" + "x" * 40  # 57 characters; run ids may have 63
    _planned(settings, _notes(tmp_path / "corpus", 5), run_id, s3)

    outcome = embedded_by_batch(settings, run_id, service=_bedrock(batch_stand_in))

    assert (outcome.created, outcome.collected) == (1, 1)
