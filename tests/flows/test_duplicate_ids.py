"""A manifest row that repeats an id is rejected as a row and changes nothing else: the item that
kept the id stays as it is in the state and the index, the run's item counts add up, and an
unchanged second run calls no model."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed
from tasks.report.summary import ItemOutcomes, RunSummary
from tasks.settings import EvaluationSettings, IndexSettings, NovaflowSettings, ThroughputSettings
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore
from tests.flows.stand_in_reads import index_keys

GOOD = ("alpha", "beta", "gamma", "delta")

ROWS = (
    {"uri": "alpha.txt", "id": "alpha"},
    {"uri": "beta.txt", "id": "beta"},
    {"uri": "other.txt", "id": "alpha"},  # duplicate of a good item
    {"uri": "binary.txt", "id": "binary"},  # an item, but broken: quarantined when planned
    {"uri": "gamma.txt", "id": "binary"},  # duplicate of that broken item
    {"uri": "missing.txt", "id": "ghost"},  # a broken row that claims its id …
    {"uri": "gamma.txt", "id": "ghost"},  # … so this one is a duplicate of a row, not an item
    {"uri": "", "id": "delta"},  # rejected before it claims its id …
    {"uri": "delta.txt", "id": "delta"},  # … so this row keeps it
    {"uri": "gamma.txt", "id": "gamma"},
)

REJECTED_ROWS = {
    ("alpha", "duplicate_id"),
    ("binary", "duplicate_id"),
    ("ghost", "not_found"),
    ("ghost", "duplicate_id"),
    ("delta", "malformed_row"),
}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for name in (*GOOD, "other"):
        (root / f"{name}.txt").write_text(f"The {name} notes on sourdough, rivers and bridges.")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def _settings(tmp_path: Path) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="flow-tests", index=f"dup-{uuid.uuid4().hex[:12]}"),
        throughput=ThroughputSettings(shard_size=2, concurrency=2, render_processes=1),
        evaluation=EvaluationSettings(enabled=False),
    )


def _state(settings: NovaflowSettings) -> dict[str, tuple[str, tuple[str, ...]]]:
    store = CheckpointStore(settings.store)
    state = StateDataset(store, settings.index.vector_bucket, settings.index.index)
    rows = [row for batch in state.batches() for row in batch.to_pylist()]
    return {row["item_id"]: (row["status"], tuple(row["keys"])) for row in rows}


def _run(manifest: Path, settings: NovaflowSettings) -> RunSummary:
    return reembed(ReembedParameters(manifest=str(manifest), settings=settings))


def test_a_duplicate_row_leaves_the_item_it_duplicates_alone(
    aws_environment: Emulator, manifest: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)

    first = _run(manifest, settings)

    good_keys = {f"{item_id}#chunk=0" for item_id in GOOD}
    state = _state(settings)
    assert state["alpha"] == ("complete", ("alpha#chunk=0",))
    assert state == {
        **{item_id: ("complete", (f"{item_id}#chunk=0",)) for item_id in GOOD},
        "binary": ("quarantined", ()),
    }
    store = CheckpointStore(settings.store)
    failures = store.read_table(store.failures_path(first.run_id)).to_pylist()
    rows = {(row["item_id"], row["code"]) for row in failures if row["stage"] == "manifest"}
    assert rows == REJECTED_ROWS
    items = {(row["item_id"], row["code"]) for row in failures if row["stage"] != "manifest"}
    assert items == {("binary", "text_binary")}
    assert index_keys(aws_environment.client("s3vectors"), settings) == good_keys
    assert first.item_outcomes == ItemOutcomes(
        planned=5, embedded=4, unchanged=0, quarantined=1, failed=0, rows_rejected=5
    )
    assert first.adds_up
    document = json.loads(store.read_text(store.summary_path(first.run_id)))
    assert document["item_outcomes"]["adds_up"] is True

    aws_environment.reset_stats()
    second = _run(manifest, settings)

    assert aws_environment.stats()["bedrock-runtime"]["calls"].get("InvokeModel", 0) == 0
    assert second.model_calls == second.vectors_written == second.keys_deleted == 0
    assert second.item_outcomes == ItemOutcomes(
        planned=5, embedded=0, unchanged=5, quarantined=0, failed=0, rows_rejected=5
    )
    assert second.adds_up
    assert _state(settings) == state
    assert index_keys(aws_environment.client("s3vectors"), settings) == good_keys
