"""Which planned units take an existing vector: the newest earlier run's vector of the same
input under the same config, else the first unit of the run with that input; never another
config's."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tasks import schemas
from tasks.plan.reuse import reuse_decision
from tasks.store import CheckpointStore

CONFIG, OTHER_CONFIG, RUN = "cfg-a", "cfg-b", "run-3"


def _digests(store: CheckpointStore, config: str, run_id: str, rows: list[tuple[str, str]]) -> None:
    table = pa.table(
        {
            "digest": [d for d, _ in rows],
            "key": [k for _, k in rows],
            "run_id": [run_id] * len(rows),
        },
        schema=schemas.DIGESTS,
    )
    store.write_table(f"{store.digests_dir(config)}/run={run_id}.parquet", table)


def _planned(store: CheckpointStore, units: list[tuple[str, str, float]]) -> None:
    columns: dict[str, list[object]] = {name: [] for name in schemas.SYNC_UNITS.names}
    for key, digest, cost in units:
        for name in schemas.UNITS.names:
            columns[name].append(None)
        columns["key"][-1], columns["item_id"][-1] = key, key.split("#")[0]
        columns["uri"][-1], columns["kind"][-1] = f"/corpus/{key}", "text_chunk"
        columns["route"][-1], columns["fingerprint"][-1] = "sync", "f"
        columns["metadata_json"][-1] = "{}"
        columns["digest"].append(digest)
        columns["cost_usd"].append(cost)
    table = pa.table(columns, schema=schemas.SYNC_UNITS)
    store.write_table(store.sync_units_path(RUN), table)


def test_units_reuse_the_newest_earlier_vector_else_the_runs_first_copy(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    _digests(store, CONFIG, "run-1", [("d-moved", "old.txt#chunk=0"), ("d-twice", "a.txt#chunk=0")])
    _digests(store, CONFIG, "run-2", [("d-twice", "b.txt#chunk=0")])
    _digests(store, OTHER_CONFIG, "run-2", [("d-other", "c.txt#chunk=0")])
    _planned(store, [
        ("new.txt#chunk=0", "d-moved", 1.0),  # moved since run 1
        ("copy.txt#chunk=0", "d-twice", 2.0),  # embedded by runs 1 and 2: the newer wins
        ("first.txt#chunk=0", "d-fresh", 4.0),  # new content: embedded
        ("second.txt#chunk=0", "d-fresh", 8.0),  # a copy within the run: takes the first's
        ("elsewhere.txt#chunk=0", "d-other", 16.0),  # only another config has it: embedded
    ])  # fmt: skip

    decision = reuse_decision(store, RUN, CONFIG)

    assert decision.keys.to_pylist() == [
        "new.txt#chunk=0",
        "copy.txt#chunk=0",
        "second.txt#chunk=0",
    ]
    assert decision.saved_usd == 11.0
    written = store.read_table(store.reused_units_path(RUN), schemas.REUSED_UNITS).to_pylist()
    assert written == [
        {"key": "new.txt#chunk=0", "source_run": "run-1", "source_key": "old.txt#chunk=0"},
        {"key": "copy.txt#chunk=0", "source_run": "run-2", "source_key": "b.txt#chunk=0"},
        {"key": "second.txt#chunk=0", "source_run": RUN, "source_key": "first.txt#chunk=0"},
    ]


def test_a_store_without_digests_reuses_only_copies_within_the_run(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    _planned(store, [(f"n{i}.txt#chunk=0", f"d{i % 3}", 1.0) for i in range(7)])

    decision = reuse_decision(store, RUN, CONFIG)

    assert decision.keys.to_pylist() == [f"n{i}.txt#chunk=0" for i in range(3, 7)]
    assert decision.saved_usd == 4.0
