"""Reading a checkpoint table with a schema reads only its columns, in its types, and a file
that lacks one of them is refused with the columns it lacks."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tasks.store import CheckpointStore


def test_a_schema_reads_only_its_columns_in_its_order_and_types(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    store.write_table(
        str(tmp_path / "t.parquet"),
        pa.table({"key": ["a", "b"], "digest": ["d1", "d2"], "wide": ["x" * 100, "y" * 100]}),
    )
    wanted = pa.schema([("digest", pa.large_string()), ("key", pa.string())])

    table = store.read_table(str(tmp_path / "t.parquet"), wanted)

    assert table.schema == wanted
    assert table.to_pylist() == [{"digest": "d1", "key": "a"}, {"digest": "d2", "key": "b"}]


def test_a_file_lacking_a_column_of_the_schema_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    store.write_table(str(tmp_path / "t.parquet"), pa.table({"key": ["a"]}))
    wanted = pa.schema([("key", pa.string()), ("digest", pa.string()), ("cost", pa.float64())])

    with pytest.raises(ValueError, match=r"lacks columns \['digest', 'cost'\]: not a novaflow"):
        store.read_table(str(tmp_path / "t.parquet"), wanted)
