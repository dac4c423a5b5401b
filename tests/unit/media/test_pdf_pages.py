"""PDF pages as images: counted, rendered at the right size, bad PDFs reported by a specific
code, and a renderer pool that keeps order, reads lazily and survives a crashing page."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from tasks.media.images import PreparationError, PreparedImage
from tasks.media.pdf_pages import (
    PageRenderer,
    _DocumentRenderer,
    _render_in_worker,
    _RenderOptions,
    pdf_page_count,
    pymupdf_module,
    rendered_page,
)
from tasks.settings import EmbeddingSettings

fitz = pymupdf_module()
A4 = (595, 842)
SETTINGS = EmbeddingSettings(pdf_dpi=72, max_image_side_px=1000)
CRASHING_PAGE = 4


def report_pdf(path: Path, pages: int) -> Path:
    """A PDF whose pages differ: a heading with the page number, text, a chart and lines."""
    rng = np.random.default_rng(11)
    document = fitz.open()
    for number in range(1, pages + 1):
        page = document.new_page(width=A4[0], height=A4[1])
        page.insert_text((56, 70), f"Page {number} of the report", fontsize=18)
        page.insert_textbox(fitz.Rect(56, 90, 539, 300), "embedding vectors " * 60, fontsize=10)
        for bar in range(6):
            height = float(rng.uniform(20, 200))
            left = 60 + bar * 40 + number
            page.draw_rect(fitz.Rect(left, 560 - height, left + 30, 560), fill=(0.1, 0.3, 0.8))
        page.draw_line((56, 600), (539, 600 + number * 10), color=(1, 0, 0), width=2)
    document.save(path)
    document.close()
    return path


def zero_page_pdf(path: Path) -> Path:
    """A well-formed PDF whose page tree is empty (PyMuPDF refuses to save one)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pdfs")
    report = report_pdf(root / "report.pdf", 6)
    document = fitz.open(report)
    document.save(
        root / "encrypted.pdf", encryption=fitz.PDF_ENCRYPT_AES_256, user_pw="x", owner_pw="y"
    )
    document.save(root / "owner_only.pdf", encryption=fitz.PDF_ENCRYPT_AES_256, owner_pw="y")
    document.close()
    huge = fitz.open()
    huge.new_page(width=5000, height=5000).draw_circle((2500, 2500), 2000, fill=(0, 0, 0))
    huge.new_page(width=5000, height=2000).insert_text((100, 1000), "wide", fontsize=400)
    huge.save(root / "huge.pdf")
    huge.close()
    corrupt = root / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.7\n" + np.random.default_rng(5).bytes(4000))
    (root / "empty.pdf").write_bytes(b"")
    (root / "picture.pdf").write_bytes(_png_bytes())
    return {
        "report": report,
        "encrypted": root / "encrypted.pdf",
        "owner_only": root / "owner_only.pdf",
        "huge": root / "huge.pdf",
        "corrupt": corrupt,
        "zero_pages": zero_page_pdf(root / "zero_pages.pdf"),
        "empty": root / "empty.pdf",
        "picture": root / "picture.pdf",
    }


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "PNG")
    return buffer.getvalue()


def render(path: Path, page: int, **options: object) -> PreparedImage:
    arguments: dict = {"dpi": 72, "image_format": "jpeg", "jpeg_quality": 85}
    arguments |= {"max_side_px": 4096, **options}
    return rendered_page(str(path), page, **arguments)


def crash_on_page(pages: list[tuple[str, int]]) -> object:
    """Stands in for the worker function: dies like a MuPDF segfault on one page."""
    if any(page == CRASHING_PAGE for _, page in pages):
        os._exit(70)
    return _render_in_worker(pages)


class CrashingRenderer(PageRenderer):
    _worker_function = staticmethod(crash_on_page)


def test_page_count_of_a_good_pdf(pdfs: dict[str, Path]) -> None:
    assert pdf_page_count(str(pdfs["report"])) == 6
    assert pdf_page_count(str(pdfs["owner_only"])) == 6


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("encrypted", "pdf_encrypted"),
        ("corrupt", "pdf_corrupt"),
        ("picture", "pdf_corrupt"),
        ("zero_pages", "pdf_empty"),
        ("empty", "pdf_empty"),
    ],
)
def test_bad_pdfs_are_reported_by_code(pdfs: dict[str, Path], name: str, code: str) -> None:
    with pytest.raises(PreparationError) as counting:
        pdf_page_count(str(pdfs[name]))
    with pytest.raises(PreparationError) as rendering:
        render(pdfs[name], 1)

    assert counting.value.code == rendering.value.code == code
    assert str(counting.value)


def test_a_missing_file_is_an_os_error_not_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        pdf_page_count(str(tmp_path / "nowhere.pdf"))


def test_pages_render_at_the_requested_resolution(pdfs: dict[str, Path]) -> None:
    page = render(pdfs["report"], 2, dpi=150)

    assert page.image_format == "jpeg"
    assert (page.width, page.height) == (1240, 1755)
    with Image.open(io.BytesIO(page.data)) as image:
        assert (image.format, image.size) == ("JPEG", (1240, 1755))


def test_png_pages_are_lossless_and_pages_differ(pdfs: dict[str, Path]) -> None:
    first = render(pdfs["report"], 1, image_format="png")
    second = render(pdfs["report"], 2, image_format="png")

    assert first.image_format == second.image_format == "png"
    assert (first.width, first.height) == A4
    assert first.data != second.data
    exact = fitz.open(pdfs["report"])[0].get_pixmap(dpi=72)
    pixels = np.asarray(Image.open(io.BytesIO(first.data)).convert("RGB"))
    assert np.array_equal(pixels, np.frombuffer(exact.samples, np.uint8).reshape(842, 595, 3))


@pytest.mark.parametrize(("page", "size"), [(1, (1000, 1000)), (2, (1000, 400))])
def test_huge_pages_are_rendered_down_to_the_longest_side_allowed(
    pdfs: dict[str, Path], page: int, size: tuple[int, int]
) -> None:
    rendered = render(pdfs["huge"], page, dpi=150, max_side_px=1000)

    assert (rendered.width, rendered.height) == size
    with Image.open(io.BytesIO(rendered.data)) as image:
        assert image.size == size


@pytest.mark.parametrize("page", [0, 7, -1])
def test_pages_outside_the_document_fail(pdfs: dict[str, Path], page: int) -> None:
    with pytest.raises(PreparationError) as raised:
        render(pdfs["report"], page)

    assert raised.value.code == "pdf_page_failed"
    assert "6 pages" in str(raised.value)


def test_pymupdf_is_imported_without_onnxruntime_and_leaves_no_block_behind() -> None:
    # A fresh interpreter: in this one, another test may have imported pymupdf first.
    probe = (
        "import sys; from tasks.media.pdf_pages import pymupdf_module; pymupdf_module(); "
        "print('onnxruntime' in sys.modules, "
        "sys.modules.get('pymupdf.layout', 1) is None, sys.modules.get('pymupdf4llm', 1) is None)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )

    assert completed.stdout.split() == ["False", "False", "False"]


def mixed_pages(pdfs: dict[str, Path]) -> list[tuple[str, int]]:
    report = str(pdfs["report"])
    return [
        (report, 3),
        (str(pdfs["corrupt"]), 1),
        (report, 1),
        (str(pdfs["encrypted"]), 1),
        (report, 99),
        (str(pdfs["huge"]), 2),
        (report, 2),
        (report, 6),
    ]


def outcome(result: PreparedImage | PreparationError) -> object:
    return result.code if isinstance(result, PreparationError) else result


def test_in_process_rendering_keeps_order_and_returns_errors(pdfs: dict[str, Path]) -> None:
    pages = mixed_pages(pdfs)

    with PageRenderer(1, SETTINGS) as renderer:
        results = list(renderer.render(pages))

    assert [(path, page) for path, page, _ in results] == pages
    outcomes = [outcome(result) for _, _, result in results]
    errors = [outcomes[index] for index in (1, 3, 4)]
    assert errors == ["pdf_corrupt", "pdf_encrypted", "pdf_page_failed"]
    images = [outcomes[index] for index in (0, 2, 5, 6, 7)]
    assert all(isinstance(image, PreparedImage) for image in images)
    assert images[0] == render(pdfs["report"], 3, max_side_px=1000)
    assert (images[2].width, images[2].height) == (1000, 400)  # type: ignore[union-attr]


def test_two_processes_give_the_same_bytes_as_one(pdfs: dict[str, Path]) -> None:
    pages = mixed_pages(pdfs) * 2

    with PageRenderer(1, SETTINGS) as one, PageRenderer(2, SETTINGS) as two:
        in_process = [outcome(result) for _, _, result in one.render(pages)]
        pooled = list(two.render(pages))

    assert [(path, page) for path, page, _ in pooled] == pages
    assert [outcome(result) for _, _, result in pooled] == in_process


@pytest.mark.parametrize("processes", [1, 2])
def test_pages_are_read_lazily(pdfs: dict[str, Path], processes: int) -> None:
    consumed = 0

    def pages() -> Iterator[tuple[str, int]]:
        nonlocal consumed
        for number in [1, 2, 3, 4, 5, 6] * 3:
            consumed += 1
            yield str(pdfs["report"]), number

    with PageRenderer(processes, SETTINGS) as renderer:
        stream = renderer.render(pages())
        assert consumed == 0
        for yielded in range(1, 6):
            next(stream)
            assert consumed <= yielded + renderer.pages_in_flight_limit
        stream.close()

    assert renderer.pages_in_flight_limit == (1 if processes == 1 else 8)
    assert consumed < 18


def test_a_page_that_kills_its_worker_fails_alone(pdfs: dict[str, Path]) -> None:
    pages = [(str(pdfs["report"]), number) for number in [1, 2, 3, 4, 5, 6, 1, 2]]

    with CrashingRenderer(2, SETTINGS) as renderer:
        results = [(page, outcome(result)) for _, page, result in renderer.render(pages)]

    assert [page for page, _ in results] == [1, 2, 3, 4, 5, 6, 1, 2]
    failed = [page for page, result in results if result == "pdf_page_failed"]
    assert failed == [CRASHING_PAGE]
    assert all(
        isinstance(result, PreparedImage) for page, result in results if page != CRASHING_PAGE
    )


def test_a_closed_renderer_refuses_work(pdfs: dict[str, Path]) -> None:
    renderer = PageRenderer(1, SETTINGS)
    renderer.close()
    renderer.close()

    with pytest.raises(RuntimeError):
        next(renderer.render([(str(pdfs["report"]), 1)]))


def test_jpeg_pages_are_baseline_with_half_resolution_chroma(pdfs: dict[str, Path]) -> None:
    page = render(pdfs["report"], 1, dpi=150)

    with Image.open(io.BytesIO(page.data)) as image:
        assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0
        assert not image.info.get("progressive")


def overlap_pages(pdfs: dict[str, Path]) -> list[tuple[str, int]]:
    """More pages than one encoder and one task hold, with errors between and at both ends."""
    report, corrupt = str(pdfs["report"]), str(pdfs["corrupt"])
    numbers = [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]
    return [(corrupt, 1), *((report, number) for number in numbers), (report, 0), (report, 7)]


@pytest.mark.parametrize("processes", [1, 2])
def test_overlapped_encoding_keeps_order_and_errors_in_place(
    pdfs: dict[str, Path], processes: int
) -> None:
    pages = overlap_pages(pdfs)

    with PageRenderer(processes, SETTINGS) as renderer:
        results = list(renderer.render(pages))

    assert [(path, page) for path, page, _ in results] == pages
    outcomes = [outcome(result) for _, _, result in results]
    assert outcomes[0] == "pdf_corrupt"
    assert outcomes[-2:] == ["pdf_page_failed", "pdf_page_failed"]
    # Each image is its own page's, byte for byte as rendered alone, without any overlap.
    for (path, page), image in zip(pages[1:-2], outcomes[1:-2], strict=True):
        assert image == render(Path(path), page, max_side_px=1000)


def test_encoding_errors_come_back_in_order(
    pdfs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An inline limit between the pages' JPEG sizes fails the larger ones on the encoder
    # thread; each failure must stay with its page.
    sizes = {n: len(render(pdfs["report"], n, dpi=150).data) for n in (1, 2, 3)}
    limit = sorted(sizes.values())[1]
    monkeypatch.setattr("tasks.media.raster_encoding.MAX_INLINE_BASE64_BYTES", limit * 4 // 3 + 4)
    settings = EmbeddingSettings(pdf_dpi=150, max_image_side_px=4096)
    pages = [(str(pdfs["report"]), n) for n in (1, 2, 3, 3, 2, 1)]

    with PageRenderer(1, settings) as renderer:
        results = [outcome(result) for _, _, result in renderer.render(pages)]
    # A pool worker encodes on its own thread, without overlap: same results, same places.
    options = _RenderOptions(150, "jpeg", 85, 4096)
    worker_renderer = _DocumentRenderer(options)
    monkeypatch.setattr("tasks.media.pdf_pages._worker_renderer", worker_renderer)
    in_worker = [outcome(result) for result in _render_in_worker(pages)]
    worker_renderer.close()

    assert in_worker == results
    assert "pdf_page_failed" in results
    for (_, page), result in zip(pages, results, strict=True):
        if sizes[page] > limit:
            assert result == "pdf_page_failed"
        else:
            assert isinstance(result, PreparedImage)
            assert len(result.data) == sizes[page]


def test_pages_are_identical_between_one_and_two_processes(pdfs: dict[str, Path]) -> None:
    pages = overlap_pages(pdfs) * 2

    with PageRenderer(1, SETTINGS) as one, PageRenderer(2, SETTINGS) as two:
        in_process = [outcome(result) for _, _, result in one.render(pages)]
        pooled = [outcome(result) for _, _, result in two.render(pages)]

    assert pooled == in_process
    assert sum(isinstance(result, PreparedImage) for result in pooled) == 24


@pytest.mark.parametrize("processes", [1, 2])
def test_jpeg_pages_decode_with_pillow_and_stay_legible(
    pdfs: dict[str, Path], processes: int
) -> None:
    settings = EmbeddingSettings(pdf_dpi=150, pdf_image_format="jpeg", pdf_jpeg_quality=85)
    pages = [(str(pdfs["report"]), number) for number in (1, 4, 6)]

    with PageRenderer(processes, settings) as renderer:
        results = list(renderer.render(pages))

    document = fitz.open(pdfs["report"])
    for _, number, page in results:
        assert isinstance(page, PreparedImage)
        assert page.image_format == "jpeg"
        exact = document[number - 1].get_pixmap(dpi=150)
        raster = np.frombuffer(exact.samples, np.uint8).reshape(exact.height, exact.width, 3)
        with Image.open(io.BytesIO(page.data)) as image:
            assert (image.format, image.size) == ("JPEG", (page.width, page.height))
            decoded = np.asarray(image.convert("RGB"), np.float64)
        mse = float(np.mean((decoded - raster) ** 2))
        assert 10 * np.log10(255**2 / mse) >= 35
