"""Async job polling: status calls per job against job duration, and how late an end is noticed.

Goals (the async-jobs issue): status calls per job grow with the log of the job's duration, not
linearly; a job that ends is noticed within the backoff interval in force, i.e. the notice delay
(noticed − ended) is at most the gap between the noticing status call and the one before it.

1. Simulated time, real runner: ``AsyncJobRunner`` with a real ``JobLedger`` polls a scripted
   ``JobService`` whose jobs end exactly D seconds after submission, on a clock that advances
   only when the runner sleeps. For D from 30 s to 2 h (the async maximum) it prints calls per
   job beside two models (pure log growth, and the capped schedule) and beside a fixed-interval
   poller, then the fits and ratios, and the same durations under a larger ``poll_max_seconds``.
2. Real time, local stand-in: the same runner with ``BedrockJobService`` over real clients and
   the system clock, against stand-in jobs of a few seconds, with the schedule scaled down
   (``poll_initial_seconds`` 0.1 instead of 2). The job's end is GetAsyncInvoke's ``endTime``.

Run: ``.venv/bin/python bench/bench_async_polling.py [--no-stand-in] [--smoke]`` (about 30 s;
``--smoke`` keeps part 1 whole, it takes a second or two, and runs part 2 with 2 jobs of 1 s and
of 2 s: about 10 s). Prints figures and ratios; nothing here depends on machine speed except
part 2's delays, which are informational.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import AsyncJobBehaviour
from tasks.aws_clients import bedrock_runtime_client
from tasks.demo.sample_media import sample_audio
from tasks.job_ledger import JobLedger
from tasks.jobs.runner import AsyncJobRunner, Collected, Submission
from tasks.jobs.service import (
    BedrockJobService,
    Clock,
    JobService,
    JobState,
    PollSchedule,
    SystemClock,
)
from tasks.nova.segmented import client_request_token, start_async_invoke_arguments
from tasks.records import Unit
from tasks.settings import AsyncJobSettings, EmbeddingSettings
from tasks.store import CheckpointStore

DURATIONS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
SEEDS = 4  # runner seeds (jitter streams) per duration
JOBS_PER_RUN = 8  # jobs in flight together in each run (max_jobs_in_flight's default)
LARGER_CAP_SECONDS = 1800.0
SIM_EPOCH = 1_700_000_000.0
STAND_IN_JOB_SECONDS = (1.0, 2.0, 4.0, 8.0)
STAND_IN_JOBS = 3
SMOKE_JOB_SECONDS = (1.0, 2.0)
SMOKE_JOBS = 2
INPUT_URI = "s3://bench-in/tone.wav"
OUTPUT_URI = "s3://bench-out/jobs"
STAND_IN_SETTINGS = AsyncJobSettings(
    poll_initial_seconds=0.1, poll_multiplier=1.5, status_calls_per_second=100.0
)


@dataclass(frozen=True)
class JobMeasure:
    """One job as the runner saw it: its length, status calls, notice delay, the gap between the
    noticing call and the call (or submission) before it, and ``stale``: how long after its own
    end time the service still answered InProgress to a status call (0 if it is consistent)."""

    seconds: float
    calls: int
    delay: float
    gap: float
    stale: float


class SimulatedClock:
    """A ``Clock`` on simulated time: ``sleep`` advances it at once."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


class SimulatedJobs:
    """A ``JobService`` whose job ends ``arguments["seconds"]`` after submission, completed."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._ends: dict[str, float] = {}

    def start(self, arguments: Mapping[str, Any]) -> str:
        arn = f"arn:aws:bedrock:us-east-1:123456789012:async-invoke/sim{len(self._ends)}"
        self._ends[arn] = self._clock.now() + float(arguments["seconds"])
        return arn

    def state(self, invocation_arn: str) -> JobState:
        end = self._ends[invocation_arn]
        folder = f"s3://sim/out/{invocation_arn.rpartition('/')[2]}"
        if self._clock.now() < end:
            return JobState("InProgress", folder)
        return JobState("Completed", folder, ended_at=end)


class CallLog:
    """A ``JobService`` passing calls through, noting per job when it was submitted and when
    each status call was sent, with the status it answered."""

    def __init__(self, inner: JobService, clock: Clock) -> None:
        self._inner = inner
        self._clock = clock
        self.calls: dict[str, list[tuple[float, str]]] = {}

    def start(self, arguments: Mapping[str, Any]) -> str:
        arn = self._inner.start(arguments)
        self.calls[arn] = [(self._clock.now(), "Submitted")]
        return arn

    def state(self, invocation_arn: str) -> JobState:
        sent = self._clock.now()
        state = self._inner.state(invocation_arn)
        self.calls[invocation_arn].append((sent, state.status))
        return state


def measured_jobs(
    service: JobService,
    clock: Clock,
    settings: AsyncJobSettings,
    submissions: Sequence[Submission],
    seed: int,
) -> list[JobMeasure]:
    """Run ``submissions`` to an end with the real runner and ledger; one measure per job."""
    log = CallLog(service, clock)
    units = [
        Unit(key=f"job-{n}", item_id=f"job-{n}", uri=s.input_uri, kind="audio", route="async")
        for n, s in enumerate(submissions)
    ]
    by_key = dict(zip((u.key for u in units), submissions, strict=True))
    with tempfile.TemporaryDirectory() as scratch:
        ledger = JobLedger(CheckpointStore(scratch), "bench")
        prepare, collect = (lambda unit, _: by_key[unit.key]), (lambda *_: Collected(1, 0))
        runner = AsyncJobRunner(
            ledger, log, settings, prepare, collect, lambda *_: None, clock, seed
        )
        outcome = runner.run(units)
        records = list(ledger.latest_by_unit().values())
    if outcome.collected != len(units):
        print(f"  !! {len(units) - outcome.collected} job(s) did not end collected: {outcome}")
    measures = []
    for record in records:
        calls = log.calls[record.invocation_arn or ""]
        if record.status_calls != len(calls) - 1:
            print(f"  !! ledger counts {record.status_calls} calls, service saw {len(calls) - 1}")
        ended, noticed, submitted = record.ended_at, record.noticed_at, record.submitted_at
        if ended is None or noticed is None or submitted is None:
            print(f"  !! {record.unit_key} ended {record.status} without its times")
            continue
        measures.append(
            JobMeasure(
                seconds=ended - submitted,
                calls=record.status_calls,
                delay=noticed - ended,
                gap=calls[-1][0] - calls[-2][0],
                stale=max([0.0] + [t - ended for t, status in calls if status == "InProgress"]),
            )
        )
    return measures


def simulated(settings: AsyncJobSettings, seconds: float) -> list[JobMeasure]:
    """``SEEDS`` runs of ``JOBS_PER_RUN`` jobs lasting ``seconds``, on simulated time."""
    measures = []
    for seed in range(SEEDS):
        clock = SimulatedClock(SIM_EPOCH + 10_000.0 * seed)
        submissions = [
            Submission(
                f"s3://sim/in/{n}.wav", "s3://sim/out", f"t-{seed}-{n}", {"seconds": seconds}
            )
            for n in range(JOBS_PER_RUN)
        ]
        measures += measured_jobs(SimulatedJobs(clock), clock, settings, submissions, seed)
    return measures


# -- models ----------------------------------------------------------------------------------


def mean_jitter(schedule: PollSchedule) -> float:
    """The mean factor jitter applies to an interval (draws are uniform)."""
    return 1.0 - schedule.jitter / 2.0


def log_model(schedule: PollSchedule, seconds: float) -> float:
    """Calls if the interval were never capped: cumulative mean intervals reach ``seconds`` at
    ``log_m(1 + D (m − 1) / (initial × mean jitter))`` polls."""
    first = schedule.initial * mean_jitter(schedule)
    if schedule.multiplier == 1.0:
        return math.ceil(seconds / first)
    ratio = 1 + seconds * (schedule.multiplier - 1) / first
    return math.ceil(math.log(ratio, schedule.multiplier))


def schedule_model(schedule: PollSchedule, seconds: float) -> int:
    """Calls under the real (capped) schedule with mean jitter: polls until their sum ≥ D."""
    calls, elapsed = 0, 0.0
    while elapsed < seconds:
        elapsed += schedule.nominal(calls) * mean_jitter(schedule)
        calls += 1
    return calls


def cap_point(schedule: PollSchedule) -> tuple[int, float]:
    """Answers after which the nominal interval is capped, and the nominal time of that call."""
    polls = 0
    while schedule.initial * schedule.multiplier**polls < schedule.maximum:
        polls += 1
    return polls, sum(schedule.nominal(n) for n in range(polls))


# -- printing --------------------------------------------------------------------------------

HEADER = (
    f"{'D':>11} {'jobs':>4} {'calls mean':>10} {'max':>4} {'log model':>9} {'capped':>6} "
    f"{'fixed':>6} {'delay mean':>10} {'max':>8} {'max delay/gap':>13} {'max delay/D':>11}"
)


def shown(seconds: float) -> str:
    """``30 s``, ``20 min``, ``2 h``: a duration as a reader would say it."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def row(
    label: str, measures: Sequence[JobMeasure], schedule: PollSchedule, stale: bool = False
) -> str:
    """One table line for jobs of one (mean) duration; ``stale`` adds the stale column (ms)."""
    length = statistics.fmean(m.seconds for m in measures)
    calls = [m.calls for m in measures]
    delays = [m.delay for m in measures]
    return (
        f"{label:>11} {len(measures):4d} {statistics.fmean(calls):10.1f} {max(calls):4d} "
        f"{log_model(schedule, length):9.0f} {schedule_model(schedule, length):6d} "
        f"{math.ceil(length / schedule.initial):6d} {statistics.fmean(delays):9.2f}s "
        f"{max(delays):7.2f}s {max(m.delay / m.gap for m in measures):13.4f} "
        f"{max(m.delay / m.seconds for m in measures):11.3f}"
        + (f" {max(m.stale for m in measures) * 1000:11.1f}" if stale else "")
    )


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ``ys`` on ``xs`` and the fit's R²."""
    slope, _ = statistics.linear_regression(xs, ys)
    return slope, statistics.correlation(xs, ys) ** 2


def print_fits(results: Mapping[float, list[JobMeasure]], capped_from: float) -> None:
    """Calls against log2(D) and against D, in the uncapped and in the capped region."""
    for name, keep in (
        (f"uncapped region (D < {shown(capped_from)})", lambda d: d < capped_from),
        (f"capped region   (D > {shown(capped_from)})", lambda d: d > capped_from),
    ):
        durations = [d for d in results if keep(d)]
        calls = [statistics.fmean(m.calls for m in results[d]) for d in durations]
        per_doubling, r2_log = fit([math.log2(d) for d in durations], calls)
        per_hour, r2_lin = fit([d / 3600 for d in durations], calls)
        print(
            f"  {name}: calls ~ log2(D): {per_doubling:5.2f} calls per doubling, R² {r2_log:.3f}"
            f" | calls ~ D: {per_hour:6.1f} calls per hour, R² {r2_lin:.3f}"
        )


def part_one() -> None:
    """Simulated time: the table, the summary ratios, and the larger cap beside the default."""
    default = AsyncJobSettings()
    larger = AsyncJobSettings(poll_max_seconds=LARGER_CAP_SECONDS)
    schedule = PollSchedule.of(default)
    print(
        f"Part 1 - simulated time, real AsyncJobRunner + JobLedger; schedule {schedule.initial:g} s"
        f" x {schedule.multiplier:g}, cap {schedule.maximum:g} s, jitter {schedule.jitter:g};"
        f" {SEEDS} seeds x {JOBS_PER_RUN} jobs in flight per D"
    )
    print(
        "  log model: calls if never capped; capped: the real schedule's expected calls;\n"
        f"  fixed: a poller every {schedule.initial:g} s; gap: noticing call - previous call\n"
        + HEADER
    )
    results = {d: simulated(default, d) for d in DURATIONS}
    for seconds, measures in results.items():
        print(row(shown(seconds), measures, schedule))

    def calls(d: float) -> float:
        return statistics.fmean(m.calls for m in results[d])

    polls, capped_at = cap_point(schedule)
    print()
    log_ratio = log_model(schedule, 7200) / log_model(schedule, 60)
    print(
        f"calls(2 h) / calls(1 min) = {calls(7200) / calls(60):.2f}  (duration ratio 120: linear "
        f"polling would be 120x; the uncapped log model {log_ratio:.2f}x)"
    )
    print(
        f"calls(20 min) / calls(1 min) = {calls(1200) / calls(60):.2f}  (duration ratio 20; "
        f"fixed {schedule.initial:g} s poller at 2 h: {7200 / schedule.initial:.0f} calls per job)"
    )
    print_fits(results, capped_at)
    worst = max(m.delay / m.gap for ms in results.values() for m in ms)
    print(f"max notice delay / interval in force, all {len(DURATIONS)} D: {worst:.4f} (goal <= 1)")
    below = [m.delay / m.seconds for d, ms in results.items() if d < capped_at for m in ms]
    print(
        f"max notice delay / D below the cap: {max(below):.3f} (the interval in force is about "
        f"(multiplier - 1) = {schedule.multiplier - 1:g} x the time elapsed: that is the trade)"
    )
    print(
        f"honest note: the interval reaches poll_max_seconds={schedule.maximum:g} s after "
        f"{polls} answers, ~{capped_at:.0f} s ({capped_at / 60:.1f} min) after submission "
        f"(~{capped_at * mean_jitter(schedule):.0f} s with mean jitter); past that, calls grow "
        f"linearly, as D / {schedule.maximum:g} s: {3600 / schedule.maximum:.0f} per hour "
        f"nominal, {3600 / (schedule.maximum * mean_jitter(schedule)):.1f} with mean jitter."
    )
    big = PollSchedule.of(larger)
    big_polls, big_at = cap_point(big)
    print()
    print(
        f"Larger cap: poll_max_seconds={big.maximum:g} (capped after {big_polls} answers, "
        f"~{big_at / 60:.0f} min) beside the default {schedule.maximum:g}, same jobs and seeds"
    )
    print(
        f"{'D':>11} {'calls@300':>9} {'calls@1800':>10} {'ratio':>6} {'delay mean@300':>14} "
        f"{'@1800':>8} {'delay max@300':>13} {'@1800':>8} {'max delay/gap@1800':>18}"
    )
    for seconds in DURATIONS:
        small, large = results[seconds], simulated(larger, seconds)
        c_small = statistics.fmean(m.calls for m in small)
        c_large = statistics.fmean(m.calls for m in large)
        print(
            f"{shown(seconds):>11} {c_small:9.1f} {c_large:10.1f} {c_large / c_small:6.2f} "
            f"{statistics.fmean(m.delay for m in small):13.1f}s "
            f"{statistics.fmean(m.delay for m in large):7.1f}s "
            f"{max(m.delay for m in small):12.1f}s {max(m.delay for m in large):7.1f}s "
            f"{max(m.delay / m.gap for m in large):18.4f}"
        )


# -- part 2 ----------------------------------------------------------------------------------


def stand_in_submissions(jobs: int) -> list[Submission]:
    """``jobs`` StartAsyncInvoke requests over the uploaded WAV, each with a token of its own."""
    tag, embedding = f"bench-{time.time_ns()}", EmbeddingSettings(dimension=256)
    tokens = [client_request_token(tag, f"job-{n}", "tone", "cfg", 1) for n in range(jobs)]
    requests = [
        start_async_invoke_arguments("audio", INPUT_URI, "wav", OUTPUT_URI, t, embedding)
        for t in tokens
    ]
    return [Submission(INPUT_URI, OUTPUT_URI, t, r) for t, r in zip(tokens, requests, strict=True)]


def part_two(job_seconds: Sequence[float], jobs: int) -> None:
    """Real time against the stand-in: ``jobs`` jobs lasting each of ``job_seconds``, polled on
    a scaled-down schedule."""
    schedule = PollSchedule.of(STAND_IN_SETTINGS)
    pace = STAND_IN_SETTINGS.status_calls_per_second
    print(
        f"Part 2 - real time, local stand-in, real BedrockJobService + SystemClock; schedule "
        f"{schedule.initial:g} s x {schedule.multiplier:g}, {pace:g} status calls/s (20x the "
        f"default's pace); {jobs} jobs per row over a 40 s WAV\n  D: job_seconds set: "
        "measured endTime - submission; stale max (ms): how long after its own endTime\n"
        "  the stand-in still answered InProgress to a status call sent to it"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        behaviour = AsyncJobBehaviour(job_seconds=0.2)
        settings = EmulatorSettings(state_dir=Path(scratch) / "state", async_jobs=behaviour)
        with Emulator(settings) as stand_in:
            os.environ.update(stand_in.environment())
            s3 = stand_in.client("s3")
            for bucket in ("bench-in", "bench-out"):
                s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket="bench-in", Key="tone.wav", Body=sample_audio(1, 40.0))
            service = BedrockJobService(
                bedrock_runtime_client(4), bedrock_runtime_client(4, max_attempts=0)
            )
            clock = SystemClock()
            # Warm-up, not shown: the stand-in's first job pays for imports and caches.
            measured_jobs(service, clock, STAND_IN_SETTINGS, stand_in_submissions(1), 0)
            print(
                f"  stand-in up, input uploaded, warmed up in {time.perf_counter() - started:.1f} s"
            )
            print(f"{HEADER} {'stale max':>11}")
            seen: list[JobMeasure] = []
            for seconds in job_seconds:
                stand_in.configure(async_jobs=AsyncJobBehaviour(job_seconds=seconds))
                submissions = stand_in_submissions(jobs)
                measures = measured_jobs(
                    service, clock, STAND_IN_SETTINGS, submissions, int(seconds)
                )
                seen += measures
                length = statistics.fmean(m.seconds for m in measures)
                print(row(f"{seconds:g}: {length:.2f}s", measures, schedule, stale=True))
    print(f"  max notice delay / interval in force: {max(m.delay / m.gap for m in seen):.4f}")
    over = [m for m in seen if m.delay > m.gap]
    unexplained = [m for m in over if abs(m.delay - m.gap - m.stale) > 0.001]
    print(
        f"  jobs over 1: {len(over)}; of them not explained by a stale answer (the call before the"
        f" noticing one\n  was sent after endTime and answered InProgress, delay - gap = stale"
        f" within 1 ms): {len(unexplained)}"
    )
    print(f"  part 2 wall time {time.perf_counter() - started:.1f} s")


def main() -> None:
    """Print part 1 and, unless ``--no-stand-in``, part 2, each with its wall time."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-stand-in", action="store_true", help="skip part 2 (real time)")
    parser.add_argument("--smoke", action="store_true", help="part 2 with fewer, shorter jobs")
    args = parser.parse_args()
    started = time.perf_counter()
    part_one()
    print(f"  part 1 wall time {time.perf_counter() - started:.1f} s")
    if not args.no_stand_in:
        print()
        if args.smoke:
            part_two(SMOKE_JOB_SECONDS, SMOKE_JOBS)
        else:
            part_two(STAND_IN_JOB_SECONDS, STAND_IN_JOBS)
    print(f"total wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
