"""Each vector's searchable text: the characters of its chunk, the text of its PDF page, the
caption of an image or clip, none otherwise; cut to the metadata limit and counted when cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pymupdf

from tasks.index.searchable_text import (
    MAX_FILTERABLE_TEXT_BYTES,
    TextCounts,
    with_searchable_texts,
)
from tasks.vector_store import SEARCHABLE_TEXT_KEY


def _pdf(path: Path, pages: list[str]) -> None:
    document = pymupdf.open()
    for text in pages:
        document.new_page().insert_text((72, 72), text)
    document.save(str(path))
    document.close()


def test_each_vector_carries_the_text_it_was_embedded_from(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("first chunk. second chunk.")
    manual = tmp_path / "manual.pdf"
    _pdf(manual, ["page one: valve V-12", "page two: pump P-7"])
    vector = np.zeros(4, dtype=np.float32)
    rows = [
        ("note#chunk=1", vector, {"modality": "text", "source_uri": str(note),
                                  "char_start": 13, "char_end": 26}),
        ("manual#page=2", vector, {"modality": "pdf", "source_uri": str(manual), "page": 2}),
        ("photo", vector, {"modality": "image", "source_uri": "x.png", "caption": "a red kite"}),
        ("clip", vector, {"modality": "video", "source_uri": "x.mp4"}),
        ("gone#chunk=0", vector, {"modality": "text", "source_uri": str(tmp_path / "gone.txt"),
                                  "char_start": 0, "char_end": 3}),
    ]  # fmt: skip
    counts = TextCounts()

    texts = {
        key: metadata.get(SEARCHABLE_TEXT_KEY)
        for key, _, metadata in with_searchable_texts(rows, counts, filterable=False)
    }

    assert texts["note#chunk=1"] == "second chunk."
    assert "pump P-7" in texts["manual#page=2"]
    assert "valve" not in texts["manual#page=2"]
    assert texts["photo"] == "a red kite"
    assert texts["clip"] is None
    assert texts["gone#chunk=0"] is None  # unreadable source: loaded without its text
    assert (counts.attached, counts.truncated) == (3, 0)


def test_a_long_text_is_cut_on_a_character_boundary_and_counted(tmp_path: Path) -> None:
    note = tmp_path / "long.txt"
    note.write_text("é" * 2000)  # 4,000 bytes of UTF-8
    where = {"modality": "text", "source_uri": str(note), "char_start": 0, "char_end": 2000}
    rows = [("long#chunk=0", np.zeros(4, dtype=np.float32), where)]
    counts = TextCounts()

    ((_, _, metadata),) = with_searchable_texts(rows, counts, filterable=True)

    text = metadata[SEARCHABLE_TEXT_KEY]
    assert text == "é" * (MAX_FILTERABLE_TEXT_BYTES // 2)
    assert len(text.encode()) <= MAX_FILTERABLE_TEXT_BYTES
    assert (counts.attached, counts.truncated) == (1, 1)
