"""The batch job ledger: every batch inference job a run creates, recorded before it is created.

One small JSON file per job, ``runs/<run_id>/batch/job-<number>.json``, replaced atomically at
each change: ``recorded`` (its inputs are written, its ``clientRequestToken`` fixed) before
CreateModelInvocationJob is called, ``created`` with its ARN, then ``collected`` (its shards are
checkpointed) once the service ended it, whatever way it ended. A run restarted with the same id
reads the ledger back: a ``created`` job is polled, never created again, and a ``recorded`` one
is created again with its recorded token, which Bedrock answers with the job it already has.

``runs/<run_id>/batch/cut.json`` is written once every shard is in a job or left to InvokeModel
(too few for a job): its presence means no input is left to write.

Jobs are few (one per up to 50,000 records), so a file per job stays small at any corpus size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from tasks.store import CheckpointStore

BatchJobStatus = Literal["recorded", "created", "collected"]


@dataclass(frozen=True)
class BatchJob:
    """One batch inference job of a run, as far as it got.

    ``shards`` are the run's shards whose units it embeds (one input file per shard, or a few
    when one would be too large), ``records`` and ``input_bytes`` what its files hold. The
    service's last word is ``service_status`` (``Submitted`` … ``Completed``,
    ``PartiallyCompleted``, ``Failed``, ``Stopped``, ``Expired``) with its ``message``. Times are
    epoch seconds. ``status_calls`` counts GetModelInvocationJob answers, ``throttled_calls`` the
    status calls refused with throttling; ``embedded``/``quarantined`` count its units once it is
    collected.
    """

    number: int
    shards: tuple[int, ...]
    records: int
    input_bytes: int
    token: str
    name: str
    input_uri: str
    output_uri: str
    status: BatchJobStatus = "recorded"
    job_arn: str = ""
    service_status: str = ""
    message: str = ""
    created_at: float | None = None
    ended_at: float | None = None
    status_calls: int = 0
    throttled_calls: int = 0
    embedded: int = 0
    quarantined: int = 0

    def to_json(self) -> str:
        """The job's ledger file."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchJob:
        """The job ``to_json`` wrote."""
        document: dict[str, Any] = json.loads(text)
        known = {field.name for field in fields(cls)}
        values = {name: value for name, value in document.items() if name in known}
        values["shards"] = tuple(values["shards"])
        return cls(**values)


@dataclass(frozen=True)
class BatchCut:
    """How the run's shards were divided once every input was written: ``jobs`` jobs, and the
    ``on_demand`` shards (too few units for a job) that go through InvokeModel instead."""

    jobs: int
    on_demand: tuple[int, ...]


class BatchLedger:
    """The batch jobs of one run in the store."""

    def __init__(self, store: CheckpointStore, run_id: str) -> None:
        self._store = store
        self._dir = f"{store.run_dir(run_id)}/batch"

    def _job_path(self, number: int) -> str:
        return f"{self._dir}/job-{number:05d}.json"

    def jobs(self) -> list[BatchJob]:
        """Every job recorded so far, in number order."""
        paths = [p for p in self._store.list_files(self._dir, ".json") if "/job-" in p]
        return [BatchJob.from_json(self._store.read_text(path)) for path in paths]

    def record(self, job: BatchJob) -> BatchJob:
        """Durably write ``job`` (replacing what the ledger had of it); returns it."""
        self._store.write_text(self._job_path(job.number), job.to_json())
        return job

    def cut(self) -> BatchCut | None:
        """The run's cut, once every input is written (None before)."""
        path = f"{self._dir}/cut.json"
        if not self._store.exists(path):
            return None
        document = json.loads(self._store.read_text(path))
        return BatchCut(int(document["jobs"]), tuple(document["on_demand"]))

    def record_cut(self, cut: BatchCut) -> None:
        """Durably write the run's cut."""
        text = json.dumps({"jobs": cut.jobs, "on_demand": list(cut.on_demand)})
        self._store.write_text(f"{self._dir}/cut.json", text)
