"""Stage 2b, async jobs: takes the run's async units (long audio, video and text); produces one
``embeddings/run=<id>/job-<unit>.parquet`` per collected job and the job ledger, by staging the
inputs, submitting ``StartAsyncInvoke`` jobs, polling them and reading their output.
"""
