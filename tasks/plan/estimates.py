"""A backfill's cost both ways, before it is made: on-demand InvokeModel calls (how many, how
long at the configured pace, how much) and Bedrock batch inference (how many jobs, how much).

The batch figures use the record limits of a batch job (a job takes at least 100 records, the
documented default quota, and at most 50,000 as novaflow would cut jobs) and batch's price as a
share of on-demand (``Prices.batch_share_of_on_demand``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BATCH_MIN_RECORDS_PER_JOB = 100  # the documented quota "minimum number of records per job"
BATCH_MAX_RECORDS_PER_JOB = 50_000  # the records novaflow puts in one job (and one file)


@dataclass(frozen=True)
class BackfillEstimate:
    """The two ways of embedding ``units`` synchronous units: ``on_demand_hours`` at the
    configured request rate and ``on_demand_usd``; ``batch_jobs`` jobs for ``batch_usd``, or
    no batch at all (``batch_jobs`` 0) when there are too few units for one job."""

    units: int
    on_demand_hours: float
    on_demand_usd: float
    batch_jobs: int
    batch_usd: float

    @property
    def batch_possible(self) -> bool:
        """Whether the units fill at least one batch job."""
        return self.batch_jobs > 0


def backfill_estimate(
    units: int, on_demand_usd: float, requests_per_second: float, batch_share: float
) -> BackfillEstimate:
    """The estimate for ``units`` units whose on-demand cost is ``on_demand_usd``."""
    jobs = math.ceil(units / BATCH_MAX_RECORDS_PER_JOB) if units >= BATCH_MIN_RECORDS_PER_JOB else 0
    return BackfillEstimate(
        units=units,
        on_demand_hours=units / requests_per_second / 3600,
        on_demand_usd=on_demand_usd,
        batch_jobs=jobs,
        batch_usd=on_demand_usd * batch_share if jobs else 0.0,
    )
