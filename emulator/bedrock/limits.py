"""Batch inference quotas: what a job's input must fit, checked while the job is ``Validating``.

The quotas and their meaning are listed on "Format and upload your batch inference data"
(https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html):

* Minimum number of records per batch inference job — across all JSONL files of the job.
* Records per input file per batch inference job — the most records in one JSONL file.
* Records per batch inference job — the most records across all JSONL files of the job.
* Batch inference input file size — the largest single input file.
* Batch inference job size — the largest cumulative size of all input files.

Their values are per model and adjustable, in the Amazon Bedrock service quotas table
(https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock). The defaults
below are the values that table gives for most models:

* 100 records minimum per job (the quota's default, also quoted in AWS's batch examples);
* 1 GB per input file and 5 GB per job (the same table).

⚠ Not read for Nova Multimodal Embeddings itself (the table was not retrieved whole): the
record maxima, 50,000 per file and 50,000 per job, are the defaults the table lists for most
models (Titan Text Embeddings V2 is known to allow 100,000 per job). Sizes are decimal
(1 GB = 10^9 bytes), as Bedrock's other size limits are.

``timeoutDurationInHours`` may be 24 to 168 (the service model's min and max). ⚠ The default
when a request omits it is not documented; the stand-in takes 24 hours, the completion window
AWS's batch pages describe.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from emulator.misbehaviour import JsonFields

GB = 1_000_000_000
MIN_TIMEOUT_HOURS, MAX_TIMEOUT_HOURS, DEFAULT_TIMEOUT_HOURS = 24, 168, 24


@dataclass(frozen=True)
class BatchLimits(JsonFields):
    """The batch quotas in force (see the module docstring for each one's source)."""

    _KIND: ClassVar[str] = "batch limits"

    min_records_per_job: int = 100
    max_records_per_file: int = 50_000
    max_records_per_job: int = 50_000
    max_file_bytes: int = 1 * GB
    max_job_bytes: int = 5 * GB

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"{field.name} must be positive")
