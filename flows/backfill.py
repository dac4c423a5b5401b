"""The backfill flow: a source (a manifest, a slice of one, a prefix or directory, a date range
of modification times) cut into partitions, each re-embedded by a run of its own.

    partition-source ──► novaflow-reembed × N ──► novaflow-evaluate ──► switch
                         (subflows, one after        (subflow, once)       (only if asked,
                         another; partition k is                           complete and
                         run <backfill_id>-p0000k)                         passed)

Run it with ``novaflow backfill`` or deploy it. Partitions run one at a time: each run commits
the index's state, which the next one plans against, and each run's shards already fill the
throughput settings. A partition's run plans no removals (it covers part of the corpus only),
so the items of other partitions, and of the index outside the backfill, stay. A backfill
started again with the same id reuses its partitions, skips those completed, resumes the one
that was stopped shard by shard, and runs again those that failed; the evaluation runs once,
when every partition has completed. Into a new index (another index name, dimension or
model), the old index is never written; ``switch`` then makes the new one live, and only once
it is complete and its evaluation passed.
"""

from __future__ import annotations

import time
from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.evaluate import EvaluateParameters, evaluate
from flows.reembed import ReembedParameters, reembed_flow
from tasks.aws_clients import s3_client
from tasks.backfill.outcomes import (
    EvaluationOutcome,
    PartitionOutcome,
    evaluation_outcome,
    needs_evaluation,
    partition_outcome,
    partitions_to_run,
    recorded_evaluation,
    recorded_partition_outcome,
)
from tasks.backfill.partitions import PartitionSet, partitioned_source
from tasks.backfill.records import (
    BACKFILL_ID_PATTERN,
    BackfillRecord,
    as_utc,
    new_backfill_record,
    partition_settings,
    record_partition_run,
    recorded_backfill,
    store_uri,
)
from tasks.backfill.summary import (
    BackfillSummary,
    backfill_summary,
    partition_line,
    summary_lines,
    summary_markdown,
)
from tasks.backfill.switch import switch_refusal, switched_index
from tasks.corpus.source import CorpusSource
from tasks.records import new_run_id
from tasks.runs.lease import HeldLease, held_lease
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore


class BackfillParameters(BaseModel):
    """What to backfill and how: the source (a manifest, or a directory / ``s3://`` prefix to
    crawl, bounded by ``root``), rows ``row_start`` (0-based, inclusive) to ``row_stop``
    (exclusive) of it, files modified at or after ``modified_after`` and before
    ``modified_before`` (naive times are UTC), ``partition_size`` rows per partition, and the
    target in ``settings`` (store, index, embedding model and dimension). ``partitions`` runs
    only the partitions named (a failed one, alone); ``switch`` makes the target index the
    live one once the backfill completed and its evaluation passed."""

    model_config = ConfigDict(frozen=True)

    backfill_id: str = Field(default_factory=new_run_id, pattern=BACKFILL_ID_PATTERN)
    manifest: str | None = None
    corpus: str | None = None
    root: str | None = None
    row_start: int = Field(0, ge=0)
    row_stop: int | None = Field(None, ge=1)
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    partition_size: int = Field(10_000, ge=1, le=1_000_000)
    partitions: tuple[int, ...] = ()
    switch: bool = False
    settings: NovaflowSettings = Field(default_factory=NovaflowSettings)

    @field_validator("modified_after", "modified_before")
    @classmethod
    def _utc(cls, moment: datetime | None) -> datetime | None:
        return None if moment is None else as_utc(moment)

    @model_validator(mode="after")
    def _consistent(self) -> BackfillParameters:
        CorpusSource(self.manifest, self.corpus, self.root)
        if self.row_stop is not None and self.row_stop <= self.row_start:
            raise ValueError(f"row_stop ({self.row_stop}) must be above row_start")
        after, before = self.modified_after, self.modified_before
        if after is not None and before is not None and before <= after:
            raise ValueError("modified_before must be later than modified_after")
        return self


class BackfillFailedError(RuntimeError):
    """A partition failed, the evaluation did not pass, or the switch asked for was refused
    (the summary is written first and names which)."""


@task(name="partition-source")
def partition_source(store_root: str, record: BackfillRecord) -> PartitionSet:
    """Cut the backfill's source into partition manifests (once; read back when cut before)."""
    return partitioned_source(CheckpointStore(store_root), record, s3_client)


@flow(name="novaflow-backfill", validate_parameters=True)
def backfill(params: BackfillParameters) -> BackfillSummary:
    """Backfill the source into the index of ``params.settings``, partition by partition;
    returns the backfill's summary (also in ``backfills/<backfill_id>/summary.json``).

    The backfill holds its own lease throughout (a second process on the same backfill is
    refused, naming this one) and records what it was asked to do before any work."""
    store = CheckpointStore(params.settings.store)
    backfill_id = params.backfill_id
    location = store_uri(store, store.backfill_lease_path(backfill_id))
    with held_lease(location, backfill_id) as lease:
        record = recorded_backfill(store, backfill_record(params))
        return _attempt(params, record, lease)


def backfill_record(params: BackfillParameters) -> BackfillRecord:
    """The record of a backfill starting now with ``params``."""
    return new_backfill_record(
        params.backfill_id,
        manifest=params.manifest,
        corpus=params.corpus,
        root=params.root,
        row_start=params.row_start,
        row_stop=params.row_stop,
        modified_after=params.modified_after,
        modified_before=params.modified_before,
        partition_size=params.partition_size,
        settings=params.settings,
    )


def _attempt(
    params: BackfillParameters, record: BackfillRecord, lease: HeldLease
) -> BackfillSummary:
    logger = get_run_logger()
    started = time.monotonic()
    settings, backfill_id = params.settings, params.backfill_id
    store = CheckpointStore(settings.store)
    rows = partition_source(settings.store, record)
    logger.info("backfill %s: %s", backfill_id, rows.to_json())

    todo = partitions_to_run(store, backfill_id, rows.partitions, params.partitions)
    completed = {
        number for number in range(1, rows.partitions + 1) if _completed(store, backfill_id, number)
    }
    already_done = tuple(sorted(completed - set(todo)))
    progress = create_progress_artifact(
        _percent(len(completed), rows.partitions),
        key=f"novaflow-backfill-{backfill_id}"[:64],
        description="partitions completed",
    )
    ran: list[int] = []
    for number in todo:
        lease.raise_if_lost()  # another process took the backfill over: stop before doing more
        outcome = _partition(store, record, settings, number)
        ran.append(number)
        if outcome.completed:
            completed.add(number)
        else:  # a partition rerun by name can fail where it once completed
            completed.discard(number)
        logger.info(partition_line(outcome, rows.partitions))
        update_progress_artifact(progress, _percent(len(completed), rows.partitions))

    partitions_done = len(completed) == rows.partitions
    evaluation = evaluation_outcome(store, backfill_id)
    if partitions_done and needs_evaluation(bool(ran), evaluation, settings.evaluation.enabled):
        evaluation = _evaluation(store, settings, backfill_id, rows.partitions)
    switch, refused = _switch(params, store, partitions_done, evaluation)
    summary = backfill_summary(
        store, backfill_id, rows, tuple(ran), already_done,
        evaluation if partitions_done else None, switch, time.monotonic() - started,
    )  # fmt: skip
    create_markdown_artifact(
        summary_markdown(summary),
        key=f"novaflow-backfill-summary-{backfill_id}"[:64],
        description="novaflow backfill summary",
    )
    for line in summary_lines(summary):
        logger.info(line)
    problems = _problems(summary, refused)
    if problems:
        raise BackfillFailedError("; ".join(problems))
    return summary


def _problems(summary: BackfillSummary, switch_refused: bool) -> list[str]:
    """Why this attempt ends Failed: partitions it ran that failed, an evaluation that did not
    pass, a switch asked for and refused."""
    problems = []
    failed_now = [number for number in summary.ran if number in summary.failed]
    if failed_now:
        problems.append(
            f"partition(s) {failed_now} failed; the others went on. Rerun one alone with "
            f"`novaflow backfill --backfill-id {summary.backfill_id} --partition "
            f"{failed_now[0]}`, or every unfinished one by starting the backfill again"
        )
    evaluation = summary.evaluation
    if evaluation is not None and evaluation.status == "failed":
        problems.append(f"evaluation: {evaluation.message}")
    if switch_refused:
        problems.append(f"switch {summary.switch}")
    return problems


def _partition(
    store: CheckpointStore, record: BackfillRecord, settings: NovaflowSettings, number: int
) -> PartitionOutcome:
    """Run partition ``number`` as a subflow and record how it ended; a failed run is recorded,
    not raised, so the backfill goes on with the other partitions."""
    manifest = store_uri(store, store.partition_manifest_path(record.backfill_id, number))
    # Recorded before the run starts: its plan then removes nothing outside the partition.
    run_id = record_partition_run(store, record.backfill_id, number, manifest)
    partition = partition_settings(settings)
    state = reembed_flow(partition)(
        ReembedParameters(run_id=run_id, manifest=manifest, root=record.root, settings=partition),
        return_state=True,
    )
    error = None if state.is_completed() else (state.message or f"run ended {state.name}")
    return recorded_partition_outcome(store, record.backfill_id, number, run_id, error)


def _evaluation(
    store: CheckpointStore, settings: NovaflowSettings, backfill_id: str, partitions: int
) -> EvaluationOutcome:
    """Evaluate the whole index once, its report under the backfill's id, and record how that
    ended."""
    if not settings.evaluation.enabled:
        return recorded_evaluation(store, backfill_id, EvaluationOutcome("skipped"))
    if partitions == 0:
        skipped = EvaluationOutcome("skipped", "the selection was empty: nothing was backfilled")
        return recorded_evaluation(store, backfill_id, skipped)
    state = evaluate(EvaluateParameters(run_id=backfill_id, settings=settings), return_state=True)
    html = store.report_path(backfill_id, "report.html")
    report = store_uri(store, html) if store.exists(html) else ""
    if state.is_completed():
        outcome = EvaluationOutcome("passed", report=report)
    else:
        outcome = EvaluationOutcome("failed", state.message or "failed", report)
    return recorded_evaluation(store, backfill_id, outcome)


def _switch(
    params: BackfillParameters,
    store: CheckpointStore,
    partitions_done: bool,
    evaluation: EvaluationOutcome | None,
) -> tuple[str, bool]:
    """What became of the switch (a line for the summary), and whether it was refused."""
    settings = params.settings
    target = f"{settings.index.vector_bucket}/{settings.index.index}"
    if not params.switch:
        return f"not asked (the live index is unchanged; --switch makes {target} live)", False
    refusal = switch_refusal(partitions_done, evaluation, settings.evaluation.enabled)
    if refusal is not None or evaluation is None:
        return f"refused: {refusal}; the live index is unchanged", True
    pointer, changed = switched_index(store, settings, params.backfill_id, evaluation.report)
    if not changed:
        return f"{target} was already the live index", False
    was = pointer.previous
    before = f"{was['vector_bucket']}/{was['index']}" if was is not None else "none recorded"
    where = store_uri(store, store.active_index_path())
    return f"{target} is now the live index (was {before}; {where})", False


def _completed(store: CheckpointStore, backfill_id: str, number: int) -> bool:
    outcome = partition_outcome(store, backfill_id, number)
    return outcome is not None and outcome.completed


def _percent(done: int, total: int) -> float:
    return 100.0 if total == 0 else 100.0 * done / total
