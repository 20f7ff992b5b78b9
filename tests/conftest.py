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


def tiny_denoiser_config(loss: str = "supervised", sigma: float = 0.05, num_patches: int = 32, batch_size: int = 8,
                         steps: int = 3) -> dict:
    """A run config training a 4-channel U-Net denoiser on the bundled photographs for a few steps (tests that
    need a checkpoint); ``trainer.output_dir`` is the caller's."""
    return {
        "data": {"dataset": "natural-gray", "patch_size": 16, "num_patches": num_patches, "batch_size": batch_size,
                 "seed": 0},
        "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": sigma}}},
        "model": {"backbone": {"name": "unet", "args": {"scales": 2, "base_channels": 4, "batch_norm": False}}},
        "losses": [{"name": loss}],
        "trainer": {"max_steps": steps, "accelerator": "cpu", "progress_bar": False, "figures": False,
                    "val_every": 1000, "checkpoint_every": 1000},
    }
