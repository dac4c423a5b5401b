"""Each unit's model input, made ready: texts cut from their files, images and media read, PDF
pages rendered in a pool of processes kept alive across shards. Used alike by the shards
embedded with InvokeModel and by the batch inference jobs' input files.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path

from tasks.local_copies import local_source
from tasks.media.images import PreparationError, PreparedImage
from tasks.media.payloads import image_file_payload, image_payload, media_file_payload
from tasks.media.pdf_pages import PageRenderer
from tasks.media.texts import decoded_text
from tasks.nova.requests import Payload
from tasks.records import Unit
from tasks.settings import EmbeddingSettings, NovaflowSettings

Work = tuple[str, str, Callable[[], Payload]]
"""A unit's key, its item id, and a function that makes its payload (raising what its input
gets refused with)."""

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


def unit_payloads(
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


def shard_renderer(
    units: list[Unit], render_processes: int, settings: EmbeddingSettings
) -> AbstractContextManager[PageRenderer | None]:
    """A borrowed renderer of at most ``render_processes`` processes for the PDF pages among
    ``units``, or None when there are none: making one imports PyMuPDF (~35 MB)."""
    pages = sum(unit.kind == "pdf_page" for unit in units)
    if not pages:
        return nullcontext()
    return borrowed_renderer(min(render_processes, pages), settings)
