"""A backfill estimated both ways: calls, hours and dollars on demand; jobs and dollars in
batch, or no batch when the units cannot fill one job."""

from __future__ import annotations

import pytest

from tasks.plan.estimates import backfill_estimate


def test_ten_million_units_both_ways() -> None:
    estimate = backfill_estimate(10_000_000, 337.5, 20.0, 0.5)
    assert estimate.on_demand_hours == pytest.approx(138.9, abs=0.05)
    assert estimate.batch_jobs == 200
    assert estimate.batch_usd == pytest.approx(168.75)


def test_too_few_units_for_a_batch_job() -> None:
    estimate = backfill_estimate(99, 0.01, 10.0, 0.5)
    assert not estimate.batch_possible
    assert estimate.batch_usd == 0.0
    assert backfill_estimate(100, 0.01, 10.0, 0.5).batch_jobs == 1
