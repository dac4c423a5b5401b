"""The index's state as a partitioned dataset, through whole runs: a commit rewrites only the
partitions holding what changed, a commit killed half-way is finished by the next run (the
state and the index agree again and nothing is embedded twice), and a single-file state of an
earlier novaflow is migrated on first use."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed
from tasks import schemas
from tasks.report.summary import RunSummary
from tasks.settings import EvaluationSettings, IndexSettings, NovaflowSettings, ThroughputSettings
from tasks.state import commit as state_commit
from tasks.state import layout as state_layout
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore
from tests.flows.stand_in_reads import calls, index_keys

NOTES = 40


@pytest.fixture(autouse=True)
def small_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partitions of ~4 items, so a corpus of 40 spreads over 16 of them."""
    monkeypatch.setattr(state_layout, "MAX_MEAN_ITEMS", 4)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for n in range(NOTES):
        (root / f"note-{n:02d}.txt").write_text(f"note {n} on tidal estuaries and salt marsh\n")
    return root


def _settings(tmp_path: Path) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="flow-tests", index=f"state-{uuid.uuid4().hex[:12]}"),
        throughput=ThroughputSettings(shard_size=8, concurrency=2, render_processes=1),
        evaluation=EvaluationSettings(enabled=False),
    )


def _run(corpus: Path, settings: NovaflowSettings) -> RunSummary:
    return reembed(ReembedParameters(corpus=str(corpus), settings=settings))


def _state(settings: NovaflowSettings) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    dataset = StateDataset(CheckpointStore(settings.store), settings.index.vector_bucket,
                           settings.index.index)  # fmt: skip
    rows = [row for batch in dataset.batches() for row in batch.to_pylist()]
    return {row["item_id"]: (row["fingerprint"], row["status"], tuple(row["keys"])) for row in rows}


def _partition_files(settings: NovaflowSettings) -> dict[str, bytes]:
    store = CheckpointStore(settings.store)
    root = Path(store.state_dir(settings.index.vector_bucket, settings.index.index))
    return {p.name: p.read_bytes() for p in root.glob("items-*/part-*.parquet")}


def test_the_first_commit_lays_the_state_out_for_its_items_without_a_split(
    aws_environment: Emulator, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written into one partition and then split, the first commit read every item back and
    wrote it twice."""

    def no_split(*args: object) -> None:
        raise AssertionError("the first commit split the state it had just written")

    monkeypatch.setattr(state_commit, "_split", no_split)
    settings = _settings(tmp_path)
    _run(corpus, settings)
    layout = StateDataset(
        CheckpointStore(settings.store), settings.index.vector_bucket, settings.index.index
    ).layout()
    assert (layout.partitions, layout.items) == (16, NOTES)
    assert len(_state(settings)) == NOTES


def test_a_commit_rewrites_only_the_partitions_holding_what_changed(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    _run(corpus, settings)
    store = CheckpointStore(settings.store)
    layout = StateDataset(store, settings.index.vector_bucket, settings.index.index).layout()
    assert layout.partitions == 16
    assert layout.items == NOTES
    before = _partition_files(settings)
    assert len(before) == sum(1 for part in layout.parts if part.items) > 8  # one file each

    (corpus / "note-07.txt").write_text("note 7, rewritten: on mangrove roots\n")
    second = _run(corpus, settings)

    after = _partition_files(settings)
    assert {name: after[name] for name in before} == before  # no file rewritten
    (added,) = set(after) - set(before)  # one delta, of the one partition holding the change
    assert added.endswith(f".{second.run_id}.delta.parquet")
    assert second.model_calls == 1
    assert _state(settings)["note-07.txt"][2] == ("note-07.txt#chunk=0",)


def test_a_commit_killed_half_way_is_finished_by_the_next_run(
    aws_environment: Emulator, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    _run(corpus, settings)
    for n in (3, 11, 26):
        (corpus / f"note-{n:02d}.txt").write_text(f"note {n}, revised: on oyster reefs\n")
    for n in (5, 30):
        (corpus / f"note-{n:02d}.txt").unlink()
    for n in (40, 41):
        (corpus / f"note-{n:02d}.txt").write_text(f"note {n}, new: on seagrass meadows\n")

    written: list[int] = []
    written_partition = StateDataset.written_partition

    def killed_after_one(self, layout, part, now, delta, run_id):  # type: ignore[no-untyped-def]
        if written:
            raise KeyboardInterrupt("killed in the middle of the commit")
        written.append(part)
        return written_partition(self, layout, part, now, delta, run_id)

    monkeypatch.setattr(StateDataset, "written_partition", killed_after_one)
    with pytest.raises(BaseException, match="killed in the middle"):
        _run(corpus, settings)
    monkeypatch.setattr(StateDataset, "written_partition", written_partition)
    store = CheckpointStore(settings.store)
    record = store.state_commit_path(settings.index.vector_bucket, settings.index.index)
    assert written
    assert store.exists(record)
    expected_keys = {
        f"note-{n:02d}.txt#chunk=0" for n in (*range(NOTES), 40, 41) if n not in (5, 30)
    }
    assert (
        index_keys(aws_environment.client("s3vectors"), settings) == expected_keys
    )  # loaded before the commit

    aws_environment.reset_stats()
    repaired = _run(corpus, settings)

    assert (
        calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    )  # nothing the killed run embedded is paid again
    assert repaired.item_outcomes.unchanged == len(expected_keys)
    assert not store.exists(record)
    state = _state(settings)
    assert {key for _, _, keys in state.values() for key in keys} == expected_keys
    assert all(status == "complete" for _, status, _ in state.values())
    assert index_keys(aws_environment.client("s3vectors"), settings) == expected_keys


def _written_as_a_single_file(settings: NovaflowSettings) -> None:
    """Turn the state back into the one ``state.parquet`` novaflow wrote before partitions."""
    store = CheckpointStore(settings.store)
    bucket, index = settings.index.vector_bucket, settings.index.index
    dataset = StateDataset(store, bucket, index)
    rows = sorted(
        (row for batch in dataset.batches() for row in batch.to_pylist()),
        key=lambda row: row["item_id"],
    )
    store.delete(store.state_dir(bucket, index))
    store.write_table(
        store.legacy_state_path(bucket, index), pa.Table.from_pylist(rows, schema=schemas.STATE)
    )


def test_a_single_file_state_is_migrated_and_nothing_is_embedded_again(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    _run(corpus, settings)
    state = _state(settings)
    _written_as_a_single_file(settings)
    store = CheckpointStore(settings.store)
    bucket, index = settings.index.vector_bucket, settings.index.index
    assert not store.exists(store.state_layout_path(bucket, index))

    aws_environment.reset_stats()
    again = _run(corpus, settings)

    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    assert again.item_outcomes.unchanged == NOTES
    assert not store.exists(store.legacy_state_path(bucket, index))
    layout = json.loads(store.read_text(store.state_layout_path(bucket, index)))
    assert layout["items"] == NOTES
    assert layout["bits"] == 4
    assert _state(settings) == state
