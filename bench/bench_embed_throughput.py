"""Sync embedding throughput against its two bounds, measured side by side in one run.

1. Latency-bound: with L seconds added to every InvokeModel and C calls in flight, the best
   possible rate is C / L units per second. Goal: achieved / bound ≥ 0.9. A bare thread pool
   making the same calls with the same client is measured alongside, as the reference for what
   this process can do at all.
2. Quota-bound: under a request quota of Q per second (answered with ThrottlingException), the
   best possible goodput is Q. Goal: goodput / Q ≥ 0.9 with no unit lost, both with the pacer set
   at the quota and at twice it (the embedder must then absorb the throttling). The quota starts
   with a full second's worth of requests, which flatters goodput / Q, so a stricter ratio is
   printed for information: the least time N units can take under the quota, (N − Q) / Q, over
   the time they took.

The stand-in runs in this process; clients reach it only through the environment it publishes.
It shares this process's CPU and GIL (~5-6 ms per call for client and stand-in together; the
ceiling is printed first), so C / L is kept well below that ceiling for latency, not CPU, to bind.
Run: ``.venv/bin/python bench/bench_embed_throughput.py`` (about 40 s; exits 1 when a goal is
missed or a unit is lost), or with ``--smoke`` (a fifth of the units, about 10 s; the same runs,
too short for the ratios to judge the goals, so it always exits 0). Prints ratios, not bare
timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import Misbehaviour
from tasks.aws_clients import bedrock_runtime_client
from tasks.embed.embedder import Embedder, WorkItem
from tasks.nova.requests import Payload, invoke_model_body
from tasks.pacing import Pacer
from tasks.records import Failure
from tasks.settings import EmbeddingSettings, ThroughputSettings

SETTINGS = EmbeddingSettings(dimension=256)
CONCURRENCY = 16
LATENCY_SECONDS = 0.5
QUOTA_PER_SECOND = 40.0
QUOTA_LATENCY_SECONDS = 0.005
GOAL = 0.9
UNPACED = 100_000.0


@dataclass(frozen=True)
class Sizes:
    """Units embedded in each run of the bench."""

    warm_up: int
    ceiling: int
    latency: int
    quota: int


FULL = Sizes(warm_up=64, ceiling=400, latency=256, quota=360)
SMOKE = Sizes(warm_up=16, ceiling=80, latency=64, quota=120)


@dataclass(frozen=True)
class Run:
    """One measured run: units in, units embedded and quarantined, wall time, counters."""

    units: int
    embedded: int
    quarantined: int
    seconds: float
    model_calls: int = 0
    throttles: int = 0

    @property
    def per_second(self) -> float:
        """Units embedded per second of wall time."""
        return self.embedded / self.seconds

    @property
    def lost(self) -> int:
        """Units that ended neither embedded nor quarantined."""
        return self.units - self.embedded - self.quarantined


def texts(tag: str, units: int) -> Iterator[WorkItem]:
    """``units`` distinct short texts, keyed ``<tag>-<n>``, as the embedder takes work."""
    for n in range(units):
        yield f"{tag}-{n}", f"{tag}-{n}", lambda n=n: Payload("text", text=f"{tag} note {n}")


def embedded_run(
    emulator: Emulator, faults: Misbehaviour, units: int, pace: float, tag: str
) -> Run:
    """Embed ``units`` distinct texts with the Embedder, the stand-in misbehaving as ``faults``."""
    emulator.configure(bedrock_faults=(faults,))
    throughput = ThroughputSettings(concurrency=CONCURRENCY, requests_per_second=pace)
    embedder = Embedder(bedrock_runtime_client(CONCURRENCY), SETTINGS, throughput, Pacer(pace))
    embedded = quarantined = 0
    started = time.perf_counter()
    for outcome in embedder.embed(texts(tag, units)):
        if isinstance(outcome, Failure):
            quarantined += 1
        else:
            embedded += 1
    seconds = time.perf_counter() - started
    counters = embedder.counters
    return Run(units, embedded, quarantined, seconds, counters.model_calls, counters.throttles)


def bare_pool_run(emulator: Emulator, faults: Misbehaviour, units: int, tag: str) -> Run:
    """The same calls from a plain ThreadPoolExecutor: no pacing, bounding or classification."""
    emulator.configure(bedrock_faults=(faults,))
    client = bedrock_runtime_client(CONCURRENCY)

    def call(item: WorkItem) -> None:
        body = json.dumps(invoke_model_body(item[2](), SETTINGS))
        client.invoke_model(modelId=SETTINGS.model_id, body=body)["body"].read()

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        done = sum(1 for _ in pool.map(call, texts(tag, units)))
    return Run(units, done, 0, time.perf_counter() - started, done)


def verdict(ratio: float) -> str:
    """``ok`` when ``ratio`` meets the goal, else ``BELOW GOAL``."""
    return "ok" if ratio >= GOAL else "BELOW GOAL"


def main() -> int:
    """Run the bench; 1 when a full-size run misses a goal or loses a unit, else 0."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="fewer units; never exits 1")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    latency = Misbehaviour(operations=frozenset({"InvokeModel"}), latency_seconds=LATENCY_SECONDS)
    quota = Misbehaviour(
        operations=frozenset({"InvokeModel"}),
        requests_per_second=QUOTA_PER_SECOND,
        latency_seconds=QUOTA_LATENCY_SECONDS,
    )
    with Emulator(EmulatorSettings()) as emulator:
        os.environ.update(emulator.environment())
        embedded_run(emulator, Misbehaviour(), sizes.warm_up, UNPACED, "warm-up")
        ceiling = embedded_run(emulator, Misbehaviour(), sizes.ceiling, UNPACED, "ceiling")
        # The pacer is set far above C / L so that only latency and concurrency bind.
        latency_run = embedded_run(emulator, latency, sizes.latency, UNPACED, "latency")
        bare = bare_pool_run(emulator, latency, sizes.latency, "bare")
        at_quota = embedded_run(emulator, quota, sizes.quota, QUOTA_PER_SECOND, "at-quota")
        over_quota = embedded_run(emulator, quota, sizes.quota, 2 * QUOTA_PER_SECOND, "over")

    bound = CONCURRENCY / LATENCY_SECONDS
    ratio = latency_run.per_second / bound
    print(
        f"Sync embedding throughput: stand-in in this process, {SETTINGS.dimension}-d texts"
        + (" (smoke size: figures only, too short to judge the goals)" if args.smoke else "")
    )
    print(
        f"0. no added latency: {ceiling.per_second:.0f} units/s, the CPU ceiling of client and "
        "stand-in together in this process"
    )
    print(f"1. latency-bound: L = {LATENCY_SECONDS} s per call, C = {CONCURRENCY} in flight")
    print(
        f"   embedder   {latency_run.embedded}/{latency_run.units} embedded, "
        f"{latency_run.per_second:5.1f} units/s vs C/L = {bound:.0f}: ratio {ratio:.3f} "
        f"(goal >= {GOAL}) {verdict(ratio)}"
    )
    print(
        f"   bare pool  {bare.per_second:5.1f} units/s vs C/L: ratio {bare.per_second / bound:.3f}"
        f"; embedder / bare pool = {latency_run.per_second / bare.per_second:.2f}"
    )
    print(f"2. quota-bound: Q = {QUOTA_PER_SECOND:.0f} requests/s, C = {CONCURRENCY} in flight")
    goodputs = []
    for name, run, pace in (
        ("pacer at Q ", at_quota, QUOTA_PER_SECOND),
        ("pacer at 2Q", over_quota, 2 * QUOTA_PER_SECOND),
    ):
        goodput = run.per_second / QUOTA_PER_SECOND
        strict = (run.units - QUOTA_PER_SECOND) / QUOTA_PER_SECOND / run.seconds
        goodputs.append(goodput)
        print(
            f"   {name} ({pace:.0f}/s): {run.embedded}/{run.units} embedded, {run.quarantined} "
            f"quarantined, {run.lost} lost; goodput {run.per_second:4.1f}/s: goodput/Q "
            f"{goodput:.3f} (goal >= {GOAL}) {verdict(goodput)}, least time/time {strict:.3f}; "
            f"{run.throttles} throttled of {run.model_calls} calls"
        )
    runs = (ceiling, latency_run, at_quota, over_quota)
    failed = ratio < GOAL or min(goodputs) < GOAL or any(r.embedded != r.units for r in runs)
    return 1 if failed and not args.smoke else 0


if __name__ == "__main__":
    raise SystemExit(main())
