"""The unchanged re-run against the first run, side by side in one process.

A nightly run over a corpus that did not change should cost a crawl and a diff, not a
re-embedding: this prints both wall times, their ratio, and the calls each made to the model
(``InvokeModel`` for short units, ``StartAsyncInvoke`` for the long audio and video). The
stand-in adds a fixed latency per ``InvokeModel`` so the first run pays for embedding as it would
on Bedrock; its async jobs take ``--job-seconds`` each.

The stand-in runs in this process, started by the bench (not by ``backend="local"``) because the
bench needs its handle: to add the latency and to count calls per run. The pipeline runs with
``backend="aws"``, as a nightly run against an account does, so the bench creates the bucket the
async jobs stage their inputs in (``novaflow-async``), as such an account has it.

The evaluation stage that ends every run is off by default: it measures the whole index, so its
cost does not depend on what changed and would hide the figure this bench is about. Pass
``--with-evaluation`` to include it in both runs.

Run: ``.venv/bin/python bench/bench_rerun.py [--copies 4] [--latency 0.05]`` (about a minute on
2 cores), or ``--smoke`` (one demo corpus, well under 30 s). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import AsyncJobBehaviour, Misbehaviour
from flows.reembed import ReembedParameters, reembed
from tasks.demo.corpus import generate_demo_corpus
from tasks.report.summary import RunSummary
from tasks.s3_objects import ensured_bucket
from tasks.settings import (
    EvaluationSettings,
    IndexSettings,
    NovaflowSettings,
    ThroughputSettings,
)

FULL_COPIES = 4
SMOKE_COPIES = 1
FULL_JOB_SECONDS = 2.0  # the stand-in's default
SMOKE_JOB_SECONDS = 1.0  # what `novaflow run --backend local` gives its stand-in


@dataclass(frozen=True)
class Measured:
    """One run as the stand-in and the summary saw it."""

    label: str
    seconds: float
    summary: RunSummary
    invoke_calls: int
    async_submissions: int

    def line(self) -> str:
        """Wall time, units and async segments embedded, and model calls made by this run."""
        summary = self.summary
        return (
            f"{self.label:<17} {self.seconds:7.2f} s  {summary.units_embedded:4d} units + "
            f"{summary.async_segments_embedded:3d} async segments embedded  "
            f"{self.invoke_calls:4d} InvokeModel  {self.async_submissions:2d} StartAsyncInvoke  "
            f"items {summary.items}"
        )


def _corpus(root: Path, copies: int) -> Path:
    """``copies`` demo corpora side by side, crawled as one directory (the broken files left
    out: this bench measures work done, not quarantine)."""
    for copy in range(copies):
        demo = generate_demo_corpus(root / f"copy-{copy}", seed=copy)
        shutil.rmtree(demo.root / "broken", ignore_errors=True)
        # The manifest and the labeled queries describe the corpus; crawled, they would be
        # embedded as two more texts.
        for labels in (demo.manifest, demo.qrels):
            if labels is not None:
                labels.unlink()
    return root


def _measured(label: str, stand_in: Emulator, corpus: Path, settings: NovaflowSettings) -> Measured:
    """One new run (a run id of its own) over ``corpus``, with fresh call counters."""
    params = ReembedParameters(corpus=str(corpus), settings=settings)
    stand_in.reset_stats()
    started = time.perf_counter()
    summary = reembed(params)
    seconds = time.perf_counter() - started
    calls = stand_in.stats()["bedrock-runtime"]["calls"]
    return Measured(
        label, seconds, summary, calls.get("InvokeModel", 0), calls.get("StartAsyncInvoke", 0)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--copies", type=int, default=None, help=f"demo corpora to crawl as one ({FULL_COPIES})"
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per InvokeModel")
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=None,
        help=f"seconds each stand-in async job runs ({FULL_JOB_SECONDS:g})",
    )
    parser.add_argument(
        "--with-evaluation", action="store_true", help="end both runs with the evaluation stage"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_COPIES} demo corpus, jobs of {SMOKE_JOB_SECONDS:g} s, unless given",
    )
    args = parser.parse_args()
    copies = args.copies or (SMOKE_COPIES if args.smoke else FULL_COPIES)
    job_seconds = args.job_seconds
    if job_seconds is None:
        job_seconds = SMOKE_JOB_SECONDS if args.smoke else FULL_JOB_SECONDS
    evaluation = EvaluationSettings(enabled=args.with_evaluation)
    behaviour = AsyncJobBehaviour(job_seconds=job_seconds)
    with (
        tempfile.TemporaryDirectory() as scratch,
        Emulator(EmulatorSettings(async_jobs=behaviour)) as stand_in,
    ):
        os.environ.update(stand_in.environment())
        stand_in.configure(
            bedrock_faults=(
                Misbehaviour(operations=frozenset({"InvokeModel"}), latency_seconds=args.latency),
            )
        )
        corpus = _corpus(Path(scratch) / "corpus", copies)
        settings = NovaflowSettings(
            store=str(Path(scratch) / "store"),
            backend="aws",
            index=IndexSettings(vector_bucket="bench", index="rerun"),
            throughput=ThroughputSettings(shard_size=50, concurrency=8),
            evaluation=evaluation,
        )
        s3 = stand_in.client("s3")
        for uri in (settings.async_jobs.staging_uri, settings.async_jobs.output_uri):
            ensured_bucket(s3, uri, create=True)
        # Pays for imports, Prefect's start and the vector bucket before anything is timed; into
        # an index of its own, so that the first measured run starts from an empty one.
        warm_up = NovaflowSettings(
            store=str(Path(scratch) / "warm"),
            backend="aws",
            index=IndexSettings(vector_bucket="bench", index="rerun-warm-up"),
            evaluation=evaluation,
        )
        reembed(ReembedParameters(corpus=str(corpus / "copy-0" / "texts"), settings=warm_up))
        first = _measured("first run", stand_in, corpus, settings)
        rerun = _measured("unchanged re-run", stand_in, corpus, settings)

    print(
        f"{copies} demo corpora, {args.latency * 1000:.0f} ms per InvokeModel, async jobs of "
        f"{job_seconds:g} s; evaluation stage "
        + (
            "ON in both runs"
            if args.with_evaluation
            else "OFF: it measures the whole index whatever changed (--with-evaluation adds it)"
        )
    )
    for run in (first, rerun):
        print(run.line())
    print(
        f"unchanged re-run / first run = {rerun.seconds / first.seconds:.3f} wall time; "
        f"model calls {rerun.invoke_calls + rerun.async_submissions} against "
        f"{first.invoke_calls + first.async_submissions}"
    )


if __name__ == "__main__":
    main()
