"""What novaflow knows of its runs, shared by the CLI, the flows and every stage: each run's
record (what it was asked to do, written before any work), which runs were left unfinished, and
the lease that lets one process at a time work on a run."""
