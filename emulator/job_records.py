"""The stand-in's job records, by job ID: in memory, and on disk when given a directory, so a
stand-in restarted on the same state directory still answers for its jobs. Shared by the async
invocations (``emulator.nova.jobs``) and the batch inference jobs (``emulator.bedrock.jobs``)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

_log = logging.getLogger(__name__)


class JobRecord(Protocol):
    """What the store needs of a record."""

    @property
    def job_id(self) -> str: ...

    @property
    def client_request_token(self) -> str | None: ...

    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=JobRecord)


class JobRecords(Generic[R]):
    """Records by job ID; ``from_json`` reads one back from its file. Thread-safe."""

    def __init__(
        self, directory: Path | None, from_json: Callable[[dict[str, Any]], R], kind: str
    ) -> None:
        self._directory = directory
        self._records: dict[str, R] = {}
        self._lock = threading.Lock()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for path in sorted(directory.glob("*.json")):
                try:
                    record = from_json(json.loads(path.read_text("utf-8")))
                except (OSError, ValueError, TypeError, KeyError) as err:
                    _log.warning("skipping unreadable %s job record %s: %s", kind, path, err)
                    continue
                self._records[record.job_id] = record

    def get(self, job_id: str) -> R | None:
        """The record of ``job_id``, if there is one."""
        with self._lock:
            return self._records.get(job_id)

    def with_token(self, token: str) -> R | None:
        """The job made with idempotency token ``token``, if any."""
        with self._lock:
            for record in self._records.values():
                if record.client_request_token == token:
                    return record
        return None

    def all(self) -> list[R]:
        """Every record, in no particular order."""
        with self._lock:
            return list(self._records.values())

    def put(self, record: R) -> None:
        """Add or replace ``record`` (and its file)."""
        with self._lock:
            self._records[record.job_id] = record
            if self._directory is not None:
                _write_atomically(self._directory / f"{record.job_id}.json", record.to_json())


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
