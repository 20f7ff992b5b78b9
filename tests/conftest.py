"""Shared test settings: deterministic, small, CPU-friendly."""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def gen():
    """A fresh seeded CPU generator per test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Benchmark smoke tests set the thread count; later tests (bit-exact resume)
    must not inherit it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids spin-wait contention on the shared 2-core machine
    (``_restore_torch_threads`` puts the count back)."""
    torch.set_num_threads(1)
