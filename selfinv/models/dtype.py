"""Networks accept images of any floating dtype and memory layout.

A float32 network given a float64 (or float16) image would stop with torch's "Input type
and bias type should be the same". ``@keeps_input_dtype`` on a backbone's ``forward``
casts a floating input to the dtype of the network's parameters and the output back to
the input's dtype; anything that is not a floating tensor is a ``TypeError`` naming it.
Under ``torch.autocast`` the parameters stay float32, so nothing is cast there.

When the network's weights are in the channels-last layout (the training engine converts
them: convolutions run faster so on CPU and GPU), the input is given the same layout, so
no convolution converts it back and forth.

Example::

    >>> import torch
    >>> from selfinv.models import UNet
    >>> UNet(1, 1, scales=2, base_channels=4)(torch.rand(1, 1, 8, 8, dtype=torch.float64)).dtype
    torch.float64
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor, nn


def keeps_input_dtype(forward: Callable[[nn.Module, Tensor], Tensor]) -> Callable[[nn.Module, Tensor], Tensor]:
    """Decorate ``forward(self, x)`` of a backbone (see the module docstring)."""

    @functools.wraps(forward)
    def wrapper(self: nn.Module, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"{type(self).__name__} expects a floating-point image tensor, got {got}")
        p = next(self.parameters(), None)
        if p is None:
            return forward(self, x)
        if x.ndim == 4 and p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(
                memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        if p.dtype == x.dtype or torch.is_autocast_enabled(x.device.type):
            return forward(self, x)
        return forward(self, x.to(p.dtype)).to(x.dtype)

    return wrapper
