"""Everything a user can set, typed and in one place.

``EmbeddingSettings`` holds what changes a vector: its hash (``config_hash``) decides whether an
unchanged item must be re-embedded. The others say how fast, where and at what price, and never
change a vector. Every field can also come from the environment as ``NOVAFLOW_<FIELD>`` (see
``NovaflowSettings``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.shared_quota import bucket_capacity

NOVA_MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
SHARDS_IN_PARALLEL = 2
"""Shards a run embeds side by side in one process, each with ``throughput.concurrency`` calls
in flight: the flow's task runner and the size of the shared Bedrock connection pool."""


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
    segment_seconds: int = Field(
        15, ge=1, le=30, description="async audio/video segment length (durationSeconds)"
    )
    async_text_segment_chars: int = Field(
        32_000, ge=800, le=50_000, description="async text segment length (maxLengthChars)"
    )
    all_media_async: bool = Field(
        False, description="embed every audio/video file with an async job, short ones too"
    )
    async_text_over_chars: int = Field(
        50_000,
        ge=8_193,
        description="texts longer than this go to an async job instead of sync chunks "
        "(50,000 characters is the sync limit for text read from S3)",
    )

    def config_hash(self) -> str:
        """16 hex digits that change whenever any field that shapes a vector changes."""
        canonical = self.model_dump_json()
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ThroughputSettings(_Frozen):
    """How fast novaflow may go. Bounded by these numbers, never by corpus size."""

    # A shard costs ~30 ms of CPU whatever its size (its task run, its units read, its three
    # checkpoint files written): 0.15 ms per unit at 200 units, 0.06 at 500. A crash or a
    # failed task redoes at most one shard's calls per shard in flight.
    shard_size: int = Field(500, ge=1, le=5000, description="units per Prefect task run")
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
    shared_rate_limit_name: str | None = Field(
        None,
        description="Prefect global concurrency limit, used as a rate limit, that holds the "
        "InvokeModel budget of every run that names it (None: each process paces itself alone)",
    )
    shared_requests_per_second: float | None = Field(
        None,
        gt=0,
        description="that budget: InvokeModel requests per second for all runs together; the "
        "limit is created or updated to hold half a second of it and refill at this rate",
    )
    shared_batch: int | None = Field(
        None,
        ge=1,
        description="requests a process takes from the shared budget per server round trip "
        "(None: a quarter of a second of the budget)",
    )
    shared_in_flight_limit_name: str | None = Field(
        None,
        description="Prefect global concurrency limit bounding model calls in flight for all "
        "runs together; each shard holds `concurrency` slots of it (None: not used)",
    )
    shared_in_flight: int | None = Field(
        None, ge=1, description="model calls in flight for all runs together"
    )
    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="threads: shards run in the flow's process; dask: spread over Dask workers",
    )
    dask_address: str | None = Field(
        None,
        description="an existing Dask scheduler (tcp://host:8786); None: a local cluster",
    )
    dask_workers: int = Field(
        2,
        ge=1,
        le=256,
        description="worker processes of the local cluster (or of the cluster at "
        "dask_address): shards in flight are SHARDS_IN_PARALLEL per worker",
    )

    @model_validator(mode="after")
    def _shared_settings_come_in_pairs(self) -> ThroughputSettings:
        pairs = (
            ("shared_rate_limit_name", "shared_requests_per_second"),
            ("shared_in_flight_limit_name", "shared_in_flight"),
        )
        for name, size in pairs:
            if (getattr(self, name) is None) != (getattr(self, size) is None):
                raise ValueError(f"{name} and {size} are set together or not at all")
        rate = self.shared_requests_per_second
        # Prefect refuses to grant more slots at once than a limit holds.
        if self.shared_batch is not None and (
            rate is None or self.shared_batch > bucket_capacity(rate)
        ):
            raise ValueError(
                "shared_batch needs shared_requests_per_second, and at most half a second of it"
            )
        if self.shared_in_flight is not None and self.shared_in_flight < self.concurrency:
            raise ValueError("shared_in_flight must be at least concurrency: a shard holds that")
        if self.dask_address is not None and self.task_runner != "dask":
            raise ValueError("dask_address is for task_runner='dask'")
        return self


class AsyncJobSettings(_Frozen):
    """How async embedding jobs (StartAsyncInvoke) are staged, submitted and polled.

    Polling backs off exponentially from ``poll_initial_seconds`` by ``poll_multiplier`` up to
    ``poll_max_seconds``; each interval is drawn from ``[1 - poll_jitter, 1]`` times its nominal
    length, so a job is noticed at most one current interval after it ends.
    """

    staging_uri: str = Field(
        "s3://novaflow-async/staging",
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="where local files are uploaded for async jobs (S3 inputs stay in place)",
    )
    output_uri: str = Field(
        "s3://novaflow-async/output",
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="where Bedrock writes job results (one folder per job)",
    )
    max_jobs_in_flight: int = Field(
        8, ge=1, le=1000, description="jobs submitted and not yet ended, at most"
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="submissions of a job that keeps failing, then quarantined"
    )
    poll_initial_seconds: float = Field(2.0, gt=0, le=600)
    poll_multiplier: float = Field(1.5, ge=1.0, le=4.0)
    poll_max_seconds: float = Field(300.0, gt=0, le=3600)
    poll_jitter: float = Field(0.2, ge=0.0, lt=1.0)
    status_calls_per_second: float = Field(
        5.0, gt=0, description="GetAsyncInvoke pace; throttled status calls lower it"
    )
    job_deadline_seconds: float = Field(
        6 * 3600.0, gt=0, description="a job still running this long after submission is given up"
    )
    multipart_threshold_mb: int = Field(
        64, ge=5, le=5120, description="uploads at least this large go in parts"
    )


class BatchInferenceSettings(_Frozen):
    """Bedrock batch inference (CreateModelInvocationJob) for the synchronous units of a run,
    meant for backfills: half the on-demand price and a quota of its own, at the cost of hours
    of latency. When ``enabled``, a run writes its shards' model inputs as JSONL files (one per
    shard, split where a file would pass ``max_file_bytes``), groups whole shards into jobs
    within the job limits, and embeds through InvokeModel only what is too few for a job
    (fewer than ``min_records_per_job`` units). The limits' defaults are Bedrock's default
    quotas (see the README's "Batch inference"); raise them only where your account's are.

    Jobs are polled like async jobs: from ``poll_initial_seconds``, ``poll_multiplier`` times
    longer each time up to ``poll_max_seconds``, each interval shortened by up to
    ``poll_jitter`` of itself."""

    enabled: bool = Field(False, description="embed sync units with batch inference jobs")
    role_arn: str | None = Field(
        None,
        pattern=r"^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+$",
        description="the service role Bedrock assumes to read the inputs and write the "
        "outputs; required with the aws backend (the stand-in takes any role)",
    )
    input_uri: str = Field(
        "s3://novaflow-async/batch-input",
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="where the JSONL inputs are written (one folder per job, removed once "
        "the job is collected)",
    )
    output_uri: str = Field(
        "s3://novaflow-async/batch-output",
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="where Bedrock writes the jobs' results (one folder per job)",
    )
    min_records_per_job: int = Field(100, ge=1, description="Bedrock's quota: fewer go on demand")
    max_records_per_job: int = Field(50_000, ge=1, le=10_000_000)
    max_records_per_file: int = Field(50_000, ge=1, le=10_000_000)
    max_file_bytes: int = Field(1_000_000_000, ge=1_000_000)
    max_job_bytes: int = Field(5_000_000_000, ge=1_000_000)
    timeout_hours: int = Field(24, ge=24, le=168, description="a job not done by then expires")
    max_jobs_in_flight: int = Field(
        10, ge=1, le=1000, description="jobs created and not yet ended, at most"
    )
    poll_initial_seconds: float = Field(60.0, gt=0, le=3600)
    poll_multiplier: float = Field(1.5, ge=1.0, le=4.0)
    poll_max_seconds: float = Field(900.0, gt=0, le=3600)
    poll_jitter: float = Field(0.2, ge=0.0, lt=1.0)
    status_calls_per_second: float = Field(
        2.0, gt=0, description="GetModelInvocationJob pace; throttled status calls lower it"
    )

    @model_validator(mode="after")
    def _limits_fit(self) -> BatchInferenceSettings:
        if self.min_records_per_job > self.max_records_per_job:
            raise ValueError("min_records_per_job is above max_records_per_job")
        if self.max_file_bytes > self.max_job_bytes:
            raise ValueError("max_file_bytes is above max_job_bytes")
        return self


class IndexSettings(_Frozen):
    """Where vectors go and how they are compared."""

    # S3 Vectors takes names of 3-63 characters (aws-apis.md §2, CreateVectorBucket and
    # CreateIndex): refused here rather than by the load, after the whole run's embedding.
    vector_bucket: str = Field("novaflow", min_length=3, max_length=63)
    index: str = Field("corpus", min_length=3, max_length=63)
    metric: Literal["cosine", "euclidean"] = "cosine"
    non_filterable_keys: tuple[str, ...] = ("source_uri",)
    searchable_text: bool = Field(
        False,
        description="store each text chunk's and PDF page's text in a full-text searchable "
        "metadata key (ENHANCED indexes), for `search --mode text|hybrid` and the evaluation",
    )
    text_language: Literal["en", "fr", "es", "pt", "it", "de", "nl", "zh", "ja", "ko"] = Field(
        "en", description="the analyzer of the searchable text"
    )
    writer_wait_seconds: float = Field(
        0.0,
        ge=0,
        description="how long a run waits for another run writing the same index to end "
        "before it is refused (0: refused at once; a schedule beside backfills may want hours)",
    )


class EvaluationSettings(_Frozen):
    """How a run's evaluation measures the index (``novaflow evaluate``, and the last stage of
    ``novaflow run`` unless ``enabled`` is off). Gates fail the evaluation when a headline figure
    falls below its threshold, after the report is written."""

    enabled: bool = Field(True, description="evaluate at the end of every `novaflow run`")
    sample_size: int = Field(
        200, ge=1, le=100_000, description="query vectors sampled from the checkpoints"
    )
    seed: int = Field(0, description="seeds the sample, so runs compare like with like")
    ks: tuple[int, ...] = Field((1, 10, 100), description="recall@k for each k")
    tie_tolerance: float = Field(
        1e-5, ge=0, description="a returned key this close to the k-th exact distance counts"
    )
    metadata_filter: dict[str, Any] | None = Field(
        None, description="also measure recall under this filter (equality on metadata keys)"
    )
    query_file: str | None = Field(
        None, description="Parquet of query vectors (`embedding`, optional `key`, `modality`)"
    )
    qrels: str | None = Field(None, description="labeled queries (JSONL), see the README")
    labeled_ks: tuple[int, ...] = Field((1, 5, 10), description="cutoffs of the labeled metrics")
    dimensions: tuple[int, ...] = Field(
        (256, 384, 1024),
        description="Matryoshka prefixes to compare against the embedded dimension (() skips)",
    )
    queries_per_second: float = Field(50.0, gt=0, description="QueryVectors pace")
    block_rows: int = Field(
        8192, ge=16, le=1_000_000, description="checkpoint rows per block of exact search"
    )
    worst_queries: int = Field(10, ge=0, le=1000)
    min_recall: float | None = Field(
        None, ge=0, le=1, description="gate on index_recall@10 (or the largest k below it)"
    )
    gates: dict[str, float] = Field(
        default_factory=dict,
        description="headline figure → lowest acceptable value, e.g. {'labeled_ndcg@10': 0.5}",
    )


class Prices(_Frozen):
    """On-demand prices in USD (us-east-1; see aws-apis.md §1.9 — verify before quoting)."""

    text_per_million_tokens: float = 0.135
    per_image: float = 0.00006
    video_per_second: float = 0.0007
    audio_per_second: float = 0.00014
    # Bedrock batch inference bills "50% of on-demand" for the models that support it: the
    # figure AWS's pricing page and several FinOps write-ups give (aws-apis.md; verify).
    batch_share_of_on_demand: float = Field(0.5, gt=0, le=1)


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
    async_jobs: AsyncJobSettings = Field(default_factory=AsyncJobSettings)
    batch_inference: BatchInferenceSettings = Field(default_factory=BatchInferenceSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    prices: Prices = Field(default_factory=Prices)

    @model_validator(mode="after")
    def _batch_role(self) -> NovaflowSettings:
        batch = self.batch_inference
        if batch.enabled and self.backend == "aws" and not batch.role_arn:
            raise ValueError(
                "batch_inference.role_arn is required to run batch inference on AWS: the ARN of "
                "a service role Bedrock may assume to read batch_inference.input_uri and write "
                "batch_inference.output_uri (NOVAFLOW_BATCH_INFERENCE__ROLE_ARN)"
            )
        return self

    def batch_role_arn(self) -> str:
        """The role batch jobs run as: the configured one, or any well-formed ARN for the
        stand-in, which checks the form only."""
        return self.batch_inference.role_arn or "arn:aws:iam::000000000000:role/novaflow-batch"
