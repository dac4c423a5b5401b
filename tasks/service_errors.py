"""The one vocabulary of AWS errors novaflow acts on: how to read a ``ClientError``, and which
error codes mean what, for Bedrock, S3 Vectors and S3.

Each set says what novaflow does on meeting such an error; the stage that meets it decides how.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

THROTTLING_CODES = frozenset(
    {"ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"}
)
"""The account's request rate or quota is exceeded: back-pressure, slow down and ask again."""

SERVER_CODES = frozenset({"InternalServerException", "ServiceUnavailableException"})
"""The service failed on its side: ask again later."""

TRANSIENT_CODES = (
    THROTTLING_CODES | SERVER_CODES | frozenset({"ModelTimeoutException", "ModelNotReadyException"})
)
"""A Bedrock call that may well succeed if made again (throttling, 5xx, a model not ready)."""

ACCOUNT_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationTokenException",
    }
)
"""Errors of the caller's account or credentials: quarantining every unit for them would hide a
misconfiguration behind thousands of identical failures, so they stop the stage instead."""

INDEX_WRITE_RETRY_CODES = frozenset(
    {"TooManyRequestsException", "ServiceUnavailableException", "InternalServerException"}
)
"""S3 Vectors writes worth sending again after botocore's own retries gave up."""

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
"""S3: no such object or bucket (HeadObject answers a bare ``404``)."""

MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
"""S3: the bucket exists, the object does not."""

MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
"""S3: the bucket does not exist."""

FORBIDDEN_CODES = frozenset({"403", "AccessDenied", "Forbidden"})
"""S3: the caller may not read or write there."""

UNREADABLE_OBJECT_CODES = FORBIDDEN_CODES | frozenset({"InvalidObjectState"})
"""S3: the object exists but cannot be read here (forbidden, or archived in Glacier)."""

BAD_REQUEST_CODES = frozenset({"InvalidArgument", "InvalidBucketName", "KeyTooLongError"})
"""S3: the request names something S3 cannot take (a bad bucket name, a key too long)."""

CONDITIONAL_WRITE_LOST_CODES = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
)
"""S3: a conditional write (``If-None-Match``/``If-Match``) lost to another writer: the object
changed (412), another conditional write was in flight (409), or it was deleted (404)."""

RETRIED_NEXT_RUN_CODES = TRANSIENT_CODES | frozenset(
    {
        "throttled",
        "shard_failed",
        # a reused vector's checkpoint was gone: embedded by the next run
        "reuse_source_missing",
        # async jobs: failed or timed out on the service's side, or the stage itself failed
        "job_failed",
        "job_deadline",
        "output_unreadable",
        "async_stage_failed",
        # batch inference: units a job did not reach (it ended stopped, expired, failed, or
        # without their result), a record over a file limit, or the stage itself failed
        "batch_record_missing",
        "batch_job_failed",
        "batch_job_stopped",
        "batch_job_expired",
        "batch_record_too_large",
        "batch_stage_failed",
        # segments a completed job reports as failed through no fault of the input
        # (aws-apis.md §1.6)
        "RATE_LIMIT_EXCEEDED",
        "INTERNAL_SERVER_EXCEPTION",
    }
)
"""Failure codes (AWS's and novaflow's own) a later run may well not meet again: the item is left
``incomplete`` in the state and planned again by the next run."""


def error_code(error: ClientError) -> str:
    """The service's error code of ``error`` (``ThrottlingException``, ``NoSuchKey``…), or ""."""
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    """The service's message of ``error``, or the exception's text when it gave none."""
    return str(error.response.get("Error", {}).get("Message") or error)


def http_status(error: ClientError) -> int:
    """The HTTP status of the answer that raised ``error`` (0 when unknown)."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
