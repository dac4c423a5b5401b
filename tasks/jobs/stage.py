"""Stage 2b of a run: the async units (long audio, video and text), embedded by Bedrock jobs.

Runs beside the sync shards. Each async unit becomes one job: its input is staged in S3 (local
files uploaded once, content-addressed; S3 inputs referenced in place; text always as UTF-8),
submitted, polled and collected by ``AsyncJobRunner``, which keeps the run's ledger. A collected
job's segments land in ``embeddings/run=<id>/job-<unit>.parquet`` beside the shards' files, its
failed segments in ``failures/run=<id>/job-<unit>.parquet``, so loading and committing treat them
like any other checkpoint. The stage's counts go to ``runs/<id>/outcomes/async.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa
from botocore.exceptions import ClientError

from tasks import schemas
from tasks.aws_clients import bedrock_runtime_client, s3_client
from tasks.job_ledger import ENDED_STATUSES, JobLedger, JobRecord
from tasks.jobs.results import (
    RESULT_FILE_NAME,
    ResultFormatError,
    Segment,
    SegmentFailure,
    parsed_job_result,
    parsed_segment_lines,
    result_file_names,
    segment_key,
)
from tasks.jobs.runner import AsyncJobRunner, Collected, CollectError, InputRefusedError, Submission
from tasks.jobs.service import BedrockJobService, Clock, JobService
from tasks.jobs.staging import staged_input
from tasks.local_copies import local_source
from tasks.media.facts import media_facts
from tasks.media.images import PreparationError
from tasks.media.texts import decoded_text
from tasks.nova.segmented import (
    AsyncInputError,
    client_request_token,
    start_async_invoke_arguments,
)
from tasks.outcomes import AsyncOutcome
from tasks.records import Failure, Unit, metadata_json
from tasks.s3_objects import (
    ObjectMissingError,
    S3ObjectError,
    ensured_bucket,
    first_existing,
    joined_s3_uri,
    object_lines,
    read_object,
)
from tasks.service_errors import ACCOUNT_CODES, error_code
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore, unit_digest
from tasks.tables import async_units, failures_table, vector_metadata

logger = logging.getLogger(__name__)


class _AsyncStage:
    """The S3 and checkpoint side of the runner's callbacks for one run."""

    def __init__(self, settings: NovaflowSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.store = CheckpointStore(settings.store)
        self.s3 = s3_client()
        self.buckets_checked = False

    def prepare(self, unit: Unit, attempt: int) -> Submission:
        settings = self.settings
        if not self.buckets_checked:
            create = settings.backend == "local"  # the stand-in starts empty; AWS buckets are yours
            ensured_bucket(self.s3, settings.async_jobs.staging_uri, create)
            ensured_bucket(self.s3, settings.async_jobs.output_uri, create)
            self.buckets_checked = True
        try:
            local = local_source(unit.uri, unit.fingerprint)
            if unit.kind == "text":
                media_format = None
                input_uri = self._staged_text(unit, local)
            else:
                media_format = media_facts(str(local), unit.kind).nova_format  # type: ignore[arg-type]
                input_uri = staged_input(
                    self.s3,
                    unit.uri,
                    local,
                    unit.fingerprint,
                    settings.async_jobs.staging_uri,
                    settings.async_jobs.multipart_threshold_mb * 2**20,
                )
            output_uri = joined_s3_uri(
                settings.async_jobs.output_uri, self.run_id, unit_digest(unit.key)
            )
            token = client_request_token(
                self.run_id, unit.key, unit.fingerprint, settings.embedding.config_hash(), attempt
            )
            arguments = start_async_invoke_arguments(
                unit.kind,  # type: ignore[arg-type]
                input_uri,
                media_format,
                output_uri,
                token,
                settings.embedding,
            )
        except (AsyncInputError, PreparationError) as err:
            raise InputRefusedError(err.code, str(err)) from None
        except S3ObjectError as err:
            if err.code in ("bucket_missing", "bucket_forbidden"):
                raise  # the run's configuration, not this input: stop and say so
            raise InputRefusedError(err.code, str(err)) from None
        except OSError as err:
            raise InputRefusedError("unreadable", f"{unit.uri}: {err}") from None
        return Submission(input_uri, output_uri, token, arguments)

    def _staged_text(self, unit: Unit, local: Path) -> str:
        # Nova reads async text from S3 as UTF-8, whatever the file's own encoding.
        text = decoded_text(local.read_bytes(), unit.encoding)
        with tempfile.TemporaryDirectory(prefix="novaflow-text-") as scratch:
            utf8 = Path(scratch) / Path(unit.uri).name
            utf8.write_text(text, encoding="utf-8")
            return staged_input(
                self.s3,
                str(utf8),
                utf8,
                f"{unit.fingerprint}|utf-8",
                self.settings.async_jobs.staging_uri,
                self.settings.async_jobs.multipart_threshold_mb * 2**20,
            )

    def collect(self, unit: Unit, record: JobRecord, folder: str) -> Collected:
        dimension = self.settings.embedding.dimension
        try:
            result = parsed_job_result(
                read_object(self.s3, joined_s3_uri(folder, RESULT_FILE_NAME))
            )
        except (S3ObjectError, ResultFormatError) as err:
            raise CollectError(f"{folder}: {err}") from None
        if result.dimension != dimension:
            raise CollectError(
                f"{folder}: {result.dimension}-d vectors; {dimension} were asked for"
            )
        separate = self.settings.embedding.video_embedding_mode == "AUDIO_VIDEO_SEPARATE"
        config_hash = self.settings.embedding.config_hash()
        rows: list[dict[str, object]] = []
        failures: list[Failure] = []
        for file in result.files:
            candidates = [
                joined_s3_uri(folder, name) for name in result_file_names(file.embedding_type)
            ]
            uri = file.output_file_uri or first_existing(self.s3, candidates)
            if uri is None:
                failures.append(
                    self._failure(
                        unit,
                        record,
                        f"{unit.key}#{file.embedding_type.lower()}",
                        file.failure_reason or "output_missing",
                        file.message or f"no {file.embedding_type} output file in {folder}",
                    )
                )
                continue
            try:
                for entry in parsed_segment_lines(
                    object_lines(self.s3, uri), file.embedding_type, dimension
                ):
                    key = segment_key(unit.item_id, entry, separate and unit.kind == "video")
                    key = key or f"{unit.key}#segment={entry.index}"
                    if isinstance(entry, SegmentFailure):
                        failures.append(
                            self._failure(
                                unit, record, key, entry.reason, _where(entry) + entry.message
                            )
                        )
                    else:
                        rows.append(_segment_row(unit, entry, key, config_hash))
            except ObjectMissingError as err:
                raise CollectError(f"{uri}: {err}") from None
        self.store.write_table(
            self.store.job_failures_path(self.run_id, unit.key),
            failures_table(failures),
        )
        schema = schemas.embeddings_schema(dimension)
        self.store.write_table(
            self.store.job_embeddings_path(self.run_id, unit.key),
            pa.Table.from_pylist(rows, schema=schema),
        )
        return Collected(embedded=len(rows), quarantined=len(failures))

    def quarantine(self, unit: Unit, record: JobRecord) -> None:
        failure = self._failure(unit, record, unit.key, record.code, record.message)
        self.store.write_table(
            self.store.job_failures_path(self.run_id, unit.key),
            failures_table([failure]),
        )

    @staticmethod
    def _failure(unit: Unit, record: JobRecord, key: str, code: str, message: str) -> Failure:
        return Failure(
            unit.item_id, unit.uri, "embed", code, message, unit_key=key, attempts=record.attempt
        )


def _where(entry: Segment | SegmentFailure) -> str:
    if entry.start_seconds is not None and entry.end_seconds is not None:
        return f"segment {entry.index} ({entry.start_seconds:.1f}–{entry.end_seconds:.1f} s): "
    if entry.char_start is not None and entry.char_end is not None:
        return f"segment {entry.index} (characters {entry.char_start}–{entry.char_end}): "
    return f"segment {entry.index}: "


def _segment_row(unit: Unit, segment: Segment, key: str, config_hash: str) -> dict[str, object]:
    located = replace(
        unit,
        key=key,
        start_seconds=segment.start_seconds,
        end_seconds=segment.end_seconds,
        char_start=segment.char_start,
        char_end=segment.char_end,
    )
    metadata = vector_metadata(located, segment.embedding_type)
    metadata["segment_index"] = segment.index
    return {
        "key": key,
        "item_id": unit.item_id,
        "embedding_type": segment.embedding_type,
        "embedding": segment.vector,
        "metadata_json": metadata_json(metadata),
        "config_hash": config_hash,
    }


def _bedrock_jobs() -> JobService:
    # Submissions keep botocore's retries; status calls have none, so the runner sees every
    # throttling answer and slows its polling down itself.
    return BedrockJobService(bedrock_runtime_client(2), bedrock_runtime_client(2, max_attempts=0))


def is_configuration_error(error: BaseException | None) -> bool:
    """Whether ``error`` is the run's configuration failing (a missing or forbidden bucket,
    credentials or permissions), which fails the same way however often it is retried."""
    if isinstance(error, S3ObjectError):
        return error.code in ("bucket_missing", "bucket_forbidden")
    if isinstance(error, ClientError):
        return error_code(error) in ACCOUNT_CODES
    return False


def embedded_async_units(
    settings: NovaflowSettings,
    run_id: str,
    service: JobService | None = None,
    clock: Clock | None = None,
    progress: Callable[[AsyncOutcome, int, int], None] | None = None,
) -> AsyncOutcome:
    """Embed the run's async units with Bedrock jobs, resuming its ledger; returns the counts
    (also written to ``runs/<id>/outcomes/async.json``)."""
    store = CheckpointStore(settings.store)
    units = async_units(store, run_id)
    outcome = AsyncOutcome()
    if units:
        stage = _AsyncStage(settings, run_id)
        runner = AsyncJobRunner(
            JobLedger(store, run_id),
            service or _bedrock_jobs(),
            settings.async_jobs,
            stage.prepare,
            stage.collect,
            stage.quarantine,
            clock=clock,
            seed=int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16),
            progress=progress,
        )
        outcome = runner.run(units)
    store.write_text(store.async_outcome_path(run_id), json.dumps(asdict(outcome)))
    return outcome


def quarantined_async_units(settings: NovaflowSettings, run_id: str, message: str) -> AsyncOutcome:
    """Quarantine every async unit the stage left unfinished (``async_stage_failed``, a transient
    code: the next run plans them again; a rerun with this run id resumes their jobs)."""
    store = CheckpointStore(settings.store)
    units = async_units(store, run_id)
    latest = JobLedger(store, run_id).latest_by_unit()
    collected = quarantined = embedded = segments_quarantined = 0
    for unit in units:
        record = latest.get(unit.key)
        if record is not None and record.status in ENDED_STATUSES:
            collected += record.status == "collected"
            quarantined += record.status == "quarantined"
            embedded += record.segments_embedded
            segments_quarantined += record.segments_quarantined
            continue
        failure = Failure(
            unit.item_id, unit.uri, "embed", "async_stage_failed", message, unit_key=unit.key
        )
        store.write_table(
            store.job_failures_path(run_id, unit.key),
            failures_table([failure]),
        )
        quarantined += 1
    outcome = AsyncOutcome(
        jobs=len(units),
        collected=collected,
        quarantined=quarantined,
        segments_embedded=embedded,
        segments_quarantined=segments_quarantined,
    )
    store.write_text(store.async_outcome_path(run_id), json.dumps(asdict(outcome)))
    return outcome
