"""JPEG encoding of rasterised PDF pages, overlapped with the rasterisation of the next page.

Pages are encoded with simplejpeg (libjpeg-turbo) straight from a zero-copy numpy view of the
MuPDF pixmap: on a 1240×1755 page at q85 4:2:0, ~5.4 ms against Pillow's ~8 ms (its ~6.6 ms
encoder plus the 1.1–1.9 ms unpack into its 4-bytes-a-pixel RGB). simplejpeg also releases the
GIL while it encodes, which Pillow's encoder does not: so one encoder thread can encode page k
while the calling thread has MuPDF rasterise page k+1 (MuPDF holds the GIL; PyMuPDF is not
thread-safe, so every MuPDF call, including dropping a pixmap, stays on the calling thread).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import simplejpeg

from tasks.media.images import (
    MAX_INLINE_BASE64_BYTES,
    PreparationError,
    PreparedImage,
    base64_length,
)

Key = TypeVar("Key")
PageResult = PreparedImage | PreparationError


@dataclass(frozen=True)
class Raster:
    """A rasterised page waiting to be encoded as JPEG. ``pixels`` is a view of the pixmap's
    samples, not a copy: whoever holds ``pixels`` must hold the Raster (the pixmap) too."""

    pixmap: Any
    pixels: np.ndarray
    page: int
    quality: int


def raster(pixmap: Any, page: int, quality: int) -> Raster:
    """``pixmap`` (RGB, no alpha) as a :class:`Raster`; call it on the thread that runs MuPDF."""
    height, width = pixmap.height, pixmap.width
    rows = np.frombuffer(pixmap.samples_mv, np.uint8).reshape(height, pixmap.stride)
    pixels = rows[:, : width * 3].reshape(height, width, 3)
    if not pixels.flags.c_contiguous:
        # Rows padded past width × 3 (MuPDF pads none for RGB today); simplejpeg needs none.
        pixels = np.ascontiguousarray(pixels)
    return Raster(pixmap, pixels, page, quality)


def jpeg_page(pixels: np.ndarray, quality: int, page: int) -> PreparedImage:
    """``pixels`` as a baseline JPEG with 4:2:0 chroma and standard Huffman tables: the fast
    choice (4:4:4 costs ~1.5x the time and 12 % more bytes; optimised Huffman tables ~1.8x the
    time for ~8 % fewer). Pages stay legible: ~38 dB PSNR against the lossless raster at q85
    (``bench/bench_pdf_render.py``). Safe on any thread: no MuPDF call, and the GIL is released.

    Raises :class:`PreparationError` ``pdf_page_failed`` when the JPEG is over Nova's limit.
    """
    data = simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")
    if base64_length(len(data)) > MAX_INLINE_BASE64_BYTES:
        raise PreparationError(
            "pdf_page_failed",
            f"Page {page} is {base64_length(len(data)):,} base64 characters even as JPEG, over "
            "Nova's inline limit; lower pdf_dpi or max_image_side_px.",
        )
    height, width = pixels.shape[:2]
    return PreparedImage(data, "jpeg", width, height)


class OverlappedEncoder(Generic[Key]):
    """Encodes :class:`Raster` pages on one thread of its own, while the caller rasterises.

    :meth:`results` takes ``(key, staged)`` pairs, where ``staged`` is a finished result or a
    :class:`Raster`, and yields ``(key, result)`` in the same order, reading one pair ahead:
    page k is encoded while the caller stages page k+1 (and while its consumer handles page
    k-1). Call :meth:`close` to stop the thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[PreparedImage], np.ndarray, int, int] | None]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def results(
        self, staged: Iterator[tuple[Key, PageResult | Raster]]
    ) -> Iterator[tuple[Key, PageResult]]:
        # Each entry keeps its Raster until its encoding is over, so the pixmap is dropped here,
        # on the MuPDF thread, never under the encoder's feet.
        pending: deque[tuple[Key, Raster | None, Future[PreparedImage] | PageResult]] = deque()
        try:
            for key, stage in staged:
                if isinstance(stage, Raster):
                    pending.append((key, stage, self._submitted(stage)))
                else:
                    pending.append((key, None, stage))
                if len(pending) > 1:
                    yield self._finished(*pending.popleft())
            while pending:
                yield self._finished(*pending.popleft())
        finally:
            wait([outcome for _, _, outcome in pending if isinstance(outcome, Future)])

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _submitted(self, stage: Raster) -> Future[PreparedImage]:
        if self._thread is None:
            # A daemon: a worker process exits without being told to stop its encoder.
            self._thread = threading.Thread(target=self._encode, name="page-encoder", daemon=True)
            self._thread.start()
        future: Future[PreparedImage] = Future()
        self._jobs.put((future, stage.pixels, stage.quality, stage.page))
        return future

    @staticmethod
    def _finished(
        key: Key, stage: Raster | None, outcome: Future[PreparedImage] | PageResult
    ) -> tuple[Key, PageResult]:
        # ``stage`` is only held, here and in ``pending``: its pixmap must outlive the encoding.
        if not isinstance(outcome, Future):
            return key, outcome
        try:
            return key, outcome.result()
        except PreparationError as err:
            return key, err

    def _encode(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, pixels, quality, page = job
            del job
            try:
                result = jpeg_page(pixels, quality, page)
            except BaseException as err:
                # Drop the view before the caller may drop the pixmap behind it.
                del pixels
                future.set_exception(err)
            else:
                del pixels
                future.set_result(result)
