"""Bad input never stops a run and never passes silently: a corpus made of every kind of broken
entry still completes, each one ends in the failures file with a specific reason, and the good
entries beside them are embedded."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pymupdf

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed
from tasks.demo.sample_media import garbage, sample_image, truncated
from tasks.settings import IndexSettings, NovaflowSettings, ThroughputSettings
from tasks.store import CheckpointStore
from tests.unit.media.test_pdf_pages import zero_page_pdf


def _pdf(path: Path, width: float = 595, height: float = 842, password: str | None = None) -> None:
    document = pymupdf.open()
    page = document.new_page(width=width, height=height)
    page.insert_text((72, 72), "quarterly report", fontsize=24)
    options: dict[str, Any] = {}
    if password:
        options = {"encryption": pymupdf.PDF_ENCRYPT_AES_256, "user_pw": password, "owner_pw": "o"}
    document.save(path, **options)
    document.close()


def test_every_kind_of_bad_input_is_quarantined_and_the_run_completes(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    _pdf(root / "good.pdf")
    _pdf(root / "huge-page.pdf", width=14_000, height=14_000)  # rendered smaller, not refused
    _pdf(root / "encrypted.pdf", password="secret")
    zero_page_pdf(root / "zero-pages.pdf")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + garbage(1, 2000))
    (root / "good.png").write_bytes(sample_image(1, "png"))
    (root / "truncated.png").write_bytes(truncated(sample_image(2, "png", 256, 256), 0.4))
    (root / "not-really.png").write_bytes(garbage(3, 3000))
    (root / "latin1.txt").write_bytes("Café à Lisbonne, très jolie.".encode("latin-1"))
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "outside.txt").write_text("outside the corpus root")
    big_metadata = {f"k{n}": "x" * 100 for n in range(60)}
    rows: list[str] = [
        *(
            json.dumps({"uri": name, "id": Path(name).stem.replace("good", f"good-{kind}")})
            for name, kind in (
                ("good.pdf", "pdf"), ("huge-page.pdf", ""), ("encrypted.pdf", ""),
                ("zero-pages.pdf", ""), ("corrupt.pdf", ""), ("good.png", "image"),
                ("truncated.png", ""), ("not-really.png", ""), ("latin1.txt", ""),
                ("empty.txt", ""), ("binary.txt", ""),
            )
        ),
        json.dumps({"uri": "missing.pdf"}),
        json.dumps({"uri": "../outside.txt"}),
        "{this is not json",
        json.dumps({"uri": "good.png", "id": "good-pdf"}),  # an id already taken
        json.dumps({"uri": "good.png", "id": "tagged", "metadata": big_metadata}),
        json.dumps({"uri": "good.png", "id": "bad-meta", "metadata": ["not", "an", "object"]}),
    ]  # fmt: skip
    (root / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    settings = NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="flow-tests", index=f"bad-{uuid.uuid4().hex[:12]}"),
        throughput=ThroughputSettings(shard_size=4, concurrency=2, render_processes=1),
    )

    summary = reembed(ReembedParameters(manifest=str(root / "manifest.jsonl"), settings=settings))

    assert summary.adds_up
    store = CheckpointStore(settings.store)
    failures = store.read_table(store.failures_path(summary.run_id)).to_pylist()
    reasons = {(row["item_id"], row["code"]) for row in failures}
    assert {
        ("encrypted", "pdf_encrypted"),
        ("zero-pages", "pdf_empty"),
        ("corrupt", "pdf_corrupt"),
        ("truncated", "image_truncated"),
        ("empty", "empty_file"),
        ("binary", "text_binary"),
        ("good-pdf", "duplicate_id"),
        ("bad-meta", "bad_metadata"),
    } <= reasons
    codes = {row["code"] for row in failures}
    assert {"not_found", "outside_root", "malformed_row"} <= codes
    assert any(item == "not-really" and code.startswith("image_") for item, code in reasons)
    assert all(len(row["message"]) > 10 for row in failures)
    # the good entries, the huge page, the latin-1 text and the over-limit metadata made it
    keys = {
        vector["key"]
        for page in aws_environment.client("s3vectors")
        .get_paginator("list_vectors")
        .paginate(vectorBucketName="flow-tests", indexName=settings.index.index)
        for vector in page["vectors"]
    }
    assert {"good-pdf#page=1", "huge-page#page=1", "good-image", "latin1#chunk=0", "tagged"} <= keys
    assert summary.metadata_warnings  # what did not fit was dropped, and said so
