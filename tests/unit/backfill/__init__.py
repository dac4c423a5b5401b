"""Unit tests of tasks/backfill: plain functions, no Prefect, no network."""
