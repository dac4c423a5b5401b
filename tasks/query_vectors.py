"""A query embedded as the index's vectors were: the same preparation of its input, the
``*_RETRIEVAL`` purpose matching what the index holds, the same model and dimension.

Shared by search and the evaluation's labeled queries.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import numpy as np

from tasks.aws_clients import bedrock_runtime_client
from tasks.media.payloads import image_file_payload, media_file_payload
from tasks.nova.requests import Payload, invoke_model_body, parsed_embeddings, query_purpose
from tasks.records import MODALITIES
from tasks.settings import EmbeddingSettings
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
_AUDIO_SUFFIXES = {".mp3", ".wav", ".ogg"}


def query_payload(text: str | None, file: Path | None, max_image_side_px: int) -> Payload:
    """The embedding input for a text query or a query file (image, audio or video); images
    are prepared as the indexed ones were."""
    if text is not None:
        return Payload(kind="text", text=text)
    if file is None:
        raise ValueError("a query is a text or a file")
    suffix = file.suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        return image_file_payload(file, max_image_side_px)
    return media_file_payload(file, "audio" if suffix in _AUDIO_SUFFIXES else "video")


def held_modalities(store: CheckpointStore, vector_bucket: str, index: str) -> frozenset[str]:
    """The modalities the index holds vectors of (all of them before the first run)."""
    held = StateDataset(store, vector_bucket, index).layout().held_modalities
    return frozenset(held or MODALITIES)


def query_vector(
    payload: Payload, settings: EmbeddingSettings, held: Collection[str]
) -> np.ndarray:
    """The query's vector (float32, ``settings.dimension``), embedded with the retrieval purpose
    that matches the ``held`` modalities."""
    body = invoke_model_body(payload, settings, query_purpose(set(held)))
    response = bedrock_runtime_client(2).invoke_model(
        modelId=settings.model_id,
        body=json.dumps(body),
        contentType="application/json",
        accept="application/json",
    )
    (_, vector), *_ = parsed_embeddings(response["body"].read(), settings.dimension)
    return np.asarray(vector, dtype=np.float32)
