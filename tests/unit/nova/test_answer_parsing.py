"""An InvokeModel answer's floats are read in C (orjson) and give the same float32 vector as
Python's json reading, for the values a service prints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.nova.requests import parsed_embeddings


@pytest.mark.parametrize("seed", range(3))
def test_the_vector_read_is_the_one_json_reads(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(1024) * 10.0 ** rng.integers(-30, 30, 1024)).astype(np.float32)
    printed = [f"{value:.17g}" for value in values.tolist()]  # long forms too
    body = (
        '{"embeddings": [{"embeddingType": "TEXT", "embedding": [' + ", ".join(printed) + "]}]}"
    ).encode()
    ((kind, vector),) = parsed_embeddings(body, dimension=1024)
    expected = np.asarray(json.loads(body)["embeddings"][0]["embedding"], dtype=np.float32)
    assert kind == "TEXT"
    assert vector.dtype == np.float32
    assert np.array_equal(vector, expected)
