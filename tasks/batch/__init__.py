"""Stage 2c of a run, when batch inference is on: the sync shards embedded by Bedrock batch
inference jobs instead of InvokeModel calls."""
