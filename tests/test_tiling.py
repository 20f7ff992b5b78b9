"""selfinv.data.tiling: tiled prediction with blended overlaps."""

import pytest
import torch
from torch import nn

from selfinv.data import tiled_apply
from selfinv.data.tiling import blend_ramp, tile_starts, window_1d


def _pointwise(t):
    return t.pow(2) + 3 * torch.sin(t)


def test_tile_starts_cover_the_axis():
    for length, tile, ov in ((201, 64, 16), (150, 64, 16), (64, 64, 16), (40, 64, 16), (112, 64, 16)):
        starts = tile_starts(length, tile, ov)
        t = min(tile, length)
        covered = torch.zeros(length, dtype=torch.bool)
        for s in starts:
            covered[s:s + t] = True
        assert covered.all() and starts[-1] + t == length
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert all(0 < g <= tile - ov for g in gaps)  # neighbours overlap by >= ov


def test_ramps_are_a_partition_of_unity():
    for ov, m in ((16, 0), (16, 4), (16, 7), (9, 2)):
        r = blend_ramp(ov, m, dtype=torch.float64)
        assert torch.allclose(r + r.flip(0), torch.ones(ov, dtype=torch.float64), atol=1e-12)
        assert torch.all(r[:m] == 0)
    w = window_1d(0, 64, 64, 16, 4)  # a tile spanning the whole axis has no ramp
    assert torch.all(w == 1)


@pytest.mark.parametrize("shape", [(2, 3, 150, 201), (1, 1, 40, 30), (1, 2, 64, 100)])
def test_pointwise_fn_is_reproduced(shape):
    y = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = tiled_apply(_pointwise, y, tile=64, overlap=16)
    # only float32 rounding of (sum_t w_t f) / (sum_t w_t): a few ulp of values <= ~20
    assert out.shape == y.shape and torch.allclose(out, _pointwise(y), rtol=1e-6, atol=1e-5)


def test_memory_bound_and_batching_invariance():
    y = torch.randn(2, 1, 100, 90, generator=torch.Generator().manual_seed(1))
    sizes = []

    def fn(t):
        sizes.append(t.shape[0])
        return _pointwise(t)

    a = tiled_apply(fn, y, tile=32, overlap=8, batch_size=3)
    assert max(sizes) <= 3 * 2  # at most batch_size positions x B images per call
    assert sum(sizes) == 2 * len(tile_starts(100, 32, 8)) * len(tile_starts(90, 32, 8))
    b = tiled_apply(_pointwise, y, tile=32, overlap=8, batch_size=50)
    assert torch.equal(a, b)


def _small_cnn(seed=0):
    torch.manual_seed(seed)
    # three 3x3 convolutions: receptive field 7 x 7 (radius 3)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 1, 3, padding=1)).eval()


def test_cnn_with_receptive_field_below_overlap():
    net = _small_cnn()
    y = torch.rand(1, 1, 130, 97, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = net(y)
    scale = float(ref.abs().max())
    # margin 4 >= radius 3: every pixel with weight > 0 sees no tile cut -> equal up to float rounding
    exact = tiled_apply(net, y, tile=48, overlap=16)
    assert float((exact - ref).abs().max()) < 1e-5 * max(scale, 1.0)
    # margin 0 (pure ramp): the cut-side pixels contribute with small weights; receptive field 7 < overlap 16,
    # so the error stays small: measured 1.5e-3 = 1.5 % of max|output| with these fixed weights (margin 2:
    # 0.09 %); bound at 3 %. Deterministic (fixed seeds), so no sampling error to allow for.
    ramp_only = tiled_apply(net, y, tile=48, overlap=16, margin=0)
    err = float((ramp_only - ref).abs().max())
    assert 0 < err < 0.03 * scale
    # without overlap the tile cuts show: measured error ~ max|output| (68x the blended one)
    cut = tiled_apply(net, y, tile=48, overlap=0)
    assert float((cut - ref).abs().max()) > 5 * err


def test_spatial_parameters_are_cropped_with_y():
    g = torch.Generator().manual_seed(3)
    y = torch.rand(2, 1, 70, 90, generator=g)
    mask = (torch.rand(2, 1, 70, 90, generator=g) < 0.5).float()
    shared = (torch.rand(1, 1, 70, 90, generator=g) < 0.5).float()
    out = tiled_apply(lambda t, mask: t * mask, y, tile=32, overlap=8, spatial={"mask": mask})
    assert torch.allclose(out, y * mask, atol=1e-6)
    out = tiled_apply(lambda t, mask: t * mask, y, tile=32, overlap=8, spatial={"mask": shared})
    assert torch.allclose(out, y * shared, atol=1e-6)


def test_errors():
    y = torch.rand(1, 1, 20, 20)
    with pytest.raises(ValueError, match="overlap < tile"):
        tiled_apply(_pointwise, y, tile=8, overlap=8)
    with pytest.raises(ValueError, match="margin"):
        tiled_apply(_pointwise, y, tile=8, overlap=4, margin=2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tiled_apply(_pointwise, y[0], tile=8, overlap=2)
    with pytest.raises(ValueError, match="fn must return"):
        tiled_apply(lambda t: t[..., :-1], y, tile=8, overlap=2)
    with pytest.raises(ValueError, match="spatial tensor"):
        tiled_apply(lambda t, m: t, y, tile=8, overlap=2, spatial={"m": torch.ones(1, 1, 10, 10)})
