"""A plan's scratch directory is removed when the plan ends; one left by a killed process is
removed by the next plan, and one whose process still runs is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tasks.plan.scratch import (
    SCRATCH_PREFIX,
    UNLOCKED_GRACE_SECONDS,
    plan_scratch,
    removed_abandoned_scratch,
)

REPO = Path(__file__).resolve().parents[3]
HOLDER = textwrap.dedent(
    """
    import sys
    from tasks.plan.scratch import plan_scratch
    with plan_scratch(sys.argv[1]) as scratch:
        print(scratch, flush=True)
        sys.stdin.read()  # held until the test kills this process
    """
)


def test_a_scratch_is_removed_when_its_plan_ends_and_kept_while_it_runs(tmp_path: Path) -> None:
    with plan_scratch(str(tmp_path)) as scratch:
        assert Path(scratch).name.startswith(SCRATCH_PREFIX)
        assert removed_abandoned_scratch(str(tmp_path)) == []  # this process holds it
        assert Path(scratch).is_dir()
    assert not Path(scratch).exists()


def test_the_scratch_of_a_killed_process_is_removed_by_the_next_plan(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None
        left = Path(holder.stdout.readline().strip())
        (left / "bucket-00000.arrow").write_bytes(b"spilled corpus")
        assert removed_abandoned_scratch(str(tmp_path)) == []  # its process runs: kept
        holder.send_signal(signal.SIGKILL)  # as an OOM kill would: no cleanup runs
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
    assert left.is_dir()

    with plan_scratch(str(tmp_path)) as scratch:
        assert not left.exists()
        assert [path.name for path in tmp_path.iterdir()] == [Path(scratch).name]


def test_an_unlocked_scratch_is_removed_only_once_it_is_old(tmp_path: Path) -> None:
    unlocked = tmp_path / f"{SCRATCH_PREFIX}made-before-locks"
    unlocked.mkdir()
    other = tmp_path / "someone-elses"
    other.mkdir()
    now = time.time()

    assert removed_abandoned_scratch(str(tmp_path), now=now) == []
    later = now + UNLOCKED_GRACE_SECONDS + 60
    assert removed_abandoned_scratch(str(tmp_path), now=later) == [str(unlocked)]
    assert other.is_dir()
