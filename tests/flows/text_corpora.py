"""Small text corpora for the pacing tests: one chunk, so one model call, per item."""

from __future__ import annotations

import json
from pathlib import Path


def text_corpus(root: Path, tag: str, units: int) -> Path:
    """``units`` one-chunk texts under ``root`` and their manifest; returns the manifest."""
    (root / "notes").mkdir(parents=True)
    rows = []
    for n in range(units):
        (root / "notes" / f"{n}.txt").write_text(f"{tag} note {n} about river deltas\n")
        rows.append({"id": f"{tag}/{n}", "uri": f"notes/{n}.txt"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest
