"""Stage 3 against the stand-in: the run's checkpoints go to S3 Vectors as the same requests row
by row puts built; a run with nothing to put or delete on an index an earlier run loaded only
checks the index (a changed configuration, or an index deleted outside novaflow, is refused
then); a first run makes its index even when empty; turning searchable text on still rewrites
what the index holds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from emulator.app import Emulator
from tasks import schemas, vector_store
from tasks.index.stage import loaded_index
from tasks.records import metadata_json
from tasks.settings import EmbeddingSettings, IndexSettings, NovaflowSettings
from tasks.state.dataset import StateDataset
from tasks.state.layout import PartitionFiles, StateLayout
from tasks.store import CheckpointStore
from tests.unit.index.test_put_requests import _edge_vectors, _reference, _reference_put

DIMENSION = 256
RUN = "run-2"


@pytest.fixture
def environment(stand_in: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The AWS variables pointed at the stand-in, as a run sees them."""
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    return stand_in


def _settings(tmp_path: Path, searchable_text: bool = False) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        embedding=EmbeddingSettings(dimension=DIMENSION),
        index=IndexSettings(
            vector_bucket="load-tests",
            index=f"load-{uuid.uuid4().hex[:10]}",
            searchable_text=searchable_text,
        ),
    )


def _planned(settings: NovaflowSettings, keys_to_delete: list[str]) -> CheckpointStore:
    """The run's plan: one removed item, whose keys are ``keys_to_delete``."""
    store = CheckpointStore(settings.store)
    row = {
        "item_id": "gone", "uri": "/gone", "modality": "text", "change": "removed",
        "reason": "removed", "units_to_embed": 0, "async_units": 0,
        "keys_to_delete": keys_to_delete, "estimated_cost_usd": 0.0,
    }  # fmt: skip
    store.write_table(store.plan_path(RUN), pa.Table.from_pylist([row], schema=schemas.PLAN))
    return store


def _committed_before(
    settings: NovaflowSettings, searchable_text: bool = False, items: int = 0
) -> None:
    store = CheckpointStore(settings.store)
    state = StateDataset(store, settings.index.vector_bucket, settings.index.index)
    parts = (PartitionFiles(items=items),)
    state.write_layout(StateLayout(parts=parts, last_run="run-1", searchable_text=searchable_text))


def _calls(stand_in: Emulator) -> dict[str, int]:
    return dict(stand_in.stats()["s3vectors"]["calls"])


def test_an_unchanged_rerun_only_checks_the_index(environment: Emulator, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    vector_store.ensure_index(environment.client("s3vectors"), settings.index, DIMENSION)
    _planned(settings, [])
    _committed_before(settings, items=3)
    environment.reset_stats()

    outcome = loaded_index(settings, RUN)

    assert (outcome.vectors_written, outcome.put_batches, outcome.keys_deleted) == (0, 0, 0)
    assert _calls(environment) == {"GetVectorBucket": 1, "GetIndex": 1}


def test_an_unchanged_rerun_refuses_an_index_whose_metric_the_settings_changed(
    environment: Emulator, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    vector_store.ensure_index(environment.client("s3vectors"), settings.index, DIMENSION)
    _planned(settings, [])
    _committed_before(settings, items=3)
    changed = settings.model_copy(
        update={"index": settings.index.model_copy(update={"metric": "euclidean"})}
    )

    with pytest.raises(vector_store.IndexMismatchError, match="metric cosine"):
        loaded_index(changed, RUN)


@pytest.mark.parametrize("gone", ["index", "vector bucket"])
def test_an_index_deleted_outside_novaflow_is_refused_not_made_again_empty(
    environment: Emulator, tmp_path: Path, gone: str
) -> None:
    settings = _settings(tmp_path)
    settings = settings.model_copy(
        update={
            "index": settings.index.model_copy(
                update={"vector_bucket": f"lost-{uuid.uuid4().hex[:8]}"}
            )
        }
    )
    client = environment.client("s3vectors")
    vector_store.ensure_index(client, settings.index, DIMENSION)
    where = {"vectorBucketName": settings.index.vector_bucket, "indexName": settings.index.index}
    client.delete_index(**where)
    if gone == "vector bucket":
        client.delete_vector_bucket(vectorBucketName=settings.index.vector_bucket)
    _planned(settings, [])
    _committed_before(settings, items=3)

    with pytest.raises(vector_store.IndexMissingError) as missing:
        loaded_index(settings, RUN)

    assert str(missing.value).startswith(
        f"vector index {settings.index.vector_bucket}/{settings.index.index} does not exist, "
        "but novaflow's state lists 3 items in it"
    )
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_index(**where)


def test_a_first_run_makes_its_index_even_with_nothing_to_put(
    environment: Emulator, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    _planned(settings, [])

    outcome = loaded_index(settings, RUN)

    assert outcome.vectors_written == 0
    where = {"vectorBucketName": "load-tests", "indexName": settings.index.index}
    client = environment.client("s3vectors")
    assert client.get_index(**where)["index"]["dimension"] == DIMENSION
    assert client.list_vectors(**where)["vectors"] == []


def test_a_run_with_only_keys_to_delete_deletes_them(environment: Emulator, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    vector_store.ensure_index(environment.client("s3vectors"), settings.index, DIMENSION)
    _planned(settings, ["gone#chunk=0", "gone#chunk=1"])
    _committed_before(settings)
    environment.reset_stats()

    outcome = loaded_index(settings, RUN)

    assert outcome.keys_deleted == 2
    assert _calls(environment)["DeleteVectors"] == 1


def test_turning_searchable_text_on_still_configures_the_index(
    environment: Emulator, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, searchable_text=True)
    plain = settings.index.model_copy(update={"searchable_text": False})
    vector_store.ensure_index(environment.client("s3vectors"), plain, DIMENSION)
    _planned(settings, [])
    _committed_before(settings, searchable_text=False)
    environment.reset_stats()

    loaded_index(settings, RUN)

    assert _calls(environment)["UpdateMetadataConfiguration"] == 1
    client = environment.client("s3vectors")
    assert vector_store.text_search_status(client, settings.index) == "ACTIVE"


def _checkpointed(
    settings: NovaflowSettings, count: int, bad_metadata_at: int | None = None
) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """Checkpoint rows of the run with edge values, refused vectors, a repeated key and
    metadata to trim, in two part files; the rows as the reference puts them."""
    rng = np.random.default_rng(11)
    vectors = _edge_vectors(rng, count, DIMENSION)
    vectors[5, 3], vectors[6] = np.nan, 0.0
    rows: list[dict[str, Any]] = []
    for n in range(count):
        metadata = {"item_id": f"item-{n}", "modality": "text", "segment": 0, "n": n}
        if n % 9 == 1:
            metadata["summary"] = "ü" * 1_500
        text = metadata_json(metadata) if n != bad_metadata_at else "{not json"
        key = f"item-{n if n != 40 else 38}#chunk=0"
        rows.append({
            "key": key, "item_id": f"item-{n}", "embedding_type": "TEXT",
            "embedding": vectors[n].tolist(), "metadata_json": text, "config_hash": "c",
        })  # fmt: skip
    store = CheckpointStore(settings.store)
    schema = schemas.embeddings_schema(DIMENSION)
    for part, (start, end) in enumerate([(0, 700), (700, count)], start=1):
        table = pa.Table.from_pylist(rows[start:end], schema=schema)
        store.write_table(store.embeddings_path(RUN, part), table)
    return [
        (row["key"], np.asarray(row["embedding"], np.float32), json.loads(row["metadata_json"]))
        for row in rows[:bad_metadata_at]
    ]


def _recorded(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    sent: list[list[bytes]] = []
    monkeypatch.setattr(vector_store, "_put", lambda client, pacer, where, v: sent.append(v))
    return sent


def test_the_checkpoints_go_as_the_requests_row_by_row_puts_built(
    environment: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    _planned(settings, [])
    rows = _checkpointed(settings, 1_300)
    expected, reference = _reference(rows, settings.index)
    sent = _recorded(monkeypatch)

    outcome = loaded_index(settings, RUN)

    assert sent == expected
    assert (outcome.vectors_written, outcome.put_batches) == (
        reference.vectors_written,
        reference.batches,
    )
    assert outcome.metadata_warnings == reference.warnings
    assert reference.rejected
    assert reference.warnings


def test_an_unreadable_checkpoint_row_fails_after_the_requests_before_it(
    environment: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    _planned(settings, [])
    rows = _checkpointed(settings, 1_300, bad_metadata_at=1_100)

    def failing() -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
        yield from rows
        json.loads("{not json")

    expected: list[list[bytes]] = []
    with pytest.raises(json.JSONDecodeError):
        _reference_put(failing(), settings.index, expected)
    sent = _recorded(monkeypatch)

    with pytest.raises(json.JSONDecodeError):
        loaded_index(settings, RUN)

    assert len(expected) == 2
    assert sent == expected
