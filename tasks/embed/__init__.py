"""Stage 2a, embed: takes one shard of units; produces ``embeddings/run=<id>/part-<n>.parquet``
(a vector per unit) and the shard's quarantined units, through a bounded, paced pool of
``InvokeModel`` calls.
"""
