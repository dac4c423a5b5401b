"""Stage 1, plan: takes the resolved items and the index's state; produces the run's manifest,
plan (per item: new, changed, unchanged or removed, and why), its units cut into shards, the
async units, and the plan's totals, all under ``runs/<run_id>/`` in the store.
"""
