"""Where a run's corpus comes from, and its items as they resolve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from botocore.client import BaseClient

from tasks.corpus.resolve import crawled_rows, manifest_directory, manifest_rows, resolved_items
from tasks.records import Failure, Item


@dataclass(frozen=True)
class CorpusSource:
    """Where the corpus comes from: a manifest file, or a directory / ``s3://`` prefix to crawl.

    ``root`` bounds local paths (a manifest's relative paths are relative to it); it defaults
    to the manifest's directory or the crawled directory.
    """

    manifest: str | None = None
    corpus: str | None = None
    root: str | None = None

    @property
    def reads_s3(self) -> bool:
        """Whether the manifest or the crawled prefix is on S3."""
        return any((value or "").startswith("s3://") for value in (self.manifest, self.corpus))

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.corpus is None):
            raise ValueError("give exactly one of a manifest or a corpus directory/prefix")


def corpus_items(source: CorpusSource, s3: BaseClient) -> Iterator[Item | Failure]:
    """The corpus's items, streamed as they resolve, and a failure for each row that does not
    resolve (with the reason a person can act on)."""
    client = s3
    if source.manifest is not None:
        rows = manifest_rows(source.manifest)
        root = source.root or manifest_directory(source.manifest)
    else:
        assert source.corpus is not None
        rows = crawled_rows(source.corpus, client)
        root = source.root or source.corpus
    return resolved_items(rows, root, client)
