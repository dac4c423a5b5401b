"""The Bedrock control plane's members for batch inference: request checks, job ARNs, the
listing query and the service's error statuses.

Constraints are the ``bedrock`` service model's (botocore ``bedrock/2023-04-20``): each member's
required flag, length, pattern, range and enum. Violations are reported all at once, the way
AWS's request validation words them: ``2 validation errors detected: Value 'x y' at 'jobName'
failed to satisfy constraint: Member must satisfy regular expression pattern: …; Value null at
'roleArn' failed to satisfy constraint: Member must not be null``. Messages quote patterns as
the model spells them. Unknown members of a request body are ignored, as a rest-json front end
does.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from emulator.errors import ServiceError
from emulator.nova.runtime_api import parse_iso8601
from emulator.violations import Violations

# The statuses the ``bedrock`` model gives its errors (ServiceUnavailable is not modelled, but
# the stand-in's fault injector sends it and botocore treats any 503 alike).
BEDROCK_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "ValidationException": 400,
        "ConflictException": 400,
        "ServiceQuotaExceededException": 400,
        "AccessDeniedException": 403,
        "ResourceNotFoundException": 404,
        "ThrottlingException": 429,
        "InternalServerException": 500,
        "ServiceUnavailableException": 503,
    }
)

JOB_STATUSES = (
    "Submitted",
    "InProgress",
    "Completed",
    "Failed",
    "Stopping",
    "Stopped",
    "PartiallyCompleted",
    "Expired",
    "Validating",
    "Scheduled",
)
INVOCATION_TYPES = ("InvokeModel", "Converse")
DEFAULT_MAX_RESULTS = 1000
NO_LENGTH_LIMIT = 2**31

JOB_NAME_PATTERN = r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}"
ROLE_ARN_PATTERN = r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+"
TOKEN_PATTERN = r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}"
MODEL_ID_PATTERN = (
    r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:(([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.]{1}"
    r"[a-z0-9-:]{1,63}/[a-z0-9]{12}$)|(:foundation-model/([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}"
    r"([.]?[a-z0-9-]{1,63})([:][a-z0-9-]{1,63}){0,2})|(([0-9a-zA-Z][_-]?)+)$)|([0-9]{12}:"
    r"(inference-profile|application-inference-profile)/[a-zA-Z0-9-:.]+$)))|([a-z0-9-]{1,63}"
    r"[.]{1}[a-z0-9-]{1,63}([.]?[a-z0-9-]{1,63})([:][a-z0-9-]{1,63}){0,2})|(([0-9a-zA-Z][_-]?)+)"
)
S3_URI_PATTERN = (
    r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?"
)
KMS_KEY_PATTERN = (
    r"(arn:aws(-[^:]+)?:kms:[a-zA-Z0-9-]*:[0-9]{12}:((key/[a-zA-Z0-9-]{36})|"
    r"(alias/[a-zA-Z0-9-_/]+)))|([a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+)"
)
ACCOUNT_PATTERN = r"[0-9]{12}"
NETWORK_ID_PATTERN = r"[-0-9a-zA-Z]+"
TAG_PATTERN = r"[a-zA-Z0-9\s._:/=+@-]*"
JOB_IDENTIFIER_PATTERN = (
    r"((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?[a-z0-9]{12})"
)
NEXT_TOKEN_PATTERN = r"\S*"


def bedrock_control_error(code: str, message: str, **extra: Any) -> ServiceError:
    """A control-plane error with the status the ``bedrock`` model gives ``code``."""
    return ServiceError(code, BEDROCK_STATUS[code], message, extra)


def _violations() -> Violations:
    """A collector whose violations the control plane reports as its ValidationException."""
    return Violations(lambda message: bedrock_control_error("ValidationException", message))


@dataclass(frozen=True)
class VpcConfig:
    """The job's VPC: subnets and security groups, echoed back as given."""

    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]


@dataclass(frozen=True)
class CreateJobRequest:
    """A CreateModelInvocationJob body whose members passed the model's constraints.

    URIs are as the caller gave them; None marks an optional member the caller left out.
    """

    job_name: str
    role_arn: str
    client_request_token: str | None
    model_id: str
    input_uri: str
    input_format: str | None
    input_bucket_owner: str | None
    output_uri: str
    output_kms_key_id: str | None
    output_bucket_owner: str | None
    vpc: VpcConfig | None
    timeout_hours: int | None
    tags: tuple[tuple[str, str], ...]
    invocation_type: str | None


@dataclass(frozen=True)
class ListQuery:
    """ListModelInvocationJobs' query: filters, order and page.

    Submit-time bounds are exclusive, in epoch milliseconds; ``after_cursor`` is the (submit
    milliseconds, job ID) of the last summary of the previous page.
    """

    submitted_after_ms: int | None
    submitted_before_ms: int | None
    status: str | None
    name_contains: str | None
    descending: bool
    max_results: int
    after_cursor: tuple[int, str] | None


def parse_create_job(body: Mapping[str, Any]) -> CreateJobRequest:
    """Check a CreateModelInvocationJob body against the model; ValidationException otherwise."""
    problems = _violations()
    name, role, model = body.get("jobName"), body.get("roleArn"), body.get("modelId")
    if problems.required("jobName", name):
        problems.string("jobName", name, 1, 63, JOB_NAME_PATTERN)
    if problems.required("roleArn", role):
        problems.string("roleArn", role, 0, 2048, ROLE_ARN_PATTERN)
    token = body.get("clientRequestToken")
    if token is not None:
        problems.string("clientRequestToken", token, 1, 256, TOKEN_PATTERN)
    if problems.required("modelId", model):
        problems.string("modelId", model, 1, 2048, MODEL_ID_PATTERN)
    source = _s3_config(
        body.get("inputDataConfig"), "inputDataConfig", "s3InputDataConfig", problems
    )
    if "s3InputFormat" in source:
        path = "inputDataConfig.s3InputDataConfig.s3InputFormat"
        problems.enum(path, source["s3InputFormat"], ("JSONL",))
    output = _s3_config(
        body.get("outputDataConfig"), "outputDataConfig", "s3OutputDataConfig", problems
    )
    if "s3EncryptionKeyId" in output:
        path = "outputDataConfig.s3OutputDataConfig.s3EncryptionKeyId"
        problems.string(path, output["s3EncryptionKeyId"], 1, 2048, KMS_KEY_PATTERN)
    vpc = _vpc(body.get("vpcConfig"), problems)
    timeout = body.get("timeoutDurationInHours")
    if timeout is not None:
        timeout = problems.integer("timeoutDurationInHours", timeout, 24, 168)
    tags = _tags(body.get("tags"), problems)
    invocation_type = body.get("modelInvocationType")
    if invocation_type is not None:
        problems.enum("modelInvocationType", invocation_type, INVOCATION_TYPES)
    problems.raise_if_any()
    return CreateJobRequest(
        job_name=name,
        role_arn=role,
        client_request_token=token,
        model_id=model,
        input_uri=source["s3Uri"],
        input_format=source.get("s3InputFormat"),
        input_bucket_owner=source.get("s3BucketOwner"),
        output_uri=output["s3Uri"],
        output_kms_key_id=output.get("s3EncryptionKeyId"),
        output_bucket_owner=output.get("s3BucketOwner"),
        vpc=vpc,
        timeout_hours=timeout,
        tags=tags,
        invocation_type=invocation_type,
    )


def job_arn(region: str, account_id: str, job_id: str) -> str:
    """The ARN that names batch job ``job_id``; its last segment is the job ID."""
    return f"arn:aws:bedrock:{region}:{account_id}:model-invocation-job/{job_id}"


def job_id_of(identifier: str) -> str:
    """The job ID in a job identifier (a job ID or job ARN); ValidationException if malformed."""
    problems = _violations()
    problems.string("jobIdentifier", identifier, 0, 1011, JOB_IDENTIFIER_PATTERN)
    problems.raise_if_any()
    return identifier.rsplit("/", 1)[-1]


def parse_list_query(query: Mapping[str, Sequence[str]]) -> ListQuery:
    """ListModelInvocationJobs' raw query-string values, checked; the first of repeats counts.

    ⚠ ``sortOrder`` defaults to Descending and ``maxResults`` to 1000 (AWS documents neither).
    """
    values = {name: items[0] for name, items in query.items() if items}
    problems = _violations()
    after = _timestamp_ms(values.get("submitTimeAfter"), "submitTimeAfter", problems)
    before = _timestamp_ms(values.get("submitTimeBefore"), "submitTimeBefore", problems)
    status = values.get("statusEquals")
    if status is not None:
        problems.enum("statusEquals", status, JOB_STATUSES)
    name = values.get("nameContains")
    if name is not None:
        problems.string("nameContains", name, 1, 63, JOB_NAME_PATTERN)
    if "sortBy" in values:
        problems.enum("sortBy", values["sortBy"], ("CreationTime",))
    order = values.get("sortOrder", "Descending")
    problems.enum("sortOrder", order, ("Ascending", "Descending"))
    max_results = DEFAULT_MAX_RESULTS
    if "maxResults" in values:
        max_results = problems.integer("maxResults", values["maxResults"], 1, 1000) or 1
    cursor = None
    if "nextToken" in values:
        token = values["nextToken"]
        problems.string("nextToken", token, 1, 2048, NEXT_TOKEN_PATTERN)
        cursor = _decode_cursor(token) if not problems.messages else None
    problems.raise_if_any()
    return ListQuery(after, before, status, name, order == "Descending", max_results, cursor)


def encode_next_token(cursor: tuple[int, str]) -> str:
    """The opaque ``nextToken`` that resumes a listing after ``cursor`` (submit ms, job ID)."""
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode()


def _decode_cursor(token: str) -> tuple[int, str]:
    try:
        submit_ms, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(submit_ms, int) or not isinstance(job_id, str):
            raise TypeError("cursor parts have the wrong types")
        return submit_ms, job_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bedrock_control_error(
            "ValidationException", "The provided nextToken is invalid."
        ) from None


def _timestamp_ms(text: str | None, name: str, problems: Violations) -> int | None:
    if text is None:
        return None
    try:
        return round(parse_iso8601(text) * 1000)
    except ValueError:
        problems.add(
            f"Value '{text}' at '{name}' failed to satisfy constraint: Member must be an "
            "ISO-8601 timestamp"
        )
        return None


def _s3_config(config: Any, path: str, member: str, problems: Violations) -> dict[str, Any]:
    """The S3 member of an input or output data config (a union), checked; {} when unusable."""
    if not problems.required(path, config):
        return {"s3Uri": ""}
    if not isinstance(config, Mapping) or set(config) != {member}:
        problems.add(
            f"Value at '{path}' failed to satisfy constraint: Member must set exactly one union "
            f"member, {member}"
        )
        return {"s3Uri": ""}
    s3_config = config[member]
    inner = f"{path}.{member}"
    if not isinstance(s3_config, Mapping):
        problems.add(f"Value at '{inner}' failed to satisfy constraint: Member must be an object")
        return {"s3Uri": ""}
    uri = s3_config.get("s3Uri")
    if problems.required(f"{inner}.s3Uri", uri):
        problems.string(f"{inner}.s3Uri", uri, 1, 1024, S3_URI_PATTERN)
    owner = s3_config.get("s3BucketOwner")
    if owner is not None:
        # The model gives the account a pattern but no length limits.
        problems.string(f"{inner}.s3BucketOwner", owner, 0, NO_LENGTH_LIMIT, ACCOUNT_PATTERN)
    return {**s3_config, "s3Uri": uri if isinstance(uri, str) else ""}


def _vpc(config: Any, problems: Violations) -> VpcConfig | None:
    if config is None:
        return None
    if not isinstance(config, Mapping):
        problems.add("Value at 'vpcConfig' failed to satisfy constraint: Member must be an object")
        return None
    groups: list[tuple[str, ...]] = []
    for member, high in (("subnetIds", 16), ("securityGroupIds", 5)):
        path = f"vpcConfig.{member}"
        values = config.get(member)
        if not problems.required(path, values):
            groups.append(())
            continue
        items = problems.list_length(path, values, 1, high)
        for number, item in enumerate(items, start=1):
            problems.string(f"{path}.{number}.member", item, 0, 32, NETWORK_ID_PATTERN)
        groups.append(tuple(str(item) for item in items))
    return VpcConfig(groups[0], groups[1])


def _tags(tags: Any, problems: Violations) -> tuple[tuple[str, str], ...]:
    if tags is None:
        return ()
    parsed: list[tuple[str, str]] = []
    for number, tag in enumerate(problems.list_length("tags", tags, 0, 200), start=1):
        path = f"tags.{number}.member"
        if not isinstance(tag, Mapping):
            problems.add(
                f"Value at '{path}' failed to satisfy constraint: Member must be an object"
            )
            continue
        key, value = tag.get("key"), tag.get("value")
        if problems.required(f"{path}.key", key):
            problems.string(f"{path}.key", key, 1, 128, TAG_PATTERN)
        if problems.required(f"{path}.value", value):
            problems.string(f"{path}.value", value, 0, 256, TAG_PATTERN)
        if isinstance(key, str) and isinstance(value, str):
            parsed.append((key, value))
    return tuple(parsed)
