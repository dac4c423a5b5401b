"""``novaflow emulator`` as a user runs it: a separate process whose printed variables are all a
plain boto3 script, or the AWS CLI, needs to reach S3, Bedrock (Nova) and S3 Vectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.emulator_process import BIN, running_emulator

REPO = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    """A process environment with nothing AWS-related but what the test passes in."""
    keep = {
        name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ
    }
    return {**keep, "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def printed_variables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start ``novaflow emulator`` on free ports; yield the variables it printed; stop it."""
    state = tmp_path_factory.mktemp("emulator-command")
    options = ("--state-dir", str(state), "--job-seconds", "0.5")
    with running_emulator(options, _clean_env(), state) as variables:
        assert set(variables) >= {
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
            "AWS_ENDPOINT_URL_S3VECTORS",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        }
        assert all(
            url.startswith("http://127.0.0.1:")
            for name, url in variables.items()
            if name.startswith("AWS_ENDPOINT_URL_")
        )
        yield variables


def test_a_plain_boto3_script_tours_every_api_with_only_the_printed_variables(
    printed_variables: dict[str, str],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tasks.demo.tour"],
        env=_clean_env(**printed_variables),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "embed text                   TEXT, 1024 floats" in out
    assert "embed image                  IMAGE, 1024 floats" in out
    assert "embed 20 s clip              AUDIO_VIDEO_COMBINED, 1024 floats" in out
    assert "async job on 90 s video      6 segments (0-15s, 15-30s" in out
    assert "put 500 vectors" in out
    assert "query with a filter          doc-0 (0.000)" in out
    assert "put 501 vectors              refused" in out


def _aws(variables: dict[str, str], *args: str, cwd: Path | None = None) -> dict:
    result = subprocess.run(
        [str(BIN / "aws"), *args, "--output", "json"],
        env=_clean_env(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_the_aws_cli_reaches_each_service(
    printed_variables: dict[str, str], tmp_path: Path
) -> None:
    _aws(printed_variables, "s3api", "create-bucket", "--bucket", "cli-media")
    (tmp_path / "note.txt").write_text("the quick brown fox")
    _aws(
        printed_variables,
        "s3api",
        "put-object",
        "--bucket",
        "cli-media",
        "--key",
        "note.txt",
        "--body",
        str(tmp_path / "note.txt"),
    )

    request = {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX",
            "embeddingDimension": 256,
            "text": {
                "truncationMode": "END",
                "source": {"s3Location": {"uri": "s3://cli-media/note.txt"}},
            },
        },
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    _aws(
        printed_variables,
        "bedrock-runtime",
        "invoke-model",
        "--model-id",
        "amazon.nova-2-multimodal-embeddings-v1:0",
        "--content-type",
        "application/json",
        "--body",
        "fileb://request.json",
        "answer.json",
        cwd=tmp_path,
    )
    answer = json.loads((tmp_path / "answer.json").read_text())
    assert answer["embeddings"][0]["embeddingType"] == "TEXT"
    assert len(answer["embeddings"][0]["embedding"]) == 256

    _aws(
        printed_variables,
        "s3vectors",
        "create-vector-bucket",
        "--vector-bucket-name",
        "cli-vectors",
    )
    listed = _aws(printed_variables, "s3vectors", "list-vector-buckets")
    assert "cli-vectors" in [bucket["vectorBucketName"] for bucket in listed["vectorBuckets"]]
