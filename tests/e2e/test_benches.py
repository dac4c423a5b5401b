"""Every bench script runs: ``python bench/<script> --smoke`` in a process of its own, as a user
runs it, must exit 0 and print its figures. The figures are not judged (a shared CI machine is
too noisy for that); a bench that no longer runs against the pipeline fails here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted((REPO / "bench").glob("bench_*.py"))
# A smoke run takes well under 30 s on an idle 2-core machine; this leaves room for a loaded
# one while still stopping a bench that hangs.
TIMEOUT_SECONDS = 300


def _env(tmp_path: Path) -> dict[str, str]:
    """A user's bare shell: no AWS or NOVAFLOW_* settings, and a Prefect home of its own."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {
        **keep,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # as novaflow's own command sets it: a loaded 2-core CI machine starts the temporary
        # Prefect API slowly
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }


def test_the_bench_folder_has_benches() -> None:
    assert BENCHES, f"no bench/bench_*.py under {REPO}"


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHES, ids=[path.name for path in BENCHES])
def test_bench_runs_at_smoke_size(script: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script.relative_to(REPO)), "--smoke"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    seconds = time.perf_counter() - started
    output = f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{script.name} --smoke exited {done.returncode}\n{output}"
    assert done.stdout.strip(), f"{script.name} --smoke printed nothing\n{output}"
    print(f"{script.name} --smoke: {seconds:.1f} s\n{done.stdout}")
