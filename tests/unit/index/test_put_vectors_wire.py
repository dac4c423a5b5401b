"""What goes on the wire for PutVectors, now that novaflow serialises the vectors itself: the
same request botocore would have built, values that read back as the same float32, and the
same trimming of metadata."""

from __future__ import annotations

import json
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.client import BaseClient

from tasks.index.put_requests import (
    COMPACT_FLOAT_BYTES,
    MAX_FILTERABLE_BYTES,
    RAW_FLOAT_BYTES,
    wire_floats,
)
from tasks.pacing import Pacer
from tasks.settings import IndexSettings
from tasks.vector_store import fitted_metadata, put_vectors

INDEX = IndexSettings(vector_bucket="wire-tests", index="wire")


class _SentError(Exception):
    """Raised by the capturing hook instead of sending: the request never leaves the test."""


def _capturing_client(bodies: list[bytes]) -> BaseClient:
    """An S3 Vectors client on an unroutable endpoint whose PutVectors bodies are kept in
    ``bodies``, as they would have been sent, and never sent."""
    client = boto3.session.Session().client(
        "s3vectors",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )

    def capture(request: Any, **_: Any) -> None:
        bodies.append(bytes(request.body))
        raise _SentError

    client.meta.events.register("before-send.s3vectors.PutVectors", capture)
    return client


def _reference_wire_floats(vector: np.ndarray) -> tuple[list[float], int]:
    """The rounding as first written (np.power, isfinite), to check the faster one against."""
    values = vector.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = 8 - np.floor(np.log10(np.abs(values)))
    compact = np.isfinite(shift) & (shift >= 0) & (shift <= 22)
    scale = np.power(10.0, np.where(compact, shift, 0.0))
    wire = np.where(compact, np.round(values * scale) / scale, values)
    bound = int(np.where(compact, COMPACT_FLOAT_BYTES, RAW_FLOAT_BYTES).sum())
    return wire.tolist(), bound


def test_the_put_body_is_the_request_botocore_would_have_built() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3, 16)).astype(np.float32)
    metadata = [{"item_id": f"item-{n}", "café": "naïve ☕", "n": n} for n in range(3)]
    rows = [(f"item-{n}#chunk=0", vectors[n], metadata[n]) for n in range(3)]
    bodies: list[bytes] = []
    with pytest.raises(_SentError):
        put_vectors(_capturing_client(bodies), INDEX, iter(rows), Pacer(1000))
    sent = json.loads(bodies[0])
    expected = {
        "vectorBucketName": "wire-tests",
        "indexName": "wire",
        "vectors": [
            {
                "key": key,
                "data": {"float32": wire_floats(vector)[0].tolist()},
                "metadata": meta,
            }
            for key, vector, meta in rows
        ],
    }
    assert sent == expected
    # Every value reads back as exactly the float32 that was put.
    for entry, vector in zip(sent["vectors"], vectors, strict=True):
        assert np.array_equal(np.asarray(entry["data"]["float32"], dtype=np.float32), vector)


def test_a_client_used_for_other_puts_is_left_as_it_was() -> None:
    bodies: list[bytes] = []
    client = _capturing_client(bodies)
    with pytest.raises(_SentError):
        put_vectors(client, INDEX, iter([("a", np.ones(4, np.float32), {})]), Pacer(1000))
    # A plain put_vectors call on the same client: botocore's own serialisation, untouched.
    request = {"key": "b", "data": {"float32": [0.5, 0.25]}}
    with pytest.raises(_SentError):
        client.put_vectors(vectorBucketName="wire-tests", indexName="wire", vectors=[request])
    assert json.loads(bodies[1])["vectors"] == [request]


@pytest.mark.parametrize("seed", range(5))
def test_the_faster_rounding_gives_the_same_values_and_bound(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.integers(-20, 20, size=1024)
    vector = (rng.standard_normal(1024) * scales).astype(np.float32)
    edges = [0.0, -0.0, 1e-45, 1e-38, 3.4e38, 1e9, 9.99e8, 1e-14, np.inf, -np.inf, np.nan]
    vector[: len(edges)] = np.asarray(edges, dtype=np.float32)
    wire, bound = wire_floats(vector)
    reference, reference_bound = _reference_wire_floats(vector)
    assert bound == reference_bound
    assert np.array_equal(wire, np.asarray(reference), equal_nan=True)


def test_metadata_well_under_the_limits_is_kept_whole() -> None:
    metadata = {"item_id": "a", "source_uri": "s3://b/k", "page": 3, "tags": ["x", "y"]}
    fitted = fitted_metadata(metadata, ("source_uri",))
    assert (fitted.metadata, fitted.dropped_keys, fitted.warning) == (metadata, (), None)


def test_filterable_metadata_just_over_its_limit_is_still_trimmed() -> None:
    # The whole is over 2 KB only because of a non-filterable key: nothing is dropped; then a
    # filterable value of the same size is: the quick answer is only for wholes under 2 KB.
    big = "x" * MAX_FILTERABLE_BYTES
    kept = fitted_metadata({"item_id": "a", "source_uri": big}, ("source_uri",))
    assert kept.dropped_keys == ()
    trimmed = fitted_metadata({"item_id": "a", "text": big}, ("source_uri",))
    assert trimmed.dropped_keys == ("text",)
