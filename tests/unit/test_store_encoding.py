"""How the checkpoint store encodes Parquet: embedding columns written plain, without the
dictionary attempt or statistics; every other column as Parquet's defaults have it; the values
read back the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import schemas
from tasks.store import CheckpointStore, parquet_encoding


def _embeddings(rows: int, dimension: int = 1024) -> pa.Table:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((rows, dimension), dtype=np.float32)
    return pa.Table.from_pylist(
        [
            {
                "key": f"text/{n}#0",
                "item_id": f"text/{n}",
                "embedding_type": "TEXT",
                "embedding": vectors[n],
                "metadata_json": '{"modality": "text"}',
                "config_hash": "c0ffee",
            }
            for n in range(rows)
        ],
        schema=schemas.embeddings_schema(dimension),
    )


def _column_chunks(path: Path) -> dict[str, pq.ColumnChunkMetaData]:
    group = pq.read_metadata(path).row_group(0)
    return {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}


def test_the_embedding_column_is_written_plain_and_the_others_as_before(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    table = _embeddings(200)
    path = tmp_path / "part-00001.parquet"
    store.write_table(str(path), table)
    chunks = _column_chunks(path)
    embedding = chunks["embedding.list.element"]
    assert "RLE_DICTIONARY" not in embedding.encodings
    assert "PLAIN" in embedding.encodings
    assert not embedding.is_stats_set
    for name in ("key", "item_id", "embedding_type", "metadata_json", "config_hash"):
        assert "RLE_DICTIONARY" in chunks[name].encodings, name
        assert chunks[name].is_stats_set, name
    assert store.read_table(str(path)).equals(table)


def test_streamed_tables_are_encoded_the_same_way(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    table = _embeddings(30)
    path = tmp_path / "streamed.parquet"
    with store.table_writer(str(path), table.schema) as writer:
        writer.write_table(table)
    assert "RLE_DICTIONARY" not in _column_chunks(path)["embedding.list.element"].encodings
    assert pq.read_table(path).equals(table)


def test_the_values_are_those_of_a_file_with_parquets_default_encoding(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    table = _embeddings(50, dimension=256)
    store.write_table(str(tmp_path / "new.parquet"), table)
    pq.write_table(table, tmp_path / "default.parquet", compression="zstd")
    assert pq.read_table(tmp_path / "new.parquet").equals(
        pq.read_table(tmp_path / "default.parquet")
    )


def test_tables_without_vectors_keep_parquets_defaults() -> None:
    assert parquet_encoding(schemas.UNITS) == {}


def test_nested_columns_are_named_by_their_parquet_paths() -> None:
    schema = pa.schema(
        [
            ("vector", pa.list_(pa.float32())),
            ("keys", pa.list_(pa.string())),
            ("where", pa.struct([("bucket", pa.string()), ("index", pa.string())])),
            ("tags", pa.map_(pa.string(), pa.int64())),
        ]
    )
    names = ["keys.list.element", "where.bucket", "where.index"]
    names += ["tags.key_value.key", "tags.key_value.value"]
    assert parquet_encoding(schema) == {"use_dictionary": names, "write_statistics": names}
