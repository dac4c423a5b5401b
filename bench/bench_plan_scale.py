"""Plan and commit against a large state: time, items per second, peak memory, bytes written.

For each size N, a state of N items (written in the project's own layout) and a corpus of the
same items with 1% changed, 0.5% removed and 0.5% new are generated in code, in a process of
their own (so no figure holds the generator's memory). A fresh process then does what
``novaflow run`` does around its embedding, in the same process: it plans the corpus against
the state (``planned_run``, the run's first stage: the corpus streams in from a generator, as a
resolved manifest would) and commits the plan's outcome (``committed_run``). Each stage's wall
time is reported, and the process's peak RSS (imports included) after the plan ("plan MiB")
and after the commit ("run MiB", the peak of the two stages together: the headline "peak
RSS"). The table also shows the plan's items per second and the bytes the commit wrote next to
the bytes of the whole state. The sizes run side by side in one invocation, so the ratios
compare like with like:

    .venv/bin/python bench/bench_plan_scale.py                    # 1M and 4M items
    .venv/bin/python bench/bench_plan_scale.py --sizes 1000000,4000000,16000000
    .venv/bin/python bench/bench_plan_scale.py --smoke            # CI: 20k and 80k

Goals (issue 14): peak RSS grows by at most 10% from 1M to 4M and stays under 1 GiB; the
commit writes bytes in proportion to the change, not to the state.
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
import flows  # noqa: E402,F401  (Arrow's allocator, as in every novaflow process)

CHANGED_EVERY = 100  # 1% changed
REMOVED_EVERY = 200  # 0.5% removed (and as many new)


def _item_id(n: int) -> str:
    return f"docs/{n % 977:03d}/report-{n:09d}.txt"


def _state_table(size: int, text_file: str, config_hash: str):  # type: ignore[no-untyped-def]
    """The state of ``size`` items, every one complete with one chunk (columns built whole)."""
    import pyarrow as pa

    from tasks import schemas

    ids = [_item_id(n) for n in range(size)]
    return pa.table(
        {
            "item_id": ids,
            "uri": pa.array([text_file] * size),
            "fingerprint": [f"sha256:{n:x}" for n in range(size)],
            "config_hash": pa.array([config_hash] * size),
            "keys": pa.array([[f"{item_id}#chunk=0"] for item_id in ids]),
            "modality": pa.array(["text"] * size),
            "metadata_json": pa.array(["{}"] * size),
            "status": pa.array(["complete"] * size),
        },
        schema=schemas.STATE,
    )


def _corpus(size: int, text_file: str, text_bytes: int) -> Iterator[object]:
    """The corpus: the state's items less the removed, some changed, then the new ones."""
    from tasks.records import Item

    for n in range(size):
        if n % REMOVED_EVERY == 1:
            continue
        version = "v2" if n % CHANGED_EVERY == 0 else ""
        yield Item(_item_id(n), text_file, "text", f"sha256:{n:x}{version}", text_bytes)
    for n in range(size, size + size // REMOVED_EVERY):
        yield Item(_item_id(n), text_file, "text", f"sha256:{n:x}", text_bytes)


def _directory_bytes(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in path.rglob("*") if p.is_file()}


def _setup(size: int, workdir: Path) -> None:
    """Write the state of ``size`` items (its own process: its memory is not the plan's)."""
    from tasks.settings import NovaflowSettings
    from tasks.state.dataset import StateDataset
    from tasks.store import CheckpointStore

    settings = NovaflowSettings(store=str(workdir / "store"))
    text = workdir / "note.txt"
    text.write_text("tidal estuaries and salt marsh sediment\n")
    table = _state_table(size, str(text), settings.embedding.config_hash())
    index = settings.index
    StateDataset(CheckpointStore(settings.store), index.vector_bucket, index.index).replaced(
        table, run_id="bench-setup"
    )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _plan(size: int, workdir: Path) -> dict[str, float]:
    """Plan the corpus against the state in this process (``planned_run``, a run's first
    stage); what the parent prints."""
    from tasks.plan.stage import planned_run
    from tasks.settings import NovaflowSettings

    settings = NovaflowSettings(store=str(workdir / "store"))
    text = workdir / "note.txt"
    baseline = _peak_mib()
    started = time.perf_counter()
    totals = planned_run(settings, lambda: _corpus(size, str(text), text.stat().st_size), "bench")
    return {
        "plan_seconds": time.perf_counter() - started,
        "planned": float(sum(totals.items.values())),
        "changed": float(totals.items["changed"] + totals.items["new"] + totals.items["removed"]),
        "plan_baseline_mib": baseline,
        "plan_peak_mib": _peak_mib(),
    }


def _commit(workdir: Path) -> dict[str, float]:
    """Commit the planned run's outcome to the state in this process (``committed_run``, a
    run's last stage before its summary); what the parent prints."""
    from tasks.settings import NovaflowSettings
    from tasks.state.commit import committed_run
    from tasks.state.dataset import StateDataset
    from tasks.store import CheckpointStore

    settings = NovaflowSettings(store=str(workdir / "store"))
    store = CheckpointStore(settings.store)
    index = settings.index
    state_dir = Path(store.state_dir(index.vector_bucket, index.index))
    before = _directory_bytes(state_dir)
    baseline = _peak_mib()
    started = time.perf_counter()
    held = committed_run(
        store, index.vector_bucket, index.index, "bench", settings.embedding.config_hash()
    )
    seconds = time.perf_counter() - started
    peak = _peak_mib()
    after = _directory_bytes(state_dir)
    layout = StateDataset(store, index.vector_bucket, index.index).layout()
    return {
        "commit_seconds": seconds,
        "commit_baseline_mib": baseline,
        "commit_peak_mib": peak,
        "commit_bytes": float(sum(n for path, n in after.items() if before.get(path) != n)),
        "state_bytes": float(sum(after.values())),
        "partitions": float(layout.partitions),
        "held": float(held),
    }


def _child(*args: str) -> dict[str, float]:
    """Run this script with ``args`` in a fresh process; the JSON it prints last."""
    script = str(Path(__file__).resolve())
    result = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _run_size(size: int) -> dict[str, float]:
    """The state's generation in a process of its own, then the plan and the commit together
    in another, as a run does them."""
    with tempfile.TemporaryDirectory(prefix="novaflow-bench-plan-") as scratch:
        _child("--setup", str(size), scratch)
        ran = _child("--run", str(size), scratch)
        return {"items": float(size), "peak_mib": ran["commit_peak_mib"], **ran}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,4000000")
    parser.add_argument("--smoke", action="store_true", help="20k and 80k items (for CI)")
    parser.add_argument("--setup", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--run", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        _setup(int(args.setup[0]), Path(args.setup[1]))
        print(json.dumps({}))
        return
    if args.run:
        size, workdir = int(args.run[0]), Path(args.run[1])
        print(json.dumps({**_plan(size, workdir), **_commit(workdir)}))
        return
    sizes = [20_000, 80_000] if args.smoke else [int(s) for s in args.sizes.split(",")]
    results = [_run_size(size) for size in sizes]
    print(f"{'items':>11} {'plan s':>8} {'items/s':>10} {'plan MiB':>9} {'run MiB':>8} "
          f"{'partitions':>10} {'commit s':>9} {'commit MB':>10} {'state MB':>9} "
          f"{'written/state':>13}")  # fmt: skip
    for r in results:
        print(
            f"{int(r['items']):>11,} {r['plan_seconds']:>8.1f} "
            f"{r['planned'] / r['plan_seconds']:>10,.0f} {r['plan_peak_mib']:>9.0f} "
            f"{r['commit_peak_mib']:>8.0f} "
            f"{int(r['partitions']):>10} {r['commit_seconds']:>9.1f} "
            f"{r['commit_bytes'] / 1e6:>10.2f} {r['state_bytes'] / 1e6:>9.1f} "
            f"{r['commit_bytes'] / r['state_bytes']:>13.3f}"
        )
    first, last = results[0], results[-1]
    growth = last["peak_mib"] / first["peak_mib"] - 1
    print(
        f"peak RSS {first['peak_mib']:.0f} → {last['peak_mib']:.0f} MiB "
        f"({growth:+.1%} for {last['items'] / first['items']:.0f}× the items; goal ≤ +10%, "
        f"< 1024 MiB); commit wrote {last['commit_bytes'] / last['state_bytes']:.1%} of the state "
        f"for {last['changed'] / last['items']:.1%} of its items changed"
    )
    for r in results:
        assert r["held"] == r["items"], "the commit must leave exactly the corpus's items"


if __name__ == "__main__":
    main()
