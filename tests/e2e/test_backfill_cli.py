"""``novaflow backfill`` as a user runs it, killed with SIGKILL in the middle of a partition and
started again: the partitions that had completed are not redone, the stopped one resumes from
its checkpointed shards, and the index ends equal to the corpus, each unit once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.emulator_process import (
    BIN,
    index_keys,
    model_calls,
    novaflow_env,
    settled_model_calls,
)

NOTES, PARTITION_SIZE, SHARD_SIZE = 30, 10, 5
BACKFILL_ID = "bf-e2e"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return novaflow_env(tmp_path, NOVAFLOW_EVALUATION__ENABLED="false", **extra)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 240
    while not condition():
        assert process.poll() is None, f"the backfill ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.05)  # polling the store, not synchronising: the kill point is arbitrary


@pytest.mark.slow
def test_a_killed_backfill_redoes_only_unfinished_partitions(
    tmp_path: Path, slow_stand_in: dict[str, str]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(NOTES):
        (corpus / f"note-{n:02d}.txt").write_text(f"note number {n} about topic {n % 7}")
    env = _env(
        tmp_path, **slow_stand_in,
        NOVAFLOW_THROUGHPUT__SHARD_SIZE=str(SHARD_SIZE), NOVAFLOW_THROUGHPUT__CONCURRENCY="1",
        # ~2.5 s of model calls per partition: time enough to be killed in the middle of one
        NOVAFLOW_THROUGHPUT__REQUESTS_PER_SECOND="4",
    )  # fmt: skip
    command = [
        str(BIN / "novaflow"), "backfill", "--corpus", str(corpus), "--store", "store",
        "--backend", "aws", "--index", "backfill-test", "--backfill-id", BACKFILL_ID,
        "--partition-size", str(PARTITION_SIZE),
    ]  # fmt: skip
    store = tmp_path / "store"
    outcomes = store / "backfills" / BACKFILL_ID / "outcomes"
    second_run = store / "runs" / f"{BACKFILL_ID}-p00002"

    killed = subprocess.Popen(
        command, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(
            lambda: (outcomes / "part-00001.json").exists() and (second_run / "run.json").exists(),
            killed,
            "partition 2 started after partition 1",
        )
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    assert sorted(path.name for path in outcomes.glob("*.json")) == ["part-00001.json"]
    checkpointed = len(list((store / "embeddings").glob("run=*/part-*.parquet")))
    calls_before = settled_model_calls(slow_stand_in)
    assert 2 <= checkpointed < NOTES // SHARD_SIZE  # partition 1's 2 shards, and not all

    resumed = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    calls_after = model_calls(slow_stand_in) - calls_before
    # exactly the units not yet checkpointed: nothing of partition 1, nor of partition 2's
    # finished shards, is embedded again
    assert calls_after == NOTES - checkpointed * SHARD_SIZE
    lines = resumed.stdout.splitlines()
    assert not any(line.startswith("  partition 1/3") for line in lines)
    assert any(line.startswith("  partition 2/3 completed") for line in lines)
    assert any(line.startswith("  partition 3/3 completed") for line in lines)
    assert "  parts    3 completed, 0 failed, 0 pending of 3 partitions" in resumed.stdout
    assert "(2 run now, 1 already done)" in resumed.stdout
    keys = index_keys(slow_stand_in, "backfill-test")
    assert sorted(keys) == [f"note-{n:02d}.txt#chunk=0" for n in range(NOTES)]  # once each
    summary = json.loads((store / "backfills" / BACKFILL_ID / "summary.json").read_text())
    assert (summary["items"], summary["embedded"], summary["done"]) == (NOTES, NOTES, True)

    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )

    assert again.returncode == 0, again.stderr[-3000:]
    assert "(0 run now, 3 already done)" in again.stdout
    assert model_calls(slow_stand_in) - calls_before == calls_after  # nothing more
