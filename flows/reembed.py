"""The re-embedding flow: corpus → plan → shards embedded in parallel → index → state → summary.

    plan-run ──► embed-shard × N (bounded) ──barrier──► load-index ──► commit-state ──► summary

Run it with ``novaflow run`` or deploy it (see ``deployments/``). A run restarted with the same
``run_id`` reuses its plan and skips the shards already checkpointed.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from secrets import token_hex

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.prefect_tasks import commit_state, embed_shard, gather_failures, load_index, plan_run
from tasks.settings import NovaflowSettings
from tasks.stage_embed import ShardOutcome, quarantined_shard
from tasks.stage_plan import CorpusSource
from tasks.summary import RunSummary, run_summary, summary_lines, summary_markdown

SHARDS_IN_PARALLEL = 2  # each shard already runs `throughput.concurrency` model calls at once


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261121t101500z-3fa2``."""
    return f"{datetime.now(UTC):%Y%m%dt%H%M%Sz}-{token_hex(2)}"


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


def _show_progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        width = 30
        filled = width * done // max(total, 1)
        print(
            f"\r  embedding [{'#' * filled}{'.' * (width - filled)}] {done}/{total} shards",
            end="" if done < total else "\n",
            file=sys.stderr,
            flush=True,
        )


@flow(
    name="novaflow-reembed",
    task_runner=ThreadPoolTaskRunner(max_workers=SHARDS_IN_PARALLEL),
    validate_parameters=True,
)
def reembed(params: ReembedParameters) -> RunSummary:
    """Bring the index in line with the corpus; returns the run's summary."""
    logger = get_run_logger()
    started = time.monotonic()
    settings, run_id = params.settings, params.run_id
    source = CorpusSource(params.manifest, params.corpus, params.root)
    totals = plan_run(settings, source, run_id, params.allow_empty_corpus)
    logger.info("run %s: %s", run_id, totals.to_json())

    progress = create_progress_artifact(
        0.0, key=f"novaflow-progress-{run_id}"[:64], description="shards embedded"
    )
    futures = embed_shard.map(
        unmapped(settings), unmapped(run_id), list(range(1, totals.shards + 1))
    )
    outcomes: list[ShardOutcome] = []
    failed_shards: list[int] = []
    shard_of = {id(future): shard for shard, future in enumerate(futures, start=1)}
    for done, future in enumerate(as_completed(futures), start=1):
        shard = shard_of[id(future)]
        try:
            outcomes.append(future.result())
        except Exception as exc:  # the barrier's decision: quarantine the shard, keep the rest
            logger.error("shard %d failed after its retries: %s", shard, exc)
            failed_shards.append(shard)
            outcomes.append(quarantined_shard(settings, run_id, shard, f"shard task failed: {exc}"))
        update_progress_artifact(progress, 100.0 * done / max(totals.shards, 1))
        _show_progress(done, totals.shards)
    if totals.shards == 0:
        update_progress_artifact(progress, 100.0)

    load = load_index(settings, run_id)
    commit_state(settings, run_id)
    gather_failures(settings, run_id)
    summary = run_summary(settings, run_id, totals, outcomes, load, time.monotonic() - started)
    create_markdown_artifact(
        summary_markdown(summary, f"{settings.store}/failures/{run_id}.parquet"),
        key=f"novaflow-summary-{run_id}"[:64],
        description="novaflow run summary",
    )
    for line in summary_lines(summary):
        logger.info(line)
    if failed_shards:
        raise RuntimeError(
            f"{len(failed_shards)} shard(s) failed ({failed_shards}); their units are quarantined "
            f"as shard_failed and will be planned again by the next run"
        )
    return summary
