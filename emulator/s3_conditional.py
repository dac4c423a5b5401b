"""Conditional writes on moto's S3 made atomic, as S3 makes them.

moto (5.2.6) checks ``If-None-Match: *`` and ``If-Match: <ETag>`` on ``PutObject`` (412
``PreconditionFailed``; 404 ``NoSuchKey`` for ``If-Match`` on a missing key) and ``If-Match``
on ``DeleteObject``, but checks and writes in two steps on a threaded server, so two
concurrent conditional writers can both pass the check and both "win", and it never answers
409 ``ConditionalRequestConflict``. S3 evaluates the condition atomically with the write: of
concurrent conditional writers to one key at most one succeeds, the others get 412 or, when
their request overlapped another write to that key, 409 (the S3 User Guide's "conditional
writes" page; the ``IfMatch``/``IfNoneMatch`` documentation of ``PutObject``).

:func:`enforce_conditional_writes` wraps moto's per-key request handler so that every write
to a key (PUT, POST, DELETE on ``/bucket/key``) holds that key's lock while moto checks and
writes, and a conditional write that finds another write to its key in progress is answered
409 ``ConditionalRequestConflict`` at once. Unconditional writes wait their turn, as before.
Multi-object ``DeleteObjects`` is a bucket request and takes no key lock.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response

_WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})
_CONDITION_HEADERS = ("If-Match", "If-None-Match")
_CONFLICT_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>ConditionalRequestConflict</Code>"
    "<Message>A conflicting operation occurred. If using PutObject you can retry the request. "
    "If using multipart upload you should initiate another CreateMultipartUpload request and "
    "re-upload each part.</Message>"
    "<Key>{key}</Key><RequestId>{request_id}</RequestId></Error>"
)

_table_lock = threading.Lock()
_key_locks: dict[tuple[str, str], threading.Lock] = {}

Response = tuple[int, dict[str, Any], str | bytes]
KeyHandler = Callable[[S3Response, Any, str], Response]


def enforce_conditional_writes() -> None:
    """Make moto's S3 evaluate conditional writes atomically and answer 409 on a concurrent
    conflict, for every moto S3 server and mock in this process. Idempotent."""
    original: KeyHandler = S3Response._key_response
    if getattr(original, "_enforces_conditional_writes", False):
        return
    guarded = _guarded(original)
    guarded._enforces_conditional_writes = True  # type: ignore[attr-defined]
    S3Response._key_response = guarded  # type: ignore[method-assign]


def _guarded(handler: KeyHandler) -> KeyHandler:
    @functools.wraps(handler)
    def key_response(self: S3Response, request: Any, full_url: str) -> Response:
        if request.method not in _WRITE_METHODS:
            return handler(self, request, full_url)
        key = self.parse_key_name()
        lock = _lock_of(self.bucket_name, key)
        if any(name in request.headers for name in _CONDITION_HEADERS):
            if not lock.acquire(blocking=False):
                return _conflict(key)
        else:
            lock.acquire()
        try:
            return handler(self, request, full_url)
        finally:
            lock.release()

    return key_response


def _lock_of(bucket: str, key: str) -> threading.Lock:
    # One lock per key ever written: the stand-in's keys are few, and a lock striped over
    # several keys would answer 409 to writes that conflict with nothing.
    with _table_lock:
        return _key_locks.setdefault((bucket, key), threading.Lock())


def _conflict(key: str) -> Response:
    body = _CONFLICT_BODY.format(key=_xml_escaped(key), request_id=uuid.uuid4().hex.upper())
    return 409, {"content-type": "application/xml"}, body


def _xml_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
