"""A run's item outcomes are counted a part of the id hash at a time: the counts must be the
same whether the plan, the failures and the vectors each fit in one bucket or are spread over
256, and whichever of them is large."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import schemas, spill
from tasks.outcomes import PlanTotals
from tasks.report.item_outcomes import ItemOutcomes, outcome_counts
from tasks.store import CheckpointStore

RUN = "run-1"
ITEMS = 1_200
# Per item, by n % 6: embedded, unchanged, quarantined (its own fault), failed (throttled, so
# retried next run), quarantined in planning, and removed (in the plan, not in the corpus).
OUTCOMES = ("embedded", "unchanged", "quarantined", "failed", "plan_failure", "removed")


def _run(store: CheckpointStore) -> PlanTotals:
    """A run's plan, gathered failures and two shards' embeddings, with every outcome."""
    rng = random.Random(7)
    ids = [f"docs/{rng.randrange(10**9):09d}-{n}.txt" for n in range(ITEMS)]
    outcome = [OUTCOMES[n % len(OUTCOMES)] for n in range(ITEMS)]
    change = {"unchanged": "unchanged", "removed": "removed"}
    plan = [
        {
            "item_id": item_id,
            "uri": f"/corpus/{item_id}",
            "modality": "text",
            "change": change.get(kind, "new"),
            "reason": "",
            "units_to_embed": 1,
            "async_units": 0,
            "keys_to_delete": [],
            "estimated_cost_usd": 0.0,
        }
        for item_id, kind in zip(ids, outcome, strict=True)
    ]
    failure_of = {"quarantined": ("embed", "ValidationException"), "failed": ("embed", "throttled")}
    failure_of["plan_failure"] = ("plan", "corrupt_pdf")
    failures = [
        {"item_id": item_id, "uri": "", "unit_key": None, "stage": stage, "code": code,
         "message": "", "attempts": 1}
        for item_id, kind in zip(ids, outcome, strict=True)
        if kind in failure_of
        for stage, code in [failure_of[kind]]
    ] + [
        {"item_id": f"dup-{n}", "uri": "", "unit_key": None, "stage": "manifest",
         "code": "duplicate_id", "message": "", "attempts": 1}
        for n in range(5)
    ]  # fmt: skip
    # A quarantined item can still have written vectors for its other units.
    vectors = [
        i for i, kind in zip(ids, outcome, strict=True) if kind in ("embedded", "quarantined")
    ]
    store.write_table(store.plan_path(RUN), pa.Table.from_pylist(plan, schema=schemas.PLAN))
    store.write_table(
        store.failures_path(RUN), pa.Table.from_pylist(failures, schema=schemas.FAILURES)
    )
    for shard, part in enumerate((vectors[::2], vectors[1::2]), start=1):
        store.write_table(store.embeddings_path(RUN, shard), pa.table({"item_id": part}))
    totals = PlanTotals()
    for row in plan:
        totals.items[row["change"]] += 1
    return totals


EXPECTED = ItemOutcomes(
    planned=1_000, embedded=200, unchanged=200, quarantined=400, failed=200, rows_rejected=5
)


@pytest.mark.parametrize("spill_rows", [10**6, 250, 900], ids=["whole", "spread", "mixed"])
def test_item_outcomes_are_the_same_however_the_ids_are_spilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill_rows: int
) -> None:
    # "mixed": the plan's 1,000 items in the corpus are spread over 256 buckets, the failures
    # (805) and the vectors (400) are each one bucket, cut to meet the plan's.
    store = CheckpointStore(str(tmp_path / "store"))
    totals = _run(store)
    monkeypatch.setattr(spill, "SPILL_ROWS", spill_rows)

    outcomes, _ = outcome_counts(store, RUN, totals, store.failures_path(RUN))

    assert outcomes == EXPECTED
    assert outcomes.adds_up


def test_failures_are_counted_by_code(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    totals = _run(store)

    _, codes = outcome_counts(store, RUN, totals, store.failures_path(RUN))

    assert codes == {
        "ValidationException": 200,
        "corrupt_pdf": 200,
        "duplicate_id": 5,
        "throttled": 200,
    }


def test_an_item_with_neither_vector_nor_failure_breaks_the_identity(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    totals = _run(store)
    first_shard = store.embeddings_path(RUN, 1)
    kept = pq.read_table(first_shard).slice(1)
    store.write_table(first_shard, kept)  # one embedded item lost its vector

    outcomes, _ = outcome_counts(store, RUN, totals, store.failures_path(RUN))

    assert outcomes.embedded == EXPECTED.embedded - 1
    assert not outcomes.adds_up
