"""The demo corpus: a small mixed-media corpus and its manifest, generated in code.

Nothing is downloaded. ``generate_demo_corpus`` writes 3 PDFs, 6 images, 10 texts, 2 audio and 2
video clips that should embed, plus 7 manifest rows that should be quarantined, each for a
different reason (``BROKEN_ITEMS``). The same seed always gives byte-identical files, so a second
run over an unchanged corpus finds nothing to re-embed; ``change_demo_corpus`` then makes the
edits an incremental run should notice.

The manifest (``manifest.jsonl`` in the corpus root) has one JSON object per line:
``{"uri": "pdfs/river-ecology.pdf", "id": "pdf/river-ecology", "metadata": {...}}`` with an
optional ``"modality"`` and, for text not in UTF-8, an ``"encoding"``; ``uri`` is relative to
the root.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymupdf

from tasks.demo.demo_texts import SENTENCES, TEXTS
from tasks.demo.pdf_documents import PdfTopic, encrypted_pdf, pdf_without_last_page, topic_pdf
from tasks.demo.sample_media import garbage, sample_audio, sample_image, sample_video, truncated
from tasks.records import Modality

MANIFEST_NAME = "manifest.jsonl"
QRELS_NAME = "qrels.jsonl"
# The demo's labeled queries. The stand-in's vectors are similar within a modality and nearly
# orthogonal across modalities, so every query here looks for its own modality: texts by the
# words they share, media by the file itself. In the last three an exact word (an error code, a
# part number, a name) decides which station log is relevant: the stand-in's bag-of-words vector
# weighs every word alike and prefers the care sheet, which has the query's other words as
# typed, while BM25 weighs the rare word most and stems the logs' "pumps", "replaced",
# "serviced" to the query's words, so text and hybrid search rank the right log first.
EXACT_WORD_QUERY_TYPE = "text→text (exact word)"
DEMO_QRELS: tuple[dict[str, Any], ...] = (
    {
        "query_id": "sourdough",
        "text": "sourdough starter wild yeast fermentation bread dough",
        "relevant": {"text/sourdough-baking": 2},
    },
    {
        "query_id": "alpine",
        "text": "fondue raclette Gruyère rösti potato butter",
        "relevant": {"text/alpine-cuisine": 2},
    },
    {
        "query_id": "tiles",
        "text": "azulejos tiles Lisbon Portugal blue and white",
        "relevant": {"text/lisbon-tiles": 2},
    },
    {
        "query_id": "tide-pools",
        "text": "sea anemones hermit crabs starfish mussels low tide",
        "relevant": {"text/tide-pools": 2, "text/sourdough-baking": 0},
    },
    {
        "query_id": "bread-and-cheese",
        "text": "bread dough butter potato cheese",
        "relevant": {"text/sourdough-baking": 1, "text/alpine-cuisine": 1},
    },
    {"query_id": "pattern", "file": "images/pattern-1.png", "relevant": ["image/pattern-1"]},
    {"query_id": "tone", "file": "audio/tone-1.wav", "relevant": ["audio/tone-1"]},
    {"query_id": "clip", "file": "video/clip-1.mp4", "relevant": ["video/clip-1"]},
    {
        "query_id": "error-code",
        "text": "pump error E4471",
        "relevant": {"text/north-station-log": 2, "text/station-care": 0},
        "type": EXACT_WORD_QUERY_TYPE,
    },
    {
        "query_id": "part-number",
        "text": "replacement seal KX7730",
        "relevant": {"text/south-station-log": 2, "text/station-care": 0},
        "type": EXACT_WORD_QUERY_TYPE,
    },
    {
        "query_id": "technician",
        "text": "service visit Okonkwo",
        "relevant": {"text/east-station-log": 2, "text/station-care": 0},
        "type": EXACT_WORD_QUERY_TYPE,
    },
)
ENCRYPTED_PDF_PASSWORD = "novaflow-demo"
"""The user password of ``broken/encrypted.pdf``; the pipeline is never given it."""

BROKEN_ITEMS: Mapping[str, str] = {
    "broken/truncated-png": "PNG cut off halfway: the header parses, the pixel data ends early",
    "broken/corrupt-pdf": "a %PDF header followed by random bytes: no objects, no pages",
    "broken/encrypted-pdf": "AES-256 encrypted PDF that needs a user password to open",
    "broken/empty-text": "a .txt file of 0 bytes: nothing to embed",
    "broken/binary-text": "random bytes named .txt: not decodable as UTF-8 text",
    "broken/missing-file": "the manifest row points at a file that does not exist",
    "broken/outside-root": "the manifest row's path (../outside.txt) escapes the corpus root",
}
"""The ids of the manifest rows that should be quarantined, each with why."""

IMAGE_FORMATS = ("png", "jpeg", "gif", "webp", "bmp", "tiff")
"""``images/pattern-<n>`` is in the n-th of these (1-based); bmp and tiff need converting."""

_LONG_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class DemoCorpus:
    """A generated corpus on disk.

    ``good_files`` manifest rows should embed; ``broken_files`` rows (``BROKEN_ITEMS``) should be
    quarantined, two of them because they point at no readable file. Together they are all the
    rows of ``manifest``.
    """

    root: Path
    manifest: Path
    good_files: int
    broken_files: int
    qrels: Path | None = None


@dataclass(frozen=True)
class DemoEntry:
    """One manifest row and the bytes of its file (``None``: the row points at no file we write)."""

    uri: str
    item_id: str
    metadata: Mapping[str, Any]
    content: bytes | None
    modality: Modality | None = None
    encoding: str | None = None

    def manifest_row(self) -> dict[str, Any]:
        """The row as the manifest holds it: ``modality`` and ``encoding`` only when set."""
        row = {"uri": self.uri, "id": self.item_id, "modality": self.modality}
        row |= {"encoding": self.encoding, "metadata": dict(self.metadata)}
        return {key: value for key, value in row.items() if value is not None}


"""The good PDFs; page 1 of each carries its title, later pages say which part they are."""

# file name: (topic, year, encoding); None is UTF-8. Texts are hard-wrapped as people write them.
_TEXT_FILES: dict[str, tuple[str, int, str | None]] = {
    "sourdough-baking.txt": ("sourdough baking", 2021, None),
    "alpine-cuisine.md": ("alpine cuisine", 2023, None),
    "lisbon-tiles.txt": ("portuguese tiles", 2022, "latin-1"),
    "tide-pools.txt": ("tide pools", 2024, None),
    "astronomy-history.txt": ("history of astronomy", 2025, None),  # see long_text
    "station-care.txt": ("station maintenance", 2024, None),
    "north-station-log.txt": ("station maintenance", 2024, None),
    "south-station-log.txt": ("station maintenance", 2024, None),
    "east-station-log.txt": ("station maintenance", 2024, None),
    "west-station-log.txt": ("station maintenance", 2024, None),
}
PDF_TOPICS = (
    PdfTopic("river-ecology", "River Ecology", 3, 2022, SENTENCES["river-ecology"]),
    PdfTopic("bridge-engineering", "Bridge Engineering", 5, 2023, SENTENCES["bridge-engineering"]),
    PdfTopic("jazz-history", "Jazz History", 2, 2024, SENTENCES["jazz-history"]),
)


# Clip length in seconds: audio is a tone, video a bouncing square with the tone as its sound.
# The long ones are over Nova's 30 s sync limit, so a demo run embeds them with async jobs.
_CLIP_SECONDS = {
    "audio/tone-1.wav": 6.0,
    "audio/tone-2.mp3": 8.0,
    "video/clip-1.mp4": 6.0,
    "video/clip-2.mp4": 10.0,
    "audio/recording-long.mp3": 95.0,
    "video/talk-long.mp4": 75.0,
}
LONG_CLIPS = ("audio/recording-long", "video/talk-long")
_KINDS = {"pdfs": "pdf", "images": "image", "texts": "text", "audio": "audio", "video": "video"}


def generate_demo_corpus(root: Path, seed: int = 0) -> DemoCorpus:
    """Writes the demo corpus and its manifest under ``root`` and says what it holds.

    The same ``seed`` gives byte-identical files and manifest. Files whose bytes are already
    right are left untouched (timestamps included); files that are not part of it are never
    deleted.
    """
    entries = demo_entries(seed)
    for entry in entries:
        if entry.content is not None:
            _write_if_changed(root / entry.uri, entry.content)
    manifest = root / MANIFEST_NAME
    _write_if_changed(manifest, manifest_text([entry.manifest_row() for entry in entries]))
    qrels = root / QRELS_NAME
    _write_if_changed(qrels, manifest_text(list(DEMO_QRELS)))
    broken = sum(entry.item_id in BROKEN_ITEMS for entry in entries)
    return DemoCorpus(
        root, manifest, good_files=len(entries) - broken, broken_files=broken, qrels=qrels
    )


def change_demo_corpus(corpus: DemoCorpus, seed: int) -> list[str]:
    """Edits the corpus as an incremental run should see it, and returns the ids it touched.

    The ids are, in order: a PDF that lost its last page, a text file with a paragraph appended,
    and an image deleted together with its manifest row (the item is gone, not broken). Nothing
    else changes. ``seed`` picks which; the same seed on the same corpus makes the same edits.
    Raises ``ValueError``, changing nothing, when no PDF has two pages or no text or image is
    left.
    """
    rng = random.Random(f"change:{seed}")
    rows = [json.loads(line) for line in corpus.manifest.read_text("utf-8").splitlines()]

    def pick(folder: str, usable: Callable[[Path], bool] = Path.is_file) -> dict[str, Any]:
        choices = [
            r for r in rows if r["uri"].startswith(folder) and usable(corpus.root / r["uri"])
        ]
        if not choices:
            raise ValueError(f"no file under {corpus.root / folder} is left to change")
        return rng.choice(choices)

    # All three are chosen before anything is written, so a corpus with nothing left to change
    # is refused untouched.
    pdf_row = pick("pdfs/", lambda path: path.is_file() and _page_count(path) > 1)
    text_row, image_row = pick("texts/"), pick("images/")
    pdf_path = corpus.root / pdf_row["uri"]
    pdf_path.write_bytes(pdf_without_last_page(pdf_path.read_bytes()))
    text_path, encoding = corpus.root / text_row["uri"], text_row.get("encoding", "utf-8")
    addition = f"\nRevision {seed}: this paragraph was added after the first run.\n"
    text_path.write_bytes((text_path.read_text(encoding) + addition).encode(encoding))
    (corpus.root / image_row["uri"]).unlink()
    corpus.manifest.write_text(manifest_text([r for r in rows if r is not image_row]), "utf-8")
    return [pdf_row["id"], text_row["id"], image_row["id"]]


def demo_entries(seed: int) -> tuple[DemoEntry, ...]:
    """Every manifest row of the corpus for ``seed``, good ones first, with its file's bytes."""
    entries = [
        _good(f"pdfs/{topic.slug}.pdf", topic.title.lower(), topic.year, topic_pdf(topic, seed))
        for topic in PDF_TOPICS
    ]
    for number, image_format in enumerate(IMAGE_FORMATS, 1):
        uri = f"images/pattern-{number}.{image_format}"
        image = sample_image(seed * 100 + number, image_format, width=320, height=240)
        # Declared on one row only, so the pipeline's declared and inferred paths are both used.
        modality: Modality | None = "image" if image_format == "tiff" else None
        entries.append(_good(uri, "abstract pattern", 2019 + number, image, modality))
    for name, (topic, year, encoding) in _TEXT_FILES.items():
        text = TEXTS[name] if name in TEXTS else long_text(seed)
        # Declared where guessing is unsafe: a .md file, and bytes that are not UTF-8.
        modality = "text" if encoding or name.endswith(".md") else None
        content = text.encode(encoding or "utf-8")
        entries.append(_good(f"texts/{name}", topic, year, content, modality, encoding))
    for number, (uri, seconds) in enumerate(_CLIP_SECONDS.items(), 1):
        if uri.startswith("audio/"):
            clip = sample_audio(seed * 100 + number, seconds, uri.rsplit(".", 1)[1])
        else:
            clip = sample_video(seed * 100 + number, seconds, "mp4", with_audio=True)
        topic = "synthetic tone" if uri.startswith("audio/") else "bouncing square"
        entries.append(_good(uri, topic, 2024, clip))
    return (*entries, *broken_entries(seed))


def broken_entries(seed: int) -> tuple[DemoEntry, ...]:
    """The rows of ``BROKEN_ITEMS``, in that order, each broken in the way it says."""
    png = sample_image(seed * 100 + 99, "png", width=320, height=240)
    encrypted = encrypted_pdf("Encrypted report", ENCRYPTED_PDF_PASSWORD, seed)
    files: dict[str, tuple[str, bytes | None]] = {
        "broken/truncated-png": ("broken/truncated.png", truncated(png, 0.5)),
        "broken/corrupt-pdf": ("broken/corrupt.pdf", b"%PDF-1.7\n" + garbage(seed, 4096)),
        "broken/encrypted-pdf": ("broken/encrypted.pdf", encrypted),
        "broken/empty-text": ("broken/empty.txt", b""),
        "broken/binary-text": ("broken/binary.txt", garbage(seed + 1, 2048)),
        "broken/missing-file": ("broken/missing.pdf", None),
        # Never written: the pipeline must refuse the path before it looks for the file.
        "broken/outside-root": ("../outside.txt", None),
    }
    return tuple(
        DemoEntry(uri, item_id, _metadata("broken input", 2024), content)
        for item_id, (uri, content) in files.items()
    )


def long_text(seed: int) -> str:
    """Numbered sections on the history of astronomy, just over ``_LONG_TEXT_CHARS`` characters:
    long enough that the pipeline must cut it into several chunks."""
    rng = random.Random(f"long-text:{seed}")
    sentences = SENTENCES["astronomy-history"].strip().splitlines()
    parts = ["A short history of astronomy\n"]
    while sum(map(len, parts)) < _LONG_TEXT_CHARS:
        parts.append(f"\nSection {len(parts)}\n\n{' '.join(rng.sample(sentences, k=4))}\n")
    return "".join(parts)


def manifest_text(rows: list[dict[str, Any]]) -> str:
    """JSONL for manifest ``rows``: one compact JSON object per line, in the order given."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _metadata(topic: str, year: int) -> dict[str, Any]:
    return {"topic": topic, "source": "demo", "year": year}


def _good(
    uri: str,
    topic: str,
    year: int,
    content: bytes,
    modality: Modality | None = None,
    encoding: str | None = None,
) -> DemoEntry:
    """The entry of a file that should embed, with an id like ``pdf/river-ecology``."""
    folder, name = uri.split("/", 1)
    item_id = f"{_KINDS[folder]}/{name.rsplit('.', 1)[0]}"
    return DemoEntry(uri, item_id, _metadata(topic, year), content, modality, encoding)


def _page_count(pdf_path: Path) -> int:
    with pymupdf.open(pdf_path) as document:
        return document.page_count


def _write_if_changed(path: Path, content: bytes | str) -> None:
    # Unchanged files keep their timestamps, so regenerating looks like no edit at all.
    data = content.encode() if isinstance(content, str) else content
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
