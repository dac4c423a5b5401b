"""A batch job's input: finding its JSONL files in S3 and checking them, as ``Validating`` does.

The input location (``inputDataConfig.s3InputDataConfig.s3Uri``) names one ``.jsonl`` file or a
folder; in a folder every object whose key ends in ``.jsonl`` is an input file, in key order,
and other objects (media the records point at) are left alone. Each line is a JSON object with a
``modelInput`` object and, optionally, a ``recordId``
(https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html). Validation
checks the files' shape and the quotas in :mod:`emulator.bedrock.limits`, not whether a
``modelInput`` suits the model: that is found per record while the job runs, as the service
model's description of ``Validating`` says.

Choices where AWS is silent (⚠):

* Blank lines are skipped; a UTF-8 byte-order mark at the start of a file is allowed.
* A ``recordId``, when present, must be a non-empty string; two records with the same
  ``recordId`` anywhere in the job fail it (the output could not be matched to the input).
* A record without ``recordId`` gets an 11-character upper-case alphanumeric one, the form AWS's
  examples show, derived from the job ID, the file and the line so that it is stable.
* Other members of a line are ignored.
* The first problem found fails the job; its message names the file and the line.
* The output bucket must exist: a job that could not write its results fails while validating.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from emulator.bedrock.limits import BatchLimits
from emulator.bedrock.storage import BatchStorage, StoredObject, split_location

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_GENERATED_ID_LENGTH = 11


class InvalidInputError(Exception):
    """The job's input broke a rule; ``message`` is what the failed job reports."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class InputRecord:
    """One line of an input file: its record ID (given or generated) and its ``modelInput``.

    ``model_input`` is the JSON text of the line's ``modelInput`` object, which is also the
    InvokeModel body the record stands for.
    """

    record_id: str
    model_input: str
    line_number: int


@dataclass(frozen=True)
class InputFile:
    """An input JSONL file: its URI, its name relative to the input location, its records."""

    uri: str
    relative_name: str
    records: tuple[InputRecord, ...]


@dataclass(frozen=True)
class JobInput:
    """Every input file of a job, in the order they are processed."""

    files: tuple[InputFile, ...]

    @property
    def record_count(self) -> int:
        """The number of records across all files."""
        return sum(len(each.records) for each in self.files)


def load_input(
    storage: BatchStorage, input_uri: str, output_uri: str, limits: BatchLimits, job_id: str
) -> JobInput:
    """Find, read and check a job's input; InvalidInputError names the first rule broken."""
    objects, base = _input_objects(storage, input_uri)
    output_bucket, _ = split_location(output_uri)
    if not storage.bucket_exists(output_bucket):
        raise InvalidInputError(
            f"Unable to access the output location {output_uri}: the bucket {output_bucket} "
            "does not exist or is not accessible."
        )
    total_bytes = 0
    for stored in objects:
        if stored.size > limits.max_file_bytes:
            raise InvalidInputError(
                f"The input file {stored.uri} is {stored.size} bytes, over the "
                f"{limits.max_file_bytes}-byte limit for a batch inference input file."
            )
        total_bytes += stored.size
    if total_bytes > limits.max_job_bytes:
        raise InvalidInputError(
            f"The input files total {total_bytes} bytes, over the {limits.max_job_bytes}-byte "
            "limit for a batch inference job."
        )
    seen: dict[str, str] = {}
    files = []
    for stored in objects:
        relative = split_location(stored.uri)[1][len(base) :]
        records = _file_records(storage.read(stored.uri), stored.uri, relative, limits, job_id)
        for record in records:
            where = f"line {record.line_number} of {stored.uri}"
            if record.record_id in seen:
                raise InvalidInputError(
                    f"Duplicate recordId '{record.record_id}' at {where}: it is already used at "
                    f"{seen[record.record_id]}. Each record in a job needs its own recordId."
                )
            seen[record.record_id] = where
        files.append(InputFile(stored.uri, relative, records))
    job_input = JobInput(tuple(files))
    count = job_input.record_count
    if count < limits.min_records_per_job:
        raise InvalidInputError(
            f"The job's input has {count} records; a batch inference job needs at least "
            f"{limits.min_records_per_job}."
        )
    if count > limits.max_records_per_job:
        raise InvalidInputError(
            f"The job's input has {count} records, over the {limits.max_records_per_job} "
            "records allowed in a batch inference job."
        )
    return job_input


def _input_objects(storage: BatchStorage, input_uri: str) -> tuple[list[StoredObject], str]:
    """The input files and the key prefix their output names are relative to."""
    bucket, key = split_location(input_uri)
    if not storage.bucket_exists(bucket):
        raise InvalidInputError(
            f"Unable to access the input location {input_uri}: the bucket {bucket} does not "
            "exist or is not accessible."
        )
    single = None if key.endswith("/") else storage.find(bucket, key)
    if single is not None:
        if not key.endswith(".jsonl"):
            raise InvalidInputError(f"The input file {input_uri} must have the extension .jsonl.")
        return [single], key.rpartition("/")[0] + "/" if "/" in key else ""
    prefix = key if not key or key.endswith("/") else f"{key}/"
    found = [
        stored for stored in storage.list_prefix(bucket, prefix) if stored.uri.endswith(".jsonl")
    ]
    if not found:
        raise InvalidInputError(f"No .jsonl input files were found at {input_uri}.")
    return found, prefix


def _file_records(
    data: bytes, uri: str, relative: str, limits: BatchLimits, job_id: str
) -> tuple[InputRecord, ...]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidInputError(f"The input file {uri} is not UTF-8 text: {err}.") from None
    records: list[InputRecord] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(records) == limits.max_records_per_file:
            raise InvalidInputError(
                f"The input file {uri} has more than {limits.max_records_per_file} records, the "
                "most allowed in one batch inference input file."
            )
        records.append(_record(line, number, uri, relative, job_id))
    return tuple(records)


def _record(line: str, number: int, uri: str, relative: str, job_id: str) -> InputRecord:
    """One checked line; InvalidInputError says what is wrong with it."""
    try:
        document = json.loads(line, parse_constant=_reject_constant)
    except ValueError:
        document = None
    problem = _line_problem(document)
    if problem is not None:
        raise InvalidInputError(
            f"Line {number} of {uri} is not a valid batch inference record: {problem}. Each "
            'line must be a JSON object such as {"recordId": "…", "modelInput": {…}}.'
        )
    model_input = json.dumps(document["modelInput"], separators=(",", ":"), ensure_ascii=False)
    record_id = document.get("recordId")
    if record_id is None:
        record_id = _generated_record_id(job_id, relative, number)
    return InputRecord(record_id, model_input, number)


def _line_problem(document: Any) -> str | None:
    if not isinstance(document, dict):
        return "it is not a JSON object"
    if "modelInput" not in document:
        return "modelInput is missing"
    if not isinstance(document["modelInput"], dict):
        return "modelInput is not a JSON object"
    record_id = document.get("recordId")
    if record_id is not None and (not isinstance(record_id, str) or not record_id):
        return "recordId is not a non-empty string"
    return None


def _generated_record_id(job_id: str, relative: str, line_number: int) -> str:
    digest = int.from_bytes(hashlib.sha256(f"{job_id}/{relative}/{line_number}".encode()).digest())
    characters = []
    for _ in range(_GENERATED_ID_LENGTH):
        digest, index = divmod(digest, len(_ID_ALPHABET))
        characters.append(_ID_ALPHABET[index])
    return "".join(characters)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
