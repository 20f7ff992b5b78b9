"""The training optimiser: fused Adam where PyTorch has the kernel, the same update as the default Adam."""

import pytest
import torch
from torch import nn

from selfinv.losses.base import WeightedSum
from selfinv.losses.supervised import SupervisedLoss
from selfinv.physics import Denoising, GaussianNoise
from selfinv.training.module import SelfSupervisedModule
from selfinv.training.optimizers import adam, can_fuse


def _params(seed: int, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 3, 3, generator=g, dtype=dtype).requires_grad_(),
            torch.randn(4, generator=g, dtype=dtype).requires_grad_()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_adam_makes_the_default_adams_update(dtype, weight_decay):
    fused_params, loop_params = _params(0, dtype), _params(0, dtype)
    fused = adam(fused_params, lr=1e-2, weight_decay=weight_decay)
    loop = torch.optim.Adam(loop_params, lr=1e-2, weight_decay=weight_decay)
    assert fused.defaults["fused"] is True and not loop.defaults.get("fused")
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in fused_params]
        for ps, opt in ((fused_params, fused), (loop_params, loop)):
            for p, gr in zip(ps, grads, strict=True):
                p.grad = gr.clone()
            opt.step()
    for a, b, start in zip(fused_params, loop_params, _params(0, dtype), strict=True):
        assert (a - start).abs().mean() > 1e-2  # it moved (20 steps of lr 1e-2, random gradients)
        # the same arithmetic in another order: float32 rounding (~1e-7 relative) per step, 20 steps
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_adam_falls_back_where_there_is_no_fused_kernel():
    meta = [torch.zeros(3, device="meta", requires_grad=True)]
    assert not can_fuse(meta) and not can_fuse([])
    opt = adam(meta, lr=1e-3)
    assert not opt.defaults.get("fused")


def test_the_training_module_optimises_with_fused_adam():
    module = SelfSupervisedModule(nn.Conv2d(1, 1, 3, padding=1), Denoising(GaussianNoise(0.1)),
                                  WeightedSum([SupervisedLoss()], names=["sup"]), lr=1e-3, scheduler="none")
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["fused"] is True
