"""Stage 2c of a run with batch inference on: its sync shards embedded by Bedrock batch jobs.

Shard by shard, in order, the units' model inputs are written as JSONL (``tasks.batch.inputs``)
and uploaded to ``<input_uri>/<run_id>/job-<n>/``; whole shards fill a job up to the per-job
record and byte limits. A full job is recorded in the ledger, then created (at most
``max_jobs_in_flight`` at a time) and polled (``tasks.batch.runner``). Shards of a last job too
small for the service's minimum are left to InvokeModel (``BatchCut.on_demand``).

When a job ends, however it ends, each of its shards is checkpointed exactly as an InvokeModel
shard is — ``embeddings/run=<id>/shard-<n>.parquet`` (the same rows: a record's ``modelOutput``
is InvokeModel's answer), its failures and ``outcomes/shard-<n>.json`` — so loading, committing
and a restarted run treat it like any other shard. A unit the job did not embed is quarantined
with the service's error (``ValidationException``… for a record it refused) or the job's end
(``batch_job_stopped``, ``batch_job_expired``, ``batch_job_failed``, ``batch_record_missing``:
retried by the next run). A job's input folder is removed once it is collected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import schemas
from tasks.aws_clients import bedrock_client, s3_client
from tasks.batch.inputs import shard_input
from tasks.batch.ledger import BatchCut, BatchJob, BatchLedger
from tasks.batch.results import OutputLineError, RecordResult, record_result
from tasks.batch.runner import BatchJobRunner
from tasks.batch.service import BatchJobState, BatchService, BedrockBatchService, job_output_folder
from tasks.media.unit_inputs import shard_renderer
from tasks.outcomes import BatchOutcome, PlanTotals, ShardOutcome
from tasks.polling import Clock
from tasks.records import Failure, Unit
from tasks.s3_objects import ensured_bucket, joined_s3_uri, object_lines, split_s3_uri
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore
from tasks.tables import embedding_rows, failures_table, units_from_table

logger = logging.getLogger(__name__)

_OUT_FILE = re.compile(r"(?:^|/)shard-(\d{7})(?:\.\d+)?\.jsonl\.out$")
# How a job's end reads for the units it did not embed (all retried by the next run).
_UNREACHED_CODES = {
    "Completed": "batch_record_missing",
    "PartiallyCompleted": "batch_record_missing",
    "Failed": "batch_job_failed",
    "Stopped": "batch_job_stopped",
    "Expired": "batch_job_expired",
}


def job_token(run_id: str, number: int, shards: tuple[int, ...], config_hash: str) -> str:
    """The job's ``clientRequestToken``: the same for the same job of the same run, so a
    creation repeated after a crash gets the job the first one made."""
    text = f"{run_id}|{number}|{shards[0]}-{shards[-1]}|{config_hash}"
    return hashlib.sha256(text.encode()).hexdigest()[:64]


def job_name(run_id: str, number: int) -> str:
    """The job's name: readable, unique to the run and job, and within Bedrock's 63
    characters whatever the run id's length (a long one is cut and told apart by a hash)."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"novaflow-{run_id[:39]}-{digest}-{number:05d}"


class _BatchStage:
    """The S3 and checkpoint side of one run's batch jobs."""

    def __init__(self, settings: NovaflowSettings, run_id: str, store: CheckpointStore) -> None:
        self.settings = settings
        self.limits = settings.batch_inference
        self.run_id = run_id
        self.store = store
        self.s3 = s3_client()
        self._buckets_checked = False

    # -- shards --------------------------------------------------------------------------------

    def shard_count(self) -> int:
        """How many shards the run's plan cut."""
        totals = self.store.read_text(self.store.plan_totals_path(self.run_id))
        return PlanTotals.from_json(json.loads(totals)).shards

    def units(self, shard: int) -> list[Unit]:
        path = self.store.shard_units_path(self.run_id, shard)
        return units_from_table(self.store.read_table(path, schemas.UNITS))

    def unit_count(self, shard: int) -> int:
        path = self.store.shard_units_path(self.run_id, shard)
        return pq.ParquetFile(path, filesystem=self.store.filesystem).metadata.num_rows

    def done(self, shard: int) -> bool:
        store, run_id = self.store, self.run_id
        return store.exists(store.embeddings_path(run_id, shard)) and store.exists(
            store.shard_outcome_path(run_id, shard)
        )

    def outcome(self, shard: int) -> ShardOutcome:
        path = self.store.shard_outcome_path(self.run_id, shard)
        return ShardOutcome(**json.loads(self.store.read_text(path)))

    def checkpoint(
        self, shard: int, units: int, rows: list[dict[str, object]], failures: list[Failure]
    ) -> ShardOutcome:
        """Write the shard's checkpoint as an InvokeModel shard's: failures, outcome, then the
        embeddings file, whose presence marks the shard done."""
        store, run_id = self.store, self.run_id
        outcome = ShardOutcome(shard, units, units - len(failures), len(failures), 0, 0, 0)
        store.write_table(store.shard_failures_path(run_id, shard), failures_table(failures))
        store.write_text(store.shard_outcome_path(run_id, shard), json.dumps(asdict(outcome)))
        schema = schemas.embeddings_schema(self.settings.embedding.dimension)
        store.write_table(
            store.embeddings_path(run_id, shard), pa.Table.from_pylist(rows, schema=schema)
        )
        return outcome

    def refused(self, shard: int) -> list[Failure]:
        path = self.store.shard_failures_path(self.run_id, shard)
        if not self.store.exists(path):
            return []
        return [Failure(**row) for row in self.store.read_table(path, schemas.FAILURES).to_pylist()]

    # -- inputs --------------------------------------------------------------------------------

    def job_folder(self, number: int) -> str:
        return joined_s3_uri(self.limits.input_uri, self.run_id, f"job-{number:05d}") + "/"

    def _ensure_buckets(self) -> None:
        if not self._buckets_checked:
            create = self.settings.backend == "local"  # the stand-in starts empty
            hint = "NOVAFLOW_BATCH_INFERENCE__INPUT_URI / NOVAFLOW_BATCH_INFERENCE__OUTPUT_URI"
            ensured_bucket(self.s3, self.limits.input_uri, create, hint)
            ensured_bucket(self.s3, self.limits.output_uri, create, hint)
            self._buckets_checked = True

    def _upload(self, number: int, files: tuple[Path, ...]) -> None:
        self._ensure_buckets()
        bucket, prefix = split_s3_uri(self.job_folder(number))
        for path in files:
            self.s3.upload_file(str(path), bucket, prefix + path.name)
            path.unlink()

    def remove_inputs(self, number: int) -> None:
        bucket, prefix = split_s3_uri(self.job_folder(number))
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def new_job(self, number: int, shards: list[int], records: int, size: int) -> BatchJob:
        config_hash = self.settings.embedding.config_hash()
        return BatchJob(
            number=number,
            shards=tuple(shards),
            records=records,
            input_bytes=size,
            token=job_token(self.run_id, number, tuple(shards), config_hash),
            name=job_name(self.run_id, number),
            input_uri=self.job_folder(number),
            output_uri=joined_s3_uri(self.limits.output_uri, self.run_id, f"job-{number:05d}"),
        )

    def write_inputs(
        self, add: Callable[[BatchJob], None], known: list[BatchJob], shards: int
    ) -> BatchCut:
        """Write the inputs of every shard not yet in a job, recording (and handing ``add``)
        each job as it fills; returns the cut."""
        limits = self.limits
        first = max((shard for job in known for shard in job.shards), default=0) + 1
        number = max((job.number for job in known), default=0) + 1
        pending = [shard for shard in range(first, shards + 1) if not self.done(shard)]
        if not known and sum(map(self.unit_count, pending)) < limits.min_records_per_job:
            return BatchCut(0, tuple(pending))  # not enough for one job: all on demand
        open_shards: list[int] = []
        records = size = 0
        with tempfile.TemporaryDirectory(prefix="novaflow-batch-") as scratch:
            for shard in pending:
                units = self.units(shard)
                processes = self.settings.throughput.render_processes
                with shard_renderer(units, processes, self.settings.embedding) as renderer:
                    written = shard_input(units, shard, self.settings, renderer, Path(scratch))
                if written.records == 0:  # every unit refused: nothing to send
                    self.checkpoint(shard, len(units), [], list(written.refused))
                    continue
                self._fits_a_job(shard, written.records, written.input_bytes)
                if open_shards and (
                    records + written.records > limits.max_records_per_job
                    or size + written.input_bytes > limits.max_job_bytes
                ):
                    add(self.new_job(number, open_shards, records, size))
                    number, open_shards, records, size = number + 1, [], 0, 0
                # The refusals wait beside the shard's inputs until its job is collected.
                failures_path = self.store.shard_failures_path(self.run_id, shard)
                self.store.write_table(failures_path, failures_table(written.refused))
                self._upload(number, written.files)
                open_shards.append(shard)
                records, size = records + written.records, size + written.input_bytes
        if open_shards and records < limits.min_records_per_job:
            self.remove_inputs(number)  # the last job is too small: its shards go on demand
            return BatchCut(number - 1, tuple(open_shards))
        if open_shards:
            add(self.new_job(number, open_shards, records, size))
            return BatchCut(number, ())
        return BatchCut(number - 1, ())

    def _fits_a_job(self, shard: int, records: int, size: int) -> None:
        if records > self.limits.max_records_per_job or size > self.limits.max_job_bytes:
            raise ValueError(
                f"shard {shard} alone holds {records:,} records in {size:,} bytes, more than "
                f"one batch job takes ({self.limits.max_records_per_job:,} records, "
                f"{self.limits.max_job_bytes:,} bytes): lower throughput.shard_size"
            )

    # -- jobs ----------------------------------------------------------------------------------

    def create_arguments(self, job: BatchJob) -> Mapping[str, Any]:
        return {
            "jobName": job.name,
            "roleArn": self.settings.batch_role_arn(),
            "clientRequestToken": job.token,
            "modelId": self.settings.embedding.model_id,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
            "timeoutDurationInHours": self.limits.timeout_hours,
        }

    def collect(self, job: BatchJob, state: BatchJobState) -> BatchJob:
        """Checkpoint every shard of the ended ``job``; returns it with its counts."""
        folder = job_output_folder(job.output_uri, job.job_arn)
        out_files = self._out_files(folder)
        embedded = quarantined = 0
        for shard in job.shards:
            if not self.done(shard):
                self._collect_shard(job, state, shard, out_files.get(shard, []))
            outcome = self.outcome(shard)
            embedded, quarantined = embedded + outcome.embedded, quarantined + outcome.quarantined
        self.remove_inputs(job.number)
        return replace(job, embedded=embedded, quarantined=quarantined)

    def _out_files(self, folder: str) -> dict[int, list[str]]:
        bucket, prefix = split_s3_uri(folder)
        found: dict[int, list[str]] = defaultdict(list)
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                match = _OUT_FILE.search(entry["Key"])
                if match:
                    found[int(match.group(1))].append(f"s3://{bucket}/{entry['Key']}")
        return {shard: sorted(uris) for shard, uris in found.items()}

    def _collect_shard(
        self, job: BatchJob, state: BatchJobState, shard: int, out_files: list[str]
    ) -> None:
        units = self.units(shard)
        dimension = self.settings.embedding.dimension
        results: dict[int, RecordResult] = {}
        for uri in out_files:
            for line in object_lines(self.s3, uri):
                if not line.strip():
                    continue
                try:
                    result = record_result(line, dimension)
                except OutputLineError as err:
                    logger.warning("batch job %d, %s: a line was skipped: %s", job.number, uri, err)
                    continue
                if result.shard == shard:
                    results[result.position] = result
        failures = self.refused(shard)
        refused = {failure.unit_key for failure in failures}
        unreached = _UNREACHED_CODES.get(state.status, "batch_record_missing")
        why = f"batch job {job.name} ended {state.status}" + (
            f": {state.message}" if state.message else ""
        )
        config_hash = self.settings.embedding.config_hash()
        rows: list[dict[str, object]] = []
        for position, unit in enumerate(units):
            if unit.key in refused:
                continue
            result = results.get(position)
            if result is None:
                code, message = unreached, f"{why}; it has no result for this unit"
            elif result.code:
                code, message = result.code, result.message
            else:
                rows.extend(embedding_rows(unit, result.vectors, config_hash))
                continue
            failures.append(
                Failure(unit.item_id, unit.uri, "embed", code, message, unit_key=unit.key)
            )
        self.checkpoint(shard, len(units), rows, failures)


def _bedrock_batch() -> BatchService:
    # Creations keep botocore's retries; status calls have none, so the runner sees every
    # throttling answer and slows its polling down itself.
    return BedrockBatchService(bedrock_client(), bedrock_client(max_attempts=0))


def embedded_by_batch(
    settings: NovaflowSettings,
    run_id: str,
    service: BatchService | None = None,
    clock: Clock | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchOutcome:
    """Embed the run's sync shards with batch inference jobs, resuming its ledger; returns what
    the jobs did and which shards are left to InvokeModel (also in ``runs/<id>/batch/``)."""
    store = CheckpointStore(settings.store)
    ledger = BatchLedger(store, run_id)
    stage = _BatchStage(settings, run_id, store)
    runner = BatchJobRunner(
        ledger,
        service or _bedrock_batch(),
        settings.batch_inference,
        stage.create_arguments,
        stage.collect,
        clock=clock,
        seed=int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16),
        progress=progress,
    )
    shards = stage.shard_count()
    known = ledger.jobs()
    for job in known:
        runner.add(job)
    cut = ledger.cut()
    if cut is None:
        cut = stage.write_inputs(lambda job: runner.add(ledger.record(job)), known, shards)
        ledger.record_cut(cut)
    jobs = runner.run()
    on_demand = set(cut.on_demand)
    outcome = BatchOutcome(
        jobs=len(jobs),
        created=runner.created,
        resumed=runner.resumed,
        collected=sum(job.status == "collected" for job in jobs),
        records=sum(job.records for job in jobs),
        status_calls=runner.status_calls,
        throttled_status_calls=runner.throttled_status_calls,
        # Every shard not left on demand is checkpointed now: by its job, or at once when
        # every one of its units was refused before any job.
        shards=tuple(
            stage.outcome(shard) for shard in range(1, shards + 1) if shard not in on_demand
        ),
        on_demand=cut.on_demand,
    )
    logger.info(
        "batch inference: %d jobs (%d created now, %d resumed), %d records; %d shards on demand",
        outcome.jobs, outcome.created, outcome.resumed, outcome.records, len(cut.on_demand),
    )  # fmt: skip
    return outcome


def quarantined_batch_shards(
    settings: NovaflowSettings, run_id: str, message: str
) -> list[ShardOutcome]:
    """The barrier's decision when the batch stage failed for good: the shards its jobs
    checkpointed keep their outcomes; every unit of the others is quarantined
    (``batch_stage_failed``, retried by the next run; a rerun with this run id resumes the
    jobs instead)."""
    store = CheckpointStore(settings.store)
    stage = _BatchStage(settings, run_id, store)
    outcomes = []
    for shard in range(1, stage.shard_count() + 1):
        if stage.done(shard):
            outcomes.append(stage.outcome(shard))
            continue
        units = stage.units(shard)
        failures = [
            Failure(u.item_id, u.uri, "embed", "batch_stage_failed", message, unit_key=u.key)
            for u in units
        ]
        store.write_table(store.shard_failures_path(run_id, shard), failures_table(failures))
        outcomes.append(ShardOutcome(shard, len(units), 0, len(units), 0, 0, 0))
    return outcomes
