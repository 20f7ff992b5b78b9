"""Run a short chain of CPU kernels on fewer torch threads.

An operator made of sub-millisecond kernels gains little from a second thread and
loses much when another process holds a core: every kernel ends at a thread
barrier that waits for the descheduled thread (a scheduler time slice is a few
milliseconds). ``at_most_threads`` lowers torch's intra-op thread count for one
block and restores it afterwards; tensors on other devices are left alone.

Example:
    >>> import torch
    >>> x = torch.rand(4, 64, 64)
    >>> with at_most_threads(x, 1):
    ...     y = torch.fft.fft2(x)
    >>> y.shape
    torch.Size([4, 64, 64])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["at_most_threads", "available_cores", "use_available_cores"]


@contextmanager
def at_most_threads(t: Tensor, threads: int | None) -> Iterator[None]:
    """Run the block with at most ``threads`` torch CPU threads when ``t`` is on the CPU.

    ``None`` (or a count at least torch's current one) changes nothing.
    """
    current = torch.get_num_threads()
    if threads is None or t.device.type != "cpu" or threads >= current:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(current)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def use_available_cores() -> int:
    """Never more torch compute threads than cores available to the process (a container or a job
    scheduler may allow fewer than the machine has: more threads than cores only wait on each other).
    Returns the thread count now in use."""
    n = min(torch.get_num_threads(), available_cores())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n
