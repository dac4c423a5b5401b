"""The corpus: crawl a directory or ``s3://`` prefix, or read a manifest (JSONL, CSV, Parquet), and
resolve each row to an :class:`~tasks.records.Item` (location kept under its root, modality,
fingerprint) or a :class:`~tasks.records.Failure` saying why not. Streams; holds no corpus.
"""
