"""What each stage returns to the flow: the plan's totals and the embed, async and load outcomes.

The flow passes these small records from stage to stage and the summary adds them up; they are
shared contracts, so the report never imports a stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Change = Literal["new", "changed", "unchanged", "removed"]
CHANGES: tuple[Change, ...] = ("new", "changed", "unchanged", "removed")


@dataclass
class PlanTotals:
    """Counts over a plan, as the summary and ``novaflow plan`` show them."""

    items: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGES, 0))
    units_to_embed: int = 0
    units_reused: int = 0  # units that take a vector already embedded (no model call)
    reused_cost_usd: float = 0.0  # what embedding those would have cost
    async_units: int = 0
    keys_to_delete: int = 0
    failures: int = 0
    shards: int = 0
    estimated_cost_usd: float = 0.0

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> PlanTotals:
        """The totals ``to_json`` wrote."""
        return cls(
            items=dict(document["items"]),
            units_to_embed=int(document["units_to_embed"]),
            units_reused=int(document.get("units_reused", 0)),
            reused_cost_usd=float(document.get("reused_cost_usd", 0.0)),
            async_units=int(document["async_units"]),
            keys_to_delete=int(document["keys_to_delete"]),
            failures=int(document["failures"]),
            shards=int(document["shards"]),
            estimated_cost_usd=float(document["estimated_cost_usd"]),
        )

    def to_json(self) -> dict[str, object]:
        """A JSON-ready copy."""
        return {
            "items": dict(self.items),
            "units_to_embed": self.units_to_embed,
            "units_reused": self.units_reused,
            "reused_cost_usd": self.reused_cost_usd,
            "async_units": self.async_units,
            "keys_to_delete": self.keys_to_delete,
            "failures": self.failures,
            "shards": self.shards,
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
        }


@dataclass(frozen=True)
class ShardOutcome:
    """What one shard did: units embedded and quarantined, and the model traffic it caused."""

    shard: int
    units: int
    embedded: int
    quarantined: int
    model_calls: int
    retries: int
    throttles: int
    skipped: bool = False


@dataclass(frozen=True)
class AsyncOutcome:
    """What a run's async stage did: jobs (one per async unit) collected and quarantined,
    submissions made (``resubmissions`` of them after a failed attempt), jobs found already
    running when the stage started (``resumed``), status calls and how many were throttled,
    and the segments the collected jobs produced."""

    jobs: int = 0
    collected: int = 0
    quarantined: int = 0
    submissions: int = 0
    resubmissions: int = 0
    resumed: int = 0
    status_calls: int = 0
    throttled_status_calls: int = 0
    segments_embedded: int = 0
    segments_quarantined: int = 0

    @property
    def adds_up(self) -> bool:
        """Every job ended collected or quarantined."""
        return self.jobs == self.collected + self.quarantined


@dataclass(frozen=True)
class LoadOutcome:
    """What loading wrote: vectors put (in how many PutVectors calls), keys deleted, and the
    metadata that had to be trimmed to fit S3 Vectors' limits."""

    vectors_written: int
    put_batches: int
    keys_deleted: int
    metadata_warnings: tuple[str, ...]
    texts_attached: int = 0  # vectors written with their searchable text
    texts_truncated: int = 0  # of those, texts cut to fit the metadata limits


@dataclass(frozen=True)
class BatchOutcome:
    """What a run's batch inference stage did: ``jobs`` jobs (``created`` by this attempt of
    the stage, ``resumed`` found already created), ``collected`` once ended, holding
    ``records`` records; status calls and how many were throttled; the ``shards`` embedded by
    the jobs (one outcome each, with no model calls) and the ``on_demand`` shards left to
    InvokeModel because they were too few for a job."""

    jobs: int = 0
    created: int = 0
    resumed: int = 0
    collected: int = 0
    records: int = 0
    status_calls: int = 0
    throttled_status_calls: int = 0
    shards: tuple[ShardOutcome, ...] = ()
    on_demand: tuple[int, ...] = ()
