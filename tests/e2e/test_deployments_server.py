# Over 400 lines on purpose: one module-scoped set-up (server, stand-in, worker, deploy) that
# the three tests share, and its teardown, which must find every process the worker started.
"""deployments/prefect.yaml deployed as deployments/README.md says, on a real Prefect server.

A ``prefect server start`` on a free loopback port (its own home and SQLite database), a
``novaflow emulator`` seeded like the README's stand-in walk-through (the buckets the deployments
name, a small corpus, its manifest and labeled queries), ``prefect work-pool create``, ``prefect
deploy --all`` from the clone's root, and a ``prefect worker start`` whose environment points at
the stand-in: that environment is the whole stand-in switch, the deployments are those a user
deploys to AWS. Runs are triggered with ``prefect deployment run`` and followed through the API;
each must end Completed with the index holding exactly the corpus and a report written. The
schedules must create scheduled runs. Every process started here is stopped at the end, with the
flow-run processes the worker started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.client import BaseClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "novaflow"
# The names deployments/prefect.yaml ships with: a user edits them, the stand-in keeps them.
CORPUS_BUCKET, STORE_BUCKET, ASYNC_BUCKET = "my-corpus", "my-novaflow-store", "my-novaflow-async"
VECTOR_BUCKET, INDEX = "my-corpus-vectors", "corpus"
STORE_PREFIX = "novaflow"
BEDROCK_LIMIT = "novaflow-bedrock"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
SERVER_START_SECONDS = 180.0
RUN_SECONDS = 420.0
STOP_SECONDS = 20.0

TEXTS = {
    "text/sourdough": (
        "texts/sourdough.txt",
        "Sourdough bread rises with a starter of wild yeast; the dough ferments overnight.",
    ),
    "text/tide-pools": (
        "texts/tide-pools.txt",
        "At low tide the rock pools hold sea anemones, hermit crabs, starfish and mussels.",
    ),
    "text/azulejos": (
        "texts/azulejos.txt",
        "Lisbon's azulejos are painted ceramic tiles, blue and white, on churches and houses.",
    ),
}
# Over 50,000 characters: embedded by an async job, whose output goes to the async bucket.
LONG_TEXT = ("text/glacier-log", "texts/glacier-log.txt")
QRELS = (
    {"query_id": "bread", "text": "sourdough bread wild yeast dough",
     "relevant": ["text/sourdough"]},
    {"query_id": "tide", "text": "low tide rock pools anemones crabs",
     "relevant": ["text/tide-pools"]},
)  # fmt: skip


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until(what: str, ready: Callable[[], Any], seconds: float, poll: float = 0.5) -> Any:
    """Poll ``ready`` until it returns something truthy (returned), failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(poll)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End ``process``, its process group and every process it started (the worker's flow-run
    processes have sessions of their own): SIGTERM, then SIGKILL for whatever is left."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        for child in descendants:
            with suppress(psutil.NoSuchProcess):
                child.send_signal(sig)
        _, alive = psutil.wait_procs(descendants, timeout=STOP_SECONDS)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        if not alive:
            return


@contextmanager
def _started(
    command: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running in a session of its own, its output in ``log``; stopped after."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            _stop(process)


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@dataclass
class Deployed:
    """The running server, stand-in and worker, and how to reach them."""

    api: str
    cli_env: dict[str, str]
    stand_in: dict[str, str]
    logs: Path
    deployed_backfill: bool
    s3: BaseClient
    s3vectors: BaseClient

    def prefect(self, *args: str, timeout: float = 300) -> str:
        """A ``prefect`` command as the README gives it, run from the clone's root."""
        done = subprocess.run(
            [str(BIN / "prefect"), *args], env=self.cli_env, cwd=REPO, capture_output=True,
            text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.api}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def run(self, deployment: str) -> str:
        """Trigger ``deployment`` with ``prefect deployment run``; wait until its run ends;
        return the run's id once it is Completed."""
        printed = self.prefect("deployment", "run", deployment)
        match = re.search(r"UUID: ([0-9a-f-]{36})", printed)
        assert match, printed
        run_id = match.group(1)

        def ended() -> str | None:
            state = self.call("GET", f"/flow_runs/{run_id}")["state"]
            return state["type"] if state and state["type"] in TERMINAL else None

        final = _wait_until(f"{deployment} run {run_id} to end", ended, RUN_SECONDS, poll=1.0)
        if final != "COMPLETED":
            logs = self.call(
                "POST", "/logs/filter",
                {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC",
                 "limit": 200},
            )  # fmt: skip
            text = "\n".join(f"{log['level']} {log['message']}" for log in logs)
            worker = _tail(self.logs / "worker.log")
            raise AssertionError(f"{deployment} ended {final}:\n{text}\n--- worker:\n{worker}")
        return run_id

    def indexed_items(self) -> set[str]:
        """The item ids the stand-in's index holds vectors for."""
        items = set()
        paginator = self.s3vectors.get_paginator("list_vectors")
        pages = paginator.paginate(
            vectorBucketName=VECTOR_BUCKET, indexName=INDEX, returnMetadata=True
        )
        for page in pages:
            items.update(vector["metadata"]["item_id"] for vector in page["vectors"])
        return items

    def reports(self) -> dict[str, set[str]]:
        """Each report folder in the store and the files in it."""
        folders: dict[str, set[str]] = {}
        prefix = f"{STORE_PREFIX}/reports/"
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=STORE_BUCKET, Prefix=prefix):
            for entry in page.get("Contents", []):
                folder, _, name = entry["Key"].removeprefix(prefix).partition("/")
                if folder and name and "/" not in name:  # not the directory markers
                    folders.setdefault(folder, set()).add(name)
        return folders

    def report(self, folder: str) -> dict[str, Any]:
        key = f"{STORE_PREFIX}/reports/{folder}/report.json"
        return json.loads(self.s3.get_object(Bucket=STORE_BUCKET, Key=key)["Body"].read())

    def artifact_keys(self, flow_run_id: str) -> set[str]:
        found = self.call(
            "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        )
        return {artifact["key"] for artifact in found if artifact.get("key")}

    def put_corpus(self, items: Mapping[str, tuple[str, str]]) -> None:
        """Upload ``items`` (id → (key, text)), and a manifest listing exactly them."""
        for key, text in items.values():
            self.s3.put_object(Bucket=CORPUS_BUCKET, Key=key, Body=text.encode())
        manifest = "".join(
            json.dumps({"uri": key, "id": item_id}) + "\n" for item_id, (key, _) in items.items()
        )
        self.s3.put_object(Bucket=CORPUS_BUCKET, Key="manifest.jsonl", Body=manifest.encode())


def _long_text() -> str:
    line = "Day {}: the glacier tongue retreated; moraine, crevasses, meltwater."
    text = "\n".join(line.format(day) for day in range(900))
    assert len(text) > 50_000
    return text


def _base_env(home: Path, temporary: Path) -> dict[str, str]:
    """The processes' environment: their own Prefect home, and their own temporary directory
    (the worker's runs cache S3 downloads there), removed with the test's."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return {
        **keep,
        "TMPDIR": str(temporary),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_CLI_PROMPT": "false",
    }


def _read_exports(path: Path) -> dict[str, str]:
    """The ``export NAME=value`` lines ``novaflow emulator --env-file`` writes."""
    if not path.exists():
        return {}
    variables = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        variables[name] = shlex.split(value)[0]
    return variables if "AWS_DEFAULT_REGION" in variables else {}


def _client(stand_in: Mapping[str, str], service: str) -> BaseClient:
    endpoint = stand_in[f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"]
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=stand_in["AWS_DEFAULT_REGION"],
        aws_access_key_id=stand_in["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stand_in["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("deployments-server")
    home, logs, temporary = root / "prefect-home", root / "logs", root / "tmp"
    home.mkdir()
    logs.mkdir()
    temporary.mkdir()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = _base_env(home, temporary)
    with ExitStack() as running:
        # 1. The Prefect server, on loopback, with its own home and SQLite database.
        server = running.enter_context(
            _started(
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", str(port), "--no-ui"],
                base, root, logs / "server.log",
            )
        )  # fmt: skip

        def healthy() -> bool:
            assert server.poll() is None, f"server exited:\n{_tail(logs / 'server.log')}"
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=5) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False

        # 2. The stand-in, on free ports, writing its variables as the README has it do.
        env_file = root / "stand-in.env"
        emulator = running.enter_context(
            _started(
                [str(BIN / "novaflow"), "emulator", "--in-memory", "--env-file", str(env_file),
                 "--s3-port", "0", "--bedrock-port", "0", "--s3vectors-port", "0",
                 "--job-seconds", "1"],
                base, root, logs / "emulator.log",
            )
        )  # fmt: skip

        def exported() -> dict[str, str]:
            assert emulator.poll() is None, f"emulator exited:\n{_tail(logs / 'emulator.log')}"
            return _read_exports(env_file)

        stand_in = _wait_until("the stand-in's variables", exported, 120)
        s3, s3vectors = _client(stand_in, "s3"), _client(stand_in, "s3vectors")
        for bucket in (CORPUS_BUCKET, STORE_BUCKET, ASYNC_BUCKET):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(
            Bucket=CORPUS_BUCKET,
            Key="qrels.jsonl",
            Body="".join(json.dumps(query) + "\n" for query in QRELS).encode(),
        )
        _wait_until("the Prefect server's health check", healthy, SERVER_START_SECONDS)

        # 3. Work pool, the limit the settings name, the deployments, a worker on the stand-in.
        cli_env = {**base, "PREFECT_API_URL": api}
        deployed = Deployed(
            api, cli_env, stand_in, logs, (REPO / "flows" / "backfill.py").exists(), s3, s3vectors
        )
        deployed.prefect("work-pool", "create", POOL, "--type", "process")
        deployed.prefect("global-concurrency-limit", "create", BEDROCK_LIMIT, "--limit", "4")
        which = ["--all"] if deployed.deployed_backfill else ["-n", "nightly", "-n", "evaluation"]
        deployed.prefect(
            "deploy", "--prefect-file", "deployments/prefect.yaml", *which, "--no-prompt"
        )
        worker_env = {**cli_env, **stand_in, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        running.enter_context(
            _started(
                [str(BIN / "prefect"), "worker", "start", "--pool", POOL],
                worker_env, root, logs / "worker.log",
            )
        )  # fmt: skip
        yield deployed


def test_nightly_on_demand_then_the_evaluation_report_on_the_index(deployed: Deployed) -> None:
    corpus = {**TEXTS, LONG_TEXT[0]: (LONG_TEXT[1], _long_text())}
    deployed.put_corpus(corpus)
    started = time.monotonic()

    deployed.run("novaflow-reembed/nightly")
    assert deployed.indexed_items() == set(corpus)

    before = set(deployed.reports())
    evaluation_run = deployed.run("novaflow-evaluate/evaluation")
    new = set(deployed.reports()) - before
    assert len(new) == 1, new
    folder = new.pop()
    assert {"report.json", "report.md", "report.html", "labeled.run", "labeled.qrels"} <= (
        deployed.reports()[folder]
    )
    report = deployed.report(folder)
    assert report["headline"]["index_recall@10"] == 1.0  # the stand-in searches exactly
    assert report["labeled"]["queries"] == len(QRELS)
    gates = {gate["metric"]: gate["passed"] for gate in report["gates"]}
    assert gates == {"index_recall@10": True, "labeled_ndcg@10": True}
    assert f"novaflow-evaluation-{folder}"[:64] in deployed.artifact_keys(evaluation_run)
    print(f"nightly and evaluation runs: {time.monotonic() - started:.1f} s")


def test_backfill_embeds_the_corpus_and_evaluates_it(deployed: Deployed) -> None:
    if not deployed.deployed_backfill:
        pytest.skip("flows/backfill.py is not there yet: the backfill deployment was not deployed")
    corpus = {
        **TEXTS,
        LONG_TEXT[0]: (LONG_TEXT[1], _long_text()),
        "text/cheese-caves": (
            "texts/cheese-caves.txt",
            "Gruyère wheels age for months in damp caves, turned and brushed with brine.",
        ),
    }
    deployed.put_corpus(corpus)
    started = time.monotonic()
    before = set(deployed.reports())

    deployed.run("novaflow-backfill/backfill")

    assert deployed.indexed_items() == set(corpus)
    new = set(deployed.reports()) - before
    assert len(new) == 1, new  # the backfill's evaluation, once, under the backfill's id
    report = deployed.report(new.pop())
    assert all(gate["passed"] for gate in report["gates"]), report["gates"]
    print(f"backfill run: {time.monotonic() - started:.1f} s")


def test_the_schedules_create_scheduled_runs(deployed: Deployed) -> None:
    def scheduled(name: str) -> list[dict[str, Any]]:
        flow_name = {"nightly": "novaflow-reembed", "evaluation": "novaflow-evaluate"}[name]
        deployment = deployed.call("GET", f"/deployments/name/{flow_name}/{name}")
        return deployed.call(
            "POST", "/flow_runs/filter",
            {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]},
                           "state": {"type": {"any_": ["SCHEDULED"]}}},
             "sort": "EXPECTED_START_TIME_ASC"},
        )  # fmt: skip

    # The scheduler visits recently changed deployments every few seconds; a Prefect server
    # whose scheduler fails (see its log) never creates these.
    try:
        nightly = _wait_until("scheduled nightly runs", lambda: scheduled("nightly"), 120, 1.0)
    except AssertionError as exc:
        server_log = _tail(deployed.logs / "server.log")
        hint = (
            "\nPrefect 3.8.8's scheduler cannot insert runs with SQLAlchemy 2.1: install "
            "sqlalchemy<2.1 (the project pins it)"
            if "bulk DML" in server_log
            else ""
        )
        raise AssertionError(f"{exc}{hint}\n--- server:\n{server_log}") from exc
    weekly = _wait_until("scheduled evaluation runs", lambda: scheduled("evaluation"), 60, 1.0)
    now = datetime.now(UTC)
    for run in nightly:
        at = datetime.fromisoformat(run["expected_start_time"])
        assert at > now
        assert (at.hour, at.minute) == (2, 0), at
        assert run["auto_scheduled"]
    for run in weekly:
        at = datetime.fromisoformat(run["expected_start_time"])
        assert at > now
        assert (at.isoweekday(), at.hour, at.minute) == (1, 4, 0), at
