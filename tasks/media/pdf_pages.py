# Over 400 lines on purpose: the renderer, the document handling it shares with its pool
# workers, and the workers' initializer and task must live in one importable module, and
# splitting them would leave each half unreadable without the other.
"""PDF pages rendered to images for Nova's ``DOCUMENT_IMAGE`` detail level, with PyMuPDF.

On a 150-dpi A4 page (``bench/bench_pdf_render.py``), rasterising takes ~7 ms, encoding the
raster as JPEG through simplejpeg (libjpeg-turbo, from a zero-copy view of the pixmap) ~5.4 ms,
through Pillow ~8 ms (with its unpack), as PNG ~70–100 ms, and as JPEG through MuPDF's own
writer ~130–150 ms. Hence JPEG through simplejpeg by default, and PNG through MuPDF, whose PNGs
are the smaller of the two at the same speed.

PyMuPDF is not thread-safe: call these functions from one thread at a time, and use
:class:`PageRenderer` with several processes for parallelism. ``get_pixmap`` holds the GIL, but
simplejpeg releases it while encoding, so :class:`PageRenderer` with one process encodes page k
on one encoder thread while MuPDF rasterises page k+1 (``tasks/media/raster_encoding.py``): that
uses up to ~1.7 of 2 cores. Pool workers render and encode on one thread each (see
``_render_in_worker``).

PyMuPDF is imported on first use, not with this module, and without its optional extras:
``import pymupdf`` 2.0 otherwise also imports its layout module and pymupdf4llm, which load
onnxruntime and an ONNX layout model (1.1 s and 136 MiB per process instead of 0.2 s and
47 MiB; onnxruntime also writes under ``~/.cache``). Rendering uses neither. In a process where
novaflow imported pymupdf first, ``pymupdf``'s ``to_markdown`` shortcuts report themselves
unavailable; ``import pymupdf4llm`` and ``import pymupdf.layout`` still work as usual.

Memory: ``pymupdf.TOOLS.store_maxsize`` is a stub in PyMuPDF 2.0 (it returns None and sets
nothing), and MuPDF's resource store may grow to its context default of 256 MiB. So a renderer
bounds it itself: after each page it shrinks the store by half (the least recently used half:
fonts and images of that page usually survive for the next), and it empties the store when it
moves on to another document. Rendering PDFs of 60 large images one after another, a process
stays at ~210 MiB instead of ~340 MiB, at no measurable cost in speed on text and vector pages.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

from tasks.child_lifetime import die_with_parent
from tasks.media.images import MAX_INLINE_BASE64_BYTES, PreparationError, PreparedImage
from tasks.media.raster_encoding import OverlappedEncoder, Raster, jpeg_page, raster

if TYPE_CHECKING:
    from tasks.settings import EmbeddingSettings

PageResult = PreparedImage | PreparationError
_PageFormat = Literal["jpeg", "png"]
_POINTS_PER_INCH = 72.0
# After each page the store is shrunk to this share of its size (see the module docstring).
_STORE_KEEP_PERCENT_AFTER_PAGE = 50
# Pages a worker process renders per task (one after the other, each rasterised then encoded).
_PAGES_PER_TASK = 2
_import_lock = threading.Lock()
# Imported by `import pymupdf` when installed; both load onnxruntime, which rendering never uses.
_OPTIONAL_EXTRAS = ("pymupdf.layout", "pymupdf4llm")


def pdf_page_count(path: str) -> int:
    """How many pages the PDF at ``path`` has (at least 1).

    Raises :class:`PreparationError` with code ``pdf_corrupt`` (not a PDF, or too damaged to
    open), ``pdf_encrypted`` (needs a password to open) or ``pdf_empty`` (no pages, or a 0-byte
    file); ``OSError`` when the file cannot be read at all (missing, no permission).
    """
    document = _opened_document(pymupdf_module(), path)
    try:
        return int(document.page_count)
    finally:
        document.close()


def rendered_page(
    path: str, page: int, *, dpi: int, image_format: str, jpeg_quality: int, max_side_px: int
) -> PreparedImage:
    """Page ``page`` (1-based) of the PDF at ``path`` as an image, rendered at ``dpi``.

    ``image_format`` is ``"jpeg"`` (at ``jpeg_quality``) or ``"png"``. A page that would be
    larger than ``max_side_px`` on its longer side at ``dpi`` is rendered at the lower
    resolution that makes that side exactly ``max_side_px`` (posters, drawings in A0). A PNG
    over Nova's inline limit is sent as JPEG instead; ``image_format`` of the result says which.

    Raises :class:`PreparationError` with ``pdf_page_failed`` (no such page, or MuPDF could not
    render it) or any code of :func:`pdf_page_count`.
    """
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    options = _RenderOptions(dpi, cast(_PageFormat, image_format), jpeg_quality, max_side_px)
    renderer = _DocumentRenderer(options)
    try:
        return renderer.page_image(path, page)
    finally:
        renderer.close()


class PageRenderer:
    """Renders many (path, page) pairs with a pool of processes, as settings say.

    ``processes=1`` renders in the calling process, one page ahead of the consumer: JPEG page
    k is encoded on a thread while page k+1 is rasterised. Otherwise a pool of ``processes``
    worker processes (started with ``spawn``: the caller may be a threaded Prefect worker, where
    ``fork`` is unsafe) renders tasks of up to ``_PAGES_PER_TASK`` consecutive pages, without
    an encoder thread (the workers already keep the cores busy), at most ``2 × processes``
    tasks ahead of the consumer. Each worker keeps its last document open, so consecutive pages
    of one PDF open it once per worker. A page that kills its worker process (a MuPDF crash)
    fails alone with ``pdf_page_failed``; the pool is restarted and the other pages are
    rendered again.

    Use it as a context manager, or call :meth:`close`. Not thread-safe: one consumer at a time.
    """

    def __init__(self, processes: int, settings: EmbeddingSettings) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self._processes = processes
        self._options = _RenderOptions(
            dpi=settings.pdf_dpi,
            image_format=settings.pdf_image_format,
            jpeg_quality=settings.pdf_jpeg_quality,
            max_side_px=settings.max_image_side_px,
        )
        self._local = _DocumentRenderer(self._options) if processes == 1 else None
        self._encoder: OverlappedEncoder[tuple[str, int]] = OverlappedEncoder()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def __enter__(self) -> PageRenderer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def pages_in_flight_limit(self) -> int:
        """The most pages rendered ahead of the consumer."""
        return 1 if self._local is not None else 2 * self._processes * _PAGES_PER_TASK

    def render(self, pages: Iterable[tuple[str, int]]) -> Iterator[tuple[str, int, PageResult]]:
        """``(path, page, result)`` for each ``(path, page)`` of ``pages``, in the same order.

        ``result`` is the page's :class:`PreparedImage`, or the :class:`PreparationError` that
        says why it has none (bad input never raises here). ``pages`` is read lazily: at most
        :attr:`pages_in_flight_limit` items beyond those already yielded.
        """
        if self._closed:
            raise RuntimeError("this PageRenderer is closed")
        if self._local is not None:
            staged = (((path, page), _staged(self._local, path, page)) for path, page in pages)
            for (path, page), result in self._encoder.results(staged):
                yield path, page, result
            return
        yield from self._pooled(iter(pages))

    def close(self) -> None:
        """Closes the open document and stops the worker processes. Safe to call twice."""
        self._closed = True
        if self._local is not None:
            self._local.close()
        self._encoder.close()
        self._discard_pool()

    @staticmethod
    def _worker_function(pages: list[tuple[str, int]]) -> list[PageResult]:
        """What a worker process runs for a task (tests replace it with one that crashes)."""
        return _render_in_worker(pages)

    def _pooled(self, source: Iterator[tuple[str, int]]) -> Iterator[tuple[str, int, PageResult]]:
        pending: deque[tuple[list[tuple[str, int]], Future[list[PageResult]]]] = deque()
        try:
            while True:
                while len(pending) < 2 * self._processes:
                    task = list(islice(source, _PAGES_PER_TASK))
                    if not task:
                        break
                    pending.append((task, self._submitted(task)))
                if not pending:
                    return
                task, future = pending.popleft()
                try:
                    results = future.result()
                except BrokenProcessPool:
                    # Some page in flight killed a worker, and every future in flight failed
                    # with it. Render those pages one at a time to find the culprit.
                    suspects = [*task, *(item for later, _ in pending for item in later)]
                    pending.clear()
                    self._discard_pool()
                    for suspect_path, suspect_page in suspects:
                        yield suspect_path, suspect_page, self._isolated(suspect_path, suspect_page)
                    continue
                for (path, page), result in zip(task, results, strict=True):
                    yield path, page, result
        finally:
            for _, future in pending:
                future.cancel()

    def _submitted(self, task: list[tuple[str, int]]) -> Future[list[PageResult]]:
        try:
            return self._pool().submit(self._worker_function, task)
        except BrokenProcessPool as err:
            # The pool broke while earlier pages were in flight; the head of the queue will
            # notice and isolate these pages along with them.
            failed: Future[list[PageResult]] = Future()
            failed.set_exception(err)
            return failed

    def _isolated(self, path: str, page: int) -> PageResult:
        try:
            return self._pool().submit(self._worker_function, [(path, page)]).result()[0]
        except BrokenProcessPool:
            self._discard_pool()
            return PreparationError(
                "pdf_page_failed",
                f"Rendering page {page} crashed the renderer process (a MuPDF failure on this "
                "page's content); the PDF may be damaged or malicious.",
            )

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self._options,),
            )
        return self._executor

    def _discard_pool(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


@dataclass(frozen=True)
class _RenderOptions:
    dpi: int
    image_format: _PageFormat
    jpeg_quality: int
    max_side_px: int


class _DocumentRenderer:
    """Renders pages, keeping the last document open while the pages asked for stay in it."""

    def __init__(self, options: _RenderOptions) -> None:
        self._options = options
        self._fitz = pymupdf_module()
        self._key: tuple[str, int, int, int] | None = None
        self._document: Any = None

    def page_image(self, path: str, page: int) -> PreparedImage:
        staged = self.page_raster(path, page)
        if isinstance(staged, Raster):
            return jpeg_page(staged.pixels, staged.quality, staged.page)
        return staged

    def page_raster(self, path: str, page: int) -> PreparedImage | Raster:
        """The page as a finished PNG, or as a raster to encode as JPEG (on any thread)."""
        # The key includes the file's identity and mtime: a path rewritten with a new version
        # must not be rendered from the stale copy held open.
        stat = os.stat(path)
        key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key != self._key:
            self.close()
            self._document = _opened_document(self._fitz, path)
            self._key = key
        try:
            return _page_raster(self._fitz, self._document, page, self._options)
        finally:
            # store_shrink takes the share to free.
            self._fitz.TOOLS.store_shrink(100 - _STORE_KEEP_PERCENT_AFTER_PAGE)

    def close(self) -> None:
        if self._document is not None:
            self._document.close()
            self._document = None
            self._key = None
            # Fonts and images of the closed document would otherwise stay until evicted.
            self._fitz.TOOLS.store_shrink(100)


def _opened_document(fitz: ModuleType, path: str) -> Any:
    """The PDF at ``path``, open and checked: a PDF, not password-protected, with pages."""
    # Python's own open() tells a missing or unreadable file (OSError) apart from a bad one;
    # MuPDF reports both as RuntimeError subclasses.
    with open(path, "rb"):
        pass
    try:
        document = fitz.open(path, filetype="pdf")
    except fitz.EmptyFileError as err:
        raise PreparationError(
            "pdf_empty", "The PDF file is empty (0 bytes); replace it with a complete copy."
        ) from err
    except Exception as err:
        raise PreparationError(
            "pdf_corrupt",
            f"The file is not a readable PDF ({err}: {_mupdf_warnings(fitz)}); it may be "
            "truncated or damaged: replace it with a complete copy.",
        ) from err
    problem = _document_problem(fitz, document)
    if problem is not None:
        document.close()
        raise problem
    return document


def _document_problem(fitz: ModuleType, document: Any) -> PreparationError | None:
    if not document.is_pdf:
        return PreparationError(
            "pdf_corrupt", "The file is not a PDF (it opens as another kind of document)."
        )
    if document.needs_pass:
        return PreparationError(
            "pdf_encrypted",
            "The PDF is protected by a password; supply a copy without a user password.",
        )
    if document.page_count == 0:
        if document.is_repaired:
            return PreparationError(
                "pdf_corrupt",
                f"The PDF is damaged and no pages could be recovered ({_mupdf_warnings(fitz)}).",
            )
        return PreparationError("pdf_empty", "The PDF has no pages.")
    _mupdf_warnings(fitz)
    return None


def _page_raster(
    fitz: ModuleType, document: Any, page: int, options: _RenderOptions
) -> PreparedImage | Raster:
    count = document.page_count
    if not 1 <= page <= count:
        raise PreparationError(
            "pdf_page_failed", f"Page {page} does not exist: the PDF has {count} pages."
        )
    try:
        pdf_page = document.load_page(page - 1)
        longer_side_points = max(pdf_page.rect.width, pdf_page.rect.height)
        if longer_side_points <= 0:
            raise PreparationError("pdf_page_failed", f"Page {page} has an empty page box.")
        zoom = min(options.dpi / _POINTS_PER_INCH, options.max_side_px / longer_side_points)
        pixmap = pdf_page.get_pixmap(
            matrix=fitz.Matrix(zoom, zoom), colorspace=fitz.csRGB, alpha=False
        )
    except PreparationError:
        raise
    except Exception as err:
        # MuPDF reports damaged content streams, missing objects and unsupported features as
        # exceptions of its own classes; all mean the same to a user: this page cannot be shown.
        raise PreparationError(
            "pdf_page_failed",
            f"Page {page} could not be rendered ({err}: {_mupdf_warnings(fitz)}).",
        ) from err
    _mupdf_warnings(fitz)
    if options.image_format == "png":
        png = PreparedImage(pixmap.tobytes("png"), "png", pixmap.width, pixmap.height)
        if png.base64_length <= MAX_INLINE_BASE64_BYTES:
            return png
    # PNG over the inline limit: sent as JPEG instead.
    return raster(pixmap, page, options.jpeg_quality)


def _staged(renderer: _DocumentRenderer, path: str, page: int) -> PageResult | Raster:
    """The page rasterised (or its PNG, or the error that says why it has neither)."""
    try:
        return renderer.page_raster(path, page)
    except PreparationError as err:
        return err
    except OSError as err:
        return PreparationError(
            "pdf_page_failed", f"Page {page}: the PDF could not be read ({err})."
        )


def _mupdf_warnings(fitz: ModuleType) -> str:
    """MuPDF's messages since the last call, on one line; clears them (they accumulate forever)."""
    return " | ".join(fitz.TOOLS.mupdf_warnings(reset=1).splitlines()[:5])


def pymupdf_module() -> ModuleType:
    """The pymupdf module. If no one has imported it yet, it is imported without its optional
    ONNX-based extras (see the module docstring): use this rather than ``import pymupdf``."""
    if "pymupdf" in sys.modules:
        import pymupdf

        return pymupdf
    with _import_lock:
        blocked = [name for name in _OPTIONAL_EXTRAS if name not in sys.modules]
        for name in blocked:
            # A None entry makes pymupdf's `import <name>` raise ImportError, which it treats
            # as "not installed".
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            import pymupdf
        finally:
            for name in blocked:
                if sys.modules.get(name, False) is None:
                    del sys.modules[name]
    return pymupdf


# Worker-process side. One renderer per process, made by the initializer.
_worker_renderer: _DocumentRenderer | None = None
# glibc's mallopt parameters, and the values a worker sets (see _keep_large_buffers_mapped).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_WORKER_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed (HEAP_MAX_SIZE / 2)
_WORKER_TRIM_THRESHOLD = 64 * 1024 * 1024


def _start_worker(options: _RenderOptions) -> None:
    global _worker_renderer
    die_with_parent()  # a worker never outlives novaflow, however novaflow ends
    _keep_large_buffers_mapped()
    fitz = pymupdf_module()
    # Failures come back as PreparationError messages; MuPDF's own stderr lines would only
    # repeat them, unattributed, in the worker's log.
    fitz.TOOLS.mupdf_display_errors(False)
    fitz.TOOLS.mupdf_display_warnings(False)
    _worker_renderer = _DocumentRenderer(options)


def _keep_large_buffers_mapped() -> None:
    """Has glibc's malloc reuse the multi-megabyte buffers of each page instead of returning
    them to the kernel: best effort, and only in worker processes, which this module owns.

    Each page allocates a pixmap (6.5 MB at 150 dpi on A4) and the encoder's and the result's
    buffers. In a pool worker glibc served these with fresh mmap()s and gave them back with
    munmap() page after page, so the kernel faulted in and zeroed ~1,600 4-KiB memory pages
    (6.5 MB) per PDF page: 5 ms of system time per page (of ~22), measured with 2 workers on 2
    cores, against 0.7 ms and no faults with these thresholds. Pixmaps over 32 MiB (pages near
    max_side_px on both sides) are still mapped and unmapped each time; up to 64 MiB of freed
    heap stays with the process.
    """
    if sys.platform != "linux":
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, _WORKER_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _WORKER_TRIM_THRESHOLD)


def _render_in_worker(pages: list[tuple[str, int]]) -> list[PageResult]:
    """The task's pages, rendered and encoded one after the other on this thread.

    No encoder thread here, unlike in-process: with as many workers as cores, each core is
    already busy with a worker's rasterisation, so overlapping encoding only oversubscribes
    the cores (measured: 1,600 page faults per page with it, 500–800 without, at the same
    speed or lower) and holds two pixmaps per worker instead of one.
    """
    renderer = _worker_renderer
    if renderer is None:
        raise RuntimeError("worker started without _start_worker")
    return [_encoded(_staged(renderer, path, page)) for path, page in pages]


def _encoded(stage: PageResult | Raster) -> PageResult:
    if not isinstance(stage, Raster):
        return stage
    try:
        return jpeg_page(stage.pixels, stage.quality, stage.page)
    except PreparationError as err:
        return err
