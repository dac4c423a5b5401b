"""Stage 5 of a run: the summary a person reads — counts that add up, traffic, time, failures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tasks.outcomes import AsyncOutcome, BatchOutcome, LoadOutcome, PlanTotals, ShardOutcome
from tasks.report.item_outcomes import ItemOutcomes, outcome_counts
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore


@dataclass(frozen=True)
class RunSummary:
    """One run, counted. For a finished run ``adds_up``: every item of the corpus ended in
    exactly one of ``item_outcomes``' counts, every sync unit planned ended embedded or
    quarantined, and every async job (one per long file) ended collected or quarantined; a
    collected job's segments are counted as embedded or quarantined in ``async_segments_*``.
    ``items`` is the plan's count by change (new, changed, unchanged, removed)."""

    run_id: str
    items: dict[str, int]
    item_outcomes: ItemOutcomes
    units_planned: int
    units_embedded: int
    units_quarantined: int
    async_jobs: int
    async_jobs_collected: int
    async_jobs_quarantined: int
    async_segments_embedded: int
    async_segments_quarantined: int
    async_submissions: int
    async_resubmissions: int
    async_status_calls: int
    async_status_throttles: int
    keys_deleted: int
    vectors_written: int
    model_calls: int
    retries: int
    throttles: int
    shards: int
    shards_skipped: int
    wall_seconds: float
    estimated_cost_usd: float
    failures_by_code: dict[str, int] = field(default_factory=dict)
    metadata_warnings: tuple[str, ...] = ()
    texts_attached: int = 0
    texts_truncated: int = 0
    units_reused: int = 0  # took a vector already embedded: no model call
    reused_cost_usd: float = 0.0  # what those calls would have cost
    batch_jobs: int = 0  # batch inference jobs that embedded sync shards
    batch_records: int = 0  # records those jobs held (one per unit sent)
    batch_jobs_created: int = 0  # of the jobs, those created by this attempt (not resumed)
    batch_status_calls: int = 0
    batch_shards_on_demand: int = 0  # shards too few for a job, embedded with InvokeModel

    @property
    def units_add_up(self) -> bool:
        """Every planned unit and every async job ended embedded or quarantined."""
        return (
            self.units_planned == self.units_embedded + self.units_quarantined
            and self.async_jobs == self.async_jobs_collected + self.async_jobs_quarantined
        )

    @property
    def adds_up(self) -> bool:
        """Every item, every planned unit and every async job is accounted for."""
        return self.item_outcomes.adds_up and self.units_add_up

    def to_json(self) -> dict[str, object]:
        """A JSON-ready copy, with ``adds_up`` (the run's, and the items' in ``item_outcomes``)."""
        document = asdict(self)
        document["item_outcomes"]["adds_up"] = self.item_outcomes.adds_up
        document["metadata_warnings"] = list(self.metadata_warnings)
        document["adds_up"] = self.adds_up
        return document


def run_summary(
    settings: NovaflowSettings,
    run_id: str,
    totals: PlanTotals,
    shards: Sequence[ShardOutcome],
    jobs: AsyncOutcome,
    load: LoadOutcome,
    wall_seconds: float,
    batch: BatchOutcome | None = None,
) -> RunSummary:
    """Count the run from its plan, shard outcomes, load and failures; write ``summary.json``."""
    store = CheckpointStore(settings.store)
    items, failures_by_code = outcome_counts(store, run_id, totals, store.failures_path(run_id))
    batch = batch or BatchOutcome()
    summary = RunSummary(
        run_id=run_id,
        items=dict(totals.items),
        item_outcomes=items,
        units_planned=totals.units_to_embed,
        units_embedded=sum(outcome.embedded for outcome in shards),
        units_quarantined=sum(outcome.quarantined for outcome in shards),
        async_jobs=jobs.jobs,
        async_jobs_collected=jobs.collected,
        async_jobs_quarantined=jobs.quarantined,
        async_segments_embedded=jobs.segments_embedded,
        async_segments_quarantined=jobs.segments_quarantined,
        async_submissions=jobs.submissions,
        async_resubmissions=jobs.resubmissions,
        async_status_calls=jobs.status_calls,
        async_status_throttles=jobs.throttled_status_calls,
        keys_deleted=load.keys_deleted,
        vectors_written=load.vectors_written,
        model_calls=sum(outcome.model_calls for outcome in shards),
        retries=sum(outcome.retries for outcome in shards),
        throttles=sum(outcome.throttles for outcome in shards),
        shards=len(shards),
        shards_skipped=sum(outcome.skipped for outcome in shards),
        wall_seconds=round(wall_seconds, 2),
        estimated_cost_usd=round(totals.estimated_cost_usd, 6),
        failures_by_code=failures_by_code,
        metadata_warnings=load.metadata_warnings,
        units_reused=totals.units_reused,
        reused_cost_usd=round(totals.reused_cost_usd, 6),
        texts_attached=load.texts_attached,
        texts_truncated=load.texts_truncated,
        batch_jobs=batch.jobs,
        batch_records=batch.records,
        batch_jobs_created=batch.created,
        batch_status_calls=batch.status_calls,
        batch_shards_on_demand=len(batch.on_demand) if batch.jobs else 0,
    )
    store.write_text(store.summary_path(run_id), json.dumps(summary.to_json(), indent=2))
    return summary


_NOT_ADDING_UP = "  (DOES NOT ADD UP)"


def summary_lines(summary: RunSummary) -> list[str]:
    """The summary as the terminal shows it."""
    items, ended = summary.items, summary.item_outcomes
    lines = [
        f"run {summary.run_id}: {summary.wall_seconds:.1f} s",
        f"  items    {items.get('new', 0)} new, {items.get('changed', 0)} changed, "
        f"{items.get('unchanged', 0)} unchanged, {items.get('removed', 0)} removed",
        f"  ended    {ended.embedded} embedded, {ended.unchanged} unchanged, "
        f"{ended.quarantined} quarantined, {ended.failed} failed of {ended.planned} items"
        + ("" if ended.adds_up else _NOT_ADDING_UP),
        f"  rows     {ended.rows_rejected} manifest rows rejected",
        f"  units    {summary.units_embedded} embedded, {summary.units_quarantined} quarantined "
        f"of {summary.units_planned} planned"
        + ("" if summary.units_add_up else _NOT_ADDING_UP)
        + (
            f"; {summary.units_reused} reused (calls saved, ~${summary.reused_cost_usd:.4f})"
            if summary.units_reused
            else ""
        ),
        *_async_lines(summary),
        *_batch_lines(summary),
        f"  index    {summary.vectors_written} vectors written, "
        f"{summary.keys_deleted} keys deleted"
        + (
            f"; {summary.texts_attached} with searchable text "
            f"({summary.texts_truncated} cut to fit)"
            if summary.texts_attached
            else ""
        ),
        f"  model    {summary.model_calls} calls, {summary.retries} retries, "
        f"{summary.throttles} throttled; estimated cost ${summary.estimated_cost_usd:.4f}",
    ]
    if summary.failures_by_code:
        shown = ", ".join(f"{code} ×{count}" for code, count in summary.failures_by_code.items())
        lines.append(f"  failures {shown}")
    return lines


def _async_lines(summary: RunSummary) -> list[str]:
    if not summary.async_jobs:
        return []
    return [
        f"  jobs     {summary.async_jobs_collected} collected, "
        f"{summary.async_jobs_quarantined} quarantined of {summary.async_jobs} async jobs; "
        f"{summary.async_submissions} submitted ({summary.async_resubmissions} resubmitted), "
        f"{summary.async_status_calls} status calls ({summary.async_status_throttles} throttled)",
        f"  segments {summary.async_segments_embedded} embedded, "
        f"{summary.async_segments_quarantined} quarantined",
    ]


def _batch_lines(summary: RunSummary) -> list[str]:
    if not summary.batch_jobs:
        return []
    return [
        f"  batch    {summary.batch_records} records in {summary.batch_jobs} batch inference "
        f"jobs ({summary.batch_jobs_created} created by this attempt), "
        f"{summary.batch_status_calls} status calls; "
        f"{summary.batch_shards_on_demand} shards on demand"
    ]


def summary_markdown(summary: RunSummary, failures_uri: str) -> str:
    """The summary as a Markdown artifact."""
    rows = "\n".join(
        f"| {line.strip().split(' ', 1)[0]} | {line.strip().split(' ', 1)[1].strip()} |"
        for line in summary_lines(summary)[1:]
    )
    return (
        f"# novaflow run `{summary.run_id}`\n\n| | |\n|---|---|\n{rows}\n\n"
        f"Quarantined items and units, with reasons: `{failures_uri}`\n"
    )
