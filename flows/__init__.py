"""novaflow's Prefect flows and its command.

Importing the package sets Arrow's allocator for the process before any of its modules import
pyarrow (see :mod:`tasks.arrow_memory`): the command, the flows a deployment's worker runs and
the tests all get it.
"""

from tasks.arrow_memory import ask_for_jemalloc

ask_for_jemalloc()
