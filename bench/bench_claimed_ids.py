"""Telling duplicate ids apart at a hundred million rows: peak memory of the plan's claims.

Of the rows that claim one item id, the first keeps it (``tasks.plan.claims``). The plan tells
them apart a bucket of the id hash at a time, after the corpus is spilled; before, resolving
the corpus kept a dict of every id it had seen, which grows with the corpus (~10 GB at 100M
ids). This bench resolves N rows of an S3 listing (``ListedObject`` rows, resolved with no
request, as a crawl's are; 0.1% of them repeat an earlier row's id), in a fresh process per
measure, two ways side by side:

- ``claims``: what a run does: ``resolved_items`` → ``corpus_batches`` → ``spilled_buckets``
  → every bucket read through ``KeptBuckets``, counting kept items and failed rows;
- ``dict``: what a run did before (the reference): the same, but with repeated ids told
  apart as the rows resolve, by a dict of every id's first position, and the buckets read as
  they are.

Each prints the process's peak RSS (imports included) and rows per second. Goal: the claims'
peak grows ≤ 10% from the smaller size to the larger; the dict's shows what it replaced.

    .venv/bin/python bench/bench_claimed_ids.py                 # 1M and 4M rows
    .venv/bin/python bench/bench_claimed_ids.py --sizes 1000000,16000000
    .venv/bin/python bench/bench_claimed_ids.py --smoke         # CI: 20k and 80k rows
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUCKET = "bench-corpus"
REPEAT_EVERY = 1000  # 0.1% of rows repeat an earlier row's id


def _rows(size: int) -> Iterator[object]:
    """``size`` listed objects under ``s3://bench-corpus/``; every REPEAT_EVERY-th row gives,
    as its id, the id of the row before it."""
    from tasks.corpus.s3 import ListedObject

    for n in range(1, size + 1):
        key = f"docs/{n % 977:03d}/report-{n:09d}.txt"
        repeated = f"docs/{(n - 1) % 977:03d}/report-{n - 1:09d}.txt"
        yield ListedObject(
            position=n,
            uri=f"s3://{BUCKET}/{key}",
            item_id=repeated if n % REPEAT_EVERY == 0 else None,
            etag=f'"{n:032x}"',
            size_bytes=100 + n % 50,
        )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(size: int, way: str) -> dict[str, float]:
    """The rows through a plan's spill, ``way`` ``claims`` or ``dict``."""
    import boto3

    from tasks.corpus.resolve import resolved_items
    from tasks.plan.buckets import CLAIMS, corpus_batches
    from tasks.plan.claims import KeptBuckets
    from tasks.spill import BUCKET_BITS, spilled_buckets

    client = boto3.client("s3", region_name="us-east-1")
    counts = {"items": 0, "failed": 0}

    def count(key: str, rows: int) -> None:
        counts[key] += rows

    baseline = _peak_mib()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="novaflow-bench-claims-") as scratch:
        entries = resolved_items(_rows(size), f"s3://{BUCKET}/", client)
        if way == "dict":
            entries = _first_claims(entries)
        spilled = spilled_buckets(
            corpus_batches(entries, lambda _: count("failed", 1)), scratch, BUCKET_BITS, CLAIMS
        )
        kept = KeptBuckets(
            spilled,
            lambda table: count("items", table.num_rows),
            lambda table: count("failed", table.num_rows),
        )
        for bucket in range(1 << spilled.bits):
            if way == "dict":
                count("items", spilled.read(bucket).num_rows)
            else:
                kept.read(bucket)
    return {
        "seconds": time.perf_counter() - started,
        "baseline_mib": baseline,
        "peak_mib": _peak_mib(),
        "items": float(counts["items"]),
        "failed": float(counts["failed"]),
    }


def _first_claims(entries: Iterator[object]) -> Iterator[object]:
    """``entries`` with every repeated id a failure, told with a dict of every id's first
    position, as resolving did before the plan's claims."""
    from tasks.records import Failure

    first_position_of_id: dict[str, int] = {}
    for entry in entries:
        if isinstance(entry, Failure):
            yield entry
        elif first_position_of_id.setdefault(entry.item_id, entry.position) != entry.position:
            yield Failure(entry.item_id, entry.uri, "manifest", "duplicate_id", "repeated")
        else:
            yield entry


def _child(*args: str) -> dict[str, float]:
    """Run this script with ``args`` in a fresh process; the JSON it prints last."""
    script = str(Path(__file__).resolve())
    result = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,4000000")
    parser.add_argument("--smoke", action="store_true", help="20k and 80k rows (for CI)")
    parser.add_argument("--measure", nargs=2, metavar=("WAY", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        way, size = args.measure[0], int(args.measure[1])
        print(json.dumps(_measured(size, way)))
        return
    sizes = [20_000, 80_000] if args.smoke else [int(s) for s in args.sizes.split(",")]
    results = {
        (way, size): _child("--measure", way, str(size))
        for size in sizes
        for way in ("claims", "dict")
    }
    print(f"{'rows':>11} {'way':>7} {'seconds':>8} {'rows/s':>9} {'peak MiB':>9} {'kept':>11} "
          f"{'rejected':>9}")  # fmt: skip
    for (way, size), r in results.items():
        print(
            f"{size:>11,} {way:>7} {r['seconds']:>8.1f} {size / r['seconds']:>9,.0f} "
            f"{r['peak_mib']:>9.0f} {int(r['items']):>11,} {int(r['failed']):>9,}"
        )
        assert r["items"] + r["failed"] == size, "every row is kept or rejected"
        assert r["failed"] == size // REPEAT_EVERY, "exactly the repeated ids are rejected"
    small, large = sizes[0], sizes[-1]
    for way in ("claims", "dict"):
        first, last = results[(way, small)]["peak_mib"], results[(way, large)]["peak_mib"]
        print(
            f"{way}: peak RSS {first:.0f} → {last:.0f} MiB ({last / first - 1:+.1%} for "
            f"{large / small:.0f}× the rows)" + ("; goal ≤ +10%" if way == "claims" else "")
        )


if __name__ == "__main__":
    main()
