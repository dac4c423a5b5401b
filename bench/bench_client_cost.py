"""Client cost per unit: CPU and peak memory of novaflow's own processes per synchronous text
unit, at two corpus sizes and two concurrencies, side by side in one run.

Each run is ``novaflow run --backend aws --no-evaluation`` over a directory of small generated
text files, started as a user starts it, against one ``novaflow emulator --in-memory
--no-write-limits`` in a separate process (no added latency, no quota): the stand-in's CPU is not
novaflow's and is left out. A run's CPU is the user + system time of the ``novaflow`` process
and every process it started and waited for (Prefect's temporary server among them), read with
``os.wait4`` as ``resource.getrusage(RUSAGE_CHILDREN)`` adds it up; its peak RSS is that of the
largest process of its tree (``ru_maxrss``, as ``/usr/bin/time`` reports it).

A run's CPU includes a fixed part that no unit causes: Python's imports, Prefect's temporary
server starting and stopping, the run's records. A one-unit run measures it first, and the
table prints both the whole cost per unit and the marginal cost per unit beyond that fixed
part. The larger corpus is then run again unchanged (nothing to embed: a crawl and a diff), and
its CPU is set against the first run's, whole and beyond the fixed part.

CPU figures move with the machine's speed, so the stand-in first serves the floor no client
goes below (a line before the tables): the CPU per bare boto3 ``InvokeModel`` call of a unit's
text (``bench/invoke_floor.py``, client built as novaflow's, a process of its own), single-
threaded and at C threads for each C; each report gives marginal ms/unit at C against it.

Prefect's API comes two ways, each a table of its own: ``temporary``, novaflow's default when
no ``PREFECT_API_URL`` is set (a temporary Prefect server started and stopped by every run, in
its process tree, so counted); and ``running``, as a deployment runs, against one ``prefect
server start`` on loopback started once before the runs (a separate process, not counted, like
the stand-in).

Goals (the issue's): ≤ 2 ms of CPU per unit at both concurrencies, no more per unit at the
larger size, peak RSS growing ≤ 10% from the smaller corpus to the larger and staying under
400 MB, and the unchanged re-run ≤ 5% of the first run's CPU.

Run: ``.venv/bin/python bench/bench_client_cost.py [--sizes 5000,20000]
[--concurrencies 8,32] [--requests-per-second 400] [--prefect temporary|running|both]``
(both by default: about ten minutes on 2 cores), or ``--smoke`` (20 and 80 units at C=8, no
warm-up run, temporary server only: figures only, about 40 s).
``--profile DIR`` records every run with ``py-spy record --subprocesses --threads --gil`` into
DIR, as collapsed stacks (``<run>.txt``): samples of the thread holding the GIL in each process
of the run, i.e. its Python CPU (C code that releases the GIL is not seen; the figures then
include py-spy's sampling). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.emulator_process import BIN, novaflow_env, running_emulator  # noqa: E402

FULL_SIZES = (5_000, 20_000)
SMOKE_SIZES = (20, 80)
CONCURRENCIES = (8, 32)
SMOKE_CONCURRENCIES = (8,)
FLOOR_CALLS = 2_000
SMOKE_FLOOR_CALLS = 50
REQUESTS_PER_SECOND = 400.0
GOAL_MS_PER_UNIT = 2.0
GOAL_RSS_MB = 400.0
GOAL_RSS_GROWTH = 0.10
GOAL_RERUN_SHARE = 0.05
FILES_PER_FOLDER = 1_000
PREFECT_SERVER_START_SECONDS = 180.0
WORDS = (
    "river", "stone", "harvest", "lantern", "orbit", "copper", "meadow", "signal", "violet",
    "archive", "ember", "glacier", "harbour", "quartz", "thistle", "beacon", "saffron", "tundra",
    "cobalt", "willow", "falcon", "marble", "prism", "cedar",
)  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """One ``novaflow run`` as the operating system saw its process tree: ``cpu_seconds`` user
    + system of every process in it, ``peak_rss_mb`` of its largest process, ``wall_seconds``
    from start to exit."""

    label: str
    units: int
    concurrency: int
    cpu_seconds: float
    system_seconds: float
    peak_rss_mb: float
    main_rss_mb: float
    wall_seconds: float

    def ms_per_unit(self, fixed: Measured | None = None) -> float:
        """CPU milliseconds per unit: the whole run's, or beyond ``fixed``'s (a one-unit run)."""
        if fixed is None:
            return 1000 * self.cpu_seconds / self.units
        return 1000 * (self.cpu_seconds - fixed.cpu_seconds) / max(1, self.units - fixed.units)


def text_corpus(root: Path, units: int) -> Path:
    """``units`` distinct small text files (a few hundred characters, one unit each) under
    ``root``, a thousand to a folder."""
    for n in range(units):
        folder = root / f"part-{n // FILES_PER_FOLDER:03d}"
        if n % FILES_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        words = " ".join(WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(40))
        (folder / f"note-{n:06d}.txt").write_text(f"note {n}: {words}.\n", encoding="utf-8")
    return root


def invoke_floor(env: dict[str, str], calls: int, threads: int, chars: int) -> float:
    """CPU ms per bare InvokeModel call (``bench/invoke_floor.py``, in a process of its own)."""
    command = [sys.executable, str(REPO / "bench" / "invoke_floor.py"), "--calls", str(calls)]
    command += ["--threads", str(threads), "--chars", str(chars)]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return float(json.loads(done.stdout.splitlines()[-1])["cpu_ms_per_call"])


def measured_run(
    label: str,
    corpus: Path,
    units: int,
    concurrency: int,
    store: Path,
    index: str,
    env: dict[str, str],
    profile: Path | None,
) -> Measured:
    """One ``novaflow run`` in a process of its own; raises when it exits non-zero."""
    command = [
        str(BIN / "novaflow"), "run", "--backend", "aws", "--corpus", str(corpus),
        "--store", str(store), "--index", index, "--no-evaluation",
    ]  # fmt: skip
    if profile is not None:
        stacks = profile / f"{label.replace(' ', '-')}.txt"
        command = [
            str(BIN / "py-spy"), "record", "--subprocesses", "--threads", "--gil", "--rate", "100",
            "--format", "raw", "--output", str(stacks), "--", *command,
        ]  # fmt: skip
    run_env = {**env, "NOVAFLOW_THROUGHPUT__CONCURRENCY": str(concurrency)}
    log = store.parent / f"{label.replace(' ', '-')}.log"
    started = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(command, env=run_env, stdout=output, stderr=subprocess.STDOUT)
        done = threading.Event()
        main_peak = [0.0]
        watcher = threading.Thread(target=_watch_peak, args=(process.pid, done, main_peak))
        watcher.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            done.set()
            watcher.join()
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{label}: novaflow run exited {process.returncode}:\n{tail}")
    return Measured(
        label,
        units,
        concurrency,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        system_seconds=usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        main_rss_mb=main_peak[0],
        wall_seconds=wall,
    )


def _watch_peak(pid: int, done: threading.Event, peak: list[float]) -> None:
    """Until ``done``, read the peak RSS (``VmHWM``, Linux) of process ``pid`` itself, without
    its children, into ``peak[0]`` every 0.2 s: which of the tree's processes is the largest."""
    status = Path(f"/proc/{pid}/status")
    while not done.wait(0.2):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue  # exited, not yet reaped
        for line in lines:
            if line.startswith("VmHWM:"):
                peak[0] = max(peak[0], int(line.split()[1]) / 1024)


def verdict(ok: bool) -> str:
    """``ok`` or ``MISSED``."""
    return "ok" if ok else "MISSED"


def report(
    fixed: Measured,
    runs: Sequence[Measured],
    rerun: Measured,
    sizes: Sequence[int],
    concurrencies: Sequence[int],
    floors: dict[int, float],
) -> None:
    """Print the table, the ratios the goals are about, and the marginal against ``floors``."""
    print(
        f"{'run':<30} {'units':>6} {'C':>3} {'CPU s':>8} {'(sys s)':>8} {'ms/unit':>8} "
        f"{'marginal':>9} {'units/CPU s':>12} {'peak RSS MB':>12} {'(novaflow)':>10} "
        f"{'wall s':>7}"
    )
    for run in (fixed, *runs, rerun):
        print(
            f"{run.label:<30} {run.units:>6} {run.concurrency:>3} {run.cpu_seconds:>8.1f} "
            f"{run.system_seconds:>8.1f} {run.ms_per_unit():>8.2f} "
            + (f"{run.ms_per_unit(fixed):>9.2f} " if run is not fixed else f"{'':>9} ")
            + f"{run.units / run.cpu_seconds:>12.0f} {run.peak_rss_mb:>12.0f} "
            f"{run.main_rss_mb:>10.0f} {run.wall_seconds:>7.1f}"
        )
    small, large = min(sizes), max(sizes)
    by = {(run.units, run.concurrency): run for run in runs}
    print(f"fixed part (a one-unit run): {fixed.cpu_seconds:.1f} s of CPU")
    for concurrency in concurrencies:
        a, b = by[(small, concurrency)], by[(large, concurrency)]
        worst = max(a.ms_per_unit(), b.ms_per_unit())
        growth = b.peak_rss_mb / a.peak_rss_mb - 1
        print(
            f"C={concurrency:<3} ms/unit {a.ms_per_unit():.2f} → {b.ms_per_unit():.2f} "
            f"(marginal {a.ms_per_unit(fixed):.2f} → {b.ms_per_unit(fixed):.2f}); "
            f"≤ {GOAL_MS_PER_UNIT:g} ms: {verdict(worst <= GOAL_MS_PER_UNIT)}, "
            f"larger/smaller {b.ms_per_unit() / a.ms_per_unit():.2f} "
            f"{verdict(b.ms_per_unit() <= a.ms_per_unit())}; peak RSS {a.peak_rss_mb:.0f} → "
            f"{b.peak_rss_mb:.0f} MB ({growth:+.1%}, goal ≤ {GOAL_RSS_GROWTH:.0%} and "
            f"< {GOAL_RSS_MB:.0f} MB): "
            f"{verdict(growth <= GOAL_RSS_GROWTH and b.peak_rss_mb < GOAL_RSS_MB)}"
        )
        floor, (ma, mb) = floors[concurrency], (a.ms_per_unit(fixed), b.ms_per_unit(fixed))
        print(
            f"{'':<6}against the floor at {concurrency} threads ({floor:.2f} ms): marginal = "
            f"{ma / floor:.2f} × a bare call ({ma - floor:+.2f} ms of novaflow's own per unit) "
            f"at {small} units, {mb / floor:.2f} × ({mb - floor:+.2f} ms) at {large}"
        )
    first = by[(large, rerun.concurrency)]
    share = rerun.cpu_seconds / first.cpu_seconds
    net = (rerun.cpu_seconds - fixed.cpu_seconds) / (first.cpu_seconds - fixed.cpu_seconds)
    print(
        f"unchanged re-run / first run ({large} units) = {share:.3f} of CPU "
        f"(beyond the fixed part {net:.3f}); goal ≤ {GOAL_RERUN_SHARE:g}: "
        f"{verdict(share <= GOAL_RERUN_SHARE)} (beyond the fixed part: "
        f"{verdict(net <= GOAL_RERUN_SHARE)})"
    )


@contextmanager
def running_prefect_server(env: dict[str, str], work: Path) -> Iterator[str]:
    """``prefect server start`` on a free loopback port, with a home and database of its own;
    yields its API URL, stops it after."""
    home = work / "prefect-server-home"
    home.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    server_env = {
        **env,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    }
    command = [
        str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
        "--no-ui",
    ]  # fmt: skip
    with (work / "prefect-server.log").open("w") as log:
        server = subprocess.Popen(command, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PREFECT_SERVER_START_SECONDS
        while not _answers(f"{api}/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server start did not come up (exit {server.poll()})")
            time.sleep(0.2)
        yield api
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def measured_runs(
    prefect: str,
    work: Path,
    env: dict[str, str],
    sizes: Sequence[int],
    concurrencies: Sequence[int],
    corpora: dict[int, Path],
    one: Path,
    warm_up: bool,
    profile: Path | None,
) -> tuple[Measured, list[Measured], Measured]:
    """The one-unit run, every size at every concurrency, and the unchanged re-run of the
    largest, each against a fresh index (``prefect`` names the Prefect API: labels only)."""

    def run(label: str, corpus: Path, units: int, concurrency: int, name: str) -> Measured:
        name = f"{prefect}-{name}"
        store = work / f"store-{name}"
        return measured_run(
            f"{prefect} {label}", corpus, units, concurrency, store, name, env, profile
        )

    if warm_up:
        # Pays for the first imports (.pyc files, the OS's file cache) and Prefect's database
        # set-up before any count.
        run("warm-up", one, 1, concurrencies[0], "warm-up")
    fixed = run("one unit", one, 1, concurrencies[0], "one")
    runs = [
        run(f"{size} C={c}", corpora[size], size, c, f"i-{size}-{c}")
        for size in sizes
        for c in concurrencies
    ]
    large = max(sizes)
    rerun = run(
        f"{large} unchanged C={concurrencies[0]}",
        corpora[large],
        large,
        concurrencies[0],
        f"i-{large}-{concurrencies[0]}",
    )
    return fixed, runs, rerun


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", help="two corpus sizes, in units (5000,20000)")
    parser.add_argument("--concurrencies", help="model calls in flight per shard (8,32)")
    parser.add_argument("--requests-per-second", type=float, default=REQUESTS_PER_SECOND)
    parser.add_argument(
        "--prefect",
        choices=("temporary", "running", "both"),
        help="Prefect API: each run's temporary server, a server started once, or both "
        "(default: both; temporary with --smoke)",
    )
    parser.add_argument("--profile", type=Path, help="record each run with py-spy into DIR")
    parser.add_argument("--smoke", action="store_true", help=f"sizes {SMOKE_SIZES}")
    args = parser.parse_args()
    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (SMOKE_SIZES if args.smoke else FULL_SIZES)
    )
    concurrencies = (
        tuple(int(c) for c in args.concurrencies.split(","))
        if args.concurrencies
        else (SMOKE_CONCURRENCIES if args.smoke else CONCURRENCIES)
    )
    prefect = args.prefect or ("temporary" if args.smoke else "both")
    modes = ("temporary", "running") if prefect == "both" else (prefect,)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    bench_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results: dict[str, tuple[Measured, list[Measured], Measured]] = {}
    floor_calls = SMOKE_FLOOR_CALLS if args.smoke else FLOOR_CALLS
    with tempfile.TemporaryDirectory(prefix="bench-client-cost-") as scratch:
        work = Path(scratch)
        # The runs and the stand-in run this checkout's code, whichever one the venv installed.
        base_env = novaflow_env(work, PREFECT_LOGGING_LEVEL="WARNING", PYTHONPATH=str(REPO))
        options = ("--in-memory", "--no-write-limits")
        with running_emulator(options, base_env, work) as variables:
            env = {
                **base_env,
                **variables,
                "NOVAFLOW_THROUGHPUT__REQUESTS_PER_SECOND": str(args.requests_per_second),
            }
            corpora = {size: text_corpus(work / f"corpus-{size}", size) for size in sizes}
            one = text_corpus(work / "corpus-1", 1)
            chars = len(next(one.rglob("*.txt")).read_text(encoding="utf-8"))  # a unit's size
            floors = {t: invoke_floor(env, floor_calls, t, chars) for t in (0, *concurrencies)}
            for mode in modes:
                if mode == "temporary":
                    results[mode] = measured_runs(
                        mode, work, env, sizes, concurrencies, corpora, one, not args.smoke,
                        args.profile,
                    )  # fmt: skip
                    continue
                with running_prefect_server(env, work) as api:
                    results[mode] = measured_runs(
                        mode, work, {**env, "PREFECT_API_URL": api}, sizes, concurrencies,
                        corpora, one, not args.smoke, args.profile,
                    )  # fmt: skip
    print(
        f"Client cost per synchronous text unit: novaflow run --backend aws against a separate "
        f"stand-in (no latency, no quota), pacing {args.requests_per_second:g}/s, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        + (" (smoke size: figures only)" if args.smoke else "")
        + (" (under py-spy: figures include its sampling)" if args.profile else "")
    )
    print(
        f"CPU: user + system of novaflow's whole process tree; peak RSS: its largest process "
        f"(reads no lower than this bench's {bench_rss_mb:.0f} MB at spawn); (novaflow): the "
        f"peak of the novaflow process alone"
    )
    at_threads = ", ".join(f"{floors[c]:.2f} at {c} threads" for c in concurrencies)
    print(
        f"bare InvokeModel through boto3 (the floor, same stand-in, same client settings, "
        f"{floor_calls} calls each): {floors[0]:.2f} ms CPU per call single-threaded, {at_threads}"
    )
    for mode, (fixed, runs, rerun) in results.items():
        print()
        print(
            "Prefect API: a temporary server started and stopped by each run (novaflow's "
            "default without PREFECT_API_URL), counted in the run's tree"
            if mode == "temporary"
            else "Prefect API: one `prefect server start` on loopback started before the runs "
            "(as a deployment runs), not counted, like the stand-in"
        )
        report(fixed, runs, rerun, sizes, concurrencies, floors)


if __name__ == "__main__":
    main()
