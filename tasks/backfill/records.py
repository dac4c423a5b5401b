"""A backfill's record, ``backfills/<backfill_id>/backfill.json``: what it was asked to do (its
source, which rows, which dates, how big a partition is, its settings), written before any of
its work. A backfill started again with the same id continues what the record says; asked to
do something else under that id, it refuses rather than mix two backfills' partitions.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from tasks.corpus.resolve import manifest_directory
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore

BACKFILL_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,55}$"
"""Run ids' pattern, 7 characters shorter: a partition's run id adds ``-p00001``."""


class BackfillMismatchError(ValueError):
    """A backfill id already recorded with another source, selection or target."""


@dataclass(frozen=True)
class BackfillRecord:
    """What a backfill was asked to do.

    ``manifest`` or ``corpus`` is the source (local paths made absolute, so the backfill can be
    resumed from any directory); ``root`` is the corpus root its partitions' runs resolve paths
    against (the given one, else the manifest's directory or the crawled directory). Rows
    ``row_start`` (0-based, inclusive) to ``row_stop`` (exclusive; None: to the end) of the
    source are taken, in source order, counting every row the source yields (a malformed one
    too; blank lines are not rows). ``modified_after`` (inclusive) and ``modified_before``
    (exclusive) are ISO 8601 times in UTC, or None. ``settings_json`` holds the settings every
    partition runs with (their evaluation switched off: the backfill evaluates once, at its
    end); ``started_at`` is ISO 8601 UTC."""

    backfill_id: str
    manifest: str | None
    corpus: str | None
    root: str
    row_start: int
    row_stop: int | None
    modified_after: str | None
    modified_before: str | None
    partition_size: int
    settings_json: str
    started_at: str

    @property
    def settings(self) -> NovaflowSettings:
        """The settings the backfill was started with."""
        return NovaflowSettings.model_validate_json(self.settings_json)

    @property
    def modified_range(self) -> tuple[datetime | None, datetime | None]:
        """``(modified_after, modified_before)`` as aware datetimes."""
        return _moment(self.modified_after), _moment(self.modified_before)

    def to_json(self) -> str:
        """The record as ``backfill.json`` holds it."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BackfillRecord:
        """The record ``to_json`` wrote."""
        return cls(**json.loads(text))


def new_backfill_record(
    backfill_id: str,
    *,
    manifest: str | None,
    corpus: str | None,
    root: str | None,
    row_start: int,
    row_stop: int | None,
    modified_after: datetime | None,
    modified_before: datetime | None,
    partition_size: int,
    settings: NovaflowSettings,
) -> BackfillRecord:
    """A record of a backfill starting now; raises ``ValueError`` unless exactly one of
    ``manifest`` and ``corpus`` is given."""
    if (manifest is None) == (corpus is None):
        raise ValueError("give exactly one of a manifest or a corpus directory/prefix")
    manifest, corpus, root = _absolute(manifest), _absolute(corpus), _absolute(root)
    if root is None:
        root = manifest_directory(manifest) if manifest is not None else corpus
    assert root is not None
    return BackfillRecord(
        backfill_id=backfill_id,
        manifest=manifest,
        corpus=corpus,
        root=root,
        row_start=row_start,
        row_stop=row_stop,
        modified_after=_iso(modified_after),
        modified_before=_iso(modified_before),
        partition_size=partition_size,
        settings_json=settings.model_dump_json(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def read_backfill_record(store: CheckpointStore, backfill_id: str) -> BackfillRecord | None:
    """The record of ``backfill_id``, or None (no such backfill in this store)."""
    path = store.backfill_record_path(backfill_id)
    if not store.exists(path):
        return None
    return BackfillRecord.from_json(store.read_text(path))


def recorded_backfill(store: CheckpointStore, record: BackfillRecord) -> BackfillRecord:
    """The backfill's record: the one already in the store (a resumed backfill keeps its first
    record), else ``record``, written now.

    Raises :class:`BackfillMismatchError` naming what differs when the stored record has
    another source, selection, partition size, index or embedding settings: its partitions
    were cut and embedded for those. Throughput and evaluation settings may differ: a resumed
    backfill may go slower or be judged by other gates."""
    existing = read_backfill_record(store, record.backfill_id)
    if existing is None:
        store.write_text(store.backfill_record_path(record.backfill_id), record.to_json())
        return record
    differences = record_differences(existing, record)
    if differences:
        raise BackfillMismatchError(
            f"backfill {record.backfill_id} was started with other parameters "
            f"({'; '.join(differences)}); resume it with the same ones (or with no source at "
            "all, to take them from its record), or start another backfill id"
        )
    return existing


def record_differences(recorded: BackfillRecord, requested: BackfillRecord) -> list[str]:
    """What ``requested`` asks for that ``recorded`` does not, one ``name: old → new`` each."""
    fields = (
        "manifest", "corpus", "root", "row_start", "row_stop", "modified_after",
        "modified_before", "partition_size",
    )  # fmt: skip
    differences = [
        f"{name}: {getattr(recorded, name)!r} → {getattr(requested, name)!r}"
        for name in fields
        if getattr(recorded, name) != getattr(requested, name)
    ]
    old, new = recorded.settings, requested.settings
    if old.index != new.index:
        differences.append(f"index: {old.index.index!r} → {new.index.index!r}")
    if old.embedding.config_hash() != new.embedding.config_hash():
        differences.append(
            f"embedding settings: {old.embedding.config_hash()} → {new.embedding.config_hash()}"
        )
    return differences


def partition_run_id(backfill_id: str, partition: int) -> str:
    """The run id of a partition's run, e.g. ``<backfill_id>-p00003``: the same on every
    attempt, so a partition stopped half-way is resumed shard by shard."""
    return f"{backfill_id}-p{partition:05d}"


def partition_settings(settings: NovaflowSettings) -> NovaflowSettings:
    """The settings a partition runs with: the backfill's, without the per-run evaluation (the
    backfill evaluates the whole index once, at its end)."""
    evaluation = settings.evaluation.model_copy(update={"enabled": False})
    return settings.model_copy(update={"evaluation": evaluation})


def record_partition_run(
    store: CheckpointStore, backfill_id: str, partition: int, manifest_uri: str
) -> str:
    """Write the partition record of a partition's run before the run starts, so that its plan,
    whoever starts or resumes it, removes nothing outside the partition; returns the run id."""
    run_id = partition_run_id(backfill_id, partition)
    path = store.partition_record_path(run_id)
    if not store.exists(path):
        document = {"backfill_id": backfill_id, "partition": partition, "manifest": manifest_uri}
        store.write_text(path, json.dumps(document, indent=2))
    return run_id


def store_uri(store: CheckpointStore, path: str) -> str:
    """A store path as a URI any reader opens: the path itself locally, ``s3://…`` on S3."""
    return store.uri(path)


def _absolute(location: str | None) -> str | None:
    if location is None or "://" in location:
        return location
    return os.path.abspath(os.path.expanduser(location))


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return as_utc(moment).isoformat()


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
