"""Which arithmetic a run uses when the config says ``precision: auto``.

Convolutions dominate every step. In bfloat16 they run several times faster where the
hardware has bf16 matrix units — NVIDIA GPUs since Ampere, and x86 CPUs with AMX or
AVX-512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) through oneDNN —
while the weights, the optimiser and the losses stay in float32 (mixed precision:
``torch.autocast`` casts only the matrix products). Measured on the 2-core Sapphire
Rapids machine of the benchmarks: 4-6x faster training steps of the default U-Net and
the same test PSNR after the same number of SURE steps (``benchmarks/results/anchor_train.md``).

``auto`` therefore means: ``bf16-mixed`` on CUDA devices that support bf16, ``16-mixed``
on older CUDA devices, ``bf16-mixed`` on CPUs that report ``amx_bf16`` or ``avx512_bf16``,
and ``32-true`` elsewhere (CPUs without bf16 units would be slower in bf16).

Example::

    >>> resolve_precision("32-true", "cpu")
    '32-true'
"""

from __future__ import annotations

import functools
import sys

import torch

#: CPU feature flags (Linux /proc/cpuinfo) of fast bfloat16 matrix arithmetic
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix units (read from ``/proc/cpuinfo``; False where it cannot be read)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in BF16_CPU_FLAGS)
    except OSError:
        return False
    return False


def resolve_precision(precision: str, accelerator: str) -> str:
    """``precision`` itself unless it is ``"auto"`` (see the module docstring)."""
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator in ("cpu", "auto") and cpu_has_fast_bf16():
        return "bf16-mixed"
    return "32-true"
