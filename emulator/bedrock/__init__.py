"""The Bedrock control plane stand-in (the ``bedrock`` service model): batch inference jobs.

:mod:`.control_api` checks requests against the service model's member constraints,
:mod:`.limits` holds the documented batch quotas, :mod:`.records` reads and validates the JSONL
input, :mod:`.output` runs each record through the stand-in's own InvokeModel and writes the
``.out`` files and the manifest, :mod:`.jobs` holds job records and their timeline, and
:mod:`.service` answers the four operations.
"""
