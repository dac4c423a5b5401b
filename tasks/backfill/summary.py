"""A backfill, counted across its partitions: what the terminal, ``summary.json`` and the
Prefect artifacts show."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tasks.backfill.outcomes import EvaluationOutcome, PartitionOutcome, partition_outcome
from tasks.backfill.partitions import PartitionSet
from tasks.store import CheckpointStore


@dataclass(frozen=True)
class BackfillSummary:
    """The backfill as its partitions' outcomes record it, after one attempt.

    Every partition is in exactly one of ``completed``, ``failed`` and ``pending`` (not run to
    its end yet: stopped, or left out of an attempt that ran named partitions only); ``ran``
    are those this attempt ran, ``already_done`` those it skipped as completed earlier. The
    counts add up the partitions' runs over the whole backfill (a run resumed or rerun counts
    the model calls of its earlier attempts too). ``rows`` is how the source was cut.
    ``evaluation`` is None until every partition completed; ``switch`` says what became of the
    switch to the new index."""

    backfill_id: str
    partitions: int
    completed: tuple[int, ...]
    failed: tuple[int, ...]
    pending: tuple[int, ...]
    ran: tuple[int, ...]
    already_done: tuple[int, ...]
    rows: PartitionSet
    items: int
    embedded: int
    unchanged: int
    quarantined: int
    failed_items: int
    rows_rejected: int
    units_embedded: int
    units_quarantined: int
    async_segments_embedded: int
    model_calls: int
    vectors_written: int
    keys_deleted: int
    estimated_cost_usd: float
    wall_seconds: float
    evaluation: EvaluationOutcome | None
    switch: str

    @property
    def partitions_done(self) -> bool:
        """Every partition completed."""
        return len(self.completed) == self.partitions

    @property
    def done(self) -> bool:
        """Every partition completed, and the evaluation passed (or is switched off)."""
        return self.partitions_done and (
            self.evaluation is not None and self.evaluation.status in ("passed", "skipped")
        )

    def to_json(self) -> str:
        """The summary as ``summary.json`` holds it, with ``done``."""
        return json.dumps({**asdict(self), "done": self.done}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> BackfillSummary:
        """The summary ``to_json`` wrote."""
        document = json.loads(text)
        del document["done"]
        for name in ("completed", "failed", "pending", "ran", "already_done"):
            document[name] = tuple(document[name])
        document["rows"] = PartitionSet(**document["rows"])
        if document["evaluation"] is not None:
            document["evaluation"] = EvaluationOutcome(**document["evaluation"])
        return cls(**document)


def backfill_summary(
    store: CheckpointStore,
    backfill_id: str,
    rows: PartitionSet,
    ran: tuple[int, ...],
    already_done: tuple[int, ...],
    evaluation: EvaluationOutcome | None,
    switch: str,
    wall_seconds: float,
) -> BackfillSummary:
    """Count the backfill from its partitions' recorded outcomes; writes ``summary.json``."""
    outcomes = {
        number: partition_outcome(store, backfill_id, number)
        for number in range(1, rows.partitions + 1)
    }
    ended = [outcome for outcome in outcomes.values() if outcome is not None]

    def total(name: str) -> int:
        return sum(getattr(outcome, name) for outcome in ended)

    summary = BackfillSummary(
        backfill_id=backfill_id,
        partitions=rows.partitions,
        completed=tuple(n for n, o in outcomes.items() if o is not None and o.completed),
        failed=tuple(n for n, o in outcomes.items() if o is not None and not o.completed),
        pending=tuple(n for n, o in outcomes.items() if o is None),
        ran=ran,
        already_done=already_done,
        rows=rows,
        items=total("items"),
        embedded=total("embedded"),
        unchanged=total("unchanged"),
        quarantined=total("quarantined"),
        failed_items=total("failed_items"),
        rows_rejected=total("rows_rejected"),
        units_embedded=total("units_embedded"),
        units_quarantined=total("units_quarantined"),
        async_segments_embedded=total("async_segments_embedded"),
        model_calls=total("model_calls"),
        vectors_written=total("vectors_written"),
        keys_deleted=total("keys_deleted"),
        estimated_cost_usd=round(sum(o.estimated_cost_usd for o in ended), 6),
        wall_seconds=round(wall_seconds, 2),
        evaluation=evaluation,
        switch=switch,
    )
    store.write_text(store.backfill_summary_path(backfill_id), summary.to_json())
    return summary


def partition_line(outcome: PartitionOutcome, partitions: int) -> str:
    """One partition's end, as the terminal shows it."""
    where = f"  partition {outcome.partition}/{partitions}"
    if not outcome.completed:
        return f"{where} FAILED (run {outcome.run_id}): {outcome.message}"
    return (
        f"{where} completed (run {outcome.run_id}): {outcome.items} items "
        f"({outcome.embedded} embedded, {outcome.unchanged} unchanged, "
        f"{outcome.quarantined} quarantined, {outcome.failed_items} failed), "
        f"{outcome.units_embedded} units, {outcome.model_calls} model calls, "
        f"{outcome.wall_seconds:.1f} s"
    )


def _numbers(numbers: tuple[int, ...]) -> str:
    return ", ".join(str(number) for number in numbers) or "none"


def summary_lines(summary: BackfillSummary) -> list[str]:
    """The summary as the terminal shows it."""
    rows = summary.rows
    lines = [
        f"backfill {summary.backfill_id}: {summary.wall_seconds:.1f} s",
        f"  parts    {len(summary.completed)} completed, {len(summary.failed)} failed, "
        f"{len(summary.pending)} pending of {summary.partitions} partitions "
        f"({len(summary.ran)} run now, {len(summary.already_done)} already done)",
        f"  rows     {rows.rows_partitioned} in partitions of {rows.partition_size}; "
        f"{rows.rows_outside_dates} outside the dates, {rows.rows_rejected} rejected "
        f"(of {rows.rows_selected} selected rows)",
        f"  items    {summary.embedded} embedded, {summary.unchanged} unchanged, "
        f"{summary.quarantined} quarantined, {summary.failed_items} failed of {summary.items} "
        f"items; {summary.rows_rejected} manifest rows rejected",
        f"  units    {summary.units_embedded} embedded, {summary.units_quarantined} "
        f"quarantined; {summary.async_segments_embedded} async segments embedded",
        f"  model    {summary.model_calls} calls; estimated cost ${summary.estimated_cost_usd:.4f}",
        f"  index    {summary.vectors_written} vectors written, {summary.keys_deleted} keys "
        "deleted",
        f"  eval     {_evaluation_text(summary)}",
        f"  switch   {summary.switch}",
    ]
    if summary.failed:
        lines.append(
            f"  failed   partitions {_numbers(summary.failed)}: rerun one alone with "
            f"novaflow backfill --backfill-id {summary.backfill_id} --partition "
            f"{summary.failed[0]}"
        )
    return lines


def _evaluation_text(summary: BackfillSummary) -> str:
    evaluation = summary.evaluation
    if evaluation is None:
        return "not run: it runs once every partition has completed"
    if evaluation.status == "skipped":
        return f"skipped ({evaluation.message or 'evaluation is off'})"
    report = f" (report: {evaluation.report})" if evaluation.report else ""
    if evaluation.status == "passed":
        return f"passed{report}"
    return f"FAILED: {evaluation.message}{report}"


def summary_markdown(summary: BackfillSummary) -> str:
    """The summary as a Markdown artifact."""
    rows = "\n".join(
        f"| {label} | {text.strip()} |"
        for label, _, text in (line.strip().partition(" ") for line in summary_lines(summary)[1:])
    )
    return f"# novaflow backfill `{summary.backfill_id}`\n\n| | |\n|---|---|\n{rows}\n"
