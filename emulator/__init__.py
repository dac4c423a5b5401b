"""novaflow's local stand-in for Bedrock runtime (Nova Multimodal Embeddings) and Amazon S3 Vectors.

An independent implementation of ``../shared/reference/aws-apis.md``: it never imports novaflow's
``flows`` or ``tasks``, so a misreading of the API on either side shows up as a failing test.
Start it with ``python -m emulator`` (or ``novaflow emulator``) or in-process with
``emulator.app.Emulator``.
"""
