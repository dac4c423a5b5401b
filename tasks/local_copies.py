"""Where a unit's bytes are on this machine: the corpus file itself, or a cached download."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from tasks.aws_clients import s3_client


def local_source(uri: str, fingerprint: str, cache_dir: Path | None = None) -> Path:
    """A local path holding the bytes at ``uri``: the file itself, or a download from S3 cached
    under the version's ``fingerprint``."""
    if not uri.startswith("s3://"):
        return Path(uri)
    cache = cache_dir or Path(tempfile.gettempdir()) / "novaflow-cache"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / hashlib.sha256(f"{uri}\n{fingerprint}".encode()).hexdigest()
    if not target.exists():
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        partial = target.with_suffix(".part")
        s3_client().download_file(bucket, key, str(partial))
        partial.replace(target)
    return target
