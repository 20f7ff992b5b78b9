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

__all__ = ["at_most_threads"]


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
