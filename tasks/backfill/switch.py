"""The explicit switch to a backfilled index: ``<store>/active-index.json`` names the index
(and the embedding settings its vectors were made with) that searches and runs should use.

It is written only when asked for (``novaflow backfill … --switch``), and only when the
backfill completed every partition and its evaluation passed its gates; until then the old
index is untouched and stays the live one. The previous pointer is kept inside the new one,
so switching back is writing it again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.backfill.outcomes import EvaluationOutcome
from tasks.settings import EmbeddingSettings, NovaflowSettings
from tasks.store import CheckpointStore


@dataclass(frozen=True)
class ActiveIndex:
    """The live index: where it is, the embedding settings of its vectors (as JSON, for query
    embedding; ``config_hash`` to compare), the backfill that built it and its evaluation
    report, when it became live, and the pointer it replaced (None: there was none)."""

    vector_bucket: str
    index: str
    dimension: int
    embedding_json: str
    config_hash: str
    backfill_id: str
    report: str
    switched_at: str
    previous: dict[str, Any] | None = None

    def names(self, settings: NovaflowSettings) -> bool:
        """Whether this pointer names the index and embedding settings of ``settings``."""
        return (self.vector_bucket, self.index, self.config_hash) == (
            settings.index.vector_bucket,
            settings.index.index,
            settings.embedding.config_hash(),
        )

    def to_json(self) -> str:
        """The pointer as ``active-index.json`` holds it."""
        return json.dumps(asdict(self), indent=2)


def read_active_index(store: CheckpointStore) -> ActiveIndex | None:
    """The live index the store names, or None (no switch was ever made)."""
    path = store.active_index_path()
    if not store.exists(path):
        return None
    return ActiveIndex(**json.loads(store.read_text(path)))


def switch_refusal(
    partitions_done: bool, evaluation: EvaluationOutcome | None, evaluation_enabled: bool
) -> str | None:
    """Why the switch may not be made now, or None when it may: every partition completed and
    the evaluation of the new index passed its gates."""
    if not partitions_done:
        return "the backfill has unfinished or failed partitions"
    if not evaluation_enabled:
        return "the switch needs an evaluation of the new index, and evaluation is off"
    if evaluation is None or evaluation.status != "passed":
        why = evaluation.message if evaluation is not None and evaluation.message else "not run"
        return f"its evaluation did not pass ({why})"
    return None


def switched_index(
    store: CheckpointStore, settings: NovaflowSettings, backfill_id: str, report: str
) -> tuple[ActiveIndex, bool]:
    """Make the index of ``settings`` the live one; returns the pointer and whether it changed
    (False: it already named this index with these embedding settings)."""
    previous = read_active_index(store)
    if previous is not None and previous.names(settings):
        return previous, False
    pointer = ActiveIndex(
        vector_bucket=settings.index.vector_bucket,
        index=settings.index.index,
        dimension=settings.embedding.dimension,
        embedding_json=settings.embedding.model_dump_json(),
        config_hash=settings.embedding.config_hash(),
        backfill_id=backfill_id,
        report=report,
        switched_at=datetime.now(UTC).isoformat(timespec="seconds"),
        previous=None if previous is None else {**asdict(previous), "previous": None},
    )
    store.write_text(store.active_index_path(), pointer.to_json())
    return pointer, True


def following_switch(settings: NovaflowSettings, pointer: ActiveIndex | None) -> NovaflowSettings:
    """``settings`` aimed at the live index ``pointer`` names (its bucket, name and embedding
    settings, so queries are embedded as its vectors were); unchanged when there is none. For
    the commands and deployments that should follow a switch when no index was named."""
    if pointer is None:
        return settings
    index = settings.index.model_copy(
        update={"vector_bucket": pointer.vector_bucket, "index": pointer.index}
    )
    embedding = EmbeddingSettings.model_validate_json(pointer.embedding_json)
    return settings.model_copy(update={"index": index, "embedding": embedding})
