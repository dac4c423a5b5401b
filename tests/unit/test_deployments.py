"""The deployment file a user edits and deploys: each deployment names a real flow, and its
parameters are what that flow's parameter model (and the Prefect server, which checks them
against the flow's schema) accept. tests/e2e/test_deployments_server.py deploys it for real."""

from __future__ import annotations

import importlib
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import validate
from pydantic import BaseModel

from tasks.settings import NovaflowSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
DOCUMENT: dict[str, Any] = yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())
BY_NAME: dict[str, dict[str, Any]] = {d["name"]: d for d in DOCUMENT["deployments"]}


def _flow(entrypoint: str) -> Flow[..., Any]:
    """The flow an entrypoint (``flows/reembed.py:reembed``) names, imported as a module."""
    path, _, name = entrypoint.partition(":")
    assert (REPO / path).is_file(), f"{entrypoint}: no such file"
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow), f"{entrypoint} is not a Prefect flow"
    return flow


def _parameter_model(flow: Flow[..., Any]) -> type[BaseModel]:
    """The pydantic model of the flow's one parameter, ``params``."""
    hints = typing.get_type_hints(flow.fn)
    assert set(hints) - {"return"} == {"params"}, f"{flow.name} takes more than `params`"
    model = hints["params"]
    assert issubclass(model, BaseModel)
    return model


def _parameters(name: str) -> dict[str, Any]:
    return BY_NAME[name]["parameters"]["params"]


def test_the_three_deployments_and_their_schedules() -> None:
    assert set(BY_NAME) == {"nightly", "backfill", "evaluation"}
    assert BY_NAME["nightly"]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC"}]
    assert BY_NAME["evaluation"]["schedules"] == [{"cron": "0 4 * * 1", "timezone": "UTC"}]
    assert not BY_NAME["backfill"].get("schedules")  # on demand only
    assert BY_NAME["nightly"]["entrypoint"] == "flows/reembed.py:reembed"
    assert BY_NAME["backfill"]["entrypoint"] == "flows/backfill.py:backfill"
    assert BY_NAME["evaluation"]["entrypoint"] == "flows/evaluate.py:evaluate"
    for deployment in DOCUMENT["deployments"]:
        assert deployment["work_pool"]["name"] == "novaflow"


def test_no_pull_section_so_prefect_deploy_records_the_clone_as_working_directory() -> None:
    """Without ``pull``, ``prefect deploy`` adds a set_working_directory step naming the
    directory it ran in; ``pull: []`` would leave the worker in an empty temporary directory,
    where ``flows/reembed.py`` is not found."""
    assert "pull" not in DOCUMENT
    assert all("pull" not in deployment for deployment in DOCUMENT["deployments"])


@pytest.mark.parametrize("name", ["nightly", "backfill", "evaluation"])
def test_parameters_are_valid_for_the_flows_parameter_model(name: str) -> None:
    flow = _flow(BY_NAME[name]["entrypoint"])
    params = _parameter_model(flow).model_validate(_parameters(name))
    settings = params.settings  # type: ignore[attr-defined]
    assert isinstance(settings, NovaflowSettings)
    # Deployment runs have no embedded stand-in: the worker's environment names the endpoints.
    assert settings.backend == "aws"
    assert settings.store.startswith("s3://")
    assert settings.throughput.concurrency_limit_name == "novaflow-bedrock"
    # A run id in the deployment would make every scheduled run the same run.
    assert "run_id" not in _parameters(name)


@pytest.mark.parametrize("name", ["nightly", "backfill", "evaluation"])
def test_parameters_conform_to_the_schema_the_server_enforces(name: str) -> None:
    flow = _flow(BY_NAME[name]["entrypoint"])
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    validate(BY_NAME[name]["parameters"], schema, raise_on_error=True, ignore_required=True)


def test_one_settings_block_shared_by_every_deployment() -> None:
    """The same store, index, model and pacing everywhere; only the backfill evaluates at its
    end (nightly leaves that to the weekly evaluation)."""
    nightly, backfill, evaluation = (
        NovaflowSettings.model_validate(_parameters(name)["settings"])
        for name in ("nightly", "backfill", "evaluation")
    )
    assert nightly == evaluation
    assert not nightly.evaluation.enabled
    assert backfill.evaluation.enabled
    assert backfill.model_copy(update={"evaluation": nightly.evaluation}) == nightly


def test_nightly_and_backfill_read_the_same_corpus() -> None:
    """A run deletes the vectors of items its source no longer lists: two deployments on one
    index must read the same source."""
    assert _parameters("nightly")["manifest"] == _parameters("backfill")["manifest"]


def test_the_evaluation_has_gates_and_labeled_queries() -> None:
    evaluation = NovaflowSettings.model_validate(_parameters("evaluation")["settings"]).evaluation
    assert evaluation.min_recall is not None
    assert evaluation.gates
    # Beside the manifest, in the corpus bucket: one bucket name to edit for both.
    manifest_bucket = _buckets(_parameters("nightly")["manifest"])
    assert evaluation.qrels is not None
    assert _buckets(evaluation.qrels) == manifest_bucket


def _buckets(value: Any) -> set[str]:
    text = json.dumps(value)
    return set(re.findall(r"s3://([a-z0-9][a-z0-9.\-]+[a-z0-9])", text))


def test_the_iam_policy_is_valid_json_granting_each_service_novaflow_calls() -> None:
    policy = json.loads((DEPLOYMENTS / "iam-policy.json").read_text())
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert {"bedrock:InvokeModel", "bedrock:GetAsyncInvoke", "s3vectors:PutVectors",
            "s3vectors:DeleteVectors", "s3vectors:QueryVectors", "s3vectors:CreateIndex",
            "s3:GetObject", "s3:PutObject", "s3:ListBucket"} <= actions  # fmt: skip


def test_the_iam_policy_names_the_buckets_the_deployments_use() -> None:
    """Edit the bucket names in both files: the policy grants exactly what the settings name."""
    policy = (DEPLOYMENTS / "iam-policy.json").read_text()
    settings = NovaflowSettings.model_validate(_parameters("nightly")["settings"])
    for bucket in _buckets(DOCUMENT["deployments"]):
        assert f"arn:aws:s3:::{bucket}/*" in policy, bucket
    assert f"bucket/{settings.index.vector_bucket}" in policy


def test_the_readme_deploys_this_file_and_triggers_each_deployment() -> None:
    readme = (DEPLOYMENTS / "README.md").read_text()
    assert "prefect deploy --prefect-file deployments/prefect.yaml --all" in readme
    for name, deployment in BY_NAME.items():
        flow = _flow(deployment["entrypoint"])
        assert f"prefect deployment run '{flow.name}/{name}'" in readme
