"""Synchronous Nova embedding of a stream of units: bounded, paced, nothing lost.

``Embedder.embed`` turns ``(unit_key, item_id, make_payload)`` work items into one
``EmbeddedUnit`` or one ``Failure`` each. The model takes one input per call, so throughput is
concurrency ÷ latency until the account quota throttles; the embedder keeps ``concurrency`` calls
going, paces every HTTP attempt (botocore's retries included) through a shared ``Pacer`` and
treats throttling as back-pressure: two throttling answers within a second, or one on a retry,
halve the pacer's rate (a lone one is timing noise at the quota's edge, and botocore retries it).

- ``ValidationException`` and the other input errors (``ModelErrorException``,
  ``ResourceNotFoundException``, any other 4xx) are the input's fault: quarantined at once with
  the service's own message, never retried.
- Throttling, 5xx and connection errors are first retried by botocore (standard mode); when one
  survives those retries the pacer slows down and the unit is re-queued, up to
  ``max_throttle_retries`` times, then quarantined as ``throttled`` or ``service_error``.
- Credential and permission errors are nobody's input: they are raised, stopping the stream.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from botocore.client import BaseClient
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from tasks.nova.requests import Payload, ResponseFormatError, invoke_model_body, parsed_embeddings
from tasks.pacing import RequestPacer
from tasks.records import Failure, Stage
from tasks.service_errors import (
    ACCOUNT_CODES,
    THROTTLING_CODES,
    TRANSIENT_CODES,
    error_code,
    error_message,
    http_status,
)
from tasks.settings import EmbeddingSettings, ThroughputSettings

logger = logging.getLogger(__name__)

WorkItem = tuple[str, str, Callable[[], Payload]]

IN_FLIGHT_PER_WORKER = 2
THROTTLE_WINDOW_SECONDS = 1.0


@dataclass(frozen=True, eq=False)
class EmbeddedUnit:
    """A unit's vectors: ``(embeddingType, read-only float32 vector)`` pairs, one per vector the
    model returned — one, or two (``VIDEO`` and ``AUDIO``) for ``AUDIO_VIDEO_SEPARATE``."""

    key: str
    vectors: tuple[tuple[str, np.ndarray], ...]


@dataclass(frozen=True)
class EmbedCounters:
    """What an embedder has done so far. ``model_calls`` counts HTTP attempts (botocore's
    retries included); ``retries`` those beyond each unit's first (botocore's retries and the
    embedder's re-queues); ``throttles`` the throttling answers among them."""

    model_calls: int
    retries: int
    throttles: int


@dataclass(frozen=True)
class _Job:
    """A unit in the embedder's hands; ``body`` is set once prepared, so re-queues reuse it."""

    key: str
    item_id: str
    make_payload: Callable[[], Payload]
    body: bytes | None = field(default=None, repr=False)
    uri: str = ""
    requeues: int = 0
    attempts: int = 0


class _CallState(threading.local):
    """Per thread: whether this embedder's call is running, and its HTTP attempts so far."""

    def __init__(self) -> None:
        self.active = False
        self.attempts = 0


class Embedder:
    """Embeds units with ``client`` (a bedrock-runtime client, best built by
    ``tasks.aws_clients.bedrock_runtime_client(throughput.concurrency)``) at most
    ``throughput.concurrency`` calls at a time, each paced by ``pacer`` (a ``Pacer`` shareable
    between embedders of one process, or a ``SharedPacer`` for a budget shared between runs).
    Pacing and counting hook into botocore's events on ``client`` while ``embed`` runs, so
    attempts made by botocore's own retries are paced and counted too.
    """

    def __init__(
        self,
        client: BaseClient,
        settings: EmbeddingSettings,
        throughput: ThroughputSettings,
        pacer: RequestPacer,
    ) -> None:
        if client.meta.service_model.service_name != "bedrock-runtime":
            raise ValueError("Embedder needs a bedrock-runtime client")
        self._client = client
        self._settings = settings
        self._throughput = throughput
        self._pacer = pacer
        self._lock = threading.Lock()
        self._model_calls = 0
        self._units_called = 0
        self._throttles = 0
        self._last_throttle = -math.inf
        self._call = _CallState()
        self._running_embeds = 0

    @property
    def counters(self) -> EmbedCounters:
        """The counts so far (see ``EmbedCounters``)."""
        with self._lock:
            return EmbedCounters(
                model_calls=self._model_calls,
                retries=self._model_calls - self._units_called,
                throttles=self._throttles,
            )

    def embed(self, work: Iterable[WorkItem]) -> Iterator[EmbeddedUnit | Failure]:
        """One ``EmbeddedUnit`` or ``Failure`` per work item, in completion order.

        ``work`` is read lazily: at most 2 × concurrency units are held at once. A payload that
        cannot be prepared is quarantined at stage ``prepare``: a ``ValueError`` (``PayloadError``
        or a preparation error) with its ``code``, else ``invalid_input``; an ``OSError`` as
        ``unreadable_source``. Call failures are quarantined at stage ``embed``, with ``attempts``
        the HTTP attempts spent on the unit. A Failure's ``uri`` is the payload's ``s3_uri`` or
        empty: the caller knows the unit's source and may fill it in. Raises ``ClientError`` for
        credential and permission errors, and whatever else ``make_payload`` raises (a bug, not
        bad input); the units not yet yielded are then the caller's to redo (retry the shard).
        """
        max_in_flight = IN_FLIGHT_PER_WORKER * self._throughput.concurrency
        source = iter(work)
        requeued: deque[_Job] = deque()
        pending: set[Future[EmbeddedUnit | Failure | _Job]] = set()
        # Each future puts itself here when done: taking the next finished one costs the same
        # however many are in flight (``concurrent.futures.wait`` visits all of them each time).
        finished: queue.SimpleQueue[Future[EmbeddedUnit | Failure | _Job]] = queue.SimpleQueue()
        exhausted = False
        self._hook_into_client(+1)
        try:
            with ThreadPoolExecutor(
                self._throughput.concurrency, thread_name_prefix="nova-embed"
            ) as pool:
                try:
                    while True:
                        while len(pending) < max_in_flight and (requeued or not exhausted):
                            if requeued:
                                job = requeued.popleft()
                            else:
                                item = next(source, None)
                                if item is None:
                                    exhausted = True
                                    break
                                job = _Job(key=item[0], item_id=item[1], make_payload=item[2])
                            future = pool.submit(self._run, job)
                            pending.add(future)
                            future.add_done_callback(finished.put)
                        if not pending:
                            return
                        future = finished.get()
                        pending.discard(future)
                        outcome = future.result()
                        if isinstance(outcome, _Job):
                            requeued.append(outcome)
                        else:
                            yield outcome
                finally:
                    for future in pending:
                        future.cancel()
        finally:
            self._hook_into_client(-1)

    # -- one unit --------------------------------------------------------------------------

    def _run(self, job: _Job) -> EmbeddedUnit | Failure | _Job:
        """Prepare (first time only) and call; a ``_Job`` back means: re-queue it."""
        if job.body is None:
            try:
                payload = job.make_payload()
                document = invoke_model_body(payload, self._settings)
            except ValueError as err:
                return self._quarantine(job, "prepare", _error_code(err, "invalid_input"), str(err))
            except OSError as err:
                return self._quarantine(job, "prepare", "unreadable_source", str(err))
            job = replace(job, body=json.dumps(document).encode("utf-8"), uri=payload.s3_uri or "")
        self._call.active, self._call.attempts = True, 0
        answer, error = b"", None
        try:
            response = self._client.invoke_model(
                modelId=self._settings.model_id,
                body=job.body,
                contentType="application/json",
                accept="application/json",
            )
            answer = response["body"].read()
        except (ClientError, BotocoreConnectionError, HTTPClientError) as err:
            error = err
        finally:
            self._call.active = False
        job = replace(job, attempts=job.attempts + self._call.attempts)
        if job.requeues == 0:
            with self._lock:
                self._units_called += 1
        if isinstance(error, ClientError):
            return self._after_error(job, error)
        if error is not None:
            return self._after_transient(job, type(error).__name__, str(error))
        self._pacer.record_success()
        try:
            vectors = parsed_embeddings(answer, self._settings.dimension)
        except ResponseFormatError as err:
            return self._quarantine(job, "embed", err.code, str(err))
        return EmbeddedUnit(job.key, tuple(vectors))

    def _after_error(self, job: _Job, err: ClientError) -> Failure | _Job:
        code = error_code(err) or "UnknownError"
        message, status = error_message(err), http_status(err)
        if code in ACCOUNT_CODES:
            raise err
        if code in TRANSIENT_CODES or status >= 500:
            return self._after_transient(job, code, message)
        return self._quarantine(job, "embed", code, message)

    def _after_transient(self, job: _Job, code: str, message: str) -> Failure | _Job:
        self._pacer.slow_down()
        if job.requeues < self._throughput.max_throttle_retries:
            logger.debug("re-queueing %s after %s", job.key, code)
            return replace(job, requeues=job.requeues + 1)
        failure_code = "throttled" if code in THROTTLING_CODES else "service_error"
        return self._quarantine(
            job,
            "embed",
            failure_code,
            f"{code} after {job.attempts} attempts ({job.requeues} re-queues): {message}",
        )

    def _quarantine(self, job: _Job, stage: Stage, code: str, message: str) -> Failure:
        logger.warning("quarantined unit %s at %s: %s", job.key, stage, code)
        return Failure(
            item_id=job.item_id,
            uri=job.uri,
            stage=stage,
            code=code,
            message=message,
            unit_key=job.key,
            attempts=max(1, job.attempts),
        )

    # -- pacing and counting through botocore's hooks ----------------------------------------

    def _hook_into_client(self, change: int) -> None:
        """Hook in while any ``embed`` runs, and out after, so a long-lived client shared by
        many embedders does not collect their handlers."""
        events = self._client.meta.events
        hooks = (
            # Every HTTP attempt, botocore's retries included, is paced just before it is sent
            # (an unpaced retry storm is what keeps a throttled client throttled), counted after.
            ("before-send.bedrock-runtime.InvokeModel", self._before_send),
            ("needs-retry.bedrock-runtime.InvokeModel", self._on_attempt),
        )
        with self._lock:
            self._running_embeds += change
            first, last = change > 0 and self._running_embeds == 1, self._running_embeds == 0
            for event, handler in hooks:
                unique_id = f"novaflow-embedder-{id(self)}-{event}"
                if first:
                    events.register(event, handler, unique_id=unique_id)
                elif last:
                    events.unregister(event, handler, unique_id=unique_id)

    def _before_send(self, **_: Any) -> None:
        """botocore's ``before-send`` hook: must return None, or botocore would take the value
        as the HTTP response."""
        if self._call.active:
            self._pacer.acquire()
        return None

    def _on_attempt(self, response: Any = None, attempts: int = 1, **_: Any) -> None:
        """botocore's ``needs-retry`` hook: must return None, or botocore would take the
        value as a retry delay."""
        if not self._call.active:
            return None
        self._call.attempts += 1
        code = None
        if isinstance(response, tuple) and len(response) == 2 and isinstance(response[1], dict):
            code = response[1].get("Error", {}).get("Code")
        with self._lock:
            self._model_calls += 1
            if code in THROTTLING_CODES:
                self._throttles += 1
        if code in THROTTLING_CODES:
            now = time.monotonic()
            with self._lock:
                previous, self._last_throttle = self._last_throttle, now
            # A lone throttle is timing noise at the edge of the quota, and botocore retries it;
            # a second within the window means the pace is too high.
            if attempts > 1 or now - previous < THROTTLE_WINDOW_SECONDS:
                self._pacer.slow_down()
        return None


def _error_code(err: Exception, default: str) -> str:
    code = getattr(err, "code", None)
    return code if isinstance(code, str) and code else default
