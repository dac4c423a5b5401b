"""Exact top-k by streaming against a brute-force reference: the full float64 distance matrix,
rounded to float32 and ordered by (distance, key), the query's own key left out."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tasks.evaluate.exact_search import (
    ExactNeighbours,
    Metric,
    checkpoint_blocks,
    embedding_matrix,
    exact_top_k,
    rechunked,
)
from tasks.schemas import embeddings_schema


def keys_for(count: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}/{index:05d}" for index in range(count)]


def batch_of(keys: Sequence[str], vectors: np.ndarray) -> pa.RecordBatch:
    """A checkpoint-shaped batch (``embeddings_schema``) of ``vectors`` under ``keys``."""
    count, dimension = vectors.shape
    embedding = pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.astype(np.float32).ravel(), pa.float32()), dimension
    )
    columns = {
        "key": pa.array(keys, pa.string()),
        "item_id": pa.array([key.split("#")[0] for key in keys], pa.string()),
        "embedding_type": pa.array(["TEXT"] * count, pa.string()),
        "embedding": embedding,
        "metadata_json": pa.array(['{"modality": "text"}'] * count, pa.string()),
        "config_hash": pa.array(["c0"] * count, pa.string()),
    }
    return pa.record_batch(columns, schema=embeddings_schema(dimension))


def reference(
    queries: np.ndarray,
    query_keys: Sequence[str | None],
    keys: Sequence[str],
    vectors: np.ndarray,
    k: int,
    metric: Metric,
) -> tuple[list[list[str]], list[np.ndarray]]:
    """Brute force: every distance in float64, then a stable sort by (float32 distance, key)."""
    data = vectors.astype(np.float64)
    probes = queries.astype(np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(probes, axis=1)[:, None] * np.linalg.norm(data, axis=1)[None, :]
        distances = np.clip(1.0 - (probes @ data.T) / norms, 0.0, 2.0)
    else:
        distances = np.linalg.norm(probes[:, None, :] - data[None, :, :], axis=2)
    rounded = distances.astype(np.float32)
    names = np.array(keys)
    by_key = np.argsort(names, kind="stable")
    expected_keys, expected_distances = [], []
    for row, own in enumerate(query_keys):
        order = by_key[np.argsort(rounded[row, by_key], kind="stable")]
        order = [index for index in order if names[index] != own][:k]
        expected_keys.append([str(names[index]) for index in order])
        expected_distances.append(rounded[row, order])
    return expected_keys, expected_distances


def assert_matches(
    found: ExactNeighbours, expected: tuple[list[list[str]], list[np.ndarray]]
) -> None:
    expected_keys, expected_distances = expected
    assert [list(keys) for keys in found.keys] == expected_keys
    for row, distances in enumerate(expected_distances):
        np.testing.assert_allclose(
            found.distances[row, : len(distances)], distances, rtol=1e-6, atol=1e-6
        )
        assert np.isinf(found.distances[row, len(distances) :]).all()


def split(keys: Sequence[str], vectors: np.ndarray, sizes: Sequence[int]) -> list[pa.RecordBatch]:
    """``keys``/``vectors`` cut into consecutive batches of ``sizes`` rows (they must add up)."""
    assert sum(sizes) == len(keys)
    bounds = np.cumsum([0, *sizes])
    return [
        batch_of(keys[start:stop], vectors[start:stop])
        for start, stop in itertools.pairwise(bounds)
    ]


def write_files(directory: Path, batches: Sequence[pa.RecordBatch]) -> list[str]:
    paths = []
    for number, batch in enumerate(batches):
        path = directory / f"part-{number:05d}.parquet"
        pq.write_table(pa.Table.from_batches([batch]), path, compression="zstd")
        paths.append(str(path))
    return paths


def sample_rows(rng: np.random.Generator, count: int, queries: int) -> np.ndarray:
    return np.sort(rng.choice(count, size=queries, replace=False))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block_rows", [7, 64, 5000])
def test_top_k_equals_brute_force(metric: Metric, block_rows: int) -> None:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((600, 24)).astype(np.float32)
    keys = keys_for(600)
    rows = sample_rows(rng, 600, 20)
    # Half the queries come from the data (and must not find themselves), half from outside.
    queries = np.concatenate([vectors[rows], rng.standard_normal((20, 24)).astype(np.float32)])
    query_keys: list[str | None] = [keys[row] for row in rows] + [None] * 20
    batches = split(keys, vectors, [100, 1, 250, 0, 249])

    found = exact_top_k(queries, query_keys, batches, 15, metric, block_rows=block_rows)

    assert_matches(found, reference(queries, query_keys, keys, vectors, 15, metric))
    assert found.k == 15
    assert found.metric == metric
    assert len(found) == 40


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_checkpoints_across_uneven_files_and_blocks(tmp_path: Path, metric: Metric) -> None:
    rng = np.random.default_rng(5)
    sizes = [37, 1, 0, 250, 64, 3, 145]
    vectors = rng.standard_normal((sum(sizes), 16)) * rng.uniform(0.5, 2.0, (sum(sizes), 1))
    vectors = vectors.astype(np.float32)
    keys = keys_for(sum(sizes))
    paths = write_files(tmp_path, split(keys, vectors, sizes))
    filesystem = pafs.LocalFileSystem()
    rows = sample_rows(rng, len(keys), 12)
    queries, query_keys = vectors[rows], [keys[row] for row in rows]

    blocks = list(checkpoint_blocks(filesystem, paths, block_rows=16))
    found = exact_top_k(queries, query_keys, iter(blocks), 20, metric, block_rows=16)

    # Small files are joined: every block is full but the last.
    assert [batch.num_rows for batch in blocks] == [16] * 31 + [4]
    assert all(batch.schema.names == ["key", "embedding"] for batch in blocks)
    assert sum(batch.num_rows for batch in blocks) == len(keys)
    expected = reference(queries, query_keys, keys, vectors, 20, metric)
    assert_matches(found, expected)
    whole = exact_top_k(queries, query_keys, checkpoint_blocks(filesystem, paths), 20, metric)
    assert whole.keys == found.keys
    np.testing.assert_array_equal(whole.distances, found.distances)


def test_a_large_row_group_is_read_a_block_at_a_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((1000, 8)).astype(np.float32)
    path = tmp_path / "one-row-group.parquet"
    pq.write_table(pa.Table.from_batches([batch_of(keys_for(1000), vectors)]), path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1

    blocks = list(checkpoint_blocks(pafs.LocalFileSystem(), [str(path)], block_rows=300))

    assert [batch.num_rows for batch in blocks] == [300, 300, 300, 100]
    np.testing.assert_array_equal(
        np.concatenate([embedding_matrix(batch.column("embedding")) for batch in blocks]), vectors
    )


def test_rechunked_joins_small_batches_and_slices_large_ones_without_copying() -> None:
    vectors = np.arange(60, dtype=np.float32).reshape(30, 2)
    keys = keys_for(30)
    batches = split(keys, vectors, [3, 0, 4, 20, 3])

    blocks = list(rechunked(batches, 8))

    assert [block.num_rows for block in blocks] == [8, 8, 8, 6]
    assert [key for block in blocks for key in block.column("key").to_pylist()] == keys
    # Rows 8-15 lie inside the 20-row batch: that block is a view of it, not a copy.
    inner = embedding_matrix(blocks[1].column("embedding"))
    assert np.shares_memory(inner, embedding_matrix(batches[3].column("embedding")))
    with pytest.raises(ValueError, match="block_rows"):
        list(rechunked(batches, 0))


def test_files_written_apart_are_joined_into_one_block(tmp_path: Path) -> None:
    """A run's shard files (``embeddings_schema``, keys not null) beside a file written with a
    plain schema (nullable columns) still make whole blocks."""
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((30, 4)).astype(np.float32)
    [path] = write_files(tmp_path, [batch_of(keys_for(20), vectors[:20])])
    plain = tmp_path / "plain.parquet"
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors[20:].ravel()), 4)
    pq.write_table(pa.table({"key": keys_for(10, "other"), "embedding": embedding}), plain)

    blocks = list(checkpoint_blocks(pafs.LocalFileSystem(), [path, str(plain)], block_rows=25))

    assert [batch.num_rows for batch in blocks] == [25, 5]
    assert blocks[0].column("key").to_pylist()[19:] == ["item/00019", *keys_for(5, "other")]
    np.testing.assert_array_equal(embedding_matrix(blocks[0].column("embedding")), vectors[:25])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_k_larger_than_the_data_returns_what_there_is(metric: Metric) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5, 6)).astype(np.float32)
    keys = keys_for(5)
    queries = np.stack([vectors[2], rng.standard_normal(6).astype(np.float32)])

    found = exact_top_k(queries, [keys[2], None], [batch_of(keys, vectors)], 10, metric)

    assert [len(row) for row in found.keys] == [4, 5]
    assert keys[2] not in found.keys[0]
    assert found.distances.shape == (2, 10)
    assert_matches(found, reference(queries, [keys[2], None], keys, vectors, 10, metric))
    assert found.neighbours(0) == list(
        zip(found.keys[0], found.distances[0, :4].tolist(), strict=True)
    )


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_a_query_never_finds_itself_but_finds_its_duplicate_first(metric: Metric) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors[30] = vectors[7]  # another key, the very same vector
    keys = keys_for(50)

    found = exact_top_k(vectors[[7]], [keys[7]], split(keys, vectors, [20, 30]), 3, metric)

    assert found.keys[0][0] == keys[30]
    assert found.distances[0, 0] == 0.0
    assert keys[7] not in found.keys[0]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_duplicate_vectors_tie_in_key_order_however_the_data_is_split(metric: Metric) -> None:
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((300, 12)).astype(np.float32)
    twin = rng.standard_normal(12).astype(np.float32)
    copies = [250, 3, 120, 71, 199, 18]  # spread over blocks and files, keys out of order
    vectors[copies] = twin
    keys = [f"k{(index * 7919) % 1000:04d}" for index in range(300)]
    query = (twin + 0.05 * rng.standard_normal(12)).astype(np.float32)[None, :]
    tied = sorted(keys[index] for index in copies)

    results = [
        exact_top_k(query, [None], split(keys, vectors, sizes), 8, metric, block_rows=block_rows)
        for sizes, block_rows in [([300], 300), ([1, 99, 200], 13), ([150, 150], 1), ([300], 4)]
    ]
    reversed_order = exact_top_k(
        query, [None], [batch_of(keys[::-1], vectors[::-1])], 8, metric, block_rows=17
    )

    for found in [*results, reversed_order]:
        assert list(found.keys[0][:6]) == tied
        assert len(set(found.distances[0, :6].tolist())) == 1
        assert found.keys == results[0].keys
    assert_matches(results[0], reference(query, [None], keys, vectors, 8, metric))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_near_duplicates_closer_than_float32_can_rank(metric: Metric) -> None:
    """A cluster whose members differ by ~1e-5 relative: float32 products misorder them, the
    search must not (it ranks with a margin and recomputes candidates in float64)."""
    rng = np.random.default_rng(9)
    centre = rng.standard_normal(256)
    vectors = (centre + 1e-5 * rng.standard_normal((400, 256))).astype(np.float32)
    keys = keys_for(400)
    queries = (centre + 1e-3 * rng.standard_normal((5, 256))).astype(np.float32)

    found = exact_top_k(queries, [None] * 5, split(keys, vectors, [128] * 3 + [16]), 25, metric)

    assert_matches(found, reference(queries, [None] * 5, keys, vectors, 25, metric))


def test_cosine_of_a_zero_vector_is_one_and_a_zero_query_is_refused() -> None:
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    query = np.array([[0.0, 2.0]], dtype=np.float32)

    found = exact_top_k(query, [None], [batch_of(["a", "b", "c"], vectors)], 3, "cosine")

    np.testing.assert_allclose(found.distances[0], [1.0, 1.0, 1.0])
    assert found.keys[0] == ("a", "b", "c")
    with pytest.raises(ValueError, match="zero query"):
        exact_top_k(np.zeros((1, 2), np.float32), [None], [], 1, "cosine")


def test_embedding_matrix_is_a_zero_copy_view_that_honours_slices() -> None:
    vectors = np.arange(40, dtype=np.float32).reshape(10, 4)
    column = batch_of(keys_for(10), vectors).column("embedding")
    buffer = np.frombuffer(column.values.buffers()[1], dtype=np.float32)

    whole = embedding_matrix(column)
    part = embedding_matrix(column.slice(3, 4))

    assert np.shares_memory(whole, buffer)
    assert np.shares_memory(part, buffer)
    np.testing.assert_array_equal(part, vectors[3:7])
    with pytest.raises(TypeError, match="fixed_size_list<float32>"):
        embedding_matrix(pa.array([[1.0, 2.0]], pa.list_(pa.float64())))


def test_memory_stays_bounded_by_the_block_not_the_data() -> None:
    """numpy's allocations (traced by tracemalloc) for 10x the data stay within 1.5x."""
    rng = np.random.default_rng(12)
    queries = rng.standard_normal((64, 32)).astype(np.float32)

    def stream(blocks: int) -> Iterator[pa.RecordBatch]:
        for number in range(blocks):
            vectors = rng.standard_normal((256, 32)).astype(np.float32)
            yield batch_of(keys_for(256, f"b{number}"), vectors)

    peaks = []
    for blocks in (4, 40):
        tracemalloc.start()
        exact_top_k(queries, [None] * 64, stream(blocks), 10, "cosine", block_rows=256)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()

    assert peaks[1] < 1.5 * peaks[0]


def test_rejects_bad_arguments() -> None:
    queries = np.zeros((2, 3), np.float32) + 1
    with pytest.raises(ValueError, match="query keys"):
        exact_top_k(queries, [None], [], 1, "cosine")
    with pytest.raises(ValueError, match="k must be"):
        exact_top_k(queries, [None, None], [], 0, "cosine")
    with pytest.raises(ValueError, match="metric"):
        exact_top_k(queries, [None, None], [], 1, "dot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimension"):
        exact_top_k(queries, [None, None], [batch_of(["a"], np.ones((1, 4)))], 1, "cosine")
