"""What the flow tests read back from the in-process stand-in: the keys an index holds and how
many calls a service answered."""

from __future__ import annotations

from botocore.client import BaseClient

from emulator.app import Emulator
from tasks.settings import NovaflowSettings


def index_keys(client: BaseClient, settings: NovaflowSettings) -> set[str]:
    """Every key the index of ``settings`` holds (``client``: an s3vectors client)."""
    pages = client.get_paginator("list_vectors").paginate(
        vectorBucketName=settings.index.vector_bucket, indexName=settings.index.index
    )
    return {vector["key"] for page in pages for vector in page["vectors"]}


def calls(stand_in: Emulator, service: str, operation: str) -> int:
    """How many ``operation`` calls ``service`` answered since the last reset."""
    return stand_in.stats()[service]["calls"].get(operation, 0)
