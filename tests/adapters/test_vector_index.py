"""The S3 Vectors loader against the stand-in: index set-up, batching, metadata limits, queries."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from emulator.app import Emulator
from emulator.misbehaviour import Misbehaviour
from tasks.aws_clients import s3vectors_client
from tasks.pacing import Pacer
from tasks.settings import IndexSettings
from tasks.vector_store import (
    IndexMismatchError,
    delete_vectors,
    ensure_index,
    fitted_metadata,
    put_vectors,
    query,
)

DIMENSION = 64
_names = itertools.count()


@pytest.fixture
def client(stand_in: Emulator, monkeypatch: pytest.MonkeyPatch) -> BaseClient:
    """A client built the production way: from the environment the stand-in publishes."""
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    return s3vectors_client()


@pytest.fixture
def index(client: BaseClient) -> IndexSettings:
    """A fresh index (64-d, cosine, ``source_uri`` non-filterable) in a shared bucket."""
    settings = IndexSettings(vector_bucket="loader-tests", index=f"index-{next(_names)}")
    ensure_index(client, settings, DIMENSION)
    return settings


def vectors(count: int, seed: int = 0, dimension: int = DIMENSION) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, dimension)).astype(np.float32)


def rows(count: int, seed: int = 0) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    for n, vector in enumerate(vectors(count, seed)):
        yield f"item-{n}#chunk=0", vector, {"item_id": f"item-{n}", "n": n, "even": n % 2 == 0}


def calls(stand_in: Emulator, operation: str) -> int:
    return stand_in.stats()["s3vectors"]["calls"].get(operation, 0)


def stored_keys(client: BaseClient, settings: IndexSettings) -> set[str]:
    pages = client.get_paginator("list_vectors").paginate(
        vectorBucketName=settings.vector_bucket, indexName=settings.index
    )
    return {vector["key"] for page in pages for vector in page["vectors"]}


# -- ensure_index --------------------------------------------------------------------------


def test_ensure_index_creates_bucket_and_index_then_is_a_no_op(
    client: BaseClient, stand_in: Emulator
) -> None:
    settings = IndexSettings(vector_bucket="loader-fresh", index="corpus", metric="euclidean")
    ensure_index(client, settings, 384)
    described = client.get_index(vectorBucketName="loader-fresh", indexName="corpus")["index"]
    assert (described["dimension"], described["distanceMetric"]) == (384, "euclidean")
    assert described["metadataConfiguration"]["nonFilterableMetadataKeys"] == ["source_uri"]
    stand_in.reset_stats()
    ensure_index(client, settings, 384)
    made = stand_in.stats()["s3vectors"]["calls"]
    assert "CreateIndex" not in made
    assert "CreateVectorBucket" not in made


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"dimension": 256}, "dimension 64 (wanted 256)"),
        ({"metric": "euclidean"}, "metric cosine (wanted euclidean)"),
        ({"non_filterable_keys": ("source_uri", "text")}, "non-filterable keys"),
    ],
)
def test_ensure_index_refuses_an_index_that_differs(
    client: BaseClient, index: IndexSettings, change: dict[str, Any], expected: str
) -> None:
    dimension = change.pop("dimension", DIMENSION)
    with pytest.raises(IndexMismatchError) as raised:
        ensure_index(client, index.model_copy(update=change), dimension)
    assert expected in str(raised.value)
    assert "new index name" in str(raised.value)


def test_ensure_index_tolerates_someone_else_creating_the_index_first(
    client: BaseClient, stand_in: Emulator
) -> None:
    settings = IndexSettings(vector_bucket="loader-tests", index=f"raced-{next(_names)}")
    # The vector bucket exists (as after any earlier test here): the race is the index's. With
    # no bucket, ensure_index knows there is no index without asking.
    with contextlib.suppress(client.exceptions.ConflictException):
        client.create_vector_bucket(vectorBucketName=settings.vector_bucket)

    class Racing:
        """Says the index is missing once, as if the other creator had not finished yet."""

        def __init__(self) -> None:
            self.raced = False

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def get_index(self, **request: Any) -> Any:
            if not self.raced:
                self.raced = True
                ensure_index(client, settings, DIMENSION)  # the other creator
                raise ClientError({"Error": {"Code": "NotFoundException"}}, "GetIndex")
            return client.get_index(**request)

    ensure_index(Racing(), settings, DIMENSION)  # type: ignore[arg-type]
    assert stand_in.stats()["s3vectors"]["errors"]["CreateIndex"] == {"ConflictException": 1}


# -- put_vectors ---------------------------------------------------------------------------


def test_put_vectors_writes_full_batches_of_500(
    client: BaseClient, index: IndexSettings, stand_in: Emulator
) -> None:
    stand_in.reset_stats()
    outcome = put_vectors(client, index, rows(1234), Pacer(2500))
    assert outcome.batch_sizes == (500, 500, 234)
    assert (outcome.vectors_written, outcome.batches) == (1234, 3)
    assert outcome.warnings == ()
    assert outcome.rejected == ()
    assert calls(stand_in, "PutVectors") == 3
    assert len(stored_keys(client, index)) == 1234


def test_stored_vectors_are_exactly_the_float32_values_put(
    client: BaseClient, index: IndexSettings
) -> None:
    data = vectors(20, seed=3) * np.float32(1e-3)
    data[0, :4] = [1e-20, -3.4e38, 123456789.0, 0.0]
    put_vectors(client, index, ((f"k{n}", v, {}) for n, v in enumerate(data)), Pacer(2500))
    got = client.get_vectors(
        vectorBucketName=index.vector_bucket,
        indexName=index.index,
        keys=[f"k{n}" for n in range(20)],
        returnData=True,
    )["vectors"]
    stored = np.asarray([v["data"]["float32"] for v in got], dtype=np.float32)
    np.testing.assert_array_equal(stored, data)


def test_batches_are_cut_to_stay_under_the_20_mib_request_limit(
    client: BaseClient, index: IndexSettings, stand_in: Emulator
) -> None:
    # 40 KB of UTF-8 "é" is 120 KB in botocore's ASCII-escaped JSON: 500 of them would be 60 MB.
    metadata = {"source_uri": "é" * 20_000}
    heavy = ((f"h{n}", vector, metadata) for n, vector in enumerate(vectors(400, seed=1)))
    stand_in.reset_stats()
    outcome = put_vectors(client, index, heavy, Pacer(2500))
    assert outcome.vectors_written == 400
    assert outcome.warnings == ()
    assert outcome.batches == 3
    assert max(outcome.batch_sizes) < 500
    assert "PutVectors" not in stand_in.stats()["s3vectors"]["errors"]


def test_a_key_repeated_in_one_batch_is_sent_once_and_the_last_row_wins(
    client: BaseClient, index: IndexSettings
) -> None:
    first, second = vectors(2, seed=4)
    outcome = put_vectors(
        client, index, [("same", first, {"v": 1}), ("same", second, {"v": 2})], Pacer(2500)
    )
    assert outcome.batch_sizes == (1,)
    found = query(client, index, second, top_k=1)
    assert found[0]["key"] == "same"
    assert found[0]["metadata"] == {"v": 2}


def test_vectors_the_service_would_refuse_are_reported_not_sent(
    client: BaseClient, index: IndexSettings
) -> None:
    good, nan = vectors(2, seed=5)
    nan[3] = np.nan
    bad_rows = [("good", good, {}), ("nan", nan, {}), ("zero", np.zeros(DIMENSION), {})]
    outcome = put_vectors(client, index, [*bad_rows, ("x" * 1025, good, {})], Pacer(2500))
    assert outcome.vectors_written == 1
    assert [key[:4] for key, _ in outcome.rejected] == ["nan", "zero", "xxxx"]


def test_throttling_that_survives_botocore_slows_the_pacer_and_every_batch_lands(
    stand_in: Emulator, client: BaseClient, index: IndexSettings
) -> None:
    throttled = Misbehaviour(operations=frozenset({"PutVectors"}), throttle_rate=0.5, seed=2)
    stand_in.configure(s3vectors_faults=(throttled,))
    no_retries = stand_in.client("s3vectors", retries={"mode": "standard", "total_max_attempts": 1})
    pacer = Pacer(2500, cooldown_seconds=0)
    outcome = put_vectors(no_retries, index, rows(1234), pacer)
    assert outcome.batch_sizes == (500, 500, 234)
    assert stand_in.stats()["s3vectors"]["errors"]["PutVectors"]["TooManyRequestsException"] > 0
    assert pacer.slow_downs > 0
    assert len(stored_keys(client, index)) == 1234


# -- metadata ------------------------------------------------------------------------------


def compact_bytes(metadata: dict[str, Any]) -> int:
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())


def test_oversize_filterable_metadata_is_dropped_largest_first_and_the_put_succeeds(
    client: BaseClient, index: IndexSettings
) -> None:
    metadata = {
        "title": "Fox",
        "summary": "é" * 900,  # 1,800 bytes of UTF-8 though only 900 characters
        "tags": ["a" * 300, "b" * 300],
        "source_uri": "s3://corpus/" + "p" * 20_000,  # non-filterable: does not count to 2 KB
    }
    fitted = fitted_metadata(metadata, ["source_uri"])
    assert fitted.dropped_keys == ("summary",)
    assert fitted.warning is not None
    assert "'summary'" in fitted.warning
    assert "2048 bytes" in fitted.warning
    assert set(fitted.metadata) == {"title", "tags", "source_uri"}
    outcome = put_vectors(client, index, [("fox", vectors(1)[0], metadata)], Pacer(2500))
    assert outcome.vectors_written == 1
    assert outcome.vectors_with_dropped_metadata == 1
    assert outcome.warnings[0].startswith("fox: dropped metadata ['summary']")
    assert query(client, index, vectors(1)[0], top_k=1)[0]["metadata"] == fitted.metadata


def test_metadata_exactly_at_the_limits_is_kept_and_the_stand_in_agrees(
    client: BaseClient, index: IndexSettings
) -> None:
    filterable = {"note": "ü" * 10}
    filterable["note"] += "x" * (2048 - compact_bytes(filterable))
    assert compact_bytes(filterable) == 2048
    whole = {**filterable, "source_uri": ""}
    whole["source_uri"] = "y" * (40 * 1024 - compact_bytes(whole))
    assert compact_bytes(whole) == 40 * 1024
    assert fitted_metadata(whole, ["source_uri"]).dropped_keys == ()
    assert put_vectors(client, index, [("edge", vectors(1)[0], whole)], Pacer(2500)).warnings == ()
    one_more = {**whole, "note": whole["note"] + "x"}
    assert fitted_metadata(one_more, ["source_uri"]).dropped_keys == ("note",)


def test_too_many_keys_bad_keys_and_bad_values_are_dropped(
    client: BaseClient, index: IndexSettings
) -> None:
    metadata: dict[str, Any] = {f"k{n:02d}": n for n in range(49)}
    metadata.update(
        {
            "longest-value": "z" * 100,
            "": "empty key",
            "k" * 64: "key too long",
            "none": None,
            "nested": {"a": 1},
            "matrix": [[1, 2]],
            "nan": float("nan"),
            "flag": np.bool_(True),
        }
    )
    fitted = fitted_metadata(metadata, ["source_uri"])
    assert len(fitted.metadata) == 50
    assert set(fitted.dropped_keys) == {
        "",
        "k" * 64,
        "none",
        "nested",
        "matrix",
        "nan",
        "longest-value",
    }
    assert fitted.metadata["flag"] is True
    outcome = put_vectors(client, index, [("many", vectors(1)[0], metadata)], Pacer(2500))
    assert outcome.vectors_written == 1


def test_an_oversize_whole_drops_the_largest_value(
    client: BaseClient, index: IndexSettings
) -> None:
    metadata = {"title": "Fox", "source_uri": "s3://c/" + "p" * 50_000}
    fitted = fitted_metadata(metadata, ["source_uri"])
    assert fitted.dropped_keys == ("source_uri",)
    assert "40960 bytes" in (fitted.warning or "")


# -- delete_vectors and query --------------------------------------------------------------


def test_delete_vectors_removes_keys_in_batches_of_500(
    client: BaseClient, index: IndexSettings, stand_in: Emulator
) -> None:
    put_vectors(client, index, rows(600), Pacer(2500))
    stand_in.reset_stats()
    doomed = [f"item-{n}#chunk=0" for n in range(550)]
    deleted = delete_vectors(client, index, [*doomed, doomed[-1], "never-existed"], Pacer(2500))
    assert deleted == 551
    assert calls(stand_in, "DeleteVectors") == 2
    assert stored_keys(client, index) == {f"item-{n}#chunk=0" for n in range(550, 600)}


def test_query_reads_top_250_across_pages_nearest_first(
    client: BaseClient, index: IndexSettings, stand_in: Emulator
) -> None:
    put_vectors(client, index, rows(400, seed=9), Pacer(2500))
    probe = vectors(1, seed=10)[0]
    stand_in.reset_stats()
    found = query(client, index, probe, top_k=250)
    assert len(found) == len({hit["key"] for hit in found}) == 250
    distances = [hit["distance"] for hit in found]
    assert distances == sorted(distances)
    assert calls(stand_in, "QueryVectors") == 3
    data = vectors(400, seed=9)
    cosine = 1 - (data @ probe) / (np.linalg.norm(data, axis=1) * np.linalg.norm(probe))
    nearest = {f"item-{n}#chunk=0" for n in np.argsort(cosine, kind="stable")[:200]}
    assert nearest <= {hit["key"] for hit in found}
    evens = query(client, index, probe, top_k=150, metadata_filter={"even": True})
    assert len(evens) == 150
    assert all(hit["metadata"]["even"] for hit in evens)


def test_query_refuses_top_k_beyond_the_service_limit(
    client: BaseClient, index: IndexSettings
) -> None:
    with pytest.raises(ValueError, match="top_k"):
        query(client, index, vectors(1)[0], top_k=10_001)
