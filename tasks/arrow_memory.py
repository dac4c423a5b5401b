"""Which allocator Arrow's buffers come from in novaflow's processes.

pyarrow's default pool on Linux is mimalloc, which keeps the pages of freed buffers for later
allocations: a plan that reads thousands of partition files and a commit that writes them
leave the process's RSS growing with the files touched (``bench/bench_plan_scale.py``: peak RSS
+14% from a 1M- to a 4M-item state). jemalloc, also built into pyarrow's Linux wheels, hands
freed pages back on a timer, and the same run stays flat (+4%, and ~40 MiB lower). pyarrow
reads the choice (``ARROW_DEFAULT_MEMORY_POOL``) once, when it is imported: so the ``flows``
package asks for it before anything imports pyarrow, and a user's own choice stands.
"""

from __future__ import annotations

import os
import sys

POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def ask_for_jemalloc() -> None:
    """Have pyarrow, when first imported in this process, use jemalloc (Linux; a pool set in
    the environment is left alone). Too late once pyarrow is imported: it then keeps its own."""
    if sys.platform == "linux":
        os.environ.setdefault(POOL_VARIABLE, "jemalloc")
