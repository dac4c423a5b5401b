"""A batch job's output lines, read back: one result per record, matched by its recordId.

Each line of a ``.out`` file is ``{"recordId", "modelInput", "modelOutput"}`` for a record the
model embedded (``modelOutput`` is InvokeModel's answer) or ``{"recordId", "modelInput",
"error": {"errorCode", "errorMessage"}}`` for one it did not, ``errorCode`` being the HTTP status
InvokeModel would have answered (aws-apis.md, batch inference results). A record's error code
becomes the Bedrock error name InvokeModel's path would have quarantined it under, so a unit
refused in a batch job reads like one refused on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from tasks.batch.inputs import record_position
from tasks.nova.requests import ResponseFormatError, embeddings_in

# HTTP status → the bedrock-runtime error InvokeModel answers with that status.
_ERROR_NAMES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


@dataclass(frozen=True, eq=False)
class RecordResult:
    """One output line: the ``(shard, position)`` its recordId names, and either the unit's
    ``(embeddingType, vector)`` pairs or the ``code`` and ``message`` it failed with."""

    shard: int
    position: int
    vectors: tuple[tuple[str, np.ndarray], ...] = ()
    code: str = ""
    message: str = ""


class OutputLineError(ValueError):
    """A line that is not a result novaflow can match to a unit."""


def record_result(line: bytes, dimension: int) -> RecordResult:
    """The result one output line holds; ``OutputLineError`` when it cannot be matched."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise OutputLineError(f"not JSON ({err})") from None
    identifier = document.get("recordId") if isinstance(document, dict) else None
    where = record_position(identifier) if isinstance(identifier, str) else None
    if where is None:
        raise OutputLineError(f"no recordId novaflow wrote: {str(identifier)[:80]!r}")
    shard, position = where
    error = document.get("error")
    if isinstance(error, dict):
        status = error.get("errorCode")
        name = _ERROR_NAMES.get(status) if isinstance(status, int) else None
        message = str(error.get("errorMessage") or "the batch job gave no message")
        return RecordResult(shard, position, code=name or f"batch_error_{status}", message=message)
    try:
        vectors = embeddings_in(document.get("modelOutput"), dimension)
    except ResponseFormatError as err:
        return RecordResult(shard, position, code=err.code, message=f"batch output: {err}")
    return RecordResult(shard, position, vectors=tuple(vectors))
