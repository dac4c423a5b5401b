"""The index's state: what it holds, item by item, as a Parquet dataset partitioned by a hash of
the item id (``state/<bucket>/<index>/``).

Read by the plan (joined with the corpus partition by partition), written by the commit (only
the partitions a run touched), and read by search and evaluation. A shared contract, so no
stage owns it. ``layout`` places items in partitions; ``dataset`` reads and writes them;
``commit`` applies a run's outcome and repairs an interrupted commit.
"""
