"""The stand-in as a whole: its independence from novaflow, its settings, its command line and
the control API that tests and benchmarks use to make it misbehave and to count calls."""

from __future__ import annotations

import ast
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from emulator.__main__ import build_parser, export_lines, settings_from_args
from emulator.app import S3VECTORS_MAX_REQUEST_BYTES, Emulator, EmulatorSettings
from emulator.misbehaviour import AsyncJobBehaviour, Misbehaviour

EMULATOR_DIR = Path(__file__).resolve().parents[2] / "emulator"


def _imported_top_level_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_stand_in_imports_nothing_from_novaflow() -> None:
    sources = sorted(EMULATOR_DIR.rglob("*.py"))
    assert len(sources) > 10
    offenders = {
        str(path.relative_to(EMULATOR_DIR)): sorted(
            _imported_top_level_modules(path) & {"flows", "tasks"}
        )
        for path in sources
        if _imported_top_level_modules(path) & {"flows", "tasks"}
    }
    assert offenders == {}


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "192.168.1.10"])
def test_the_stand_in_refuses_to_listen_beyond_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmulatorSettings(host=host)


def test_command_line_flags_become_rules_for_the_operations_they_name() -> None:
    args = build_parser().parse_args(
        [
            "--seed", "5", "--latency", "0.1", "--requests-per-second", "4",
            "--status-throttle-rate", "0.5", "--job-failure-rate", "0.2", "--approximate",
            "--in-memory",
        ]
    )  # fmt: skip
    settings = settings_from_args(args)
    model_calls, status_calls = settings.bedrock_faults
    assert model_calls.operations == {"InvokeModel", "StartAsyncInvoke"}
    assert (model_calls.latency_seconds, model_calls.requests_per_second) == (0.1, 4.0)
    assert status_calls.operations == {"GetAsyncInvoke"}
    assert status_calls.throttle_rate == 0.5
    assert settings.async_jobs.failure_rate == 0.2
    assert settings.async_jobs.seed == 5
    assert settings.search.mode == "approximate"
    assert settings.state_dir is None


def test_a_faults_file_overrides_the_flags(tmp_path: Path) -> None:
    faults = {
        "bedrock": [{"operations": ["InvokeModel"], "server_error_rate": 0.25}],
        "s3vectors": [{"operations": ["PutVectors"], "latency_seconds": 0.05}],
        "async_jobs": {"job_seconds": 7, "partial_rate": 0.5},
    }
    (tmp_path / "faults.json").write_text(json.dumps(faults))
    args = build_parser().parse_args(
        ["--latency", "1", "--faults-file", str(tmp_path / "faults.json")]
    )
    settings = settings_from_args(args)
    assert settings.bedrock_faults == (
        Misbehaviour(operations=frozenset({"InvokeModel"}), server_error_rate=0.25),
    )
    assert settings.s3vectors_faults[0].latency_seconds == 0.05
    assert settings.async_jobs == AsyncJobBehaviour(job_seconds=7, partial_rate=0.5)


def test_a_faults_file_with_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    (tmp_path / "faults.json").write_text(json.dumps({"bedrock": [{"latency": 1}]}))
    args = build_parser().parse_args(["--faults-file", str(tmp_path / "faults.json")])
    with pytest.raises(ValueError, match="unknown misbehaviour settings: \\['latency'\\]"):
        settings_from_args(args)


def test_misbehaviour_rates_outside_zero_to_one_are_refused() -> None:
    with pytest.raises(ValueError, match="server_error_rate must be between 0 and 1"):
        Misbehaviour(server_error_rate=1.5)


def test_export_lines_quote_values_for_the_shell() -> None:
    assert export_lines({"A": "http://127.0.0.1:1", "B": "x y"}) == [
        "export A=http://127.0.0.1:1",
        "export B='x y'",
    ]


def _post(url: str, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_control_api_sets_faults_and_counts_calls(stand_in: Emulator) -> None:
    bedrock_url = stand_in.endpoints.bedrock_runtime
    status, applied = _post(
        f"{bedrock_url}/_emulator/faults",
        {
            "rules": [{"operations": ["GetAsyncInvoke"], "throttle_rate": 1.0}],
            "async_jobs": {"job_seconds": 0.3, "failure_rate": 1.0},
        },
    )
    assert status == 200
    assert applied["rules"][0]["throttle_rate"] == 1.0
    assert applied["async_jobs"]["failure_rate"] == 1.0
    client = stand_in.client("bedrock-runtime", retries={"total_max_attempts": 1})
    with pytest.raises(client.exceptions.ThrottlingException):
        client.get_async_invoke(
            invocationArn="arn:aws:bedrock:us-east-1:123456789012:async-invoke/abcdefabcdef"
        )
    stats = _get(f"{bedrock_url}/_emulator/stats")
    assert stats["calls"]["GetAsyncInvoke"] == 1
    assert stats["errors"]["GetAsyncInvoke"] == {"ThrottlingException": 1}
    assert _get(f"{stand_in.endpoints.s3vectors}/_emulator/health")["status"] == "ok"


def test_control_api_refuses_unknown_settings(stand_in: Emulator) -> None:
    status, answer = _post(
        f"{stand_in.endpoints.s3vectors}/_emulator/faults", {"rules": [{"bogus": 1}]}
    )
    assert status == 400
    assert "bogus" in answer["message"]


def test_s3vectors_refuses_a_request_over_20_mib(stand_in: Emulator) -> None:
    app = stand_in._apps()[1]
    body = b"{" + b" " * S3VECTORS_MAX_REQUEST_BYTES + b"}"
    response = Client(app).post(
        "/PutVectors", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "exceeds the 20971520 byte limit" in response.get_json()["message"]
