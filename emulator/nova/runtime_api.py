"""The Bedrock runtime's members around the model: model identifiers, the StartAsyncInvoke
envelope, invocation ARNs, ListAsyncInvokes' query string and timestamps.

Constraints come from the service model (``../shared/reference/aws-apis.md`` §1.5.1). The
service front end reports them the way AWS's request validation does: ``2 validation errors
detected: Value 'x' at 'clientRequestToken' failed to satisfy constraint: Member must satisfy
regular expression pattern: [!-~]*; Value null at 'modelId' failed to satisfy constraint: Member
must not be null``. Unknown members of the StartAsyncInvoke body are ignored, as a rest-json
front end does.

Model identifiers: the stand-in serves only Nova Multimodal Embeddings, by its model ID or its
foundation-model ARN in the stand-in's own Region. Anything else gets Bedrock's answer to an
identifier it cannot resolve, ``ValidationException: The provided model identifier is invalid.``;
ResourceNotFoundException is kept for models that exist but cannot be used (end of life), a
case the stand-in does not have.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulator.errors import bedrock_validation
from emulator.violations import Violations

NOVA_MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
JOB_STATUSES = ("InProgress", "Completed", "Failed")
DEFAULT_MAX_RESULTS = 1000

_TOKEN_PATTERN = re.compile(r"[!-~]*")
_ASYNC_MODEL_ID_PATTERN = re.compile(r"[a-zA-Z_.\-/0-9:]+")
_S3_URI_PATTERN = re.compile(r"s3://[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9](/.*)?", re.DOTALL)
_KMS_KEY_PATTERN = re.compile(
    r"arn:aws(-[^:]+)?:kms:[a-zA-Z0-9-]*:[0-9]{12}:((key/[a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+))"
)
_ACCOUNT_PATTERN = re.compile(r"[0-9]{12}")
_TAG_PATTERN = re.compile(r"[a-zA-Z0-9\s._:/=+@-]*")
_INVOCATION_ARN_PATTERN = re.compile(
    r"arn:aws(-[^:]+)?:bedrock:(?P<region>[a-z0-9-]{1,20}):(?P<account>[0-9]{12})"
    r":async-invoke/(?P<job_id>[a-z0-9]{12})"
)
_FOUNDATION_MODEL_ARN = re.compile(
    r"arn:aws:bedrock:(?P<region>[a-z0-9-]{1,20})::foundation-model/"
)
_NEXT_TOKEN_PATTERN = re.compile(r"\S*")
# Messages quote the patterns as the service model spells them, not this module's regexes.
_INVOCATION_ARN_MODELLED = (
    r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:async-invoke/[a-z0-9]{12}"
)
_S3_URI_MODELLED = r"s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?"
_NO_LENGTH_LIMIT = 2**31


@dataclass(frozen=True)
class StartAsyncInvokeRequest:
    """A StartAsyncInvoke body whose envelope passed the service's member checks.

    ``model_input`` is the Nova request document, still to be checked by the model's schema;
    ``output_s3_uri`` is the caller's output prefix as given.
    """

    client_request_token: str | None
    model_id: str
    model_input: Any
    output_s3_uri: str
    kms_key_id: str | None
    bucket_owner: str | None
    tags: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ListQuery:
    """ListAsyncInvokes' query: filters, order and page.

    Submit-time bounds are exclusive and in epoch milliseconds, the precision of the times the
    service reports. ``after_cursor`` is the (submit time in milliseconds, job ID) of the last
    summary of the previous page.
    """

    submitted_after_ms: int | None
    submitted_before_ms: int | None
    status: str | None
    descending: bool
    max_results: int
    after_cursor: tuple[int, str] | None


def foundation_model_arn(region: str) -> str:
    """The Nova model's ARN as GetAsyncInvoke reports it in ``modelArn``."""
    return f"arn:aws:bedrock:{region}::foundation-model/{NOVA_MODEL_ID}"


def check_model_id(model_id: str, region: str) -> None:
    """Accept the Nova model ID or its foundation-model ARN in ``region``; reject anything else."""
    arn = _FOUNDATION_MODEL_ARN.match(model_id)
    if arn is not None and arn["region"] == region:
        model_id = model_id[arn.end() :]
    if model_id != NOVA_MODEL_ID:
        raise bedrock_validation("The provided model identifier is invalid.")


def invocation_arn(region: str, account_id: str, job_id: str) -> str:
    """The ARN that names async job ``job_id``."""
    return f"arn:aws:bedrock:{region}:{account_id}:async-invoke/{job_id}"


def job_id_of(arn: str) -> str:
    """The job ID at the end of a well-formed invocation ARN; ValidationException otherwise."""
    pattern = _INVOCATION_ARN_PATTERN
    problems = Violations(bedrock_validation)
    problems.string("invocationArn", arn, 1, 2048, pattern, _INVOCATION_ARN_MODELLED)
    problems.raise_if_any()
    return pattern.fullmatch(arn)["job_id"]  # type: ignore[index]  # checked just above


def parse_start_async_invoke(body: Mapping[str, Any]) -> StartAsyncInvokeRequest:
    """Check the StartAsyncInvoke envelope (§1.5.1); the ``modelInput`` is left to the schema."""
    if not isinstance(body, Mapping):
        raise bedrock_validation("The request body must be a JSON object.")
    problems = Violations(bedrock_validation)
    token = body.get("clientRequestToken")
    if token is not None:
        problems.string("clientRequestToken", token, 1, 256, _TOKEN_PATTERN, r"[!-~]*")
    model_id = body.get("modelId")
    problems.required("modelId", model_id)
    if model_id is not None:
        pattern = _ASYNC_MODEL_ID_PATTERN
        problems.string("modelId", model_id, 1, 256, pattern, r"[a-zA-Z_\.\-/0-9:]+")
    model_input = body.get("modelInput")
    problems.required("modelInput", model_input)
    output_uri, kms_key_id, bucket_owner = _output_config(body.get("outputDataConfig"), problems)
    tags = _tags(body.get("tags"), problems)
    problems.raise_if_any()
    return StartAsyncInvokeRequest(
        client_request_token=token,
        model_id=model_id,
        model_input=model_input,
        output_s3_uri=output_uri,
        kms_key_id=kms_key_id,
        bucket_owner=bucket_owner,
        tags=tags,
    )


def parse_list_query(query: Mapping[str, Sequence[str]]) -> ListQuery:
    """ListAsyncInvokes' raw query-string values, checked; the first of repeated values counts.

    ``sortBy`` admits only ``SubmissionTime``; ``sortOrder`` defaults to Descending and
    ``maxResults`` to 1000 (the service model's maximum; AWS documents no default).
    """
    values = {name: items[0] for name, items in query.items() if items}
    problems = Violations(bedrock_validation)
    after = _timestamp_ms(values.get("submitTimeAfter"), "submitTimeAfter", problems)
    before = _timestamp_ms(values.get("submitTimeBefore"), "submitTimeBefore", problems)
    status = values.get("statusEquals")
    if status is not None:
        problems.enum("statusEquals", status, JOB_STATUSES)
    if "sortBy" in values:
        problems.enum("sortBy", values["sortBy"], ("SubmissionTime",))
    order = values.get("sortOrder", "Descending")
    problems.enum("sortOrder", order, ("Ascending", "Descending"))
    max_results = DEFAULT_MAX_RESULTS
    if "maxResults" in values:
        max_results = problems.integer_text("maxResults", values["maxResults"], 1, 1000)
    cursor = None
    if "nextToken" in values:
        token = values["nextToken"]
        problems.string("nextToken", token, 1, 2048, _NEXT_TOKEN_PATTERN, r"\S*")
        cursor = _decode_cursor(token) if not problems.messages else None
    problems.raise_if_any()
    return ListQuery(after, before, status, order == "Descending", max_results, cursor)


def encode_next_token(cursor: tuple[int, str]) -> str:
    """The opaque ``nextToken`` that resumes a listing after ``cursor`` (submit ms, job ID)."""
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode()


def iso8601(epoch_seconds: float) -> str:
    """``2025-11-21T09:53:12.345Z``: UTC with milliseconds, as Bedrock's JSON timestamps look."""
    # Whole milliseconds first: converting the float directly can show 12.344 for 12.345.
    milliseconds = round(epoch_seconds * 1000)
    moment = datetime.fromtimestamp(milliseconds // 1000, UTC)
    moment = moment.replace(microsecond=milliseconds % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso8601(text: str) -> float:
    """Epoch seconds of an ISO-8601 timestamp; one without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _decode_cursor(token: str) -> tuple[int, str]:
    try:
        submit_ms, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(submit_ms, int) or not isinstance(job_id, str):
            raise TypeError("cursor parts have the wrong types")
        return submit_ms, job_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bedrock_validation("The provided nextToken is invalid.") from None


def _timestamp_ms(text: str | None, name: str, problems: Violations) -> int | None:
    if text is None:
        return None
    try:
        return round(parse_iso8601(text) * 1000)
    except ValueError:
        problems.constraint(name, text, "Member must be an ISO-8601 timestamp")
        return None


def _output_config(config: Any, problems: Violations) -> tuple[str, str | None, str | None]:
    problems.required("outputDataConfig", config)
    if config is None:
        return "", None, None
    if not isinstance(config, Mapping) or set(config) != {"s3OutputDataConfig"}:
        problems.add(
            "Value at 'outputDataConfig' failed to satisfy constraint: Member must set exactly "
            "one union member, s3OutputDataConfig"
        )
        return "", None, None
    s3_config = config["s3OutputDataConfig"]
    path = "outputDataConfig.s3OutputDataConfig"
    if not isinstance(s3_config, Mapping):
        problems.add(f"Value at '{path}' failed to satisfy constraint: Member must be an object")
        return "", None, None
    uri, kms_key_id, owner = (s3_config.get(k) for k in ("s3Uri", "kmsKeyId", "bucketOwner"))
    problems.required(f"{path}.s3Uri", uri)
    if uri is not None:
        problems.string(f"{path}.s3Uri", uri, 1, 1024, _S3_URI_PATTERN, _S3_URI_MODELLED)
    if kms_key_id is not None:
        problems.string(
            f"{path}.kmsKeyId", kms_key_id, 1, 2048, _KMS_KEY_PATTERN, _KMS_KEY_PATTERN.pattern
        )
    if owner is not None:
        # The model gives bucketOwner a pattern but no length limits.
        problems.string(
            f"{path}.bucketOwner", owner, 0, _NO_LENGTH_LIMIT, _ACCOUNT_PATTERN, "[0-9]{12}"
        )
    return uri or "", kms_key_id, owner


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
        problems.required(f"{path}.key", key)
        problems.required(f"{path}.value", value)
        if key is not None:
            problems.string(f"{path}.key", key, 1, 128, _TAG_PATTERN, _TAG_PATTERN.pattern)
        if value is not None:
            problems.string(f"{path}.value", value, 0, 256, _TAG_PATTERN, _TAG_PATTERN.pattern)
        if isinstance(key, str) and isinstance(value, str):
            parsed.append((key, value))
    return tuple(parsed)
