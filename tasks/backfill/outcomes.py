"""How each partition of a backfill ended, ``backfills/<id>/outcomes/part-00001.json``, and how
its evaluation ended, ``backfills/<id>/evaluation.json``.

A partition is done when its outcome says ``completed``: a resumed backfill skips it. One with
no outcome was stopped part-way (or never started) and is run again under the same run id, so
its finished shards are kept; one that ``failed`` is run again by the next attempt, or alone
with ``novaflow backfill --backfill-id … --partition N``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tasks.store import CheckpointStore

PartitionStatus = Literal["completed", "failed"]
EvaluationStatus = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class PartitionOutcome:
    """How one partition's run ended, with its run's counts (zeros when the run failed before
    its summary). Item counts are the run's: ``items`` planned = ``embedded`` + ``unchanged`` +
    ``quarantined`` + ``failed_items``; ``rows_rejected`` are its manifest rows that never
    became items; ``model_calls`` counts every InvokeModel call its shards made, over every
    attempt of the run."""

    partition: int
    run_id: str
    status: PartitionStatus
    message: str
    items: int = 0
    embedded: int = 0
    unchanged: int = 0
    quarantined: int = 0
    failed_items: int = 0
    rows_rejected: int = 0
    units_embedded: int = 0
    units_quarantined: int = 0
    async_segments_embedded: int = 0
    model_calls: int = 0
    vectors_written: int = 0
    keys_deleted: int = 0
    estimated_cost_usd: float = 0.0
    wall_seconds: float = 0.0
    ended_at: str = ""

    @property
    def completed(self) -> bool:
        """Whether the partition is done (a resumed backfill skips it)."""
        return self.status == "completed"

    def to_json(self) -> str:
        """The outcome as its file holds it."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PartitionOutcome:
        """The outcome ``to_json`` wrote."""
        return cls(**json.loads(text))


def recorded_partition_outcome(
    store: CheckpointStore, backfill_id: str, partition: int, run_id: str, error: str | None
) -> PartitionOutcome:
    """Record how a partition's run ended (``error`` None: it completed), with the counts of
    the run's ``summary.json`` when it wrote one; returns the outcome."""
    summary_path = store.summary_path(run_id)
    summary = json.loads(store.read_text(summary_path)) if store.exists(summary_path) else None
    outcome = PartitionOutcome(
        partition=partition,
        run_id=run_id,
        status="completed" if error is None else "failed",
        message=error or "",
        ended_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **(_counts(summary) if summary is not None else {}),
    )
    store.write_text(store.partition_outcome_path(backfill_id, partition), outcome.to_json())
    return outcome


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    ended = summary["item_outcomes"]
    return {
        "items": ended["planned"],
        "embedded": ended["embedded"],
        "unchanged": ended["unchanged"],
        "quarantined": ended["quarantined"],
        "failed_items": ended["failed"],
        "rows_rejected": ended["rows_rejected"],
        "units_embedded": summary["units_embedded"],
        "units_quarantined": summary["units_quarantined"],
        "async_segments_embedded": summary["async_segments_embedded"],
        "model_calls": summary["model_calls"],
        "vectors_written": summary["vectors_written"],
        "keys_deleted": summary["keys_deleted"],
        "estimated_cost_usd": summary["estimated_cost_usd"],
        "wall_seconds": summary["wall_seconds"],
    }


def partition_outcome(
    store: CheckpointStore, backfill_id: str, partition: int
) -> PartitionOutcome | None:
    """The recorded outcome of a partition, or None (not run, or stopped before its end)."""
    path = store.partition_outcome_path(backfill_id, partition)
    if not store.exists(path):
        return None
    return PartitionOutcome.from_json(store.read_text(path))


def partitions_to_run(
    store: CheckpointStore, backfill_id: str, partitions: int, only: tuple[int, ...] = ()
) -> list[int]:
    """The partitions an attempt runs, in order: those of ``only`` (every one named, done or
    not: asked for by name), else every partition not yet completed. Raises ``ValueError``
    for a partition number the backfill does not have."""
    unknown = [number for number in only if not 1 <= number <= partitions]
    if unknown:
        raise ValueError(f"no partition {unknown} in this backfill: it has 1–{partitions}")
    if only:
        return sorted(set(only))
    return [
        number
        for number in range(1, partitions + 1)
        if not _completed(partition_outcome(store, backfill_id, number))
    ]


def _completed(outcome: PartitionOutcome | None) -> bool:
    return outcome is not None and outcome.completed


@dataclass(frozen=True)
class EvaluationOutcome:
    """How the backfill's evaluation ended: ``passed`` (every gate held), ``failed`` (a gate
    did not, or the evaluation itself failed: ``message`` says which) or ``skipped``
    (evaluation switched off in the settings). ``report`` is the report's HTML ("" when none
    was written)."""

    status: EvaluationStatus
    message: str = ""
    report: str = ""

    def to_json(self) -> str:
        """The outcome as ``evaluation.json`` holds it."""
        return json.dumps(asdict(self), indent=2)


def recorded_evaluation(
    store: CheckpointStore, backfill_id: str, outcome: EvaluationOutcome
) -> EvaluationOutcome:
    """Record how the backfill's evaluation ended; returns ``outcome``."""
    store.write_text(store.backfill_evaluation_path(backfill_id), outcome.to_json())
    return outcome


def evaluation_outcome(store: CheckpointStore, backfill_id: str) -> EvaluationOutcome | None:
    """How the backfill's last evaluation ended, or None (it has not been evaluated)."""
    path = store.backfill_evaluation_path(backfill_id)
    if not store.exists(path):
        return None
    return EvaluationOutcome(**json.loads(store.read_text(path)))


def needs_evaluation(
    ran_partitions: bool, recorded: EvaluationOutcome | None, enabled: bool
) -> bool:
    """Whether a backfill whose partitions have all completed evaluates (again) now: when this
    attempt ran partitions (the index changed), when it was never evaluated or did not pass,
    or when it was skipped and evaluation is on now. A passed evaluation is not repeated."""
    if ran_partitions or recorded is None:
        return True
    if recorded.status == "skipped":
        return enabled
    return recorded.status != "passed"
