"""Where a run's corpus comes from, and its items as they resolve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from botocore.client import BaseClient

from tasks import aws_clients
from tasks.corpus.inventory import inventory_rows, is_inventory_manifest, read_inventory_manifest
from tasks.corpus.known_files import remembered_crawl
from tasks.corpus.resolve import crawled_rows, manifest_directory, manifest_rows, resolved_items
from tasks.records import Failure, Item
from tasks.store import CheckpointStore


@dataclass(frozen=True)
class CorpusSource:
    """Where the corpus comes from: a manifest file, or a directory / ``s3://`` prefix to crawl.

    A manifest whose name ends in ``.json`` is an S3 Inventory report's ``manifest.json``
    (``s3://…`` or a local path; see :mod:`tasks.corpus.inventory`), read as a crawl of its
    source bucket. ``root`` bounds local paths (a manifest's relative paths are relative to
    it); it defaults to the manifest's directory or the crawled directory, and for an inventory
    to ``s3://<source bucket>/`` (a root under it, ``s3://<source bucket>/docs/``, keeps only
    the objects under that prefix, as a crawl of it would).
    """

    manifest: str | None = None
    corpus: str | None = None
    root: str | None = None

    @property
    def reads_s3(self) -> bool:
        """Whether the manifest or the crawled prefix is on S3 (an S3 Inventory always is)."""
        if self.manifest is not None and is_inventory_manifest(self.manifest):
            return True
        return any((value or "").startswith("s3://") for value in (self.manifest, self.corpus))

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.corpus is None):
            raise ValueError("give exactly one of a manifest or a corpus directory/prefix")


def corpus_items(
    source: CorpusSource, s3: BaseClient | None = None, store: CheckpointStore | None = None
) -> Iterator[Item | Failure]:
    """The corpus's items, streamed as they resolve, and a failure for each row that does not
    resolve (with the reason a person can act on). S3 is read through ``s3``, by default
    :func:`tasks.aws_clients.s3_client` made when the corpus first needs it (a local corpus
    never does: the client's service model is ~50 ms of CPU). A crawl of a local directory
    keeps in ``store`` the record of what it found (:mod:`tasks.corpus.known_files`), so the
    next crawl with the same store reads only the files that changed since.

    An S3 Inventory's ``manifest.json`` is read (and checked) when this is called; its data
    files as the items are asked for. Raises what :func:`tasks.corpus.inventory.inventory_rows`
    raises for a report that cannot be read as a whole."""
    client = s3
    if source.manifest is not None and is_inventory_manifest(source.manifest):
        client = client or aws_clients.s3_client()
        inventory = read_inventory_manifest(source.manifest, client)
        root = source.root or inventory.source_root
        rows = inventory_rows(inventory, client, root)
    elif source.manifest is not None:
        rows = manifest_rows(source.manifest)
        root = source.root or manifest_directory(source.manifest)
    else:
        assert source.corpus is not None
        rows = crawled_rows(source.corpus, client)
        root = source.root or source.corpus
        if store is not None and source.corpus[:5].lower() != "s3://":
            return remembered_crawl(
                store, source.corpus, lambda known: resolved_items(rows, root, client, known)
            )
    return resolved_items(rows, root, client)
