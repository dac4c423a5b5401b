"""The Nova Multimodal Embeddings contract as novaflow sends it: ``InvokeModel`` request bodies
and response parsing (``requests``), and the ``StartAsyncInvoke`` segmented-embedding requests
with their limits (``segmented``). Shared by plan, embed, jobs and search; not a stage.
"""
