"""The demo corpus: what a user of `novaflow demo` relies on finding on disk and in the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import pymupdf
import pytest
from PIL import Image

from tasks.demo.corpus import (
    BROKEN_ITEMS,
    ENCRYPTED_PDF_PASSWORD,
    LONG_CLIPS,
    PDF_TOPICS,
    DemoCorpus,
    change_demo_corpus,
    generate_demo_corpus,
    long_text,
)
from tasks.demo.pdf_documents import topic_pdf

PILLOW_NAMES = {ext: ext.upper() for ext in ("png", "jpeg", "gif", "webp", "bmp", "tiff")}
ID_PREFIXES = {"pdf", "image", "text", "audio", "video", "broken"}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by path relative to it."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def manifest_rows(corpus: DemoCorpus) -> list[dict[str, Any]]:
    return [json.loads(line) for line in corpus.manifest.read_text("utf-8").splitlines()]


def row(corpus: DemoCorpus, item_id: str) -> dict[str, Any]:
    return next(r for r in manifest_rows(corpus) if r["id"] == item_id)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DemoCorpus:
    """The seed-0 corpus, generated once; tests that edit it work on a copy."""
    return generate_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", seed=0)


@pytest.fixture
def corpus_copy(corpus: DemoCorpus, tmp_path: Path) -> DemoCorpus:
    root = tmp_path / "corpus"
    shutil.copytree(corpus.root, root)
    return DemoCorpus(root, root / corpus.manifest.name, corpus.good_files, corpus.broken_files)


def test_the_same_seed_gives_a_byte_identical_corpus(corpus: DemoCorpus, tmp_path: Path) -> None:
    again = generate_demo_corpus(tmp_path / "again", seed=0)

    assert tree(again.root) == tree(corpus.root)
    assert (again.good_files, again.broken_files) == (corpus.good_files, corpus.broken_files)


def test_other_seeds_give_other_content() -> None:
    assert topic_pdf(PDF_TOPICS[0], 1) != topic_pdf(PDF_TOPICS[0], 0)
    assert long_text(1) != long_text(0)


def test_regenerating_restores_an_edited_corpus_and_leaves_unchanged_files_alone(
    corpus: DemoCorpus, corpus_copy: DemoCorpus
) -> None:
    untouched = corpus_copy.root / "video/clip-1.mp4"
    mtime = untouched.stat().st_mtime_ns
    change_demo_corpus(corpus_copy, seed=1)

    generate_demo_corpus(corpus_copy.root, seed=0)

    assert tree(corpus_copy.root) == tree(corpus.root)
    assert untouched.stat().st_mtime_ns == mtime


def test_counts_add_up_to_the_manifest_and_ids_are_readable(corpus: DemoCorpus) -> None:
    rows = manifest_rows(corpus)
    ids = [r["id"] for r in rows]

    assert corpus.manifest.parent == corpus.root
    assert (corpus.good_files, corpus.broken_files) == (25, 7)
    assert corpus.good_files + corpus.broken_files == len(rows)
    assert len(set(ids)) == len(ids)
    assert {i for i in ids if i.startswith("broken/")} == set(BROKEN_ITEMS)
    assert len(set(BROKEN_ITEMS.values())) == len(BROKEN_ITEMS)  # a different reason each
    assert all("#" not in i and i.split("/")[0] in ID_PREFIXES for i in ids)
    for r in rows:
        assert set(r) <= {"uri", "id", "metadata", "modality", "encoding"}
        assert r["metadata"]["source"] == "demo"
        assert {"topic", "year"} <= set(r["metadata"])
        if r["id"] not in BROKEN_ITEMS:
            assert (corpus.root / r["uri"]).is_file()
    assert any("modality" in r for r in rows)
    assert not any("modality" in r for r in rows if r["uri"].startswith("pdfs/"))


def test_each_pdf_has_its_pages_a_distinct_title_text_and_drawings(corpus: DemoCorpus) -> None:
    first_pages = set()
    for topic in PDF_TOPICS:
        with pymupdf.open(corpus.root / f"pdfs/{topic.slug}.pdf") as document:
            assert document.page_count == topic.pages
            assert 2 <= topic.pages <= 5
            texts = [page.get_text() for page in document]
            assert texts[0].startswith(topic.title)
            assert all(len(text) > 200 for text in texts)
            assert len(set(texts)) == len(texts)
            for page in document:
                kinds = {item for drawing in page.get_drawings() for item, *_ in drawing["items"]}
                assert {"l", "re", "c"} <= kinds  # lines, rectangles, curves of the circles
        first_pages.add(texts[0].splitlines()[0])
    assert len(first_pages) == len(PDF_TOPICS)


def test_images_decode_in_six_formats_with_distinct_patterns(corpus: DemoCorpus) -> None:
    pictures = []
    for path in sorted((corpus.root / "images").iterdir()):
        with Image.open(path) as image:
            image.load()
            assert image.format == PILLOW_NAMES[path.suffix[1:]]
            pictures.append(np.asarray(image.convert("RGB"), dtype=np.int16))
    assert len(pictures) == 6
    for index, picture in enumerate(pictures):
        for other in pictures[index + 1 :]:
            assert np.abs(picture - other).mean() > 20


def test_texts_cover_encodings_and_one_is_long_enough_to_chunk(corpus: DemoCorpus) -> None:
    alpine = row(corpus, "text/alpine-cuisine")
    assert "Zürich" in (corpus.root / alpine["uri"]).read_text("utf-8")
    assert alpine["modality"] == "text"

    lisbon = row(corpus, "text/lisbon-tiles")
    raw = (corpus.root / lisbon["uri"]).read_bytes()
    assert (lisbon["encoding"], lisbon["modality"]) == ("latin-1", "text")
    assert "São Bento" in raw.decode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")

    long = (corpus.root / row(corpus, "text/astronomy-history")["uri"]).read_text("utf-8")
    assert 20_000 <= len(long) < 21_000
    texts = [r for r in manifest_rows(corpus) if r["uri"].startswith("texts/")]
    assert len(texts) == 10


@pytest.mark.parametrize(
    ("item_id", "kinds"),
    [
        ("audio/tone-1", {"audio"}),
        ("audio/tone-2", {"audio"}),
        ("video/clip-1", {"audio", "video"}),
        ("video/clip-2", {"audio", "video"}),
    ],
)
def test_clips_are_short_and_carry_their_streams(
    corpus: DemoCorpus, item_id: str, kinds: set[str]
) -> None:
    path = corpus.root / row(corpus, item_id)["uri"]
    with av.open(str(path)) as container:
        assert {stream.type for stream in container.streams} == kinds
        assert 5.0 <= container.duration / av.time_base <= 12.0


@pytest.mark.parametrize(
    ("item_id", "kinds"),
    [("audio/recording-long", {"audio"}), ("video/talk-long", {"audio", "video"})],
)
def test_the_long_clips_are_over_the_sync_limit_so_a_demo_run_uses_async_jobs(
    corpus: DemoCorpus, item_id: str, kinds: set[str]
) -> None:
    assert item_id in LONG_CLIPS
    path = corpus.root / row(corpus, item_id)["uri"]
    with av.open(str(path)) as container:
        assert {stream.type for stream in container.streams} == kinds
        assert 60.0 <= container.duration / av.time_base <= 120.0


def test_the_truncated_png_has_a_header_but_its_pixels_end_early(corpus: DemoCorpus) -> None:
    with Image.open(corpus.root / "broken/truncated.png") as image:
        assert image.format == "PNG"
        with pytest.raises(OSError, match="truncated"):
            image.load()


def test_the_corrupt_pdf_has_a_header_and_nothing_pymupdf_can_open(corpus: DemoCorpus) -> None:
    data = (corpus.root / "broken/corrupt.pdf").read_bytes()

    assert data.startswith(b"%PDF-")
    with pytest.raises(pymupdf.FileDataError):
        pymupdf.open(stream=data, filetype="pdf")


def test_the_encrypted_pdf_is_aes_256_and_opens_only_with_its_password(
    corpus: DemoCorpus,
) -> None:
    with pymupdf.open(corpus.root / "broken/encrypted.pdf") as document:
        assert document.needs_pass
        assert document.authenticate("") == 0
        assert document.authenticate(ENCRYPTED_PDF_PASSWORD) > 0
        assert "AES" in document.metadata["encryption"]
        assert "256" in document.metadata["encryption"]
        assert document[0].get_text().strip() == "Encrypted report"


def test_the_broken_texts_are_empty_or_not_text(corpus: DemoCorpus) -> None:
    assert (corpus.root / "broken/empty.txt").stat().st_size == 0
    with pytest.raises(UnicodeDecodeError):
        (corpus.root / "broken/binary.txt").read_bytes().decode("utf-8")


def test_two_rows_point_at_no_readable_file(corpus: DemoCorpus) -> None:
    missing = row(corpus, "broken/missing-file")["uri"]
    outside = row(corpus, "broken/outside-root")["uri"]

    assert not (corpus.root / missing).exists()
    assert outside == "../outside.txt"
    assert not (corpus.root / outside).resolve().is_relative_to(corpus.root.resolve())
    assert not (corpus.root / outside).exists()  # nothing is ever written outside the root


def test_a_change_edits_one_pdf_one_text_and_deletes_one_image_and_nothing_else(
    corpus_copy: DemoCorpus,
) -> None:
    before_files, before_rows = tree(corpus_copy.root), manifest_rows(corpus_copy)
    before = {r["id"]: r for r in before_rows}

    touched = change_demo_corpus(corpus_copy, seed=3)

    _, text_id, image_id = touched
    assert [i.split("/")[0] for i in touched] == ["pdf", "text", "image"]
    after_files, after_rows = tree(corpus_copy.root), manifest_rows(corpus_copy)
    assert after_rows == [r for r in before_rows if r["id"] != image_id]
    pdf_uri, text_uri, image_uri = (before[i]["uri"] for i in touched)
    assert set(before_files) - set(after_files) == {image_uri}
    changed = {p for p in after_files if after_files[p] != before_files[p]}
    assert changed == {pdf_uri, text_uri, corpus_copy.manifest.name}

    with (
        pymupdf.open(stream=before_files[pdf_uri]) as old,
        pymupdf.open(stream=after_files[pdf_uri]) as new,
    ):
        assert new.page_count == old.page_count - 1
        assert [page.get_text() for page in new] == [page.get_text() for page in old][:-1]
    encoding = before[text_id].get("encoding", "utf-8")
    old_text, new_text = (files[text_uri].decode(encoding) for files in (before_files, after_files))
    assert new_text.startswith(old_text)
    assert "Revision 3" in new_text[len(old_text) :]


def test_the_same_change_seed_makes_the_same_edits(
    corpus: DemoCorpus, corpus_copy: DemoCorpus, tmp_path: Path
) -> None:
    second_root = tmp_path / "second"
    shutil.copytree(corpus.root, second_root)
    second = DemoCorpus(second_root, second_root / corpus.manifest.name, 18, 7)

    assert change_demo_corpus(corpus_copy, seed=5) == change_demo_corpus(second, seed=5)
    assert tree(corpus_copy.root) == tree(second.root)


def test_a_corpus_with_nothing_left_to_change_is_refused_untouched(
    corpus_copy: DemoCorpus,
) -> None:
    for image in (corpus_copy.root / "images").iterdir():
        image.unlink()
    before = tree(corpus_copy.root)

    with pytest.raises(ValueError, match="images"):
        change_demo_corpus(corpus_copy, seed=0)
    assert tree(corpus_copy.root) == before
