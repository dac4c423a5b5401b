"""The searchable text of each vector: what a full-text (BM25) or hybrid search of the index
matches, stored in one metadata key (:data:`SEARCHABLE_TEXT_KEY`) when
``IndexSettings.searchable_text`` is on.

A text chunk's text is its characters of the file (``char_start``-``char_end``), a PDF page's is
the text PyMuPDF extracts from it; an image, a clip or a recording has the text of its item's
``caption`` metadata, if the manifest gave one, and none otherwise. Texts are read back from the
sources when the vectors are loaded (the checkpoints keep vectors, not copies of the corpus),
and cut to what the metadata limits leave room for: a cut text is counted, never silent.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from botocore.client import BaseClient

from tasks.aws_clients import s3_client
from tasks.media.texts import decoded_text
from tasks.pacing import Pacer
from tasks.settings import IndexSettings
from tasks.state.dataset import StateDataset
from tasks.vector_store import SEARCHABLE_TEXT_KEY

MAX_TEXT_BYTES = 30_000
"""The most bytes of text a vector carries when the key is non-filterable: the 40 KB of metadata
a vector holds, less room for the rest of its metadata."""
MAX_FILTERABLE_TEXT_BYTES = 1_500
"""The most when the index keeps the key filterable (made before the text was turned on): the
2 KB of filterable metadata, less room for the rest."""
CAPTION_KEY = "caption"
_OPEN_SOURCES = 4


@dataclass
class TextCounts:
    """What attaching texts did: ``attached`` vectors carry a text, ``truncated`` of them had it
    cut to fit the metadata limits."""

    attached: int = 0
    truncated: int = 0


@dataclass
class _Sources:
    """The sources texts are read from, the last few kept open: a shard's units of one item
    come together. S3 objects are downloaded into a directory of this load's own."""

    scratch: Path
    _texts: OrderedDict[str, Any] = field(default_factory=OrderedDict)

    def text_of(self, uri: str) -> str:
        return self._opened(uri, lambda path: decoded_text(path.read_bytes()))

    def page_text(self, uri: str, page: int) -> str:
        document = self._opened(uri, _pdf)
        return str(document[page - 1].get_text())

    def _opened(self, uri: str, opener: Any) -> Any:
        if uri in self._texts:
            self._texts.move_to_end(uri)
            return self._texts[uri]
        opened = opener(self._local(uri))
        self._texts[uri] = opened
        if len(self._texts) > _OPEN_SOURCES:
            _, old = self._texts.popitem(last=False)
            getattr(old, "close", lambda: None)()
        return opened

    def _local(self, uri: str) -> Path:
        if not uri.startswith("s3://"):
            return Path(uri)
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        target = self.scratch / f"{len(list(self.scratch.iterdir()))}"
        s3_client().download_file(bucket, key, str(target))
        return target

    def close(self) -> None:
        for opened in self._texts.values():
            getattr(opened, "close", lambda: None)()
        self._texts.clear()


def _pdf(path: Path) -> Any:
    import pymupdf

    return pymupdf.open(str(path))


def unit_text(metadata: Mapping[str, Any], sources: _Sources) -> str | None:
    """The searchable text of the vector whose metadata is ``metadata`` (None when it has
    none). Raises OSError or ValueError when its source cannot be read."""
    uri = str(metadata.get("source_uri", ""))
    modality = metadata.get("modality")
    if modality == "text" and "char_start" in metadata and "char_end" in metadata:
        return sources.text_of(uri)[int(metadata["char_start"]) : int(metadata["char_end"])]
    if modality == "pdf" and "page" in metadata:
        return sources.page_text(uri, int(metadata["page"]))
    caption = metadata.get(CAPTION_KEY)
    return caption if isinstance(caption, str) and caption else None


def _cut(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", errors="ignore"), True


def with_searchable_texts(
    rows: Iterable[tuple[str, np.ndarray, Mapping[str, Any]]],
    counts: TextCounts,
    filterable: bool,
) -> Iterator[tuple[str, np.ndarray, Mapping[str, Any]]]:
    """``rows`` (key, vector, metadata) with each vector's searchable text in its metadata,
    cut to the limit of a filterable or non-filterable key; ``counts`` hears of each."""
    limit = MAX_FILTERABLE_TEXT_BYTES if filterable else MAX_TEXT_BYTES
    with tempfile.TemporaryDirectory(prefix="novaflow-texts-") as scratch:
        sources = _Sources(Path(scratch))
        try:
            for key, vector, metadata in rows:
                try:
                    text = unit_text(metadata, sources)
                except (OSError, ValueError, IndexError):
                    text = None  # the vector is still loaded, only without its text
                if text:
                    text, cut = _cut(text, limit)
                    counts.attached += 1
                    counts.truncated += cut
                    metadata = {**metadata, SEARCHABLE_TEXT_KEY: text}
                yield key, vector, metadata
        finally:
            sources.close()


GET_VECTORS_MAX_KEYS = 100  # aws-apis.md §2: GetVectors takes 1-100 keys


def held_vectors(
    client: BaseClient, settings: IndexSettings, state: StateDataset, pacer: Pacer
) -> Iterator[tuple[str, np.ndarray, Mapping[str, Any]]]:
    """Every vector the state lists, with its metadata, as the index holds it (GetVectors,
    100 keys a call, paced like the writes): what turning searchable text on writes again."""
    where = {"vectorBucketName": settings.vector_bucket, "indexName": settings.index}
    pending: list[str] = []

    def got(keys: list[str]) -> Iterator[tuple[str, np.ndarray, Mapping[str, Any]]]:
        pacer.acquire(len(keys))
        answer = client.get_vectors(**where, keys=keys, returnData=True, returnMetadata=True)
        for vector in answer.get("vectors", []):
            data = np.asarray(vector["data"]["float32"], dtype=np.float32)
            yield vector["key"], data, vector.get("metadata", {})

    for batch in state.batches(["keys"]):
        for keys in batch.column("keys").to_pylist():
            pending.extend(keys)
            while len(pending) >= GET_VECTORS_MAX_KEYS:
                yield from got(pending[:GET_VECTORS_MAX_KEYS])
                del pending[:GET_VECTORS_MAX_KEYS]
    if pending:
        yield from got(pending)
