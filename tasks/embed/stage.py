"""Stage 2 of a run: embed one shard of units and checkpoint the result.

A shard is the unit of work of one task run: hundreds of units, rendered (PDF pages, in a
process pool) and embedded (a bounded thread pool, paced) inside it. Its embeddings file is
written last and atomically, so its presence means the shard is done and a restarted run skips
it; its failures and counters are written just before.
"""

from __future__ import annotations

import atexit
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from tasks import schemas
from tasks.aws_clients import bedrock_runtime_client
from tasks.embed.embedder import EmbeddedUnit, Embedder
from tasks.local_copies import local_source
from tasks.media.images import PreparationError, PreparedImage
from tasks.media.payloads import image_file_payload, image_payload, media_file_payload
from tasks.media.pdf_pages import PageRenderer
from tasks.media.texts import decoded_text
from tasks.nova.requests import Payload
from tasks.outcomes import ShardOutcome
from tasks.pacing import Pacer, RequestPacer
from tasks.records import Failure, Unit, metadata_json
from tasks.settings import SHARDS_IN_PARALLEL, EmbeddingSettings, NovaflowSettings
from tasks.store import CheckpointStore
from tasks.tables import failures_table, units_from_table, vector_metadata

Work = tuple[str, str, Callable[[], Payload]]


@lru_cache(maxsize=4)
def process_pacer(requests_per_second: float) -> Pacer:
    """The one pacer of this process for a rate: shards embedded side by side in one process
    share it, so together they stay under the rate instead of each taking all of it."""
    return Pacer(requests_per_second)


# One shard's embeddings file written at a time in this process; see ``_write_embeddings``.
_embeddings_writes = threading.Lock()
_idle_renderers: list[tuple[tuple[int, str], PageRenderer]] = []
_renderers_lock = threading.Lock()


@contextmanager
def borrowed_renderer(processes: int, settings: EmbeddingSettings) -> Iterator[PageRenderer]:
    """A page renderer kept alive across shards: its worker processes take a second or two to
    spawn, which a run of many shards would otherwise pay once per shard. Shards running side by
    side each borrow their own; one that fails is closed rather than returned."""
    key = (processes, settings.model_dump_json())
    with _renderers_lock:
        index = next((i for i, (k, _) in enumerate(_idle_renderers) if k == key), None)
        renderer = _idle_renderers.pop(index)[1] if index is not None else None
    if renderer is None:
        renderer = PageRenderer(processes, settings)
    try:
        yield renderer
    except BaseException:
        renderer.close()
        raise
    with _renderers_lock:
        _idle_renderers.append((key, renderer))


@atexit.register
def _close_idle_renderers() -> None:
    with _renderers_lock:
        while _idle_renderers:
            _idle_renderers.pop()[1].close()


@lru_cache(maxsize=8)
def _text_of(path: str, encoding: str | None) -> str:
    return decoded_text(Path(path).read_bytes(), encoding)


def _payload_of(unit: Unit, local: Path, settings: NovaflowSettings) -> Payload:
    """The embedding input of a non-PDF unit (PDF pages come from the page renderer)."""
    if unit.kind == "text_chunk":
        text = _text_of(str(local), unit.encoding)
        return Payload(kind="text", text=text[unit.char_start : unit.char_end])
    if unit.kind == "image":
        return image_file_payload(local, settings.embedding.max_image_side_px)
    s3_uri = unit.uri if unit.uri.startswith("s3://") else None
    return media_file_payload(local, unit.kind, s3_uri)  # type: ignore[arg-type]


def _work(
    units: list[Unit], settings: NovaflowSettings, renderer: PageRenderer | None
) -> Iterator[Work]:
    """Each unit with a function that makes its payload; PDF pages are rendered ahead in the
    renderer's processes, in order, a bounded number at a time (``renderer`` may be None only
    when there are no pages)."""
    pages = [unit for unit in units if unit.kind == "pdf_page"]
    others = [unit for unit in units if unit.kind != "pdf_page"]
    locals_by_item: dict[str, Path] = {}

    def local_of(unit: Unit) -> Path:
        if unit.item_id not in locals_by_item:
            locals_by_item[unit.item_id] = local_source(unit.uri, unit.fingerprint)
        return locals_by_item[unit.item_id]

    if pages and renderer is None:
        raise ValueError("a shard with PDF pages needs a page renderer")
    rendered = (
        renderer.render((str(local_of(unit)), unit.page or 1) for unit in pages)
        if renderer is not None
        else iter(())
    )
    for unit, (_, _, image) in zip(pages, rendered, strict=True):

        def page_payload(image: PreparedImage | PreparationError = image) -> Payload:
            if isinstance(image, PreparationError):
                raise image
            return image_payload(image, "DOCUMENT_IMAGE")

        yield unit.key, unit.item_id, page_payload
    for unit in others:
        yield (
            unit.key,
            unit.item_id,
            (lambda unit=unit: _payload_of(unit, local_of(unit), settings)),
        )


def _embedding_rows(result: EmbeddedUnit, unit: Unit, config_hash: str) -> list[dict[str, object]]:
    many = len(result.vectors) > 1
    return [
        {
            "key": f"{unit.key}#{embedding_type.lower()}" if many else unit.key,
            "item_id": unit.item_id,
            "embedding_type": embedding_type,
            "embedding": vector,
            "metadata_json": metadata_json(vector_metadata(unit, embedding_type)),
            "config_hash": config_hash,
        }
        for embedding_type, vector in result.vectors
    ]


def _write_embeddings(store: CheckpointStore, path: str, table: pa.Table) -> None:
    """Write a shard's embeddings file, one at a time in this process, and hand Arrow's unused
    memory back after it.

    Writing 200 1,024-d vectors takes ~45 MB for a moment (Parquet tries a dictionary for the
    float column before falling back to plain), and Arrow's allocator keeps it per thread for
    the next write; shards started together finish together, so without the lock their writes
    coincide and double the run's peak. A write takes milliseconds: the lock costs nothing."""
    with _embeddings_writes:
        store.write_table(path, table)
        pa.default_memory_pool().release_unused()


def embedded_shard(
    settings: NovaflowSettings, run_id: str, shard: int, pacer: RequestPacer | None = None
) -> ShardOutcome:
    """Embed the units of ``shard`` of ``run_id`` (or skip it if a previous attempt finished).

    Every model call is paced by ``pacer``, by default this process's ``process_pacer`` at
    ``throughput.requests_per_second``; runs that share a budget pass a ``SharedPacer``."""
    store = CheckpointStore(settings.store)
    done_path = store.embeddings_path(run_id, shard)
    outcome_path = store.shard_outcome_path(run_id, shard)
    if store.exists(done_path) and store.exists(outcome_path):
        document = json.loads(store.read_text(outcome_path))
        return ShardOutcome(**{**document, "skipped": True})
    units = units_from_table(store.read_table(store.shard_units_path(run_id, shard), schemas.UNITS))
    by_key = {unit.key: unit for unit in units}
    throughput = settings.throughput
    embedder = Embedder(
        # One client for the process: its pool serves every shard embedded side by side.
        bedrock_runtime_client(throughput.concurrency * SHARDS_IN_PARALLEL),
        settings.embedding,
        throughput,
        pacer if pacer is not None else process_pacer(throughput.requests_per_second),
    )
    rows: list[dict[str, object]] = []
    failures: list[Failure] = []
    config_hash = settings.embedding.config_hash()
    pages = sum(unit.kind == "pdf_page" for unit in units)
    # Without pages no renderer is borrowed: making one imports PyMuPDF (~35 MB).
    renderer_of_shard: AbstractContextManager[PageRenderer | None] = (
        borrowed_renderer(min(throughput.render_processes, pages), settings.embedding)
        if pages
        else nullcontext()
    )
    with renderer_of_shard as renderer:
        for result in embedder.embed(_work(units, settings, renderer)):
            if isinstance(result, Failure):
                unit = by_key.get(result.unit_key or "")
                failures.append(replace(result, uri=result.uri or (unit.uri if unit else "")))
            else:
                rows.extend(_embedding_rows(result, by_key[result.key], config_hash))
    counters = embedder.counters
    outcome = ShardOutcome(
        shard=shard,
        units=len(units),
        embedded=len(units) - len(failures),
        quarantined=len(failures),
        model_calls=counters.model_calls,
        retries=counters.retries,
        throttles=counters.throttles,
    )
    store.write_table(store.shard_failures_path(run_id, shard), failures_table(failures))
    store.write_text(outcome_path, json.dumps(asdict(outcome)))
    schema = schemas.embeddings_schema(settings.embedding.dimension)
    _write_embeddings(store, done_path, pa.Table.from_pylist(rows, schema=schema))
    return outcome


def quarantined_shard(
    settings: NovaflowSettings, run_id: str, shard: int, message: str
) -> ShardOutcome:
    """Record every unit of a shard whose task failed for good as quarantined (``shard_failed``,
    a transient code: the next run plans those items again), so nothing is lost silently."""
    store = CheckpointStore(settings.store)
    units = units_from_table(store.read_table(store.shard_units_path(run_id, shard), schemas.UNITS))
    failures = [
        Failure(unit.item_id, unit.uri, "embed", "shard_failed", message, unit_key=unit.key)
        for unit in units
    ]
    store.write_table(store.shard_failures_path(run_id, shard), failures_table(failures))
    return ShardOutcome(shard, len(units), 0, len(units), 0, 0, 0)
