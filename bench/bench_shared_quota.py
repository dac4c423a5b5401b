"""Two runs sharing one request quota through a Prefect global rate limit, measured side by side.

A nightly run and a backfill, each a ``reembed`` flow run in a process of its own, start together
(both processes are imported and waiting when the bench releases them) against one stand-in
whose InvokeModel quota is Q requests per second (calls beyond it are answered with
ThrottlingException and counted by the stand-in), both talking to one ``prefect server start``
(loopback, a free port, a Prefect home of its own, stopped at the end). Each run embeds its own
text corpus into its own index, paced at Q in its process (a run alone may use the whole quota).

1. shared budget: both runs name one global limit used as a rate limit (Q slots, refilled at Q
   per second); each process takes slots in batches and spends them through its own pacer.
   Goals: no call throttled; summed goodput / Q >= 0.9, where goodput is the calls the stand-in
   accepted over the span from the first call to the last of either run (the quota's first
   second is a full bucket, which flatters the ratio: a stricter one, (N - Q) / Q over that span,
   is printed for information); every unit of both runs embedded.
2. own pacers (the contrast; not at --smoke): the same two runs without the shared budget, each
   pacing itself at Q, as two runs each configured for the account's quota would.
3. alone (not at --smoke): one run with the shared budget: how much of it one process takes.

For each it prints the throttled calls, goodput / Q, the accepted rate after the first second
(whose full bucket lets up to 2 Q through) as a share of Q, from the stand-in's counts sampled
every 20 ms, and per run its units, wall time and the budget's acquisitions (round trips to
Prefect) and the slots that expired unspent.
Run: ``.venv/bin/python bench/bench_shared_quota.py`` (about 2 minutes; exits 1 when a goal of
the shared budget is missed), or with ``--smoke`` (the shared-budget runs only, 60 units each:
about 30 s, most of it starting Prefect's server and the two processes; figures only, always
exits 0). Prints ratios, not bare timings.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import Misbehaviour

QUOTA_PER_SECOND = 40.0
LATENCY_SECONDS = 0.05
CONCURRENCY = 8
GOAL = 0.9
SAMPLE_SECONDS = 0.02
SERVER_START_SECONDS = 180.0
RUN_SECONDS = 600.0
LIMIT_NAME = "novaflow-bench-bedrock-rps"


@dataclass(frozen=True)
class Sizes:
    """Units per run, units per shard, and whether the contrast scenarios run."""

    units: int
    shard_size: int
    contrast: bool


FULL = Sizes(units=400, shard_size=50, contrast=True)
SMOKE = Sizes(units=60, shard_size=20, contrast=False)


@dataclass(frozen=True)
class RunResult:
    """What one run's process reported: its summary's counts, wall time and budget counters."""

    name: str
    units: int
    embedded: int
    quarantined: int
    model_calls: int
    throttles: int
    seconds: float
    budget: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A scenario's runs and what the stand-in counted: ``samples`` are (seconds, calls,
    throttled calls) of InvokeModel, sampled while the runs went."""

    name: str
    runs: tuple[RunResult, ...]
    samples: tuple[tuple[float, int, int], ...]

    @property
    def calls(self) -> int:
        """InvokeModel calls the stand-in answered, throttled ones included."""
        return self.samples[-1][1]

    @property
    def throttled(self) -> int:
        """Calls the stand-in answered with ThrottlingException."""
        return self.samples[-1][2]

    @property
    def accepted(self) -> int:
        """Calls within the quota: one embedded unit each."""
        return self.calls - self.throttled

    @property
    def span(self) -> float:
        """Seconds from the first call of either run to the last call of either."""
        first = next(t for t, calls, _ in self.samples if calls > 0)
        last = next(t for t, calls, _ in self.samples if calls == self.calls)
        return max(last - first, SAMPLE_SECONDS)

    @property
    def goodput_ratio(self) -> float:
        """Accepted calls per second over the span, as a share of the quota."""
        return self.accepted / self.span / QUOTA_PER_SECOND

    @property
    def strict_ratio(self) -> float:
        """The least time the accepted calls can take under the quota (the first second's full
        bucket taken off), over the span."""
        return (self.accepted - QUOTA_PER_SECOND) / QUOTA_PER_SECOND / self.span

    @property
    def sustained_per_second(self) -> float:
        """Accepted calls per second after the first second of calls (whose full bucket lets
        up to 2 Q through) to the last call: at or under Q when the runs keep to the quota."""
        first = next(t for t, calls, _ in self.samples if calls > 0)
        if self.span <= 1.0:
            return float("nan")
        after = next((c - th) for t, c, th in self.samples if t >= first + 1.0)
        return (self.accepted - after) / (self.span - 1.0)

    @property
    def complete(self) -> bool:
        """Every unit of every run embedded, none quarantined."""
        return all(r.embedded == r.units and r.quarantined == 0 for r in self.runs)


# -- the Prefect server, the corpora, the runs' processes -----------------------------------


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """``prefect server start`` on loopback and a free port, with its own Prefect home, in a
    process group of its own that is stopped at the end; yields its API URL."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    command = [
        *(str(Path(sys.executable).parent / "prefect"), "server", "start"),
        *("--host", "127.0.0.1", "--port", str(port), "--no-ui", "--no-services"),
    ]
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited {server.returncode}: see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("prefect server did not answer in time") from None
                time.sleep(0.2)
        yield url
    finally:
        # The server's uvicorn is a child of the CLI: stop the whole group this bench started.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def text_corpus(root: Path, tag: str, units: int) -> Path:
    """``units`` distinct one-chunk texts under ``root`` and their manifest; returns its path."""
    (root / "notes").mkdir(parents=True)
    rows = []
    for n in range(units):
        (root / "notes" / f"{n}.txt").write_text(f"{tag} note {n}: the river delta at dusk\n")
        rows.append({"id": f"{tag}/{n}", "uri": f"notes/{n}.txt"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def run_spec(work: Path, scenario: str, run: str, sizes: Sizes, shared: bool) -> Path:
    """Write what one run's process needs (corpus, settings) and return the spec's path."""
    from tasks.settings import (
        EmbeddingSettings,
        EvaluationSettings,
        IndexSettings,
        NovaflowSettings,
        ThroughputSettings,
    )

    base = work / scenario / run
    manifest = text_corpus(base / "corpus", f"{scenario}-{run}", sizes.units)
    shared_budget: dict[str, Any] = (
        {"shared_rate_limit_name": LIMIT_NAME, "shared_requests_per_second": QUOTA_PER_SECOND}
        if shared
        else {}
    )
    settings = NovaflowSettings(
        store=str(base / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="bench-shared-quota", index=f"i-{uuid.uuid4().hex[:8]}"),
        embedding=EmbeddingSettings(dimension=256),
        throughput=ThroughputSettings(
            shard_size=sizes.shard_size,
            concurrency=CONCURRENCY,
            requests_per_second=QUOTA_PER_SECOND,
            render_processes=1,
            **shared_budget,
        ),
        evaluation=EvaluationSettings(enabled=False),
    )
    spec = base / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "name": run,
                "manifest": str(manifest),
                "root": str(manifest.parent),
                "settings": settings.model_dump(mode="json"),
            }
        )
    )
    return spec


def run_child(spec_path: str) -> int:
    """One run, in this process: import everything, say ``ready``, wait for ``go`` on stdin,
    run the flow and print its result as one ``RESULT {json}`` line."""
    from flows.reembed import ReembedParameters, reembed_flow
    from tasks.global_limits import shared_request_pacer
    from tasks.settings import NovaflowSettings

    spec = json.loads(Path(spec_path).read_text())
    settings = NovaflowSettings.model_validate(spec["settings"])
    params = ReembedParameters(manifest=spec["manifest"], root=spec["root"], settings=settings)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    summary = reembed_flow(settings)(params)
    seconds = time.perf_counter() - started
    pacer = shared_request_pacer(settings.throughput)
    budget: dict[str, Any] = {}
    if pacer is not None:
        counters = pacer.budget.counters
        budget = {
            "batch": pacer.budget.batch,
            "acquisitions": counters.acquisitions,
            "granted": counters.granted,
            "expired": counters.expired,
            "given_back": counters.given_back,
            "held": counters.held,
        }
    result = RunResult(
        name=spec["name"],
        units=summary.units_planned,
        embedded=summary.units_embedded,
        quarantined=summary.units_quarantined,
        model_calls=summary.model_calls,
        throttles=summary.throttles,
        seconds=seconds,
        budget=budget,
    )
    print("RESULT " + json.dumps(result.__dict__), flush=True)
    return 0


def run_scenario(
    emulator: Emulator, api_url: str, work: Path, name: str, runs: tuple[str, ...], **spec: Any
) -> Scenario:
    """Start one process per run, release them together once all are ready, sample the
    stand-in's counts until all have reported, and collect their results."""
    specs = [run_spec(work, name, run, **spec) for run in runs]
    env = {
        **os.environ,
        **emulator.environment(),
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    emulator.configure(
        bedrock_faults=(
            Misbehaviour(
                operations=frozenset({"InvokeModel"}),
                requests_per_second=QUOTA_PER_SECOND,
                latency_seconds=LATENCY_SECONDS,
            ),
        )
    )
    emulator.reset_stats()
    children = []
    for run, path in zip(runs, specs, strict=True):
        log = (work / name / run / "child.log").open("w")
        children.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child", str(path)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        )
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a run's process did not start: see {work / name}")
        samples: list[tuple[float, int, int]] = []
        done = threading.Event()
        sampler = threading.Thread(target=_sample, args=(emulator, samples, done), daemon=True)
        sampler.start()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [_result_of(child, work / name) for child in children]
        done.set()
        sampler.join()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
            child.wait(timeout=60)
    return Scenario(name, tuple(results), tuple(samples))


def _sample(
    emulator: Emulator, samples: list[tuple[float, int, int]], done: threading.Event
) -> None:
    started = time.perf_counter()
    while True:
        finished = done.is_set()
        stats = emulator.stats()["bedrock-runtime"]
        calls = stats["calls"].get("InvokeModel", 0)
        throttled = stats["errors"].get("InvokeModel", {}).get("ThrottlingException", 0)
        samples.append((time.perf_counter() - started, calls, throttled))
        if finished:
            return
        done.wait(SAMPLE_SECONDS)


def _result_of(child: subprocess.Popen[str], where: Path) -> RunResult:
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("RESULT "):
            return RunResult(**json.loads(line.removeprefix("RESULT ")))
    raise RuntimeError(f"a run ended without its result (exit {child.wait()}): see {where}")


# -- the report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    """``ok`` or ``BELOW GOAL``."""
    return "ok" if ok else "BELOW GOAL"


def report(scenario: Scenario, judged: bool) -> None:
    """Print one scenario's figures (with verdicts when ``judged``)."""
    ratio = scenario.goodput_ratio
    print(f"{scenario.name}:")
    print(
        f"   together: {scenario.accepted} accepted, {scenario.throttled} throttled of "
        f"{scenario.calls} calls"
        + (f" (goal 0) {verdict(scenario.throttled == 0)}" if judged else "")
    )
    print(
        f"   goodput {scenario.accepted / scenario.span:5.1f}/s over {scenario.span:.1f} s: "
        f"goodput/Q {ratio:.3f}"
        + (f" (goal >= {GOAL}) {verdict(ratio >= GOAL)}" if judged else "")
        + f", least time/time {scenario.strict_ratio:.3f}; after the first second "
        f"{scenario.sustained_per_second / QUOTA_PER_SECOND:.3f} Q"
    )
    for run in scenario.runs:
        budget = run.budget
        shared = (
            f"; budget: {budget['acquisitions']} acquisitions of {budget['batch']} "
            f"({budget['acquisitions'] / run.seconds:.1f}/s), {budget['expired']} expired, "
            f"{budget['given_back']} given back"
            if budget
            else ""
        )
        print(
            f"   {run.name:8} {run.embedded}/{run.units} embedded, {run.quarantined} quarantined, "
            f"{run.throttles} throttled of {run.model_calls} calls, {run.seconds:.1f} s{shared}"
        )


def main() -> int:
    """Run the bench; 1 when a full-size run misses a goal of the shared budget, else 0."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="shared runs only; never exits 1")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args.child)
    sizes = SMOKE if args.smoke else FULL
    with tempfile.TemporaryDirectory(prefix="bench-shared-quota-") as tmp:
        work = Path(tmp)
        (work / "prefect-home").mkdir()
        with Emulator(EmulatorSettings()) as emulator, prefect_server(work / "prefect-home") as api:
            pair = ("nightly", "backfill")
            shared = run_scenario(emulator, api, work, "shared", pair, sizes=sizes, shared=True)
            contrast = []
            if sizes.contrast:
                contrast = [
                    run_scenario(
                        emulator, api, work, "own-pacers", pair, sizes=sizes, shared=False
                    ),
                    run_scenario(
                        emulator, api, work, "alone", ("nightly",), sizes=sizes, shared=True
                    ),
                ]
    print(
        f"Two runs under one quota: Q = {QUOTA_PER_SECOND:.0f} InvokeModel/s on the stand-in, "
        f"{LATENCY_SECONDS * 1000:.0f} ms per call, {sizes.units} text units per run, each run "
        f"paced at Q in its own process, one prefect server"
        + (" (smoke size: figures only, too short to judge the goals)" if args.smoke else "")
    )
    report(shared, judged=not args.smoke)
    for scenario in contrast:
        report(scenario, judged=False)
    failed = shared.throttled > 0 or shared.goodput_ratio < GOAL or not shared.complete
    return 1 if failed and not args.smoke else 0


if __name__ == "__main__":
    raise SystemExit(main())
