"""The re-embedding flow: corpus → plan → shards embedded in parallel → index → state → summary
→ evaluation.

    plan-run ─┬─► embed-shard × N (bounded) ──┬─barrier──► load-index ──► commit-state ──► summary
              ├─► embed-batch (with batch     │                            ──► evaluate (subflow)
              │   inference on: shards in     │
              │   jobs, the rest on demand)   │
              └─► embed-async (one task: every job) ┘

Run it with ``novaflow run`` or deploy it (see ``deployments/``). A run restarted with the same
``run_id`` reuses its plan, skips the shards already checkpointed and polls the async jobs its
ledger already has instead of submitting them again.

Its tasks run on threads of this process, or spread over Dask workers when the settings say so:
``reembed_flow(settings)`` is the flow on the task runner ``settings.throughput`` chooses.
Runs that name a shared budget (``throughput.shared_rate_limit_name``…) create or update its
Prefect limits first, so that every run and every worker paces under the same one.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.batch.stage import quarantined_batch_shards
from tasks.corpus.source import CorpusSource
from tasks.embed.stage import quarantined_shard
from tasks.global_limits import ensure_shared_limits
from tasks.jobs.stage import quarantined_async_units
from tasks.outcomes import AsyncOutcome, BatchOutcome, ShardOutcome
from tasks.prefect_tasks import (
    commit_state,
    embed_async,
    embed_batch,
    embed_shard,
    gather_failures,
    load_index,
    plan_run,
)
from tasks.records import new_run_id
from tasks.report.summary import RunSummary, run_summary, summary_lines, summary_markdown
from tasks.runs.lease import HeldLease, held_index_lease, held_lease, lease_location
from tasks.runs.records import new_run_record, recorded_run
from tasks.settings import SHARDS_IN_PARALLEL, NovaflowSettings, ThroughputSettings
from tasks.store import CheckpointStore

if TYPE_CHECKING:
    from distributed import LocalCluster

ASYNC_STAGES = 1  # the one task that submits and polls every async job of the run
PROGRESS_SECONDS = 2.0  # the shards-embedded progress artifact is updated this often at most


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


def local_dask_cluster(**cluster_kwargs: Any) -> LocalCluster:
    """A Dask ``LocalCluster`` on loopback, without a dashboard, whose worker processes may start
    processes of their own: the PDF page renderer's pool (Dask makes its workers daemonic by
    default, and a daemonic process may not have children). Its workers' scratch space is a
    temporary directory of its own, removed when the cluster closes: by default Dask keeps it
    in the machine's temporary directory (``dask-scratch-space``, lock files left after)."""
    import dask
    from distributed import LocalCluster

    scratch = tempfile.mkdtemp(prefix="novaflow-dask-")

    class ScratchLocalCluster(LocalCluster):
        async def _close(self) -> None:
            try:
                await super()._close()
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    try:
        with dask.config.set({"distributed.worker.daemon": False, "temporary-directory": scratch}):
            return ScratchLocalCluster(
                host="127.0.0.1", dashboard_address=None, local_directory=scratch, **cluster_kwargs
            )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def task_runner_for(throughput: ThroughputSettings) -> TaskRunner[Any]:
    """The task runner ``throughput.task_runner`` chooses: threads of this process, enough for
    ``SHARDS_IN_PARALLEL`` shards and the async stage; or Dask, the scheduler at
    ``dask_address`` or else a local cluster of ``dask_workers`` processes with as many threads
    each."""
    if throughput.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=SHARDS_IN_PARALLEL + ASYNC_STAGES)
    from prefect_dask import DaskTaskRunner  # imported by runs that use it: a second to load

    if throughput.dask_address:
        return DaskTaskRunner(address=throughput.dask_address)
    return DaskTaskRunner(
        cluster_class=local_dask_cluster,
        cluster_kwargs={
            "n_workers": throughput.dask_workers,
            "threads_per_worker": SHARDS_IN_PARALLEL + ASYNC_STAGES,
        },
    )


def _runs_on_dask() -> bool:
    """Whether this flow run's tasks go to Dask workers."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    return type(runner).__module__.startswith("prefect_dask")


def _shards_in_parallel(throughput: ThroughputSettings, on_dask: bool) -> int:
    """Shards in flight at once: ``SHARDS_IN_PARALLEL`` per process that embeds them."""
    return SHARDS_IN_PARALLEL * (throughput.dask_workers if on_dask else 1)


def _paced_settings(settings: NovaflowSettings, on_dask: bool) -> NovaflowSettings:
    """The settings the shards get. Each process paces itself at ``requests_per_second`` unless
    a shared budget is named; on Dask, without one, that rate is split between the workers, so
    that the run as a whole keeps to it."""
    throughput = settings.throughput
    if not on_dask or throughput.shared_rate_limit_name:
        return settings
    share = throughput.requests_per_second / throughput.dask_workers
    return settings.model_copy(
        update={"throughput": throughput.model_copy(update={"requests_per_second": share})}
    )


def _shards_as_completed(
    settings: NovaflowSettings, run_id: str, shards: Sequence[int], in_parallel: int
) -> Iterator[tuple[int, PrefectFuture[ShardOutcome]]]:
    """Submit ``shards`` ``in_parallel`` at a time (the async stage holds a worker of its own)
    and yield each with its future as it finishes."""
    waiting = deque(shards)
    running: dict[PrefectFuture[ShardOutcome], int] = {}
    while waiting or running:
        while waiting and len(running) < in_parallel:
            shard = waiting.popleft()
            running[embed_shard.submit(settings, run_id, shard)] = shard
        future = next(as_completed(list(running)))
        yield running.pop(future), future


@flow(
    name="novaflow-reembed",
    task_runner=task_runner_for(ThroughputSettings()),
    validate_parameters=True,
)
def reembed(params: ReembedParameters) -> RunSummary:
    """Bring the index in line with the corpus; returns the run's summary.

    The run holds its lease throughout (a second process on the same run is refused, naming
    this one), and the index's: one run at a time writes an index, for two runs planned
    against the same state would each commit it without the other's changes (a second run
    waits up to ``index.writer_wait_seconds``, then is refused, naming the first). It records
    what it was asked to do once it holds both, before any work, so that it can be resumed
    from any moment."""
    settings, run_id = params.settings, params.run_id
    store = CheckpointStore(settings.store)
    index = settings.index
    with (
        held_lease(lease_location(store, run_id), run_id) as lease,
        held_index_lease(
            store, index.vector_bucket, index.index, run_id, index.writer_wait_seconds
        ) as index_lease,
    ):
        recorded_run(
            store,
            new_run_record(
                run_id, params.manifest, params.corpus, params.root,
                params.allow_empty_corpus, settings.model_dump_json(),
            ),
        )  # fmt: skip
        return _stages(params, (lease, index_lease))


def _raise_if_lost(leases: tuple[HeldLease, ...]) -> None:
    for lease in leases:
        lease.raise_if_lost()


def reembed_flow(settings: NovaflowSettings) -> Flow[[ReembedParameters], RunSummary]:
    """``reembed`` on the task runner ``settings`` chooses (``reembed`` itself uses threads):
    ``reembed_flow(params.settings)(params)``."""
    if settings.throughput.task_runner == "threads":
        return reembed
    return reembed.with_options(task_runner=task_runner_for(settings.throughput))


def _stages(params: ReembedParameters, leases: tuple[HeldLease, ...]) -> RunSummary:
    logger = get_run_logger()
    started = time.monotonic()
    settings, run_id, on_dask = params.settings, params.run_id, _runs_on_dask()
    if settings.throughput.task_runner == "dask" and not on_dask:
        logger.warning("the settings choose the Dask task runner: run reembed_flow(settings)")
    shared = ensure_shared_limits(settings.throughput)
    if shared:
        logger.info("pacing under the shared global limits %s", ", ".join(shared))
    source = CorpusSource(params.manifest, params.corpus, params.root)
    totals = plan_run(settings, source, run_id, params.allow_empty_corpus)
    logger.info("run %s: %s", run_id, totals.to_json())

    progress = create_progress_artifact(
        0.0, key=f"novaflow-progress-{run_id}"[:64], description="shards embedded"
    )
    jobs_future = embed_async.submit(settings, run_id) if totals.async_units else None
    outcomes: list[ShardOutcome] = []
    failed_shards: list[int] = []
    on_demand: Sequence[int] = range(1, totals.shards + 1)
    batch, batch_failed = BatchOutcome(), False
    if settings.batch_inference.enabled and totals.shards:
        try:  # batch jobs embed the shards; InvokeModel only those too few for a job
            batch = embed_batch(settings, run_id)
            outcomes.extend(batch.shards)
            on_demand = batch.on_demand
        except Exception as exc:  # the barrier's decision: quarantine what no job embedded
            logger.error("batch inference stage failed after its retries: %s", exc)
            batch_failed = True
            message = f"batch stage failed: {exc}"
            outcomes.extend(quarantined_batch_shards(settings, run_id, message))
            on_demand = ()
    in_parallel = _shards_in_parallel(settings.throughput, on_dask)
    shards = _shards_as_completed(
        _paced_settings(settings, on_dask), run_id, on_demand, in_parallel
    )
    next_progress = time.monotonic() + PROGRESS_SECONDS
    for done, (shard, future) in enumerate(shards, start=1):
        _raise_if_lost(leases)  # another process took the run over: stop before doing more
        try:
            outcomes.append(future.result())
        except Exception as exc:  # the barrier's decision: quarantine the shard, keep the rest
            logger.error("shard %d failed after its retries: %s", shard, exc)
            failed_shards.append(shard)
            outcomes.append(quarantined_shard(settings, run_id, shard, f"shard task failed: {exc}"))
        if done == len(on_demand) or time.monotonic() >= next_progress:
            # Every PROGRESS_SECONDS at most: an update is an API call, ~5 ms of CPU a shard.
            update_progress_artifact(progress, 100.0 * done / len(on_demand))
            next_progress = time.monotonic() + PROGRESS_SECONDS
    if not on_demand:
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

    _raise_if_lost(leases)
    load = load_index(settings, run_id)
    commit_state(settings, run_id)
    gather_failures(settings, run_id)
    summary = run_summary(
        settings, run_id, totals, outcomes, jobs, load, time.monotonic() - started, batch
    )
    create_markdown_artifact(
        summary_markdown(summary, f"{settings.store}/failures/{run_id}.parquet"),
        key=f"novaflow-summary-{run_id}"[:64],
        description="novaflow run summary",
    )
    for line in summary_lines(summary):
        logger.info(line)
    if failed_shards or async_failed or batch_failed:
        raise RuntimeError(
            f"{len(failed_shards)} shard(s) failed ({failed_shards})"
            + (", and the async jobs stage failed" if async_failed else "")
            + (", and the batch inference stage failed" if batch_failed else "")
            + "; their units are quarantined (shard_failed, async_stage_failed, "
            "batch_stage_failed) and will be planned again by the next run; rerun with this "
            "run id to resume its jobs"
        )
    if settings.evaluation.enabled:  # the last stage: the evaluation flow, as a subflow
        # Imported here: a run without evaluation does not pay for importing the evaluation
        # flow and its report modules (~0.11 s of CPU per command).
        from flows.evaluate import EvaluateParameters, evaluate

        evaluation = evaluate(
            EvaluateParameters(run_id=run_id, settings=settings), return_state=True
        )
        if evaluation.is_failed():
            raise RuntimeError(f"evaluation: {evaluation.message or 'failed'}")
    return summary
