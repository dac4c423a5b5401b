"""Fixtures shared by the corpus tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A crawlable corpus holding every kind of entry a crawl meets, with a directory outside."""
    root = tmp_path / "corpus"
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "docs" / "deep" / "deeper" / "leaf.md").write_text("# leaf\n")
    (root / "docs" / "a.txt").write_text("a\n")
    (root / "docs" / "Report.PDF").write_bytes(b"%PDF-1.4 not really\n")
    (root / "notes.txt").write_text("Meeting notes\n")
    (root / "no-extension").write_text("plain text, sniffed\n")
    (root / "..dots.txt").write_text("hidden: skipped\n")
    (root / "weird..txt").write_text("two dots\n")
    (root / "blob.bin").write_bytes(bytes(range(256)))
    (root / "empty.txt").write_bytes(b"")
    (root / "c#sharp.txt").write_text("an id that cannot be a key\n")
    (root / ".hidden.txt").write_text("skipped\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    with open(os.fsencode(root) + b"/caf\xe9.txt", "wb") as handle:
        handle.write(b"latin-1 name\n")
    os.mkfifo(root / "pipe")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the index\n")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "latest.txt").symlink_to(root / "docs" / "a.txt")
    (root / "relative-link.txt").symlink_to("notes.txt")
    (root / "linked-docs").symlink_to(root / "docs", target_is_directory=True)
    (root / "linked-outside").symlink_to(outside, target_is_directory=True)
    (root / "dangling.txt").symlink_to(root / "gone.txt")
    return root
