"""The re-embedding flow: corpus → plan → shards embedded in parallel → index → state → summary
→ evaluation.

    plan-run ─┬─► embed-shard × N (bounded) ──┬─barrier──► load-index ──► commit-state ──► summary
              └─► embed-async (one task: every job) ┘                        ──► evaluate (subflow)

Run it with ``novaflow run`` or deploy it (see ``deployments/``). A run restarted with the same
``run_id`` reuses its plan, skips the shards already checkpointed and polls the async jobs its
ledger already has instead of submitting them again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.evaluate import EvaluateParameters, evaluate
from tasks.corpus.source import CorpusSource
from tasks.embed.stage import quarantined_shard
from tasks.jobs.stage import quarantined_async_units
from tasks.outcomes import AsyncOutcome, ShardOutcome
from tasks.prefect_tasks import (
    commit_state,
    embed_async,
    embed_shard,
    gather_failures,
    load_index,
    plan_run,
)
from tasks.records import new_run_id
from tasks.report.summary import RunSummary, run_summary, summary_lines, summary_markdown
from tasks.runs.lease import HeldLease, held_lease, lease_location
from tasks.runs.records import new_run_record, recorded_run
from tasks.settings import SHARDS_IN_PARALLEL, NovaflowSettings
from tasks.store import CheckpointStore

ASYNC_STAGES = 1  # the one task that submits and polls every async job of the run


class ReembedParameters(BaseModel):
    """What to embed (a manifest or a directory/prefix) and with which settings."""

    model_config = ConfigDict(frozen=True)

    run_id: str = Field(default_factory=new_run_id, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    manifest: str | None = None
    corpus: str | None = None
    root: str | None = None
    allow_empty_corpus: bool = False
    settings: NovaflowSettings = Field(default_factory=NovaflowSettings)

    @model_validator(mode="after")
    def _one_source(self) -> ReembedParameters:
        CorpusSource(self.manifest, self.corpus, self.root)
        return self


def _shards_as_completed(
    settings: NovaflowSettings, run_id: str, shards: int
) -> Iterator[tuple[int, PrefectFuture[ShardOutcome]]]:
    """Submit the shards ``SHARDS_IN_PARALLEL`` at a time (the async stage holds a worker of
    its own) and yield each with its future as it finishes."""
    waiting = deque(range(1, shards + 1))
    running: dict[PrefectFuture[ShardOutcome], int] = {}
    while waiting or running:
        while waiting and len(running) < SHARDS_IN_PARALLEL:
            shard = waiting.popleft()
            running[embed_shard.submit(settings, run_id, shard)] = shard
        future = next(as_completed(list(running)))
        yield running.pop(future), future


@flow(
    name="novaflow-reembed",
    task_runner=ThreadPoolTaskRunner(max_workers=SHARDS_IN_PARALLEL + ASYNC_STAGES),
    validate_parameters=True,
)
def reembed(params: ReembedParameters) -> RunSummary:
    """Bring the index in line with the corpus; returns the run's summary.

    The run holds its lease throughout (a second process on the same run is refused, naming
    this one) and records what it was asked to do before any work, so that it can be resumed
    from any moment."""
    settings, run_id = params.settings, params.run_id
    store = CheckpointStore(settings.store)
    with held_lease(lease_location(store, run_id), run_id) as lease:
        recorded_run(
            store,
            new_run_record(
                run_id, params.manifest, params.corpus, params.root,
                params.allow_empty_corpus, settings.model_dump_json(),
            ),
        )  # fmt: skip
        return _stages(params, lease)


def _stages(params: ReembedParameters, lease: HeldLease) -> RunSummary:
    logger = get_run_logger()
    started = time.monotonic()
    settings, run_id = params.settings, params.run_id
    source = CorpusSource(params.manifest, params.corpus, params.root)
    totals = plan_run(settings, source, run_id, params.allow_empty_corpus)
    logger.info("run %s: %s", run_id, totals.to_json())

    progress = create_progress_artifact(
        0.0, key=f"novaflow-progress-{run_id}"[:64], description="shards embedded"
    )
    jobs_future = embed_async.submit(settings, run_id) if totals.async_units else None
    outcomes: list[ShardOutcome] = []
    failed_shards: list[int] = []
    shards = _shards_as_completed(settings, run_id, totals.shards)
    for done, (shard, future) in enumerate(shards, start=1):
        lease.raise_if_lost()  # another process took the run over: stop before doing more
        try:
            outcomes.append(future.result())
        except Exception as exc:  # the barrier's decision: quarantine the shard, keep the rest
            logger.error("shard %d failed after its retries: %s", shard, exc)
            failed_shards.append(shard)
            outcomes.append(quarantined_shard(settings, run_id, shard, f"shard task failed: {exc}"))
        update_progress_artifact(progress, 100.0 * done / max(totals.shards, 1))
    if totals.shards == 0:
        update_progress_artifact(progress, 100.0)
    jobs = AsyncOutcome()
    async_failed = False
    if jobs_future is not None:
        try:
            jobs = jobs_future.result()
        except Exception as exc:  # the barrier's decision: quarantine what is unfinished
            logger.error("async jobs stage failed after its retries: %s", exc)
            async_failed = True
            jobs = quarantined_async_units(settings, run_id, f"async stage failed: {exc}")

    lease.raise_if_lost()
    load = load_index(settings, run_id)
    commit_state(settings, run_id)
    gather_failures(settings, run_id)
    summary = run_summary(
        settings, run_id, totals, outcomes, jobs, load, time.monotonic() - started
    )
    create_markdown_artifact(
        summary_markdown(summary, f"{settings.store}/failures/{run_id}.parquet"),
        key=f"novaflow-summary-{run_id}"[:64],
        description="novaflow run summary",
    )
    for line in summary_lines(summary):
        logger.info(line)
    if failed_shards or async_failed:
        raise RuntimeError(
            f"{len(failed_shards)} shard(s) failed ({failed_shards})"
            + (", and the async jobs stage failed" if async_failed else "")
            + "; their units are quarantined (shard_failed, async_stage_failed) and will be "
            "planned again by the next run; rerun with this run id to resume its jobs"
        )
    if settings.evaluation.enabled:  # the last stage: the evaluation flow, as a subflow
        evaluation = evaluate(
            EvaluateParameters(run_id=run_id, settings=settings), return_state=True
        )
        if evaluation.is_failed():
            raise RuntimeError(f"evaluation: {evaluation.message or 'failed'}")
    return summary
