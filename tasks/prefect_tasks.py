"""The Prefect tasks of novaflow's flows: each a line or two over a plain stage function.

Retries here are coarse, per shard or per stage; per-request retries belong to botocore and
per-unit re-queueing after throttling to the embedder, so the three never stack blindly.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff

from tasks.batch.stage import embedded_by_batch
from tasks.corpus.source import CorpusSource, corpus_items
from tasks.embed.stage import embedded_shard
from tasks.evaluate.stage import LabeledSection, evaluated_index, evaluated_labeled
from tasks.global_limits import shard_pacing
from tasks.index.stage import committed_state, loaded_index
from tasks.jobs.stage import embedded_async_units, is_configuration_error
from tasks.outcomes import AsyncOutcome, BatchOutcome, LoadOutcome, PlanTotals, ShardOutcome
from tasks.plan.stage import planned_run
from tasks.report.evaluation.document import evaluation_report, write_report
from tasks.report.failures import gathered_failures
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore


@task(name="plan-run")
def plan_run(
    settings: NovaflowSettings, source: CorpusSource, run_id: str, allow_empty_corpus: bool
) -> PlanTotals:
    """Resolve the corpus and write the run's plan and shards (reused when they exist)."""
    store = CheckpointStore(settings.store)
    return planned_run(
        settings, lambda: corpus_items(source, store=store), run_id, allow_empty_corpus
    )


@task(
    name="embed-shard",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
)
def embed_shard(settings: NovaflowSettings, run_id: str, shard: int) -> ShardOutcome:
    """Embed one shard, holding its slots of the global limits named in the settings (one
    server round trip per limit per shard, never per request) and pacing its requests under
    the shared budget when one is named."""
    with shard_pacing(settings.throughput) as pacer:
        return embedded_shard(settings, run_id, shard, pacer)


def _not_configuration(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry unless the run's configuration failed (a missing bucket, no permission): that
    fails the same way on every try, and the user should hear of it at once."""
    del task, task_run
    return not is_configuration_error(state.result(raise_on_failure=False))


@task(
    name="embed-async",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=_not_configuration,
)
def embed_async(settings: NovaflowSettings, run_id: str) -> AsyncOutcome:
    """Run the run's async jobs from one task, however many: submit within the in-flight bound,
    poll, collect. A retry resumes from the ledger without submitting any job twice."""
    logger = get_run_logger()

    def progress(counts: AsyncOutcome, running: int, queued: int) -> None:
        logger.info(
            "async jobs: %d collected, %d quarantined of %d; %d running, %d queued",
            counts.collected,
            counts.quarantined,
            counts.jobs,
            running,
            queued,
        )

    return embedded_async_units(settings, run_id, progress=progress)


@task(
    name="embed-batch",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=_not_configuration,
)
def embed_batch(settings: NovaflowSettings, run_id: str) -> BatchOutcome:
    """Embed the run's sync shards with batch inference jobs from one task: write their inputs,
    create the jobs within the in-flight bound, poll, collect. A retry resumes from the ledger
    without creating any job twice; the shards too few for a job come back as ``on_demand``."""
    logger = get_run_logger()

    def progress(collected: int, jobs: int) -> None:
        logger.info("batch jobs: %d of %d collected", collected, jobs)

    return embedded_by_batch(settings, run_id, progress=progress)


@task(name="load-index", retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5))
def load_index(settings: NovaflowSettings, run_id: str) -> LoadOutcome:
    """Put the run's vectors and delete its stale keys."""
    return loaded_index(settings, run_id)


@task(name="commit-state")
def commit_state(settings: NovaflowSettings, run_id: str) -> int:
    """Record what the index now holds."""
    return committed_state(settings, run_id)


@task(name="gather-failures")
def gather_failures(settings: NovaflowSettings, run_id: str) -> int:
    """Gather the run's quarantined items and units into one file."""
    return gathered_failures(settings, run_id)


@task(name="evaluate-index", retries=1, retry_delay_seconds=10)
def evaluate_index(settings: NovaflowSettings) -> dict[str, Any] | None:
    """Index recall against exact search, and the dimension trade-off."""
    return evaluated_index(settings)


@task(name="evaluate-labeled", retries=1, retry_delay_seconds=10)
def evaluate_labeled_queries(settings: NovaflowSettings) -> LabeledSection | None:
    """The labeled queries' metrics (None without a qrels file)."""
    return evaluated_labeled(settings)


@task(name="write-report")
def write_evaluation_report(
    settings: NovaflowSettings,
    run_id: str,
    index_part: dict[str, Any] | None,
    labeled: LabeledSection | None,
) -> tuple[dict[str, Any], str]:
    """Assemble and write the run's evaluation report; returns it and its HTML's path."""
    store = CheckpointStore(settings.store)
    report = evaluation_report(
        run_id,
        store,
        settings.evaluation,
        index_part,
        labeled.section if labeled else None,
        labeled.dimension_rows if labeled else None,
    )
    html = write_report(
        store,
        report,
        labeled.trec_run if labeled else None,
        labeled.trec_qrels if labeled else None,
        trec_files=labeled.trec_files if labeled else None,
    )
    return report, html
