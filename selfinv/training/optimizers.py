"""The optimiser of every training run: Adam, with its fused kernel where PyTorch has one.

``torch.optim.Adam`` on CPU tensors defaults to a Python loop over the parameters
(a handful of element-wise kernels per parameter tensor); ``fused=True`` updates all
of them in one kernel per step — the same update ``m ← β₁m + (1-β₁)g``,
``v ← β₂v + (1-β₂)g²``, ``θ ← θ - lr·m̂/(√v̂ + ε)`` (Kingma & Ba 2015), only faster.
Measured on a 2-core CPU with the default U-Net (117 k parameters, bf16 autocast,
batch 32×64²): the optimiser step 2.2–3.3 ms → 0.95 ms of a 110 ms training step.
The fused kernel exists for floating-point parameters on CPU and CUDA (PyTorch ≥ 2.4);
elsewhere (other devices, other dtypes) the default implementation is used.

Example::

    >>> import torch
    >>> opt = adam([torch.zeros(3, requires_grad=True)], lr=1e-3)
    >>> opt.defaults["fused"]
    True
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: devices with a fused Adam kernel (PyTorch ≥ 2.4)
FUSED_DEVICES = ("cpu", "cuda")


def can_fuse(params: list[torch.Tensor]) -> bool:
    """Whether fused Adam can update ``params``: all floating point, all on one device of ``FUSED_DEVICES``."""
    devices = {p.device.type for p in params}
    return bool(params) and len(devices) == 1 and devices <= set(FUSED_DEVICES) \
        and all(torch.is_floating_point(p) for p in params)


def adam(params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr, weight_decay)``, fused where :func:`can_fuse` (see the module docstring)."""
    params = list(params)
    if can_fuse(params):
        try:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):  # a PyTorch build without the kernel for this device or dtype
            pass
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
