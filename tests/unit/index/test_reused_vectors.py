"""A run's reused units take their sources' vectors under their own keys and metadata, copied
in Arrow a chunk of units at a time; a unit whose source is gone is a failure the next run
retries. However the units are chunked, the same rows come out."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import schemas
from tasks.index import reused_vectors
from tasks.index.reused_vectors import SOURCE_MISSING, recorded_digests, written_reused_vectors
from tasks.store import CheckpointStore

DIMENSION = 4
CONFIG = "cfg-1"
RUN = "run-2"
EARLIER = "run-1"


def _unit(key: str, kind: str = "text_chunk") -> dict[str, object]:
    item_id = key.split("#", 1)[0]
    return {
        "key": key, "item_id": item_id, "uri": f"/corpus/{item_id}", "kind": kind,
        "route": "sync", "page": None, "char_start": 0 if kind == "text_chunk" else None,
        "char_end": 10 if kind == "text_chunk" else None,
        "start_seconds": 0.0 if kind == "video" else None,
        "end_seconds": 30.0 if kind == "video" else None,
        "metadata_json": json.dumps({"owner": item_id}), "fingerprint": "sha256:0",
        "encoding": None, "digest": f"d-{key}", "cost_usd": 0.001,
    }  # fmt: skip


def _vector_row(key: str, embedding_type: str, value: float, config: str = CONFIG) -> dict:
    return {
        "key": key, "item_id": key.split("#", 1)[0], "embedding_type": embedding_type,
        "embedding": [value] * DIMENSION, "metadata_json": "{}", "config_hash": config,
    }  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    store = CheckpointStore(str(tmp_path / "store"))
    embeddings = schemas.embeddings_schema(DIMENSION)
    earlier = [
        _vector_row("a#chunk=0", "TEXT", 1.0),
        _vector_row("v#t=0#audio", "AUDIO", 2.0),
        _vector_row("v#t=0#video", "VIDEO", 3.0),
        _vector_row("old#chunk=0", "TEXT", 4.0, config="cfg-0"),  # another config's vector
    ]
    store.write_table(
        store.embeddings_path(EARLIER, 1), pa.Table.from_pylist(earlier, schema=embeddings)
    )
    own = [_vector_row("x#chunk=0", "TEXT", 5.0)]
    store.write_table(store.embeddings_path(RUN, 1), pa.Table.from_pylist(own, schema=embeddings))
    units = [
        _unit("b#chunk=0"),
        _unit("x#chunk=0"),  # embedded by the run itself
        _unit("w#t=0", "video"),
        _unit("gone#chunk=0"),
        _unit("c#chunk=0"),
        _unit("old2#chunk=0"),
        _unit("d#chunk=0"),
    ]
    store.write_table(
        store.sync_units_path(RUN), pa.Table.from_pylist(units, schema=schemas.SYNC_UNITS)
    )
    reused = [
        ("b#chunk=0", EARLIER, "a#chunk=0"),
        ("w#t=0", EARLIER, "v#t=0"),
        ("gone#chunk=0", EARLIER, "missing#chunk=0"),
        ("c#chunk=0", EARLIER, "a#chunk=0"),
        ("old2#chunk=0", EARLIER, "old#chunk=0"),
        ("d#chunk=0", RUN, "x#chunk=0"),  # a copy within the run
    ]
    table = pa.table(
        {name: [row[n] for row in reused] for n, name in enumerate(schemas.REUSED_UNITS.names)},
        schema=schemas.REUSED_UNITS,
    )
    store.write_table(store.reused_units_path(RUN), table)
    return store


@pytest.mark.parametrize("chunk", [1_000, 2, 1], ids=["one chunk", "chunks of 2", "one by one"])
def test_reused_units_take_their_sources_vectors_under_their_own_keys(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(reused_vectors, "REUSE_CHUNK", chunk)

    taken = written_reused_vectors(store, RUN, DIMENSION, CONFIG)

    assert taken == 4
    rows = pq.read_table(store.reused_embeddings_path(RUN)).to_pylist()
    copied = sorted((r["key"], r["item_id"], r["embedding_type"], r["embedding"][0]) for r in rows)
    assert copied == [
        ("b#chunk=0", "b", "TEXT", 1.0),
        ("c#chunk=0", "c", "TEXT", 1.0),
        ("d#chunk=0", "d", "TEXT", 5.0),
        ("w#t=0#audio", "w", "AUDIO", 2.0),
        ("w#t=0#video", "w", "VIDEO", 3.0),
    ]  # fmt: skip
    metadata = {r["key"]: json.loads(r["metadata_json"]) for r in rows}
    assert metadata["w#t=0#video"] == {
        "owner": "w", "item_id": "w", "source_uri": "/corpus/w", "modality": "video",
        "embedding_type": "VIDEO", "start_seconds": 0.0, "end_seconds": 30.0,
    }  # fmt: skip
    assert {r["config_hash"] for r in rows} == {CONFIG}
    failures = pq.read_table(store.reused_failures_path(RUN)).to_pylist()
    assert sorted((f["unit_key"], f["item_id"], f["code"]) for f in failures) == [
        ("gone#chunk=0", "gone", SOURCE_MISSING),
        ("old2#chunk=0", "old2", SOURCE_MISSING),
    ]
    assert "missing#chunk=0 (run run-1)" in " ".join(f["message"] for f in failures)


def test_the_copy_is_written_once(store: CheckpointStore) -> None:
    assert written_reused_vectors(store, RUN, DIMENSION, CONFIG) == 4
    assert written_reused_vectors(store, RUN, DIMENSION, CONFIG) == 0


def test_digests_are_recorded_for_the_units_the_run_embedded_itself(
    store: CheckpointStore,
) -> None:
    written_reused_vectors(store, RUN, DIMENSION, CONFIG)

    assert recorded_digests(store, RUN, CONFIG) == 1
    digests = pq.read_table(f"{store.digests_dir(CONFIG)}/run={RUN}.parquet").to_pylist()
    assert digests == [{"digest": "d-x#chunk=0", "key": "x#chunk=0", "run_id": RUN}]
