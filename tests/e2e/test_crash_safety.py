"""``novaflow run`` stopped the ways a scheduler, the OOM killer or an impatient user stops it:
no process it started outlives it, a run killed before its plan is resumed to the end, and a
second process on the same run is refused while the first works on, naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tasks.demo.pdf_documents import PdfTopic, topic_pdf
from tests.e2e.emulator_process import BIN, index_keys, novaflow_env

KILL_DEADLINE_SECONDS = 10.0


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return novaflow_env(tmp_path, NOVAFLOW_EVALUATION__ENABLED="false", **extra)


def _text_corpus(tmp_path: Path, notes: int) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(notes):
        (corpus / f"note-{n:02d}.txt").write_text(f"note number {n} about topic {n % 7}")
    return corpus


def _run_command(corpus: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "novaflow"), "run", "--corpus", str(corpus), "--store", "store",
        "--backend", "aws", "--index", "crash-test", *extra,
    ]  # fmt: skip


def _wait_for(condition: object, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 240
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.05)  # polling what the run shows, not synchronising: any moment will do


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_process_of_a_stopped_run_outlives_it(
    tmp_path: Path, slow_stand_in: dict[str, str], stop: signal.Signals
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number in range(4):
        lines = "\n".join(f"Finding {line} of report {number}." for line in range(8))
        topic = PdfTopic(f"report-{number}", f"Report {number}", 25, 2024, lines)
        (corpus / f"report-{number}.pdf").write_bytes(topic_pdf(topic, number))
    env = _env(
        tmp_path, **slow_stand_in,
        NOVAFLOW_THROUGHPUT__RENDER_PROCESSES="2", NOVAFLOW_THROUGHPUT__CONCURRENCY="1",
        NOVAFLOW_THROUGHPUT__SHARD_SIZE="10",
    )  # fmt: skip
    run = subprocess.Popen(
        _run_command(corpus, "--run-id", "stopped"), cwd=tmp_path, env=env,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        parts = tmp_path / "store" / "embeddings" / "run=stopped"
        # Pages are being embedded: the Prefect server and the page renderers are running.
        _wait_for(lambda: list(parts.glob("part-*.parquet")), run, "a shard")
        descendants = psutil.Process(run.pid).children(recursive=True)
        assert len(descendants) >= 3, descendants  # the Prefect server and two render workers
        os.kill(run.pid, stop)  # the run's own process only, as a scheduler or OOM killer does
        run.wait(timeout=60)
        deadline = time.monotonic() + KILL_DEADLINE_SECONDS
        left = [child.pid for child in descendants if _alive(child.pid)]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if _alive(pid)]
        in_group = [
            process.pid
            for process in psutil.process_iter()
            if _alive(process.pid) and _group_of(process.pid) == run.pid
        ]
        assert left == [], f"still running {KILL_DEADLINE_SECONDS} s after {stop.name}: {left}"
        assert in_group == []
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        for process in psutil.process_iter():
            if _group_of(process.pid) == run.pid:
                process.kill()


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.slow
def test_a_run_killed_before_its_plan_is_resumed_to_the_end(
    tmp_path: Path, slow_stand_in: dict[str, str]
) -> None:
    corpus = _text_corpus(tmp_path, 12)
    env = _env(tmp_path, **slow_stand_in)
    runs = tmp_path / "store" / "runs"
    killed = subprocess.Popen(
        _run_command(corpus), cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for(lambda: list(runs.glob("*/run.json")), killed, "run record")
    (record,) = runs.glob("*/run.json")
    run_id = record.parent.name
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert not (record.parent / "plan-totals.json").exists()  # killed before its plan

    resumed = subprocess.run(
        _run_command(corpus, "--resume"), cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run_id}" in resumed.stdout
    summary = json.loads((record.parent / "summary.json").read_text())
    assert summary["adds_up"] is True
    assert set(index_keys(slow_stand_in, "crash-test")) == {
        f"note-{n:02d}.txt#chunk=0" for n in range(12)
    }

    nothing_left = subprocess.run(
        _run_command(corpus, "--resume"), cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert nothing_left.returncode == 0, nothing_left.stderr[-3000:]
    assert "no unfinished run in store; starting a new run" in nothing_left.stdout
    assert "model    0 calls" in nothing_left.stdout  # a new run, over an unchanged corpus


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused_naming_the_first(
    tmp_path: Path, slow_stand_in: dict[str, str]
) -> None:
    corpus = _text_corpus(tmp_path, 40)
    env = _env(tmp_path, **slow_stand_in, NOVAFLOW_THROUGHPUT__CONCURRENCY="1")
    command = _run_command(corpus, "--run-id", "twice")
    # The first run's calls take 2 s each until the second has been refused, however long the
    # second takes to start on a loaded machine; then they take no time.
    _set_latency(slow_stand_in, 2.0)
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lease = tmp_path / "store" / "runs" / "twice" / "lease.json"
    _wait_for(lease.exists, first, "lease")  # type: ignore[arg-type]
    # Another process, as another worker would be: its own Prefect home, the same store.
    elsewhere = {**env, "PREFECT_HOME": str(tmp_path / "second-prefect-home")}
    second = subprocess.run(command, cwd=tmp_path, env=elsewhere, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    _set_latency(slow_stand_in, 0.0)
    out, err = first.communicate(timeout=600)
    assert second.returncode != 0, (second.stdout, out, err[-2000:])
    assert f"pid {first.pid} since" in second.stderr
    assert "is being run by host" in second.stderr
    assert first.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path / "store" / "runs" / "twice" / "summary.json").read_text())
    assert summary["adds_up"] is True
    assert summary["units_embedded"] == 40
    assert set(index_keys(slow_stand_in, "crash-test")) == {
        f"note-{n:02d}.txt#chunk=0" for n in range(40)
    }
    assert not lease.exists()  # released at the end


def _set_latency(env: dict[str, str], seconds: float) -> None:
    url = f"{env['AWS_ENDPOINT_URL_BEDROCK_RUNTIME']}/_emulator/faults"
    rules = [{"operations": ["InvokeModel"], "latency_seconds": seconds}] if seconds else []
    body = json.dumps({"rules": rules}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
