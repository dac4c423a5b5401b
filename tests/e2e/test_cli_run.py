"""``novaflow`` as a user runs it, in separate processes: the demo and a search on the embedded
stand-in, a dry-run plan, and runs killed with SIGKILL (with shards, then with async jobs in
flight) and started again with the same id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from tasks.demo.sample_media import sample_audio
from tests.e2e.emulator_process import (
    BIN,
    model_calls,
    novaflow_env,
    running_emulator,
    settled_model_calls,
)

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return novaflow_env(tmp_path, **extra)


def _novaflow(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "novaflow"), *args],
        cwd=tmp_path,
        env=env or _env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_the_demo_ends_with_its_evaluation(tmp_path: Path, stdout: str, run_id: str) -> None:
    """The demo prints its recall and labeled figures and the report's path; the labeled
    figures are those trec_eval (through ir-measures) computes from the report's own folder."""
    import ir_measures

    folder = tmp_path / "demo" / "store" / "reports" / run_id
    assert f"  report   {folder / 'report.html'}" in stdout
    assert "  recall   @1 1.000, @10 1.000" in stdout  # the embedded stand-in searches exactly
    assert "  labeled  11 queries: " in stdout
    report = json.loads((folder / "report.json").read_text())
    assert report["labeled"]["errors"] == []
    measures = [ir_measures.parse_measure(name) for name in ("nDCG@10", "R@10", "RR@10", "P@10")]
    qrels = list(ir_measures.read_trec_qrels(str(folder / "labeled.qrels")))
    run = list(ir_measures.read_trec_run(str(folder / "labeled.run")))
    oracle = ir_measures.calc_aggregate(measures, qrels, run)
    ours = report["labeled"]["modes"]["vector"]["overall"]
    names = ("ndcg@10", "recall@10", "mrr@10", "precision@10")
    for name, measure in zip(names, measures, strict=True):
        assert ours[name] == pytest.approx(oracle[measure], abs=1e-9), name
    shown = _novaflow(tmp_path, "report", "--store", "demo/store")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert f"evaluation {run_id}" in shown.stdout
    assert str(folder / "report.html") in shown.stdout


def test_demo_runs_the_whole_job_then_search_finds_its_units(tmp_path: Path) -> None:
    demo = _novaflow(tmp_path, "demo", "--workdir", "demo")
    assert demo.returncode == 0, demo.stderr[-3000:]
    units_line = next(line for line in demo.stdout.splitlines() if line.startswith("  units "))
    assert " 1 quarantined of" in units_line  # the demo's truncated image
    summary_path = next((tmp_path / "demo" / "store" / "runs").glob("*/summary.json"))
    summary = json.loads(summary_path.read_text())
    assert summary["adds_up"] is True
    assert summary["units_embedded"] > 20
    assert {"pdf_encrypted", "pdf_corrupt", "outside_root"} <= set(summary["failures_by_code"])
    # the long recording and the long video went through async jobs, segment by segment
    assert (summary["async_jobs"], summary["async_jobs_collected"]) == (2, 2)
    assert summary["async_segments_embedded"] == 7 + 5  # 95 s and 75 s at 15 s segments
    _assert_the_demo_ends_with_its_evaluation(tmp_path, demo.stdout, summary_path.parent.name)

    video = _novaflow(
        tmp_path, "search", "bouncing square", "--store", "demo/store",
        "--filter", '{"item_id": "video/talk-long"}', "--top-k", "3",
    )  # fmt: skip
    assert video.returncode == 0, video.stderr[-3000:]
    hits = video.stdout.splitlines()
    assert len(hits) == 3
    assert all("video/talk-long#t=" in hit and " s  segment " in hit for hit in hits)
    assert all("(audio-video-combined)" in hit for hit in hits)

    search = _novaflow(tmp_path, "search", "sourdough baking", "--store", "demo/store")
    assert search.returncode == 0, search.stderr[-3000:]
    first = search.stdout.splitlines()[0]
    assert first.startswith("  1. ")
    assert "text/sourdough" in first

    again = _novaflow(tmp_path, "demo", "--workdir", "demo")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "model    0 calls" in again.stdout


def test_plan_is_a_dry_run_with_a_cost(tmp_path: Path) -> None:
    from tasks.demo.corpus import generate_demo_corpus

    corpus = generate_demo_corpus(tmp_path / "corpus")
    plan = _novaflow(tmp_path, "plan", "--manifest", str(corpus.manifest), "--store", "store")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "(no model was called)" in plan.stdout
    assert "cost     ~$0.0" in plan.stdout
    assert "InvokeModel calls, ~0.00 h at 20 req/s" in plan.stdout  # the on-demand way …
    assert "too few units for a batch job (at least 100)" in plan.stdout  # … and the batch way
    assert not list((tmp_path / "store").glob("embeddings/*/*.parquet"))


def test_a_killed_run_resumes_redoing_only_unfinished_shards(
    tmp_path: Path, slow_stand_in: dict[str, str]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    units = 60
    for n in range(units):
        (corpus / f"note-{n:02d}.txt").write_text(f"note number {n} about topic {n % 7}")
    shard_size = 5
    env = _env(
        tmp_path,
        **slow_stand_in,
        NOVAFLOW_THROUGHPUT__SHARD_SIZE=str(shard_size),
        NOVAFLOW_THROUGHPUT__CONCURRENCY="1",
    )
    command = [
        str(BIN / "novaflow"), "run", "--corpus", str(corpus), "--store", "store",
        "--backend", "aws", "--run-id", "nightly-1", "--index", "resume-test",
    ]  # fmt: skip
    parts = tmp_path / "store" / "embeddings" / "run=nightly-1"

    killed = subprocess.Popen(
        command, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while len(list(parts.glob("part-*.parquet"))) < 3:
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no shard was checkpointed in time"
        time.sleep(0.05)  # polling the store, not synchronising: the kill point is arbitrary
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    finished_shards = len(list(parts.glob("part-*.parquet")))
    calls_before = settled_model_calls(slow_stand_in)
    assert finished_shards < units // shard_size

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    calls_after = model_calls(slow_stand_in) - calls_before
    # exactly the shards that had not finished are embedded again, and nothing else
    assert calls_after == units - finished_shards * shard_size
    # the killed run wasted at most the shards it had in flight (2 in parallel)
    assert calls_before - finished_shards * shard_size <= 2 * shard_size
    summary = json.loads((tmp_path / "store" / "runs" / "nightly-1" / "summary.json").read_text())
    assert summary["adds_up"] is True
    assert summary["units_embedded"] == units
    assert summary["shards_skipped"] == finished_shards


def _client(variables: dict[str, str], service: str, endpoint: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=variables[endpoint],
        region_name=variables["AWS_DEFAULT_REGION"],
        aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
    )


def _jobs(bedrock: Any) -> list[dict[str, Any]]:
    pages = bedrock.get_paginator("list_async_invokes").paginate()
    return [job for page in pages for job in page.get("asyncInvokeSummaries", [])]


def test_a_run_killed_with_jobs_in_flight_resumes_them_without_submitting_again(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    recordings = 4
    for n in range(recordings):
        (corpus / f"interview-{n}.wav").write_bytes(sample_audio(n, 40.0, "wav"))
    options = ("--in-memory", "--job-seconds", "4")
    with running_emulator(options, _env(tmp_path), tmp_path) as variables:
        # on AWS the staging and output bucket is the user's; here the test creates it
        _client(variables, "s3", "AWS_ENDPOINT_URL_S3").create_bucket(Bucket="novaflow-async")
        bedrock = _client(variables, "bedrock-runtime", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
        env = _env(
            tmp_path,
            **variables,
            NOVAFLOW_ASYNC_JOBS__POLL_INITIAL_SECONDS="0.2",
            NOVAFLOW_ASYNC_JOBS__MAX_JOBS_IN_FLIGHT=str(recordings),
        )
        command = [
            str(BIN / "novaflow"), "run", "--corpus", str(corpus), "--store", "store",
            "--backend", "aws", "--run-id", "long-1", "--index", "async-resume",
        ]  # fmt: skip
        killed = subprocess.Popen(
            command, cwd=tmp_path, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while len(_jobs(bedrock)) < recordings:
            assert killed.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no job was submitted in time"
            time.sleep(0.05)  # polling the stand-in, not synchronising: the kill point is arbitrary
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        submitted = {job["invocationArn"] for job in _jobs(bedrock)}
        assert {job["status"] for job in _jobs(bedrock)} == {"InProgress"}  # killed mid-flight

        # `--resume` finds the run that was killed, as a user who lost the id would ask for it
        resume = [part for part in command if part not in ("--run-id", "long-1")] + ["--resume"]
        resumed = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=600)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming run long-1" in resumed.stdout
        # the stand-in's job list: the same jobs, all completed, not one submitted twice
        jobs = _jobs(bedrock)
        assert {job["invocationArn"] for job in jobs} == submitted
        assert {job["status"] for job in jobs} == {"Completed"}
    summary = json.loads((tmp_path / "store" / "runs" / "long-1" / "summary.json").read_text())
    assert summary["adds_up"] is True
    assert summary["async_jobs_collected"] == recordings
    assert summary["async_segments_embedded"] == recordings * 3  # 40 s at 15 s segments
    assert "jobs     4 collected, 0 quarantined of 4 async jobs" in resumed.stdout
