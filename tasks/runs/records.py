"""Each run's record, ``runs/<run_id>/run.json``: what the run was asked to do (its corpus, its
settings) and when it started, written before any of its work. A run with a record and no
summary was stopped before its end, at whatever moment: ``novaflow run --resume`` finds it here
and starts it again with the same source and settings (re-planning if its plan was incomplete).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pyarrow.fs as pafs

from tasks.store import CheckpointStore


@dataclass(frozen=True)
class RunRecord:
    """What a run was asked to do: its source (a manifest or a corpus to crawl, bounded by
    ``root``), whether an empty corpus may empty the index, its settings (as JSON, so a resumed
    run embeds exactly as the killed one planned) and when it started (ISO 8601, UTC)."""

    run_id: str
    manifest: str | None
    corpus: str | None
    root: str | None
    allow_empty_corpus: bool
    settings_json: str
    started_at: str

    def to_json(self) -> str:
        """The record as ``run.json`` holds it."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        """The record ``to_json`` wrote."""
        return cls(**json.loads(text))


def new_run_record(
    run_id: str,
    manifest: str | None,
    corpus: str | None,
    root: str | None,
    allow_empty_corpus: bool,
    settings_json: str,
) -> RunRecord:
    """A record of a run starting now."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return RunRecord(run_id, manifest, corpus, root, allow_empty_corpus, settings_json, started)


def recorded_run(store: CheckpointStore, record: RunRecord) -> RunRecord:
    """The run's record: the one already in the store (a resumed run keeps its first record),
    else ``record``, written now."""
    existing = read_run_record(store, record.run_id)
    if existing is not None:
        return existing
    store.write_text(store.run_record_path(record.run_id), record.to_json())
    return record


def read_run_record(store: CheckpointStore, run_id: str) -> RunRecord | None:
    """The record of ``run_id``, or None (a run from before records, or no such run)."""
    path = store.run_record_path(run_id)
    if not store.exists(path):
        return None
    return RunRecord.from_json(store.read_text(path))


def unfinished_run(
    store: CheckpointStore, is_live: Callable[[str], bool] = lambda run_id: False
) -> str | None:
    """The id of the most recently started run that has no summary yet (it was stopped before
    its end) and that no live process is working on (``is_live``), or None.

    A run is known by its record, or (for runs from before records) by its plan's totals; a
    folder with neither was stopped before it recorded anything, so there is nothing to resume.
    """
    selector = pafs.FileSelector(store.runs_dir(), allow_not_found=True)
    candidates: list[tuple[int, str]] = []
    for info in store.filesystem.get_file_info(selector):
        if info.type != pafs.FileType.Directory:
            continue
        run_id = info.base_name
        if store.exists(store.summary_path(run_id)):
            continue
        for marker in (store.run_record_path(run_id), store.plan_totals_path(run_id)):
            found = store.filesystem.get_file_info(marker)
            if found.type == pafs.FileType.File:
                if not is_live(run_id):
                    candidates.append((found.mtime_ns or 0, run_id))
                break
    return max(candidates)[1] if candidates else None
