"""Stages 3 and 4, load and commit: takes the run's checkpoints; brings the S3 Vectors index in line
(puts, deletes) and records what it now holds in the state. Also searches it.
"""
