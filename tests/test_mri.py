"""MRI's fast path for line masks (real FFTs along the rows, column FFTs on the kept
lines only) against the plain centred orthonormal FFT, in float64."""

from __future__ import annotations

import pytest
import torch

from selfinv.physics import MRI, mri_mask, to_channels, to_complex


def _reference(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``M fftshift(fft2(ifftshift(x), norm="ortho"))`` for real 2-channel x, mask broadcastable."""
    z = to_complex(x)
    k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    return to_channels(k * mask)


def _reference_adjoint(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    z = to_complex(y) * mask
    return to_channels(torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"),
                                          dim=(-2, -1)))


# (H, W): H/2 and W/2 even or odd; one odd size (the unpruned path)
@pytest.mark.parametrize("size", [(16, 12), (14, 18), (20, 8), (32, 32), (15, 12)])
@pytest.mark.parametrize("per_sample", [False, True])
def test_matches_the_centred_fft_and_is_an_exact_adjoint(size, per_sample):
    # float64: both paths are FFTs of the same data, they agree to ~1e-15 (measured <= 2e-15);
    # <A x, y> = <x, A^T y> to ~1e-18 relative (rounding only).
    H, W = size
    g = torch.Generator().manual_seed(sum(size) + per_sample)
    op = MRI((H, W), acceleration=4, center_fraction=0.1, generator=g)
    if per_sample:
        op = op.resample(3, g)
    x = torch.randn(3, 2, H, W, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, H, W, generator=g, dtype=torch.float64)
    m = op.mask.double()
    assert torch.allclose(op.A(x), _reference(x, m), rtol=0, atol=1e-12)
    assert torch.allclose(op.A_adjoint(y), _reference_adjoint(y, m), rtol=0, atol=1e-12)
    assert torch.allclose(op.A_dagger(y), _reference_adjoint(y, m), rtol=0, atol=1e-12)
    assert op.adjointness_error(x, y) < 1e-12
    # A A^T A = A: the pseudo-inverse identity, exactly
    assert torch.allclose(op.A(op.A_adjoint(op.A(x))), op.A(x), rtol=0, atol=1e-12)


def test_masks_outside_the_fast_path_give_the_same_operator():
    # a full 2-D mask, and per-sample line masks keeping different numbers of lines
    H, W = 16, 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, H, W, generator=g, dtype=torch.float64)
    y = torch.randn(2, 2, H, W, generator=g, dtype=torch.float64)
    mask2d = (torch.rand(1, 1, H, W, generator=g) < 0.4).double()
    lines = torch.stack([mri_mask(W, 4, 0.125, generator=g)[0], mri_mask(W, 2, 0.125, generator=g)[0]])
    for mask in (mask2d, lines):
        op = MRI((H, W), mask=mask)
        assert torch.allclose(op.A(x), _reference(x, mask), rtol=0, atol=1e-12)
        assert torch.allclose(op.A_adjoint(y), _reference_adjoint(y, mask), rtol=0, atol=1e-12)
        assert op.adjointness_error(x, y) < 1e-12


def test_fast_path_follows_a_new_mask_and_keeps_dtype_and_gradients():
    H, W = 16, 16
    g = torch.Generator().manual_seed(1)
    op = MRI((H, W), acceleration=4, center_fraction=0.125, generator=g)
    x = torch.randn(2, 2, H, W, generator=g, dtype=torch.float64)
    k1 = op.A(x)
    op2 = op.resample(2, g)  # new masks: the cached plan must not be reused
    assert torch.allclose(op2.A(x), _reference(x, op2.mask.double()), rtol=0, atol=1e-12)
    assert torch.equal(op.A(x), k1)
    op.mask.zero_()[..., :4] = 1  # an in-place edit of the mask is seen too
    assert torch.allclose(op.A(x), _reference(x, op.mask.double()), rtol=0, atol=1e-12)
    y32 = op.A(x.float())
    assert y32.dtype == torch.float32 and op.A_adjoint(y32).dtype == torch.float32
    assert y32.is_contiguous()
    xr = x.clone().requires_grad_(True)
    w = torch.randn(2, 2, H, W, generator=g, dtype=torch.float64)
    (op.A(xr) * w).sum().backward()
    assert torch.allclose(xr.grad, op.A_adjoint(w), rtol=0, atol=1e-12)


def test_small_transforms_run_on_one_thread_and_restore_the_setting(monkeypatch):
    # B x H x W <= SINGLE_THREAD_PIXELS: one thread inside the operator, torch's setting after it
    from selfinv.physics import mri as mri_module

    seen = []
    plan_forward = mri_module._LinePlan.forward

    def spy(self, x):
        seen.append(torch.get_num_threads())
        return plan_forward(self, x)

    monkeypatch.setattr(mri_module._LinePlan, "forward", spy)
    threads = torch.get_num_threads()
    op = MRI((16, 16), acceleration=4, center_fraction=0.125, generator=torch.Generator().manual_seed(2))
    op.A(torch.rand(2, 2, 16, 16))
    assert seen == [1] and torch.get_num_threads() == threads
