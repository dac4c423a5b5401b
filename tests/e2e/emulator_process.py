"""``novaflow emulator`` started as a separate process, as a user starts it in a terminal."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import boto3

BIN = Path(sys.executable).parent
FREE_PORTS = ("--s3-port", "0", "--bedrock-port", "0", "--s3vectors-port", "0")


@contextmanager
def running_emulator(
    options: Sequence[str], env: Mapping[str, str], cwd: Path
) -> Iterator[dict[str, str]]:
    """Start ``novaflow emulator`` on free ports with ``options``; yield the variables it printed
    (name → value, as a shell would read the ``export`` lines); stop it with SIGTERM after and
    check it exited cleanly."""
    process = subprocess.Popen(
        [str(BIN / "novaflow"), "emulator", *FREE_PORTS, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env),
        cwd=cwd,
    )
    variables: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            variables[name] = shlex.split(value)[0]
        if line.startswith("# state:"):
            break
    try:
        if not variables:
            assert process.stderr is not None
            raise AssertionError(f"novaflow emulator printed nothing: {process.stderr.read()}")
        yield variables
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


def novaflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a user's shell gives ``novaflow``: nothing of the test process's AWS or
    Prefect settings, a Prefect home of the test's own, analytics off, and ``extra``."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {
        **keep,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }


def model_calls(variables: Mapping[str, str]) -> int:
    """How many InvokeModel calls the stand-in that ``variables`` point at has answered."""
    url = f"{variables['AWS_ENDPOINT_URL_BEDROCK_RUNTIME']}/_emulator/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(json.loads(response.read())["calls"].get("InvokeModel", 0))


def settled_model_calls(variables: Mapping[str, str], quiet_seconds: float = 0.5) -> int:
    """The stand-in's InvokeModel count once no call has been counted for ``quiet_seconds``.

    The stand-in counts a call when it answers it, after its latency: a call a killed process
    sent just before it died is counted a moment later. Read right after a kill, the count can
    miss it and charge it to the next run."""
    deadline = time.monotonic() + 30
    count, since = model_calls(variables), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        assert time.monotonic() < deadline, "the stand-in kept answering calls after the kill"
        time.sleep(0.05)  # polling the stand-in's count until it settles
        now = model_calls(variables)
        if now != count:
            count, since = now, time.monotonic()
    return count


def index_keys(
    variables: Mapping[str, str], index: str, vector_bucket: str = "novaflow"
) -> list[str]:
    """Every key of the stand-in's ``index``, as ``ListVectors`` pages them (a key held twice
    would appear twice)."""
    client = boto3.client(
        "s3vectors",
        endpoint_url=variables["AWS_ENDPOINT_URL_S3VECTORS"],
        region_name=variables["AWS_DEFAULT_REGION"],
        aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
    )
    pages = client.get_paginator("list_vectors").paginate(
        vectorBucketName=vector_bucket, indexName=index
    )
    return [vector["key"] for page in pages for vector in page["vectors"]]
