"""The Bedrock runtime stand-in for Nova Multimodal Embeddings: service logic without HTTP.

:class:`NovaRuntime` answers InvokeModel, StartAsyncInvoke, GetAsyncInvoke and ListAsyncInvokes
as the real service would for ``amazon.nova-2-multimodal-embeddings-v1:0``; the HTTP layer
turns its return values into response bodies and its :class:`~emulator.errors.ServiceError`
into error responses. Request checking lives in :mod:`emulator.nova.schema` (the model's
input checker), :mod:`emulator.nova.runtime_api` (the service's member constraints) and
:mod:`emulator.nova.content` (the content); jobs in :mod:`emulator.nova.jobs` and
:mod:`emulator.nova.job_output`.

Choices where the reference is silent or unsure (``../shared/reference/aws-apis.md`` §4):

* Idempotency (§4.9): a StartAsyncInvoke whose ``clientRequestToken`` was used before returns
  the earlier job's ARN when the rest of the body is the same, and ``ConflictException`` when it
  differs. Tokens never expire. A body without a token (botocore always adds one) gets a random
  token.
* GetAsyncInvoke of a well-formed ARN that names no job (or another Region's or account's job)
  is a ``ValidationException``: the service model lists no ResourceNotFoundException for it.
* GetAsyncInvoke reports ``outputDataConfig.s3OutputDataConfig.s3Uri`` as the job's own folder,
  ``<s3Uri without trailing slash>/<job-id>``, as the AWS launch blog shows (§4.2).
* The output bucket is not checked at submission: a job whose output cannot be written fails.
* InvokeModel accepts a missing Content-Type (boto3 sends none unless asked) and an Accept of
  ``application/json``, ``application/*`` or ``*/*`` (or none); other media types are a
  ``ValidationException``.
* ListAsyncInvokes' ``submitTimeAfter`` / ``submitTimeBefore`` are exclusive bounds; ties in
  submit time are ordered by job ID.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from emulator.errors import bedrock_error, bedrock_validation
from emulator.misbehaviour import AsyncJobBehaviour
from emulator.nova import embed, runtime_api, schema
from emulator.nova.job_output import finish_job
from emulator.nova.jobs import STATE_SUBDIRECTORY, JobRecord, JobRunner, JobStore
from emulator.nova.runtime_api import NOVA_MODEL_ID
from emulator.objects import ObjectStore

__all__ = ["MAX_BODY_BYTES", "NOVA_MODEL_ID", "NovaRuntime"]

MAX_BODY_BYTES = 25_000_000
_JOB_ID_ALPHABET = string.ascii_lowercase + string.digits
_JOB_ID_LENGTH = 12
_JSON = "application/json"


class NovaRuntime:
    """Bedrock runtime operations for the Nova embeddings model. Thread-safe.

    ``objects`` is the S3 the model reads sources from and writes async output to;
    ``state_dir`` keeps async job records across restarts (None: in memory only).
    ``job_behaviour`` is asked at each submission how that job runs; ``clock`` gives epoch
    seconds and decides when jobs are due. A background thread finishes due jobs until
    :meth:`close`.
    """

    def __init__(
        self,
        objects: ObjectStore,
        *,
        state_dir: Path | None,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        job_behaviour: Callable[[], AsyncJobBehaviour] = AsyncJobBehaviour,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._objects = objects
        self._region = region
        self._account_id = account_id
        self._job_behaviour = job_behaviour
        self._clock = clock
        self._submit_lock = threading.Lock()
        self._jobs = JobStore(None if state_dir is None else state_dir / STATE_SUBDIRECTORY)
        self._runner = JobRunner(self._jobs, self._finish, clock)

    def invoke_model(
        self, model_id: str, body: bytes, content_type: str | None, accept: str | None
    ) -> dict[str, Any]:
        """The InvokeModel response document: ``{"embeddings": [...]}`` for one input.

        ``model_id`` is the URL-decoded path segment; ``content_type`` and ``accept`` the
        request's headers (None when absent).
        """
        if len(body) > MAX_BODY_BYTES:
            raise bedrock_validation(
                "1 validation error detected: Value at 'body' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_BODY_BYTES}"
            )
        runtime_api.check_model_id(model_id, self._region)
        if content_type and _media_type(content_type) != _JSON:
            raise bedrock_validation(
                f"The provided Content-Type {content_type} is not supported; this model accepts "
                f"{_JSON}."
            )
        if accept and not _accepts_json(accept):
            raise bedrock_validation(
                f"The provided Accept type {accept} is not supported; this model returns {_JSON}."
            )
        request = schema.parse_invoke_model_body(body)
        return {"embeddings": embed.single_embeddings(self._objects, request)}

    def start_async_invoke(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Check and record a SEGMENTED_EMBEDDING job; the response is ``{"invocationArn"}``.

        Everything is checked now, including the source object, its size, format, duration
        and segment count; the job then runs in the background.
        """
        envelope = runtime_api.parse_start_async_invoke(body)
        runtime_api.check_model_id(envelope.model_id, self._region)
        token = envelope.client_request_token or str(uuid.uuid4())
        fingerprint = _fingerprint(body)
        earlier = self._earlier_submission(token, fingerprint)
        if earlier is not None:
            return {"invocationArn": earlier.invocation_arn}
        request = schema.parse_request(envelope.model_input, schema.SEGMENTED_EMBEDDING)
        plan = embed.plan_segmented(self._objects, request)
        behaviour = self._job_behaviour()
        with self._submit_lock:
            earlier = self._earlier_submission(token, fingerprint)
            if earlier is not None:
                return {"invocationArn": earlier.invocation_arn}
            job_id = self._new_job_id()
            submitted = round(self._clock(), 3)
            duration = behaviour.job_seconds
            duration += behaviour.seconds_per_media_minute * plan.media_seconds / 60.0
            record = JobRecord(
                job_id=job_id,
                invocation_arn=runtime_api.invocation_arn(self._region, self._account_id, job_id),
                model_arn=runtime_api.foundation_model_arn(self._region),
                client_request_token=token,
                request_fingerprint=fingerprint,
                model_input=envelope.model_input,
                output_uri=f"{envelope.output_s3_uri.rstrip('/')}/{job_id}",
                kms_key_id=envelope.kms_key_id,
                bucket_owner=envelope.bucket_owner,
                tags=envelope.tags,
                behaviour=behaviour,
                submit_time=submitted,
                due_time=submitted + duration,
                last_modified_time=submitted,
            )
            self._jobs.put(record)
        self._runner.wake()
        return {"invocationArn": record.invocation_arn}

    def get_async_invoke(self, invocation_arn: str) -> dict[str, Any]:
        """The GetAsyncInvoke response for the job named by ``invocation_arn`` (URL-decoded)."""
        record = self._jobs.get(runtime_api.job_id_of(invocation_arn))
        if record is None or record.invocation_arn != invocation_arn:
            raise bedrock_validation(f"The async invocation {invocation_arn} does not exist.")
        return record.description()

    def list_async_invokes(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """One ListAsyncInvokes page: ``asyncInvokeSummaries`` and, if more remain, ``nextToken``.

        ``query`` holds the raw query-string values by parameter name.
        """
        listing = runtime_api.parse_list_query(query)
        after, before = listing.submitted_after_ms, listing.submitted_before_ms
        records = [
            record
            for record in self._jobs.all()
            if (listing.status is None or record.status == listing.status)
            and (after is None or _listing_key(record)[0] > after)
            and (before is None or _listing_key(record)[0] < before)
        ]
        records.sort(key=_listing_key, reverse=listing.descending)
        if listing.after_cursor is not None:
            cursor = listing.after_cursor
            records = [
                record
                for record in records
                if (
                    _listing_key(record) < cursor
                    if listing.descending
                    else _listing_key(record) > cursor
                )
            ]
        page = records[: listing.max_results]
        response: dict[str, Any] = {"asyncInvokeSummaries": [r.description() for r in page]}
        if len(records) > len(page):
            response["nextToken"] = runtime_api.encode_next_token(_listing_key(page[-1]))
        return response

    def run_due_jobs(self) -> int:
        """Finish the async jobs that are due on the clock now; returns how many.

        The background thread calls this too; tests with an injected clock call it to finish
        jobs deterministically.
        """
        return self._runner.run_due_jobs()

    def close(self) -> None:
        """Stop the background job runner (after the job it is finishing, if any)."""
        self._runner.close()

    def _finish(self, record: JobRecord) -> JobRecord:
        return finish_job(record, self._objects, self._clock)

    def _earlier_submission(self, token: str, fingerprint: str) -> JobRecord | None:
        """The job already submitted with ``token``; ConflictException if its body differed."""
        earlier = self._jobs.with_token(token)
        if earlier is not None and earlier.request_fingerprint != fingerprint:
            raise bedrock_error(
                "ConflictException",
                f"The clientRequestToken {token} was already used with a different request.",
            )
        return earlier

    def _new_job_id(self) -> str:
        while True:
            job_id = "".join(secrets.choice(_JOB_ID_ALPHABET) for _ in range(_JOB_ID_LENGTH))
            if self._jobs.get(job_id) is None:
                return job_id


def _fingerprint(body: Mapping[str, Any]) -> str:
    """A digest of a StartAsyncInvoke body without its token: equal bodies, equal digests."""
    rest = {name: value for name, value in body.items() if name != "clientRequestToken"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _listing_key(record: JobRecord) -> tuple[int, str]:
    """(submit time in epoch milliseconds, job ID): the listing order and page cursor."""
    return (round(record.submit_time * 1000), record.job_id)


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def _accepts_json(accept: str) -> bool:
    return any(
        _media_type(choice) in (_JSON, "application/*", "*/*") for choice in accept.split(",")
    )
