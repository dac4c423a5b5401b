"""How close exact top-k search comes to numpy's bare matrix product, and whether its memory
stays flat as the data grows.

1. Speed: Q queries against N vectors of ``dim`` float32 in in-memory record batches (built
   before timing). Side by side in one run, best of a few interleaved rounds (other load on a
   shared machine only slows a round down; the median is printed beside it): numpy's bare
   product on the same shapes, blocked as the search blocks it (``queries @ block.T`` into one
   buffer) and in one call (a Q × N result), then ``exact_top_k`` for both metrics at k = 10
   and k = 100. GFLOP/s counts 2·Q·N·dim for every row; the ratio is against the faster bare
   product. Goal: ≥ 0.7.
2. Memory: checkpoints of 1× to 16× the search block (``block_rows`` × dim float32) written
   to a temporary directory as a run writes them (``CheckpointStore``: zstd Parquet,
   ``embeddings_schema``, shard-sized files), plus the largest size again as one file with one
   row group, each
   searched from disk through ``checkpoint_blocks`` in a fresh subprocess that reports its
   peak RSS (``VmHWM``); a subprocess that imports the same modules and searches nothing
   gives the baseline. Goal: flat, peak RSS growing by under 0.1 MB per MB of data added from
   two blocks on (memory that held the data would grow by 1 MB or more); going from one block
   to two adds about a block of allocator space once.

Run: ``.venv/bin/python bench/bench_exact_search.py`` (one to two minutes on 2 cores), or with
``--smoke`` (small shapes, a few seconds). No assertions. Temporary files are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.evaluate.exact_search import Metric, checkpoint_blocks, exact_top_k
from tasks.schemas import embeddings_schema
from tasks.store import CheckpointStore

SPEED_GOAL = 0.7
# Flat: peak RSS grows by less than this fraction of what the data grows by (memory that
# held the data would grow by all of it).
FLAT_GOAL = 0.1
RUN_ID = "bench"


@dataclass(frozen=True)
class Shapes:
    """One configuration of the benchmark."""

    queries: int
    vectors: int
    dimension: int
    block_rows: int
    rounds: int
    memory_dimension: int
    memory_block_rows: int
    memory_queries: int
    multiples: tuple[int, ...]
    file_rows: int


FULL = Shapes(1000, 100_000, 1024, 8192, 3, 1024, 8192, 200, (1, 2, 4, 8, 16), 3000)
SMOKE = Shapes(256, 16_384, 256, 4096, 2, 128, 8192, 64, (1, 2, 8), 3000)


def batches_of(vectors: np.ndarray, block_rows: int) -> list[pa.RecordBatch]:
    """``vectors`` as key + embedding record batches of ``block_rows`` rows."""
    dimension = vectors.shape[1]
    out = []
    for start in range(0, len(vectors), block_rows):
        part = vectors[start : start + block_rows]
        keys = pa.array([f"item/{start + row:07d}" for row in range(len(part))], pa.string())
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), dimension)
        out.append(pa.record_batch({"key": keys, "embedding": embedding}))
    return out


def speed(shapes: Shapes, goals: bool = True) -> None:
    """Section 1: GFLOP/s of the search beside the bare product; ``goals`` judges them."""
    rng = np.random.default_rng(0)
    q, n, dim, block = shapes.queries, shapes.vectors, shapes.dimension, shapes.block_rows
    data = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((q, dim), dtype=np.float32)
    batches = batches_of(data, block)
    buffer = np.empty(q * block, dtype=np.float32)

    def blocked() -> None:
        for start in range(0, n, block):
            part = data[start : start + block]
            np.matmul(queries, part.T, out=buffer[: q * len(part)].reshape(q, len(part)))

    def one_call() -> None:
        queries @ data.T

    def search(metric: Metric, k: int) -> Callable[[], None]:
        return lambda: exact_top_k(queries, [None] * q, batches, k, metric, block_rows=block)

    runs: dict[str, Callable[[], None]] = {
        "numpy matmul, blocked": blocked,
        "numpy matmul, one call": one_call,
    }
    for k in (10, 100):
        for metric in ("cosine", "euclidean"):
            runs[f"exact_top_k {metric} k={k}"] = search(metric, k)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(shapes.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    flops = 2.0 * q * n * dim
    best = {name: flops / min(times) / 1e9 for name, times in seconds.items()}
    median = {name: flops / statistics.median(times) / 1e9 for name, times in seconds.items()}
    bare = max(best["numpy matmul, blocked"], best["numpy matmul, one call"])
    print(
        f"speed: {q} queries x {n:,} vectors x {dim} float32, block_rows {block}, "
        f"best of {shapes.rounds} interleaved rounds, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} (other load slows the threaded product most: the ratios "
        "mean little once it is above the core count)"
    )
    print(f"{'':32}{'GFLOP/s':>9}{'median':>8}{'ratio':>7}{'goal':>7}{'met':>5}")
    for name in runs:
        searching = goals and name.startswith("exact_top_k")
        ratio = best[name] / bare
        goal = f">={SPEED_GOAL}" if searching else ""
        met = ("yes" if ratio >= SPEED_GOAL else "no") if searching else ""
        print(f"{name:32}{best[name]:9.1f}{median[name]:8.1f}{ratio:7.2f}{goal:>7}{met:>5}")


def write_checkpoints(directory: Path, rows: int, shapes: Shapes, one_file: bool) -> None:
    """``rows`` random vectors as a run's embeddings files (one file, or shard-sized ones)."""
    rng = np.random.default_rng(rows)
    store = CheckpointStore(str(directory))
    schema = embeddings_schema(shapes.memory_dimension)
    file_rows = rows if one_file else shapes.file_rows
    for number, start in enumerate(range(0, rows, file_rows)):
        count = min(file_rows, rows - start)
        vectors = rng.standard_normal((count, shapes.memory_dimension), dtype=np.float32)
        keys = [f"item/{start + row:07d}" for row in range(count)]
        columns = {
            "key": keys,
            "item_id": keys,
            "embedding_type": ["TEXT"] * count,
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.ravel()), shapes.memory_dimension
            ),
            "metadata_json": ['{"modality": "text"}'] * count,
            "config_hash": ["bench"] * count,
        }
        table = pa.Table.from_pydict(columns, schema=schema)
        store.write_table(store.embeddings_path(RUN_ID, number), table)


def child(root: str, block_rows: int, queries: int, dimension: int) -> None:
    """Search the run's embeddings in the store at ``root`` (nothing if empty) and print the
    peak RSS (kB) and the seconds taken."""
    store = CheckpointStore(root or tempfile.gettempdir())
    paths = store.list_files(store.embeddings_dir(RUN_ID)) if root else []
    probes = np.random.default_rng(1).standard_normal((queries, dimension), dtype=np.float32)
    started = time.perf_counter()
    blocks = checkpoint_blocks(store.filesystem, paths, block_rows=block_rows)
    exact_top_k(probes, [None] * queries, blocks, 100, "cosine", block_rows=block_rows)
    elapsed = time.perf_counter() - started
    print(json.dumps({"peak_kb": peak_rss_kb(), "seconds": elapsed}))


def peak_rss_kb() -> int:
    """This process's peak RSS. ``ru_maxrss`` keeps the high-water mark a forked child inherits
    from its parent through ``execve`` (here, a parent that has just written the data), so the
    new address space's own ``VmHWM`` is read where Linux has it."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(directory: str, shapes: Shapes) -> dict[str, float]:
    """Run ``child`` on the store at ``directory`` in a fresh interpreter; its peak and time."""
    command = [
        sys.executable,
        __file__,
        "--child",
        directory,
        str(shapes.memory_block_rows),
        str(shapes.memory_queries),
        str(shapes.memory_dimension),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def memory(shapes: Shapes) -> None:
    """Section 2: peak RSS of searching checkpoints of growing size from disk."""
    block_mb = shapes.memory_block_rows * shapes.memory_dimension * 4 / 2**20
    print(
        f"\nmemory: {shapes.memory_queries} queries, k=100, cosine, block_rows "
        f"{shapes.memory_block_rows} x {shapes.memory_dimension} float32 = {block_mb:.0f} MB a "
        f"block; files of {shapes.file_rows} rows (zstd), each size searched in a fresh process"
    )
    baseline = measure("", shapes)["peak_kb"] / 1024
    print(f"{'data':30}{'rows':>9}{'MB':>7}{'peak RSS MB':>13}{'above baseline':>16}{'s':>6}")
    print(f"{'none (imports only)':30}{0:9}{0:7}{baseline:13.0f}{0:16.0f}{'':>6}")
    peaks = []
    largest = shapes.multiples[-1]
    sizes = [(multiple, False) for multiple in shapes.multiples] + [(largest, True)]
    for multiple, one_file in sizes:
        rows = multiple * shapes.memory_block_rows
        with tempfile.TemporaryDirectory(prefix="bench-exact-") as directory:
            write_checkpoints(Path(directory), rows, shapes, one_file)
            result = measure(directory, shapes)
        peak = result["peak_kb"] / 1024
        peaks.append(peak)
        label = f"{multiple}x block" + (", one file/row group" if one_file else "")
        data_mb = rows * shapes.memory_dimension * 4 / 2**20
        print(
            f"{label:30}{rows:9}{data_mb:7.0f}{peak:13.0f}{peak - baseline:16.0f}"
            f"{result['seconds']:6.1f}"
        )
    # From two blocks on, a second block's worth of allocator space is in use: the goal is
    # judged from the second size on, where memory that held the data would show.
    steady = peaks[1:]
    data_growth = (largest - shapes.multiples[1]) * block_mb
    slope = (max(steady) - steady[0]) / data_growth
    met = "yes" if slope < FLAT_GOAL else "no"
    print(
        f"peak RSS largest / smallest data: {peaks[-2] / peaks[0]:.2f}, max / min of all rows: "
        f"{max(peaks) / min(peaks):.2f}; from {shapes.multiples[1]}x to {largest}x blocks: "
        f"{max(steady) - steady[0]:+.0f} MB while the data grew {data_growth:+.0f} MB, "
        f"{slope:.2f} MB per MB (goal < {FLAT_GOAL}: {met})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small shapes, a few seconds")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        directory, block_rows, queries, dimension = args.child
        child(directory, int(block_rows), int(queries), int(dimension))
        return
    shapes = SMOKE if args.smoke else FULL
    started = time.perf_counter()
    if args.smoke:
        print("smoke run: shapes too small for the speed goal to apply (not judged)")
    speed(shapes, goals=not args.smoke)
    memory(shapes)
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
