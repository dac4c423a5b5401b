"""The evaluation stage: how well the index returns the right things.

Takes the run's checkpoints and the live index (and optionally labeled queries); produces the
figures of the evaluation report.
"""
