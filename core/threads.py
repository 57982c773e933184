"""CPU thread settings, in one place.

torch and faiss each start an OpenMP pool; with both loaded, idle threads of one spin while the
other works (a turn took 357 ms instead of 17 ms here). The wait policy must be set before either
is imported, so importing `core` (which every package does first) sets it.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def threads_per_process(requested: int = 0, local_processes: int = 1) -> int:
    """`requested` if set, else the machine's cores split evenly between the local processes."""
    if requested > 0:
        return requested
    return max(1, (os.cpu_count() or 1) // max(1, local_processes))


def set_torch_threads(requested: int = 0, local_processes: int = 1) -> int:
    """Give torch its share of the cores. Accelerate's launcher sets OMP_NUM_THREADS=1 for N
    processes, which would leave one core of each process's share idle, so set it explicitly."""
    import torch

    n = threads_per_process(requested, local_processes)
    torch.set_num_threads(n)
    return n
