"""Reports: the run summary (terminal, ``summary.json``, Prefect artifact), the run's gathered
failures, and the evaluation report.
"""
