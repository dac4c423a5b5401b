"""Every rule a batch inference request or its input must keep, through a real boto3 ``bedrock``
client: the service model's member constraints and the model check at Create
(``ValidationException``, quoting the modelled patterns), the listing's query, and the input
rules checked while a job is ``Validating``, which end it ``Failed`` with a ``message``."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ParamValidationError

from emulator.bedrock.control_api import BEDROCK_STATUS, parse_list_query
from emulator.bedrock.limits import BatchLimits
from emulator.errors import ServiceError
from tests.emulator import test_batch_inference_helpers as helpers
from tests.emulator.test_batch_inference_helpers import (
    MODEL_ID,
    PHASE,
    ROLE_ARN,
    RUN,
    World,
    at,
    jsonl,
    refused,
    text_records,
)

batch_clock = helpers.batch_clock
batch_stand_in = helpers.batch_stand_in
world = helpers.world

OPERATION = "CreateModelInvocationJob"
PATTERN = "pattern"  # the constraint is the member's modelled pattern


def modelled_shape(client: BaseClient, operation: str, path: str) -> Any:
    """The input shape at member ``path`` (``tags.1.member.key`` style) of ``operation``."""
    shape = client.meta.service_model.operation_model(operation).input_shape
    for name in path.split("."):
        if name.isdigit():
            continue
        shape = shape.member if name == "member" else shape.members[name]
    return shape


def with_member(arguments: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``arguments`` with the member at ``path`` set; ``.N.member`` is list item N."""
    document = json.loads(json.dumps(arguments))
    steps: list[str | int] = [
        int(name) - 1 if name.isdigit() else name for name in path.split(".") if name != "member"
    ]
    target: Any = document
    for step in steps[:-1]:
        target = target[step]
    target[steps[-1]] = value
    return document


def create_arguments(world: World) -> dict[str, Any]:
    return {
        "jobName": "valid-name",
        "roleArn": ROLE_ARN,
        "modelId": MODEL_ID,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{world.bucket}/input/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{world.bucket}/out/"}},
    }


IN, OUT = "inputDataConfig.s3InputDataConfig", "outputDataConfig.s3OutputDataConfig"


@pytest.mark.parametrize(
    ("path", "value", "constraint"),
    [
        ("jobName", "bad name!", PATTERN),
        ("jobName", "n" * 64, "Member must have length less than or equal to 63"),
        ("roleArn", "arn:aws:iam::123456789012:user/someone", PATTERN),
        ("clientRequestToken", "with space", PATTERN),
        ("modelId", "amazon nova", PATTERN),
        (f"{IN}.s3Uri", "s3://Bucket/in/", PATTERN),
        (f"{IN}.s3InputFormat", "CSV", "Member must satisfy enum value set: [JSONL]"),
        (f"{IN}.s3BucketOwner", "1234", PATTERN),
        (f"{OUT}.s3Uri", "https://bucket/out", PATTERN),
        (f"{OUT}.s3EncryptionKeyId", "my key", PATTERN),
        (f"{OUT}.s3BucketOwner", "owner", PATTERN),
        ("timeoutDurationInHours", 169, "Member must have value less than or equal to 168"),
        ("tags.1.member.key", "bad*key", PATTERN),
        ("tags.1.member.value", "a|b", PATTERN),
        ("vpcConfig.subnetIds.1.member", "subnet_1", PATTERN),
        (
            "vpcConfig.securityGroupIds.1.member",
            "sg-" + "1" * 30,
            "Member must have length less than or equal to 32",
        ),
        (
            "modelInvocationType",
            "Stream",
            "Member must satisfy enum value set: [InvokeModel, Converse]",
        ),
    ],
    ids=lambda value: str(value)[:24],
)
def test_each_member_constraint_is_a_validation_exception(
    world: World, path: str, value: Any, constraint: str
) -> None:
    arguments = create_arguments(world)
    arguments.setdefault("tags", [{"key": "team", "value": "search"}])
    arguments["vpcConfig"] = {"subnetIds": ["subnet-1"], "securityGroupIds": ["sg-1"]}
    arguments = with_member(arguments, path, value)
    if constraint == PATTERN:
        pattern = modelled_shape(world.control, OPERATION, path).metadata["pattern"]
        constraint = f"Member must satisfy regular expression pattern: {pattern}"
    message = refused(
        world.control.exceptions.ValidationException,
        lambda: world.control.create_model_invocation_job(**arguments),
    )
    assert message == (
        f"1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: "
        f"{constraint}"
    )


def test_list_lengths_are_checked_by_the_service(world: World) -> None:
    arguments = create_arguments(world)
    arguments["tags"] = [{"key": f"k{n}", "value": "v"} for n in range(201)]
    arguments["vpcConfig"] = {
        "subnetIds": [f"subnet-{n}" for n in range(17)],
        "securityGroupIds": ["sg-1"],
    }
    message = refused(
        world.control.exceptions.ValidationException,
        lambda: world.control.create_model_invocation_job(**arguments),
    )
    assert message == (
        "2 validation errors detected: Value at 'vpcConfig.subnetIds' failed to satisfy "
        "constraint: Member must have length less than or equal to 16; Value at 'tags' failed to "
        "satisfy constraint: Member must have length less than or equal to 200"
    )


def test_a_data_config_must_set_its_one_union_member(world: World) -> None:
    unchecked = world.stand_in.client("bedrock", parameter_validation=False)
    arguments = {**create_arguments(world), "inputDataConfig": {}}
    assert refused(
        unchecked.exceptions.ValidationException,
        lambda: unchecked.create_model_invocation_job(**arguments),
    ) == (
        "1 validation error detected: Value at 'inputDataConfig' failed to satisfy constraint: "
        "Member must set exactly one union member, s3InputDataConfig"
    )


def test_rules_botocore_checks_first_are_checked_by_the_service_too(world: World) -> None:
    arguments = {**create_arguments(world), "timeoutDurationInHours": 23}
    del arguments["roleArn"]
    with pytest.raises(ParamValidationError):
        world.control.create_model_invocation_job(**arguments)
    unchecked = world.stand_in.client("bedrock", parameter_validation=False)
    message = refused(
        unchecked.exceptions.ValidationException,
        lambda: unchecked.create_model_invocation_job(**arguments),
    )
    assert message == (
        "2 validation errors detected: Value null at 'roleArn' failed to satisfy constraint: "
        "Member must not be null; Value '23' at 'timeoutDurationInHours' failed to satisfy "
        "constraint: Member must have value greater than or equal to 24"
    )


@pytest.mark.parametrize(
    ("model_id", "invocation_type", "message"),
    [
        ("amazon.titan-embed-text-v2:0", None, "The provided model identifier is invalid."),
        (
            f"arn:aws:bedrock:eu-west-1::foundation-model/{MODEL_ID}",
            None,
            "The provided model identifier is invalid.",
        ),
        (
            MODEL_ID,
            "Converse",
            f"The model {MODEL_ID} does not support the Converse model invocation type.",
        ),
    ],
    ids=["other-model", "other-region", "converse"],
)
def test_a_model_the_stand_in_cannot_run_in_batch_is_refused_at_create(
    world: World, model_id: str, invocation_type: str | None, message: str
) -> None:
    arguments = {**create_arguments(world), "modelId": model_id}
    if invocation_type is not None:
        arguments["modelInvocationType"] = invocation_type
    assert message == refused(
        world.control.exceptions.ValidationException,
        lambda: world.control.create_model_invocation_job(**arguments),
    )


def test_the_model_may_be_named_by_its_foundation_model_arn(world: World) -> None:
    arn = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL_ID}"
    job_arn = world.create(modelId=arn, modelInvocationType="InvokeModel")
    job = world.job(job_arn)
    assert (job["modelId"], job["modelInvocationType"]) == (arn, "InvokeModel")


def test_a_malformed_job_identifier_quotes_the_modelled_pattern(world: World) -> None:
    shape = modelled_shape(world.control, "GetModelInvocationJob", "jobIdentifier")
    pattern = shape.metadata["pattern"]
    for call in (world.control.get_model_invocation_job, world.control.stop_model_invocation_job):
        message = refused(
            world.control.exceptions.ValidationException,
            lambda call=call: call(jobIdentifier="not-a-job"),
        )
        assert message == (
            "1 validation error detected: Value 'not-a-job' at 'jobIdentifier' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {pattern}"
        )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"statusEquals": "Running"},
            "Value 'Running' at 'statusEquals' failed to satisfy constraint: Member must satisfy "
            "enum value set: [Submitted, InProgress, Completed, Failed, Stopping, Stopped, "
            "PartiallyCompleted, Expired, Validating, Scheduled]",
        ),
        (
            {"sortBy": "Name"},
            "Value 'Name' at 'sortBy' failed to satisfy constraint: Member must satisfy enum "
            "value set: [CreationTime]",
        ),
        (
            {"maxResults": 1001},
            "Value '1001' at 'maxResults' failed to satisfy constraint: Member must have value "
            "less than or equal to 1000",
        ),
        (
            {"nameContains": "a b"},
            "Value 'a b' at 'nameContains' failed to satisfy constraint: Member must satisfy "
            r"regular expression pattern: [a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}",
        ),
    ],
    ids=["status", "sort-by", "max-results", "name"],
)
def test_listing_query_rules(world: World, query: dict[str, Any], message: str) -> None:
    assert (
        refused(
            world.control.exceptions.ValidationException,
            lambda: world.control.list_model_invocation_jobs(**query),
        )
        == f"1 validation error detected: {message}"
    )


@pytest.mark.parametrize("text", ["--5", "²", "5.0"])
def test_a_max_results_that_is_not_an_integer_is_refused_not_a_crash(text: str) -> None:
    # botocore checks the type before sending; a raw HTTP client can send anything.
    with pytest.raises(ServiceError) as refused:
        parse_list_query({"maxResults": [text]})

    assert refused.value.code == "ValidationException"
    assert refused.value.message == (
        f"1 validation error detected: Value '{text}' at 'maxResults' failed to satisfy "
        "constraint: Member must be an integer"
    )


def test_a_forged_next_token_is_refused(world: World) -> None:
    assert (
        refused(
            world.control.exceptions.ValidationException,
            lambda: world.control.list_model_invocation_jobs(nextToken="forged"),
        )
        == "The provided nextToken is invalid."
    )


def _records(count: int, prefix: str = "rec") -> bytes:
    return jsonl(text_records(count, prefix))


VALID = _records(100)


def _lines(*extra: str) -> bytes:
    """Two good records, the ``extra`` lines, then enough good records to pass the minimum."""
    good = [json.dumps(record) for record in text_records(100)]
    return ("\n".join(good[:2] + list(extra) + good[2:]) + "\n").encode()


def _bad_line(reason: str) -> str:
    return (
        "Line 3 of s3://{bucket}/input/records.jsonl is not a valid batch inference record: "
        f"{reason}. Each line must be a JSON object such as "
        '{{"recordId": "…", "modelInput": {{…}}}}.'
    )


TOO_MANY = jsonl([{"modelInput": {}}] * 50_001)
HALF_OVER = jsonl([{"modelInput": {}}] * 25_001)

# (files by key, input URI or None for the input/ folder, output URI or None, limits, message)
INPUT_CASES: dict[str, tuple[dict[str, bytes], str | None, str | None, BatchLimits, str]] = {
    "input-bucket-missing": (
        {},
        "s3://no-such-batch-bucket/input/",
        None,
        BatchLimits(),
        "Unable to access the input location s3://no-such-batch-bucket/input/: the bucket "
        "no-such-batch-bucket does not exist or is not accessible.",
    ),
    "no-jsonl-files": (
        {"input/readme.txt": b"records go in .jsonl files"},
        None,
        None,
        BatchLimits(),
        "No .jsonl input files were found at s3://{bucket}/input/.",
    ),
    "file-missing": (
        {"input/records.jsonl": VALID},
        "s3://{bucket}/input/missing.jsonl",
        None,
        BatchLimits(),
        "No .jsonl input files were found at s3://{bucket}/input/missing.jsonl.",
    ),
    "not-a-jsonl-file": (
        {"input/records.json": VALID},
        "s3://{bucket}/input/records.json",
        None,
        BatchLimits(),
        "The input file s3://{bucket}/input/records.json must have the extension .jsonl.",
    ),
    "output-bucket-missing": (
        {"input/records.jsonl": VALID},
        None,
        "s3://no-such-output-bucket/results/",
        BatchLimits(),
        "Unable to access the output location s3://no-such-output-bucket/results/: the bucket "
        "no-such-output-bucket does not exist or is not accessible.",
    ),
    "not-utf-8": (
        {"input/records.jsonl": b"\xff\xfe" + VALID},
        None,
        None,
        BatchLimits(),
        "The input file s3://{bucket}/input/records.jsonl is not UTF-8 text: 'utf-8' codec "
        "can't decode byte 0xff in position 0: invalid start byte.",
    ),
    "not-json": (
        {"input/records.jsonl": _lines('{"recordId": "x", "modelInput": ')},
        None,
        None,
        BatchLimits(),
        _bad_line("it is not a JSON object"),
    ),
    "json-array": (
        {"input/records.jsonl": _lines("[1, 2]")},
        None,
        None,
        BatchLimits(),
        _bad_line("it is not a JSON object"),
    ),
    "no-model-input": (
        {"input/records.jsonl": _lines('{"recordId": "x"}')},
        None,
        None,
        BatchLimits(),
        _bad_line("modelInput is missing"),
    ),
    "model-input-not-object": (
        {"input/records.jsonl": _lines('{"recordId": "x", "modelInput": "embed me"}')},
        None,
        None,
        BatchLimits(),
        _bad_line("modelInput is not a JSON object"),
    ),
    "record-id-not-string": (
        {"input/records.jsonl": _lines('{"recordId": 7, "modelInput": {}}')},
        None,
        None,
        BatchLimits(),
        _bad_line("recordId is not a non-empty string"),
    ),
    "duplicate-record-id": (
        {"input/a.jsonl": _records(60), "input/b.jsonl": _records(60)},
        None,
        None,
        BatchLimits(),
        "Duplicate recordId 'rec-0000' at line 1 of s3://{bucket}/input/b.jsonl: it is already "
        "used at line 1 of s3://{bucket}/input/a.jsonl. Each record in a job needs its own "
        "recordId.",
    ),
    "below-the-minimum": (
        {"input/a.jsonl": _records(60, "a"), "input/b.jsonl": _records(39, "b")},
        None,
        None,
        BatchLimits(),
        "The job's input has 99 records; a batch inference job needs at least 100.",
    ),
    "over-the-records-per-file": (
        {"input/records.jsonl": TOO_MANY},
        None,
        None,
        BatchLimits(),
        "The input file s3://{bucket}/input/records.jsonl has more than 50000 records, the most "
        "allowed in one batch inference input file.",
    ),
    "over-the-records-per-job": (
        {"input/a.jsonl": HALF_OVER, "input/b.jsonl": HALF_OVER},
        None,
        None,
        BatchLimits(),
        "The job's input has 50002 records, over the 50000 records allowed in a batch "
        "inference job.",
    ),
    "over-the-file-size": (
        {"input/records.jsonl": VALID},
        None,
        None,
        BatchLimits(max_file_bytes=10_000),
        f"The input file s3://{{bucket}}/input/records.jsonl is {len(VALID)} bytes, over the "
        "10000-byte limit for a batch inference input file.",
    ),
    "over-the-job-size": (
        {"input/a.jsonl": _records(60, "a"), "input/b.jsonl": _records(60, "b")},
        None,
        None,
        BatchLimits(max_file_bytes=20_000, max_job_bytes=15_000),
        "The input files total {total} bytes, over the 15000-byte limit for a batch inference job.",
    ),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_each_input_rule_fails_the_job_while_validating(world: World, case: str) -> None:
    files, input_uri, output_uri, limits, expected = INPUT_CASES[case]
    world.stand_in.configure(batch_limits=limits)
    for key, data in files.items():
        world.put(key, data)
    arguments: dict[str, Any] = {}
    if output_uri is not None:
        arguments["outputDataConfig"] = {"s3OutputDataConfig": {"s3Uri": output_uri}}
    submitted = world.clock.now
    uri = None if input_uri is None else input_uri.format(bucket=world.bucket)
    arn = world.create(uri, **arguments)
    assert world.status_after(arn, PHASE) == "Validating"
    assert world.status_after(arn, PHASE) == "Failed"
    job = world.job(arn)
    total = sum(len(data) for data in files.values())
    assert job["message"] == expected.format(bucket=world.bucket, total=total)
    assert job["endTime"] == job["lastModifiedTime"] == at(submitted + 2 * PHASE)
    assert job["totalRecordCount"] == 0
    assert world.keys("results/") == []


def test_input_that_breaks_a_rule_after_validation_fails_the_job_when_it_runs(
    world: World,
) -> None:
    world.put("input/records.jsonl", _records(100))
    arn = world.create()
    assert world.status_after(arn, 3 * PHASE) == "InProgress"
    world.put("input/records.jsonl", _records(50))
    assert world.status_after(arn, RUN) == "Failed"
    assert world.job(arn)["message"] == (
        "The job's input has 50 records; a batch inference job needs at least 100."
    )


def test_the_default_quotas_are_the_documented_ones() -> None:
    limits = BatchLimits()
    assert limits.min_records_per_job == 100
    assert (limits.max_records_per_file, limits.max_records_per_job) == (50_000, 50_000)
    assert (limits.max_file_bytes, limits.max_job_bytes) == (1_000_000_000, 5_000_000_000)


def test_error_statuses_are_the_bedrock_models() -> None:
    model = botocore.session.get_session().get_service_model("bedrock")
    for name in model.error_shapes:
        code = name.name
        if code in BEDROCK_STATUS:
            assert BEDROCK_STATUS[code] == name.metadata["error"]["httpStatusCode"], code
    used = {
        error.name
        for operation in (
            "CreateModelInvocationJob",
            "GetModelInvocationJob",
            "ListModelInvocationJobs",
            "StopModelInvocationJob",
        )
        for error in model.operation_model(operation).error_shapes
    }
    assert used <= set(BEDROCK_STATUS)
