"""Stage 1 of a run: resolve the corpus, diff it against the index's state and write the plan.

A run's manifest and plan are written once; a run restarted with the same id reuses them, so
it redoes no planning and cuts the same shards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from tasks import schemas
from tasks.local_copies import local_source
from tasks.outcomes import PlanTotals
from tasks.plan.buckets import CLAIMS, corpus_batches
from tasks.plan.claims import KeptBuckets
from tasks.plan.diff import planned_items
from tasks.plan.scratch import plan_scratch
from tasks.plan.written import write_plan
from tasks.records import Failure, Item
from tasks.settings import NovaflowSettings
from tasks.spill import BUCKET_BITS, spilled_buckets
from tasks.state.commit import repaired_state
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore
from tasks.tables import StreamedRecords, failures_table

log = logging.getLogger(__name__)


class EmptyCorpusError(RuntimeError):
    """The corpus came out empty while the index holds items: almost always a mistake."""


def planned_run(
    settings: NovaflowSettings,
    corpus: Callable[[], Iterable[Item | Failure]],
    run_id: str,
    allow_empty_corpus: bool = False,
) -> PlanTotals:
    """Write the run's manifest, plan and shards (once); returns the plan's totals.

    ``corpus`` gives the resolved items (see :func:`tasks.corpus.source.corpus_items`); it is
    not called when the run's plan is already complete.

    Refuses (EmptyCorpusError) to plan the deletion of every item because the corpus came out
    empty, unless ``allow_empty_corpus``. A run with a partition record
    (:meth:`CheckpointStore.partition_record_path`) is one partition of a backfill: it plans no
    removals.
    """
    store = CheckpointStore(settings.store)
    totals_path = store.plan_totals_path(run_id)
    if store.exists(totals_path):
        return PlanTotals.from_json(json.loads(store.read_text(totals_path)))
    index = settings.index
    repaired = repaired_state(store, index.vector_bucket, index.index)
    if repaired:
        log.warning("the state now holds run %s's outcome, as the index does", repaired)
    state = StateDataset(store, index.vector_bucket, index.index)
    layout = state.layout()
    # A backfill records a partition's run before starting it; however the run is started or
    # resumed, it covers that partition only and must not remove the rest of the corpus.
    partial = store.exists(store.partition_record_path(run_id))
    with (
        plan_scratch() as scratch,
        store.table_writer(store.manifest_path(run_id), schemas.MANIFEST) as manifest,
        store.table_writer(store.manifest_failures_path(run_id), schemas.FAILURES) as failures_file,
    ):
        # Rows that fail before claiming an id are written as they come; the kept items (the
        # manifest) and the other failed rows as the plan reads each bucket of the spill,
        # where the claims on an id meet (``tasks.plan.claims``).
        failures = StreamedRecords(failures_file, failures_table)
        spilled = spilled_buckets(
            corpus_batches(corpus(), failures.add), scratch, BUCKET_BITS, CLAIMS
        )
        plans = planned_items(
            KeptBuckets(spilled, manifest.write_table, failures.add_table),
            state,
            layout,
            settings.embedding,
            settings.prices,
            lambda item: local_source(item.uri, item.fingerprint),
            partial=partial,
        )
        totals = write_plan(
            store, run_id, plans, settings.throughput.shard_size, settings.embedding.config_hash()
        )
        failures.flush()
    current = sum(totals.items[change] for change in ("new", "changed", "unchanged"))
    if current == 0 and totals.items["removed"] and not allow_empty_corpus:
        raise EmptyCorpusError(
            f"the corpus resolved to no items, so this run would delete all "
            f"{totals.items['removed']} items' vectors from the index; check the manifest or "
            f"prefix (failures: {store.run_failures_dir(run_id)}), or allow it "
            f"explicitly with --allow-empty-corpus"
        )
    totals.failures += failures.count
    # Written last: its presence means the whole plan is on disk.
    store.write_text(totals_path, json.dumps(totals.to_json(), indent=2))
    return totals
