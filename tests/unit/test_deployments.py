"""The deployment file a user edits and deploys: it must name a real flow with valid parameters."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from flows.reembed import ReembedParameters

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"


def test_every_deployment_points_at_the_flow_with_valid_parameters() -> None:
    document = yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())
    assert document["pull"] == []
    names = set()
    for deployment in document["deployments"]:
        names.add(deployment["name"])
        assert deployment["entrypoint"] == "flows/reembed.py:reembed"
        params = ReembedParameters(**deployment["parameters"]["params"])
        assert params.settings.backend == "aws"
        assert params.settings.store.startswith("s3://")
    assert names == {"nightly", "backfill"}


def test_the_iam_policy_is_valid_json_granting_each_service_novaflow_calls() -> None:
    policy = json.loads((DEPLOYMENTS / "iam-policy.json").read_text())
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert {"bedrock:InvokeModel", "s3vectors:PutVectors", "s3vectors:DeleteVectors",
            "s3vectors:QueryVectors", "s3:GetObject"} <= actions  # fmt: skip
