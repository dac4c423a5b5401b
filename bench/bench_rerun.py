"""The unchanged re-run against the first run, side by side in one process.

A nightly run over a corpus that did not change should cost a crawl and a diff, not a
re-embedding: this prints both wall times, their ratio, and the model calls each made. The
stand-in adds a fixed latency per model call so the first run pays for embedding as it would
on Bedrock. Run: ``.venv/bin/python bench/bench_rerun.py [--copies 4] [--latency 0.05]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import Misbehaviour
from flows.reembed import ReembedParameters, reembed
from tasks.demo.corpus import generate_demo_corpus
from tasks.settings import IndexSettings, NovaflowSettings, ThroughputSettings


def _corpus(root: Path, copies: int) -> Path:
    """``copies`` demo corpora side by side, crawled as one directory."""
    for copy in range(copies):
        generate_demo_corpus(root / f"copy-{copy}", seed=copy)
        shutil.rmtree(root / f"copy-{copy}" / "broken", ignore_errors=True)
        (root / f"copy-{copy}" / "manifest.jsonl").unlink()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=4, help="demo corpora to crawl as one")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per model call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, Emulator(EmulatorSettings()) as stand_in:
        os.environ.update(stand_in.environment())
        stand_in.configure(
            bedrock_faults=(
                Misbehaviour(operations=frozenset({"InvokeModel"}), latency_seconds=args.latency),
            )
        )
        corpus = _corpus(Path(scratch) / "corpus", args.copies)
        settings = NovaflowSettings(
            store=str(Path(scratch) / "store"),
            backend="aws",
            index=IndexSettings(vector_bucket="bench", index="rerun"),
            throughput=ThroughputSettings(shard_size=50, concurrency=8),
        )
        warm_up = NovaflowSettings(
            store=str(Path(scratch) / "warm"), backend="aws", index=settings.index
        )
        reembed(ReembedParameters(corpus=str(corpus / "copy-0" / "texts"), settings=warm_up))
        timings = []
        for label in ("first run", "unchanged re-run"):
            stand_in.reset_stats()
            started = time.perf_counter()
            summary = reembed(ReembedParameters(corpus=str(corpus), settings=settings))
            elapsed = time.perf_counter() - started
            calls = stand_in.stats()["bedrock-runtime"]["calls"].get("InvokeModel", 0)
            timings.append(elapsed)
            print(
                f"{label:<17} {elapsed:7.2f} s  {summary.units_embedded:4d} units embedded  "
                f"{calls:4d} model calls  items {summary.items}"
            )
        print(
            f"unchanged re-run / first run = {timings[1] / timings[0]:.3f} "
            f"({args.copies} demo corpora, {args.latency * 1000:.0f} ms per model call)"
        )


if __name__ == "__main__":
    main()
