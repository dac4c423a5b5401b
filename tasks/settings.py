"""Everything a user can set, typed and in one place.

``EmbeddingSettings`` holds what changes a vector: its hash (``config_hash``) decides whether an
unchanged item must be re-embedded. The others say how fast, where and at what price, and never
change a vector. Every field can also come from the environment as ``NOVAFLOW_<FIELD>`` (see
``NovaflowSettings``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

NOVA_MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmbeddingSettings(_Frozen):
    """What goes into a vector. Changing any field re-embeds the whole corpus."""

    model_id: str = NOVA_MODEL_ID
    dimension: Literal[256, 384, 1024, 3072] = 1024
    pdf_dpi: int = Field(150, ge=36, le=600, description="render resolution of PDF pages")
    pdf_image_format: Literal["jpeg", "png"] = Field(
        "jpeg", description="encoding of rendered pages: JPEG encodes ~5x faster than PNG"
    )
    pdf_jpeg_quality: int = Field(85, ge=30, le=100)
    max_image_side_px: int = Field(
        4096, ge=256, le=16384, description="longer sides are downscaled before embedding"
    )
    text_chunk_chars: int = Field(
        8000, ge=800, le=8192, description="inline text limit is 8,192 characters"
    )
    truncation_mode: Literal["START", "END", "NONE"] = "END"
    video_embedding_mode: Literal["AUDIO_VIDEO_COMBINED", "AUDIO_VIDEO_SEPARATE"] = (
        "AUDIO_VIDEO_COMBINED"
    )
    segment_seconds: int = Field(15, ge=1, le=30, description="async audio/video segment length")
    async_text_segment_chars: int = Field(32_000, ge=800, le=50_000)

    def config_hash(self) -> str:
        """16 hex digits that change whenever any field that shapes a vector changes."""
        canonical = self.model_dump_json()
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ThroughputSettings(_Frozen):
    """How fast novaflow may go. Bounded by these numbers, never by corpus size."""

    shard_size: int = Field(200, ge=1, le=5000, description="units per Prefect task run")
    concurrency: int = Field(8, ge=1, le=256, description="model calls in flight per shard")
    requests_per_second: float = Field(
        20.0, gt=0, description="model-call pace per process, under the account's quota"
    )
    max_throttle_retries: int = Field(
        8, ge=0, description="times a throttled unit is re-queued after botocore's own retries"
    )
    render_processes: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, le=64)
    concurrency_limit_name: str | None = Field(
        None,
        description="Prefect global concurrency limit taken once per shard (None: not used)",
    )
    index_vectors_per_second: float = Field(
        2500.0, gt=0, description="S3 Vectors writes: 2,500 vectors/s per index"
    )


class IndexSettings(_Frozen):
    """Where vectors go and how they are compared."""

    vector_bucket: str = "novaflow"
    index: str = "corpus"
    metric: Literal["cosine", "euclidean"] = "cosine"
    non_filterable_keys: tuple[str, ...] = ("source_uri",)


class Prices(_Frozen):
    """On-demand prices in USD (us-east-1; see aws-apis.md §1.9 — verify before quoting)."""

    text_per_million_tokens: float = 0.135
    per_image: float = 0.00006
    video_per_second: float = 0.0007
    audio_per_second: float = 0.00014


class NovaflowSettings(BaseSettings):
    """All settings, read from ``NOVAFLOW_*`` environment variables (nested with ``__``)."""

    model_config = SettingsConfigDict(
        env_prefix="NOVAFLOW_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    store: str = Field(".novaflow/store", description="checkpoint store: a directory or s3://…")
    backend: Literal["local", "aws"] = Field(
        "local", description="local: start the embedded stand-in; aws: use the real endpoints"
    )
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    throughput: ThroughputSettings = Field(default_factory=ThroughputSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    prices: Prices = Field(default_factory=Prices)
