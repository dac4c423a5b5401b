"""A batch job's results: each record through the stand-in's own InvokeModel, then the files.

For each input file the job writes ``<outputS3Uri>/<job-id>/<file name relative to the input
location>.out``, one line per record, and at the end ``<outputS3Uri>/<job-id>/manifest.json.out``
(https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html):

* a record that succeeded: ``{"recordId", "modelInput", "modelOutput"}``; ``modelOutput`` is the
  InvokeModel response body for ``modelInput`` (``{"embeddings": [...]}``), computed by the same
  code, so its vectors equal InvokeModel's;
* a record that failed: ``{"recordId", "modelInput", "error": {"errorCode", "errorMessage"}}``;
  ``errorCode`` is the HTTP status InvokeModel would have answered (400 for a ``modelInput``
  the model rejects), ``errorMessage`` its message;
* the manifest: ``totalRecordCount``, ``processedRecordCount``, ``successRecordCount``,
  ``errorRecordCount``, ``inputTokenCount``, ``outputTokenCount``.

Choices where AWS is silent (⚠):

* Lines keep the input order (AWS's pages disagree on whether order is guaranteed).
* A record the job did not reach (it timed out, or was stopped) still gets a line, with
  ``errorCode`` 408 and a message saying why; it counts in ``errorRecordCount`` but not in
  ``processedRecordCount``. So success + error = total, and processed = total − not reached.
* ``inputTokenCount`` counts the stand-in's tokens of each successful text record (at most the
  model's 8,192); image, audio and video records count none, and ``outputTokenCount`` is 0: an
  embedding has no output tokens.
* The ``.out`` files are written first and the manifest last, so a reader who finds the
  manifest finds every file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from emulator.bedrock.records import InputFile, InputRecord, JobInput
from emulator.bedrock.storage import BatchStorage
from emulator.errors import ServiceError
from emulator.nova import schema, vectors

MANIFEST_FILE_NAME = "manifest.json.out"
NOT_REACHED_CODE = 408

InvokeModel = Callable[[bytes], Mapping[str, Any]]


@dataclass(frozen=True)
class JobCounts:
    """A finished job's record and token counts, as the manifest and GetModelInvocationJob
    report them."""

    total: int = 0
    processed: int = 0
    success: int = 0
    error: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def manifest(self) -> dict[str, int]:
        """The ``manifest.json.out`` document."""
        return {
            "totalRecordCount": self.total,
            "processedRecordCount": self.processed,
            "successRecordCount": self.success,
            "errorRecordCount": self.error,
            "inputTokenCount": self.input_tokens,
            "outputTokenCount": self.output_tokens,
        }


def write_results(
    job_input: JobInput,
    not_reached: Collection[int],
    not_reached_message: str,
    invoke_model: InvokeModel,
    storage: BatchStorage,
    folder: str,
) -> JobCounts:
    """Run every reached record, write the ``.out`` files and the manifest under ``folder``.

    ``not_reached`` holds positions in the job's record order (across files) that the job never
    got to; they are written as errors with ``not_reached_message``. Raises ObjectNotFoundError
    when the output bucket has gone.
    """
    position = 0
    success = error = tokens = 0
    for each in job_input.files:
        lines = []
        for record in each.records:
            if position in not_reached:
                line = _error_line(record, NOT_REACHED_CODE, not_reached_message)
                error += 1
            else:
                line, record_tokens = _run(record, invoke_model, storage)
                if "error" in line:
                    error += 1
                else:
                    success += 1
                    tokens += record_tokens
            lines.append(json.dumps(line, ensure_ascii=False) + "\n")
            position += 1
        storage.write(
            _output_uri(folder, each), "".join(lines).encode("utf-8"), "application/jsonl"
        )
    counts = JobCounts(
        total=position,
        processed=position - len(not_reached),
        success=success,
        error=error,
        input_tokens=tokens,
    )
    manifest = json.dumps(counts.manifest(), indent=2).encode("utf-8")
    storage.write(f"{folder}/{MANIFEST_FILE_NAME}", manifest, "application/json")
    return counts


def _run(
    record: InputRecord, invoke_model: InvokeModel, storage: BatchStorage
) -> tuple[dict[str, Any], int]:
    """The output line of a record the job reached, and its input tokens if it succeeded."""
    try:
        output = invoke_model(record.model_input.encode("utf-8"))
    except ServiceError as err:
        return _error_line(record, err.status, err.message), 0
    model_input = json.loads(record.model_input)
    line = {"recordId": record.record_id, "modelInput": model_input, "modelOutput": output}
    return line, _input_tokens(model_input, storage)


def _error_line(record: InputRecord, code: int, message: str) -> dict[str, Any]:
    return {
        "recordId": record.record_id,
        "modelInput": json.loads(record.model_input),
        "error": {"errorCode": code, "errorMessage": message},
    }


def _input_tokens(model_input: Any, storage: BatchStorage) -> int:
    """The stand-in's token count of a successful text record; 0 for other modalities."""
    request = schema.parse_request(model_input, schema.SINGLE_EMBEDDING)
    content = request.content
    if not isinstance(content, schema.TextInput):
        return 0
    if content.value is not None:
        text = content.value
    elif content.source is not None:
        text = storage.read(content.source.uri).decode("utf-8", errors="replace")
    else:
        return 0
    return min(vectors.count_tokens(text), vectors.MAX_TOKENS)


def _output_uri(folder: str, each: InputFile) -> str:
    return f"{folder}/{each.relative_name}.out"
