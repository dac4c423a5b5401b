"""The async job ledger: every job a run submits, recorded before it is submitted.

One record per (unit, attempt). A job is written ``submitting`` with its deterministic
``clientRequestToken`` before StartAsyncInvoke is called, then ``running`` with its
``invocationArn``, then ``collected`` (its segments are checkpointed), ``failed`` (an attempt the
service failed; a later attempt follows) or ``quarantined``. A run restarted with the same id
reads the ledger back and polls what it already has: a ``running`` job is polled, never submitted
again, and a ``submitting`` one is resubmitted with the same token, which Bedrock answers with
the same job.

On disk: ``jobs/<run_id>.parquet`` (the snapshot) plus ``jobs/<run_id>/log-<n>.parquet``, small
files of the records changed since, appended one per batch of changes so that a change costs a
write of its own size rather than of the whole ledger. Replaying the log over the snapshot gives
the current ledger (the highest ``sequence`` wins); ``compact`` folds the log into the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Literal

import pyarrow as pa
import pyarrow.fs as pafs

from tasks import schemas
from tasks.store import CheckpointStore

JobStatus = Literal["submitting", "running", "collected", "failed", "quarantined"]
ENDED_STATUSES: frozenset[str] = frozenset({"collected", "quarantined"})
LOG_FILES_BEFORE_COMPACTION = 64


@dataclass(frozen=True)
class JobRecord:
    """One attempt at embedding one async unit, as far as it got.

    Times are epoch seconds: ``submitted_at`` when StartAsyncInvoke answered, ``ended_at`` when
    the service says the job ended (GetAsyncInvoke's ``endTime``), ``noticed_at`` when novaflow
    saw it had. ``status_calls`` counts GetAsyncInvoke answers about this job and
    ``throttled_calls`` the status calls refused with throttling. ``code``/``message`` say why a
    job failed or was quarantined (the service's own message where it gave one).
    """

    unit_key: str
    item_id: str
    uri: str
    attempt: int
    token: str
    status: JobStatus
    input_uri: str = ""
    output_uri: str = ""
    invocation_arn: str | None = None
    submitted_at: float | None = None
    ended_at: float | None = None
    noticed_at: float | None = None
    status_calls: int = 0
    throttled_calls: int = 0
    segments_embedded: int = 0
    segments_quarantined: int = 0
    code: str = ""
    message: str = ""
    sequence: int = 0


class JobLedger:
    """The ledger of one run, read back from the store and appended to as jobs move on."""

    def __init__(self, store: CheckpointStore, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self._log_dir = store.jobs_log_dir(run_id)
        # unit key → attempt → record: the runner asks for a unit's latest attempt at every poll.
        self._records: dict[str, dict[int, JobRecord]] = {}
        self._sequence = 0
        paths = [store.jobs_path(run_id)] if store.exists(store.jobs_path(run_id)) else []
        self._log_files = store.list_files(self._log_dir)
        for path in [*paths, *self._log_files]:
            for row in store.read_table(path, schemas.JOBS).to_pylist():
                self._remember(JobRecord(**row))

    def _remember(self, record: JobRecord) -> None:
        attempts = self._records.setdefault(record.unit_key, {})
        known = attempts.get(record.attempt)
        if known is None or record.sequence > known.sequence:
            attempts[record.attempt] = record
        self._sequence = max(self._sequence, record.sequence)

    def latest(self, unit_key: str) -> JobRecord | None:
        """The newest attempt of ``unit_key``, or None if it was never recorded."""
        attempts = self._records.get(unit_key)
        return attempts[max(attempts)] if attempts else None

    def latest_by_unit(self) -> dict[str, JobRecord]:
        """The newest attempt of every unit in the ledger."""
        return {unit_key: attempts[max(attempts)] for unit_key, attempts in self._records.items()}

    def records(self) -> list[JobRecord]:
        """Every attempt of every unit, in unit then attempt order."""
        return [
            attempts[attempt]
            for _, attempts in sorted(self._records.items())
            for attempt in sorted(attempts)
        ]

    def record(self, records: Iterable[JobRecord]) -> list[JobRecord]:
        """Durably append ``records`` (one log file); returns them as stored, with sequences."""
        stored = []
        for record in records:
            self._sequence += 1
            stored.append(replace(record, sequence=self._sequence))
        if not stored:
            return []
        path = f"{self._log_dir}/log-{self._sequence:09d}.parquet"
        self._store.write_table(path, jobs_table(stored))
        self._log_files.append(path)
        for record in stored:
            self._remember(record)
        if len(self._log_files) >= LOG_FILES_BEFORE_COMPACTION:
            self.compact()
        return stored

    def remember_unwritten(self, record: JobRecord) -> None:
        """Hold ``record`` (a counter update) in memory only; the next write of the same attempt,
        or the compaction, stores it."""
        attempts = self._records.setdefault(record.unit_key, {})
        known = attempts.get(record.attempt)
        attempts[record.attempt] = replace(record, sequence=known.sequence if known else 0)

    def compact(self) -> None:
        """Fold the log into the snapshot (written first, so a crash in between loses nothing)."""
        self._store.write_table(self._store.jobs_path(self._run_id), jobs_table(self.records()))
        for path in self._log_files:
            self._store.filesystem.delete_file(path)
        self._log_files = []
        filesystem = self._store.filesystem
        log_dir = filesystem.get_file_info(self._log_dir)
        if log_dir.type == pafs.FileType.Directory and not filesystem.get_file_info(
            pafs.FileSelector(self._log_dir)
        ):
            filesystem.delete_dir(self._log_dir)


def jobs_table(records: Iterable[JobRecord]) -> pa.Table:
    """Records as a table in the ``schemas.JOBS`` layout."""
    names = [f.name for f in fields(JobRecord)]
    rows = [{name: getattr(record, name) for name in names} for record in records]
    return pa.Table.from_pylist(rows, schema=schemas.JOBS)
