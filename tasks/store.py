"""The checkpoint store: every path novaflow writes, decided here and nowhere else.

A local directory or an ``s3://bucket/prefix``, both through ``pyarrow.fs`` so there is one code
path. Writes are atomic: a table is written under a temporary name and renamed into place (on
S3 a single PUT is already atomic, and a rename would be a copy, so it is written directly).
A reader therefore sees a whole file or none, and a killed run leaves no half-written shard.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def unit_digest(unit_key: str) -> str:
    """20 hex digits naming an async unit in file names and S3 prefixes."""
    return hashlib.sha256(unit_key.encode()).hexdigest()[:20]


def job_part_name(unit_key: str) -> str:
    """The file name of an async unit's checkpoints (embeddings and failures)."""
    return f"job-{unit_digest(unit_key)}.parquet"


def is_job_part(path: str) -> bool:
    """Whether a checkpoint file holds an async job's segments (not a shard's vectors)."""
    return path.rsplit("/", 1)[-1].startswith("job-")


def _is_vector_column(data_type: pa.DataType) -> bool:
    """A list of floats: an embedding column (``embedding``, 1,024 float32 a row)."""
    is_list = (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    )
    return is_list and pa.types.is_floating(data_type.value_type)


def _leaf_paths(name: str, data_type: pa.DataType) -> Iterator[str]:
    """The Parquet column paths of an Arrow field, as pyarrow names them (compliant nesting:
    ``name.list.element``, ``name.key_value.key``, ``name.child``)."""
    if pa.types.is_struct(data_type):
        for child in data_type:
            yield from _leaf_paths(f"{name}.{child.name}", child.type)
    elif pa.types.is_map(data_type):
        yield from _leaf_paths(f"{name}.key_value.key", data_type.key_type)
        yield from _leaf_paths(f"{name}.key_value.value", data_type.item_type)
    elif (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    ):
        yield from _leaf_paths(f"{name}.list.element", data_type.value_type)
    else:
        yield name


def parquet_encoding(schema: pa.Schema) -> dict[str, list[str]]:
    """Writer options for a table of ``schema``: the defaults, except that embedding columns get
    neither a dictionary nor statistics.

    Parquet tries a dictionary for every column first and falls back to plain encoding once it
    outgrows its page; distinct floats always do, so for a 1,024-d embedding column the attempt
    is pure waste: ~15 ms and ~30 MB for a moment per 200-row shard, and a larger file. Nor does
    any reader filter on an embedding's min/max. The values are the same either way, and the
    file stays plain Parquet any reader opens."""
    vectors = [field.name for field in schema if _is_vector_column(field.type)]
    if not vectors:
        return {}
    others = [
        path
        for field in schema
        if field.name not in vectors
        for path in _leaf_paths(field.name, field.type)
    ]
    return {"use_dictionary": others, "write_statistics": others}


@dataclass(frozen=True)
class CheckpointStore:
    """Paths and atomic Parquet I/O under one root (``root`` is a directory or ``s3://…``)."""

    root: str

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem behind ``root``."""
        return self._resolved[0]

    @cached_property
    def _resolved(self) -> tuple[pafs.FileSystem, str]:
        # Resolved once per store: from_uri builds a filesystem (an S3 client for s3://).
        filesystem, base = pafs.FileSystem.from_uri(self._absolute_root())
        return filesystem, base.rstrip("/")

    def _absolute_root(self) -> str:
        if "://" in self.root:
            return self.root
        return Path(self.root).expanduser().resolve().as_posix()

    def _is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def _path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` below the root: for the catalogue's methods only."""
        return "/".join([self._resolved[1], *parts])

    def uri(self, path: str) -> str:
        """A path of this store as a URI any reader opens: the path itself locally,
        ``s3://…`` on S3."""
        return f"s3://{path}" if self._is_s3() else path

    # -- the catalogue -------------------------------------------------------------------------

    def runs_dir(self) -> str:
        """``runs/``: one folder per run."""
        return self._path("runs")

    def run_dir(self, run_id: str) -> str:
        """``runs/<run_id>``: everything one run decided."""
        return self._path("runs", run_id)

    def run_record_path(self, run_id: str) -> str:
        """What a run was asked to do (JSON), written before any of its work."""
        return self._path("runs", run_id, "run.json")

    def lease_path(self, run_id: str) -> str:
        """Who is working on a run now (JSON): one live holder at a time."""
        return self._path("runs", run_id, "lease.json")

    def manifest_path(self, run_id: str) -> str:
        """The resolved manifest of a run."""
        return self._path("runs", run_id, "manifest.parquet")

    def plan_path(self, run_id: str) -> str:
        """The plan of a run: per item, what it does and why."""
        return self._path("runs", run_id, "plan.parquet")

    def plan_totals_path(self, run_id: str) -> str:
        """The plan's totals (JSON), written last: present means the whole plan is on disk."""
        return self._path("runs", run_id, "plan-totals.json")

    def sync_units_path(self, run_id: str) -> str:
        """Every synchronous unit of a run's plan with its input digest and estimated cost,
        before the ones whose vector already exists are set aside for reuse."""
        return self._path("runs", run_id, "sync_units.parquet")

    def reused_units_path(self, run_id: str) -> str:
        """The units of a run that take an existing vector: which run's which key."""
        return self._path("runs", run_id, "reused_units.parquet")

    def digests_dir(self, config_hash: str) -> str:
        """Which key of which run holds the vector of each input digest, under one embedding
        config: a file per run (``run=<id>.parquet``), sorted by digest."""
        return self._path("digests", f"config={config_hash}")

    def reused_embeddings_path(self, run_id: str) -> str:
        """The run's checkpoint rows of reused vectors, beside its shards' and jobs'."""
        return f"{self.embeddings_dir(run_id)}/reused.parquet"

    def async_units_path(self, run_id: str) -> str:
        """The units of a run that go to async jobs, as its plan wrote them."""
        return self._path("runs", run_id, "async_units.parquet")

    def outcomes_dir(self, run_id: str) -> str:
        """What each finished shard and the async stage counted, a JSON file each."""
        return self._path("runs", run_id, "outcomes")

    def shard_outcome_path(self, run_id: str, shard: int) -> str:
        """What one finished shard counted (JSON): present means the shard need not run again."""
        return self._path("runs", run_id, "outcomes", f"shard-{shard:05d}.json")

    def async_outcome_path(self, run_id: str) -> str:
        """What the async jobs stage counted (JSON)."""
        return self._path("runs", run_id, "outcomes", "async.json")

    def shard_units_path(self, run_id: str, shard: int) -> str:
        """The units of one shard of a run's embedding work."""
        return self._path("runs", run_id, "shards", f"shard-{shard:05d}.parquet")

    def summary_path(self, run_id: str) -> str:
        """The run summary (JSON)."""
        return self._path("runs", run_id, "summary.json")

    def embeddings_root(self) -> str:
        """``embeddings/``: every run's checkpointed vectors, a ``run=<id>`` folder each."""
        return self._path("embeddings")

    def report_path(self, run_id: str, name: str) -> str:
        """One file of a run's evaluation report (``report.json``, ``report.html``…)."""
        return self._path("reports", run_id, name)

    def reports_root(self) -> str:
        """``reports/``: every run's evaluation report, a folder each."""
        return self._path("reports")

    def embeddings_dir(self, run_id: str) -> str:
        """Where a run's embedding shards go."""
        return self._path("embeddings", f"run={run_id}")

    def embeddings_path(self, run_id: str, shard: int) -> str:
        """The embeddings of one shard: present means that shard is done."""
        return self._path("embeddings", f"run={run_id}", f"part-{shard:05d}.parquet")

    def job_embeddings_path(self, run_id: str, unit_key: str) -> str:
        """The segments of one async unit's job: the name is fixed per unit, so collecting a job
        again after a crash rewrites the same file instead of adding one."""
        return self._path("embeddings", f"run={run_id}", job_part_name(unit_key))

    def run_failures_dir(self, run_id: str) -> str:
        """Where a run's stages put the units and items they quarantined, a file each."""
        return self._path("failures", f"run={run_id}")

    def manifest_failures_path(self, run_id: str) -> str:
        """The manifest rows a run could not resolve to an item."""
        return self._path("failures", f"run={run_id}", "manifest.parquet")

    def plan_failures_path(self, run_id: str) -> str:
        """The items the plan quarantined (unreadable PDFs, media over the limits…)."""
        return self._path("failures", f"run={run_id}", "plan.parquet")

    def job_failures_path(self, run_id: str, unit_key: str) -> str:
        """The failed segments (or the failed job) of one async unit."""
        return self._path("failures", f"run={run_id}", job_part_name(unit_key))

    def reused_failures_path(self, run_id: str) -> str:
        """The reused units that found no vector to take."""
        return self._path("failures", f"run={run_id}", "reused.parquet")

    def shard_failures_path(self, run_id: str, shard: int) -> str:
        """The units one shard quarantined."""
        return self._path("failures", f"run={run_id}", f"part-{shard:05d}.parquet")

    def failures_path(self, run_id: str) -> str:
        """All of a run's quarantined items and units, gathered at the end of the run."""
        return self._path("failures", f"{run_id}.parquet")

    def jobs_path(self, run_id: str) -> str:
        """The async job ledger of a run."""
        return self._path("jobs", f"{run_id}.parquet")

    def jobs_log_dir(self, run_id: str) -> str:
        """The async job ledger's append-only change files, folded into :meth:`jobs_path`."""
        return self._path("jobs", run_id)

    def state_dir(self, vector_bucket: str, index: str) -> str:
        """What an index holds now, item by item: a Parquet dataset (see :mod:`tasks.state`)."""
        return self._path("state", vector_bucket, index)

    def index_lease_path(self, vector_bucket: str, index: str) -> str:
        """Which run is writing an index now (JSON): one at a time, for its state's commits
        would otherwise undo each other."""
        return self._path("indexes", vector_bucket, index, "lease.json")

    def state_layout_path(self, vector_bucket: str, index: str) -> str:
        """The state's layout (JSON): how many partitions, and the items in each."""
        return self._path("state", vector_bucket, index, "layout.json")

    def state_partitions_dir(self, vector_bucket: str, index: str, bits: int) -> str:
        """The state's partition files when it has ``2**bits`` partitions."""
        return self._path("state", vector_bucket, index, f"items-{bits:02d}")

    def state_file_path(self, vector_bucket: str, index: str, bits: int, name: str) -> str:
        """One file of the state's partitions (``name`` as the state's layout lists it)."""
        return f"{self.state_partitions_dir(vector_bucket, index, bits)}/{name}"

    def state_commit_path(self, vector_bucket: str, index: str) -> str:
        """The commit under way (JSON): which run, which partitions; present only while a commit
        runs, or after one was interrupted, until the next run finishes it."""
        return self._path("state", vector_bucket, index, "commit.json")

    def legacy_state_path(self, vector_bucket: str, index: str) -> str:
        """The single-file state novaflow wrote before its state was partitioned: migrated to
        the partitioned dataset on first use."""
        return self._path("state", vector_bucket, index, "state.parquet")

    def reports_dir(self, run_id: str) -> str:
        """Evaluation reports of a run."""
        return self._path("reports", run_id)

    # -- backfills (see tasks/backfill) --------------------------------------------------------

    def backfill_dir(self, backfill_id: str) -> str:
        """``backfills/<backfill_id>``: everything one backfill decided."""
        return self._path("backfills", backfill_id)

    def backfill_record_path(self, backfill_id: str) -> str:
        """What a backfill was asked to do (JSON), written before any of its work."""
        return self._path("backfills", backfill_id, "backfill.json")

    def backfill_lease_path(self, backfill_id: str) -> str:
        """Who is working on a backfill now (JSON): one live holder at a time."""
        return self._path("backfills", backfill_id, "lease.json")

    def partition_manifest_path(self, backfill_id: str, partition: int) -> str:
        """One partition's manifest (Parquet, ``uri`` ``id`` ``modality`` ``metadata``
        ``encoding`` and the row's place in the source, ``source_row``)."""
        return self._path("backfills", backfill_id, "partitions", f"part-{partition:05d}.parquet")

    def partition_set_path(self, backfill_id: str) -> str:
        """How the source was cut into partitions (JSON), written last: present means every
        partition manifest is on disk."""
        return self._path("backfills", backfill_id, "partitions.json")

    def backfill_rejected_path(self, backfill_id: str) -> str:
        """The source rows the partitioning rejected (malformed, a duplicate id), as failures."""
        return self._path("backfills", backfill_id, "rejected.parquet")

    def backfill_outcomes_dir(self, backfill_id: str) -> str:
        """How each partition of a backfill ended, a JSON file each."""
        return self._path("backfills", backfill_id, "outcomes")

    def partition_outcome_path(self, backfill_id: str, partition: int) -> str:
        """How one partition's run ended (JSON): present and ``completed`` means it is done."""
        return self._path("backfills", backfill_id, "outcomes", f"part-{partition:05d}.json")

    def backfill_evaluation_path(self, backfill_id: str) -> str:
        """How the backfill's evaluation ended (JSON): passed, failed or skipped."""
        return self._path("backfills", backfill_id, "evaluation.json")

    def backfill_summary_path(self, backfill_id: str) -> str:
        """The backfill's summary (JSON), rewritten at the end of every attempt."""
        return self._path("backfills", backfill_id, "summary.json")

    def partition_record_path(self, run_id: str) -> str:
        """Which backfill partition a run is (JSON), written before the run starts: present
        means the run covers part of the corpus, so its plan removes nothing."""
        return self._path("runs", run_id, "partition.json")

    def active_index_path(self) -> str:
        """Which index is the live one (JSON), written by an explicit switch after a backfill
        into a new index completed and passed its evaluation."""
        return self._path("active-index.json")

    def known_files_path(self, directory_real: str) -> str:
        """What the last crawl of a local directory (its real path) learned of its files
        (:mod:`tasks.corpus.known_files`), one file per directory, named by its path's hash."""
        name = hashlib.sha256(directory_real.encode("utf-8", "surrogateescape")).hexdigest()
        return self._path("known-files", f"{name[:24]}.parquet")

    # -- I/O -----------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        """Whether a file exists at ``path``."""
        return self.filesystem.get_file_info(path).type == pafs.FileType.File

    @contextmanager
    def _atomic_target(self, path: str) -> Iterator[str]:
        """A name to write ``path``'s content under: a temporary one beside it, renamed into
        place when the ``with`` block succeeds and removed when it fails; on S3, where a single
        PUT is already atomic and a rename would be a copy, ``path`` itself."""
        filesystem = self.filesystem
        directory, name = path.rsplit("/", 1)
        filesystem.create_dir(directory, recursive=True)
        if self._is_s3():
            yield path
            return
        temporary = f"{directory}/.tmp-{uuid.uuid4().hex}-{name}"
        try:
            yield temporary
            filesystem.move(temporary, path)
        finally:
            if filesystem.get_file_info(temporary).type == pafs.FileType.File:
                filesystem.delete_file(temporary)

    def write_table(self, path: str, table: pa.Table, row_group_rows: int | None = None) -> None:
        """Write ``table`` to ``path`` atomically (zstd-compressed Parquet, row groups of at
        most ``row_group_rows`` rows when given)."""
        with self._atomic_target(path) as target:
            pq.write_table(
                table,
                target,
                filesystem=self.filesystem,
                compression="zstd",
                row_group_size=row_group_rows,
                **parquet_encoding(table.schema),
            )

    @contextmanager
    def table_writer(self, path: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """A Parquet writer for streaming batches to ``path``; the file appears (atomically)
        only when the ``with`` block ends without an exception."""
        with (
            self._atomic_target(path) as target,
            pq.ParquetWriter(
                target,
                schema,
                filesystem=self.filesystem,
                compression="zstd",
                **parquet_encoding(schema),
            ) as writer,
        ):
            yield writer

    def read_table(
        self, path: str, schema: pa.Schema | None = None, use_threads: bool = True
    ) -> pa.Table:
        """Read the Parquet file at ``path``; with ``schema``, only those columns (a file
        holding more columns is read in part), after checking it holds them.
        ``use_threads=False`` for the many small files of a loop: threads buy nothing there
        and each leaves memory in its allocator arena."""
        if schema is None:
            return pq.read_table(path, filesystem=self.filesystem, use_threads=use_threads)
        try:
            table = pq.read_table(
                path, columns=schema.names, filesystem=self.filesystem, use_threads=use_threads
            )
        except pa.ArrowInvalid:
            held = pq.read_schema(path, filesystem=self.filesystem).names
            missing = [name for name in schema.names if name not in held]
            if not missing:
                raise
            raise ValueError(f"{path} lacks columns {missing}: not a novaflow file?") from None
        return table.select(schema.names).cast(schema)

    def batches(
        self, path: str, columns: list[str] | None = None, batch_size: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """The Parquet file at ``path`` streamed as record batches of ``columns`` (all when
        None), one row group's column chunks read at a time: pyarrow's default ``pre_buffer``
        would fetch every row group's up front, the whole file."""
        parquet = pq.ParquetFile(path, filesystem=self.filesystem, pre_buffer=False)
        yield from parquet.iter_batches(batch_size=batch_size, columns=columns, use_threads=False)

    def write_text(self, path: str, text: str) -> None:
        """Write a small text file (JSON, Markdown) atomically."""
        with (
            self._atomic_target(path) as target,
            self.filesystem.open_output_stream(target) as stream,
        ):
            stream.write(text.encode())

    def delete(self, path: str) -> None:
        """Remove the file or directory at ``path`` (nothing if it is absent)."""
        info = self.filesystem.get_file_info(path)
        if info.type == pafs.FileType.File:
            self.filesystem.delete_file(path)
        elif info.type == pafs.FileType.Directory:
            self.filesystem.delete_dir(path)

    def read_text(self, path: str) -> str:
        """Read a small text file."""
        with self.filesystem.open_input_stream(path) as stream:
            return stream.read().decode()

    def list_files(self, directory: str, suffix: str = ".parquet") -> list[str]:
        """The files directly in ``directory`` ending in ``suffix``, sorted; [] if it is absent."""
        selector = pafs.FileSelector(directory, allow_not_found=True)
        return sorted(
            info.path
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.path.endswith(suffix)
            and not info.base_name.startswith(".tmp-")
        )
