"""Backfills: a whole source (or a slice, or a date range of it) cut into partitions, each
re-embedded by a run of its own, resumable partition by partition. Plain functions; the flow
is ``flows/backfill.py``."""
