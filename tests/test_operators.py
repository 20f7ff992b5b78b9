"""Linear operators: adjoint, pseudo-inverse, per-sample parameters, determinism, errors.

Every generic test is parametrised over all operators of ``selfinv.physics``
(plus ``Tomography`` when it has landed). Images are tiny (≤ 32×32) so the whole
file runs in a few seconds on CPU.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import selfinv.physics as P
from selfinv.physics import (
    MRI,
    Blur,
    CompressedSensing,
    Denoising,
    Downsampling,
    GaussianNoise,
    Inpainting,
    bicubic_kernel,
    box_kernel,
    gaussian_kernel,
    mri_mask,
    to_channels,
    to_complex,
)
from selfinv.physics.downsampling import keys_cubic

B = 3


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# name -> (factory(generator) -> physics, image shape without batch)
CASES = {
    "denoising": (lambda g: Denoising(), (2, 8, 8)),
    "inpainting": (lambda g: Inpainting((2, 8, 8), keep_ratio=0.5, generator=g), (2, 8, 8)),
    "inpainting_shared": (lambda g: Inpainting((1, 8, 8), keep_ratio=0.3, per_sample=False, generator=g),
                          (1, 8, 8)),
    "mri_random": (lambda g: MRI((16, 16), acceleration=4, center_fraction=0.125, generator=g), (2, 16, 16)),
    "mri_multicoil": (lambda g: P.MultiCoilMRI((16, 12), acceleration=2, center_fraction=0.25, coils=4,
                                               generator=g), (2, 16, 12)),
    "mri_equispaced": (lambda g: MRI((16, 12), acceleration=2, center_fraction=0.1, pattern="equispaced",
                                     generator=g), (2, 16, 12)),
    "blur_circular": (lambda g: Blur(sigma=1.0, boundary="circular", sigma_range=(0.5, 1.5)), (2, 12, 13)),
    "blur_valid": (lambda g: Blur(sigma=1.0, boundary="valid", sigma_range=(0.5, 1.0)), (2, 12, 13)),
    "blur_reflect": (lambda g: Blur(sigma=1.0, boundary="reflect", sigma_range=(0.5, 1.0)), (2, 12, 13)),
    "blur_box_reflect": (lambda g: Blur(kind="box", radius=2, boundary="reflect"), (1, 12, 13)),
    "blur_even_user_kernel": (lambda g: Blur(kernel=torch.rand(4, 6, generator=g), boundary="reflect"),
                              (1, 12, 13)),
    "downsampling_bicubic2": (lambda g: Downsampling((2, 16, 16), factor=2, filter="bicubic"), (2, 16, 16)),
    "downsampling_gaussian4": (lambda g: Downsampling((1, 16, 16), factor=4, filter="gaussian"), (1, 16, 16)),
    "downsampling_plain2": (lambda g: Downsampling((1, 8, 8), factor=2, filter=None), (1, 8, 8)),
    "cs_per_sample": (lambda g: CompressedSensing(40, (1, 8, 8), generator=g, per_sample=True), (1, 8, 8)),
    "cs_shared": (lambda g: CompressedSensing(30, (2, 4, 4), generator=g), (2, 4, 4)),
}
if getattr(P, "Tomography", None) is not None:  # built by another helper; included once it lands
    def _tomography(g):
        try:  # per-sample random angle offsets, when the operator offers them
            return P.Tomography(img_size=32, n_views=8, angle_sampling="offset")
        except TypeError:
            return P.Tomography(img_size=32, n_views=8)

    CASES["tomography"] = (_tomography, (1, 32, 32))

# closed-form pseudo-inverses: A A† A = A and A† A A† = A† to float64 round-off
EXACT_DAGGER = {"denoising", "inpainting", "inpainting_shared", "mri_random", "mri_equispaced",
                "downsampling_bicubic2", "downsampling_gaussian4", "downsampling_plain2",
                "cs_per_sample", "cs_shared"}
CG_DAGGER = {"blur_valid", "blur_reflect", "blur_box_reflect", "blur_even_user_kernel", "mri_multicoil"}


def make(name: str, seed: int = 0, batch: int = B):
    """The operator with freshly drawn per-sample parameters, a float64 image batch."""
    factory, shape = CASES[name]
    g = _g(seed)
    op = factory(g).resample(batch, g)
    x = torch.randn((batch,) + shape, generator=g, dtype=torch.float64)
    return op, x


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# -- adjointness ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_adjointness_float64(name):
    # Exact transposes agree to float64 round-off (~1e-16 · sqrt(#terms), measured <= 1e-15); a wrong
    # adjoint (flipped kernel, missing fold, wrong shift) gives errors of order 1e-1.
    op, x = make(name)
    y = torch.randn(op.A(x).shape, generator=_g(1), dtype=torch.float64)
    assert op.adjointness_error(x, y) < 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_autograd_vjp_equals_adjoint(name):
    # the gradient of <A x, w> with respect to x is Aᵀ w: autograd must agree with A_adjoint
    op, x = make(name)
    x = x.clone().requires_grad_(True)
    w = torch.randn(op.A(x).shape, generator=_g(8), dtype=torch.float64)
    (op.A(x) * w).sum().backward()
    assert rel(x.grad, op.A_adjoint(w)) < 1e-10


@pytest.mark.parametrize("name", list(CASES))
def test_float32_runs_and_keeps_dtype(name):
    op, x = make(name)
    x = x.float()
    y = op.A(x)
    assert y.dtype == torch.float32 and op.A_adjoint(y).dtype == torch.float32
    # float32 round-off ~6e-8 per operation, accumulated over ≤ 1e3 terms
    assert op.adjointness_error(x, torch.randn(y.shape, generator=_g(2))) < 1e-4


# -- pseudo-inverse ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXACT_DAGGER))
def test_exact_pseudo_inverse_identities(name):
    op, x = make(name)
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=_g(3), dtype=torch.float64)
    d = op.A_dagger(y)
    # closed forms (masks, unitary FFT, aliased Fourier inverse, float64 pinv): round-off only
    assert rel(op.A(op.A_dagger(ax)), ax) < 1e-10
    assert rel(op.A_dagger(op.A(d)), d) < 1e-10
    # A† y solves the normal equations Aᵀ A x = Aᵀ y (least squares)
    assert rel(op.A_adjoint(op.A(d)), op.A_adjoint(y)) < 1e-10


def test_circular_blur_truncated_pseudo_inverse():
    op, x = make("blur_circular")
    ax = op.A(x)
    # Frequencies with |K| <= eps·max|K| are dropped, and max|K| = 1 (kernel >= 0, sum 1):
    # per frequency the error of A A† A x is |K X| <= eps |X|, so ||A A† A x - A x|| <= eps ||x||.
    err = (op.A(op.A_dagger(ax)) - ax).norm()
    assert err <= op.dagger_eps * x.norm() * (1 + 1e-9)
    # ... and the truncated-SVD inverse satisfies A† A A† = A† exactly.
    y = torch.randn(ax.shape, generator=_g(4), dtype=torch.float64)
    d = op.A_dagger(y)
    assert rel(op.A_dagger(op.A(d)), d) < 1e-10
    # a well-conditioned kernel (sigma 0.5) is inverted exactly: A† A x = x
    sharp = Blur(sigma=0.5)
    assert rel(sharp.A_dagger(sharp.A(x)), x) < 1e-10


@pytest.mark.parametrize("name", sorted(CG_DAGGER))
def test_cg_pseudo_inverse_consistency(name):
    op, x = make(name)
    ax = op.A(x)
    # CG on the normal equations, 100 iterations, tol 1e-6 on ||Aᵀ(A z - y)||: the data
    # residual measured on these kernels is <= 6e-3 (ill-conditioned Gaussian blur), so
    # 2e-2 passes with margin; an operator whose adjoint is wrong does not converge (~1).
    assert rel(op.A(op.A_dagger(ax)), ax) < 2e-2


def test_cs_dagger_recovers_x_when_overdetermined():
    # m > n: G has full column rank almost surely, so G⁺ G = I.
    op = CompressedSensing(80, (1, 4, 4), generator=_g(5))
    x = torch.randn(2, 1, 4, 4, generator=_g(6), dtype=torch.float64)
    assert rel(op.A_dagger(op.A(x)), x) < 1e-10


# -- per-sample parameters -------------------------------------------------------------

# operators that draw a different parameter per sample ("*_shared" draw one per batch)
RANDOM = [n for n in CASES if CASES[n][0](_g()).is_random and not n.endswith("_shared")]


@pytest.mark.parametrize("name", RANDOM)
def test_per_sample_params_differ_and_match_single_samples(name):
    op, x = make(name, batch=4)
    assert op.is_random
    params = op.params()
    assert params, "a random operator must expose its parameters"
    drawn = set(op.sample_params(2, _g(3)))  # what it draws (MultiCoilMRI's sensitivities come with the data)
    assert drawn, "a random operator must draw some parameter"
    for pname, value in params.items():
        if pname in drawn:
            assert value.shape[0] == 4, f"{pname} should have one entry per sample"
            assert not torch.equal(value[0], value[1]), f"{pname} identical for two samples"
    y = op.A(x)
    yt = torch.randn(y.shape, generator=_g(7), dtype=torch.float64)
    for b in range(4):
        single = op.with_params(**{k: v[b:b + 1] if v.shape[0] == 4 else v for k, v in params.items()})
        assert torch.allclose(single.A(x[b:b + 1]), y[b:b + 1], rtol=1e-12, atol=1e-12)
        assert torch.allclose(single.A_adjoint(yt[b:b + 1]), op.A_adjoint(yt)[b:b + 1], rtol=1e-12, atol=1e-12)
        if name in EXACT_DAGGER or name == "blur_circular":
            assert torch.allclose(single.A_dagger(yt[b:b + 1]), op.A_dagger(yt)[b:b + 1],
                                  rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", RANDOM)
def test_with_params_returns_new_physics(name):
    op, x = make(name)
    fresh = op.sample_params(B, _g(99))
    new = op.with_params(**fresh)
    for k, v in fresh.items():
        assert torch.equal(new.params()[k], v)
        assert not torch.equal(op.params()[k], v), "with_params must not mutate the original"
    assert not torch.allclose(new.A(x), op.A(x))
    with pytest.raises(TypeError, match="unknown parameter"):
        op.with_params(not_a_param=torch.zeros(1))


def test_shared_parameters_broadcast():
    op, x = make("inpainting_shared")
    assert op.mask.shape[0] == 1
    assert torch.equal(op.A(x), x * op.mask)
    cs, xc = make("cs_shared")
    assert cs.matrix.shape[0] == 1


# -- determinism -------------------------------------------------------------------------

@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_parameters_and_noise(name):
    op1, x = make(name, seed=11)
    op2, _ = make(name, seed=11)
    op3, _ = make(name, seed=12)
    for k in op1.param_names:
        assert torch.equal(op1.params()[k], op2.params()[k])
    assert any(not torch.equal(op1.params()[k], op3.params()[k]) for k in op1.param_names)
    noisy1 = op1.with_noise(GaussianNoise(0.1))
    noisy2 = op2.with_noise(GaussianNoise(0.1))
    assert torch.equal(noisy1(x, _g(5)), noisy2(x, _g(5)))
    assert not torch.equal(noisy1(x, _g(5)), noisy1(x, _g(6)))


# -- errors ------------------------------------------------------------------------------

SHAPE_CHECKED = [n for n in CASES if n != "denoising"]  # Denoising is the identity on any tensor


@pytest.mark.parametrize("name", SHAPE_CHECKED)
def test_wrong_rank_and_dtype_raise(name):
    op, x = make(name)
    with pytest.raises((ValueError, TypeError), match=r"\(B, C, H, W\)"):
        op.A(x[0])
    with pytest.raises(TypeError, match="floating"):
        op.A(x.long())


@pytest.mark.parametrize("name", [n for n in SHAPE_CHECKED if not n.startswith("blur")
                                  and n != "tomography"])
def test_wrong_image_size_names_expected_size(name):
    op, x = make(name)
    expected = str(tuple(x.shape[-2:]))
    with pytest.raises(ValueError, match=re.escape(expected)):
        op.A(torch.zeros(x.shape[:-1] + (x.shape[-1] + 4,), dtype=x.dtype))


@pytest.mark.parametrize("name", RANDOM)
def test_parameter_batch_mismatch_raises(name):
    op, x = make(name, batch=3)
    with pytest.raises(ValueError, match="2 or 1|batch has 2"):
        op.A(x[:2])


@pytest.mark.parametrize("bad", [
    lambda: Inpainting((1, 8, 8), keep_ratio=0.0),
    lambda: Inpainting((1, 8, 8), keep_ratio=1.5),
    lambda: Inpainting((1, 8, 8), mask=torch.full((8, 8), 0.5)),
    lambda: Inpainting((1, 8, 8), mask=torch.ones(1, 1, 8, 9)),
    lambda: MRI((16, 16), acceleration=3),
    lambda: MRI((16, 16), pattern="spiral"),
    lambda: MRI((16, 16), acceleration=8, center_fraction=0.5),
    lambda: MRI((16, 16), mask=torch.ones(1, 1, 1, 15)),
    lambda: Blur(sigma=-1.0),
    lambda: Blur(kind="box", radius=-1),
    lambda: Blur(kind="motion"),
    lambda: Blur(boundary="zeros"),
    lambda: Downsampling((1, 16, 16), factor=3),
    lambda: Downsampling((1, 18, 18), factor=4),
    lambda: Downsampling((1, 16, 16), filter="lanczos"),
    lambda: Downsampling((1, 16, 16), boundary="reflect"),
    lambda: CompressedSensing(0, (1, 4, 4)),
    lambda: CompressedSensing(10, (1, 4, 4)).with_params(matrix=torch.zeros(1, 10, 17)),
    lambda: gaussian_kernel(-0.5),
])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_error_messages_name_expected_shapes():
    with pytest.raises(ValueError, match=r"\(B or 1, 1 or 1, 8, 8\)|\(B or 1, 1, 8, 8\)|8, 8"):
        Inpainting((1, 8, 8), mask=torch.ones(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B or 1, 1, 1, 16\)"):
        MRI((16, 16), mask=torch.ones(1, 1, 1, 15))
    with pytest.raises(ValueError, match=r"\(B or 1, 10, 16\)"):
        CompressedSensing(10, (1, 4, 4)).with_params(matrix=torch.zeros(1, 10, 17))
    with pytest.raises(ValueError, match=r"2 channel"):
        MRI((8, 8)).A(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(1, 30\)"):
        CompressedSensing(30, (1, 4, 4)).A_adjoint(torch.zeros(2, 1, 1, 29))


# -- operator-specific maths -----------------------------------------------------------------

def test_inpainting_keep_ratio_and_zero_fill():
    p, H = 0.3, 64
    op = Inpainting((1, H, H), keep_ratio=p)
    masks = op.sample_params(16, _g(8))["mask"]
    n = masks.numel()
    # Bernoulli mean: standard error sqrt(p(1-p)/n) = 0.0014 for n = 65536; 4 SE bound
    assert abs(float(masks.mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    noisy = op.with_params(mask=masks).with_noise(GaussianNoise(0.5))
    y = noisy(torch.ones(16, 1, H, H), _g(9))
    assert torch.all(y[masks == 0] == 0), "unobserved pixels must stay zero after noise"
    assert float(y[masks == 1].std()) > 0.4
    fixed = Inpainting((1, 4, 4), mask=torch.eye(4))
    assert not fixed.is_random and fixed.sample_params(3, _g()) == {}


def test_mri_matches_centred_unitary_fft():
    H, W = 16, 12
    g = _g(10)
    x = torch.randn(2, 2, H, W, generator=g, dtype=torch.float64)
    full = MRI((H, W), mask=torch.ones(W))
    k = full.A(x)
    z = to_complex(x)
    ref = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    assert torch.allclose(to_complex(k), ref, atol=1e-12)
    assert abs(float(k.norm() / x.norm()) - 1) < 1e-12  # Parseval: unitary
    assert torch.allclose(full.A_adjoint(k), x, atol=1e-12)
    # a constant image has all its energy at the DC sample (H//2, W//2)
    const = torch.zeros(1, 2, H, W, dtype=torch.float64)
    const[:, 0] = 1.0
    kc = full.A(const)
    assert abs(float(kc[0, 0, H // 2, W // 2]) - math.sqrt(H * W)) < 1e-10
    # complex input is accepted and gives the same k-space
    assert torch.allclose(full.A(to_complex(x)), k)
    assert torch.equal(to_channels(to_complex(x)), x)


@pytest.mark.parametrize("pattern", ["random", "equispaced"])
@pytest.mark.parametrize("acc", [2, 4, 8])
def test_mri_mask_line_count_and_centre(pattern, acc):
    W, cf = 64, 0.08
    m = mri_mask(W, acc, cf, pattern, batch_size=5, generator=_g(acc))
    assert m.shape == (5, 1, 1, W)
    assert torch.all(m.sum(-1) == round(W / acc))
    n_c = round(W * cf)
    start = W // 2 - n_c // 2
    assert torch.all(m[..., start:start + n_c] == 1)
    assert not torch.equal(m[0], m[1])  # per-sample draws (random subset or random offset)
    if pattern == "equispaced":
        outer = [i for i in range(W) if not start <= i < start + n_c]
        picked = [outer.index(i) for i in m[0, 0, 0].nonzero().flatten().tolist() if i in outer]
        gaps = torch.tensor(picked).diff().float()
        spacing = (W - n_c) / (round(W / acc) - n_c)
        assert float((gaps - spacing).abs().max()) <= 1.0  # floor of offset + k·spacing


def test_mri_noise_only_on_sampled_lines():
    op = MRI((8, 8), acceleration=2, center_fraction=0.25, generator=_g(), noise=GaussianNoise(1.0))
    y = op(torch.zeros(2, 2, 8, 8), _g(1))
    off = (op.mask.expand_as(y) == 0)
    assert torch.all(y[off] == 0) and float(y[~off].abs().sum()) > 0


def test_kernel_builders():
    for s in (1.0, 2.0, 3.0):
        k = gaussian_kernel(s).double()
        n = k.shape[0]
        assert n == 2 * math.ceil(3 * s) + 1 and abs(float(k.sum()) - 1) < 1e-6
        t = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        # truncation at 3σ and sampling lower the second moment by ~1.2 %; 2 % bound
        assert abs(float((k.sum(1) * t**2).sum()) / s**2 - 1) < 0.02
    assert torch.allclose(box_kernel(2), torch.full((5, 5), 1 / 25))
    assert gaussian_kernel(0.0).shape == (1, 1)
    # Keys cubic, a = -0.5: w(0) = 1, w(±1) = w(±2) = 0, w(0.5) = 0.5625, w(1.5) = -0.0625
    t = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5, 1.5, 2.5], dtype=torch.float64)
    assert torch.allclose(keys_cubic(t), torch.tensor([1, 0, 0, 0, 0.5625, -0.0625, 0], dtype=torch.float64))
    kb = bicubic_kernel(2)
    assert kb.shape == (8, 8) and abs(float(kb.sum()) - 1) < 1e-6 and torch.allclose(kb, kb.T)


def test_blur_boundaries_agree_in_the_interior():
    g = _g(12)
    x = torch.randn(2, 1, 16, 15, generator=g, dtype=torch.float64)
    kernel = torch.rand(5, 4, generator=g, dtype=torch.float64)
    circ = Blur(kernel=kernel).A(x)
    valid = Blur(kernel=kernel, boundary="valid").A(x)
    refl = Blur(kernel=kernel, boundary="reflect").A(x)
    kh, kw = kernel.shape
    oh, ow = kh - 1 - kh // 2, kw - 1 - kw // 2  # valid[i] = circular[i + k - 1 - c]
    assert valid.shape[-2:] == (16 - kh + 1, 15 - kw + 1)
    assert torch.allclose(valid, circ[..., oh:oh + valid.shape[-2], ow:ow + valid.shape[-1]], atol=1e-12)
    assert torch.allclose(valid, refl[..., oh:oh + valid.shape[-2], ow:ow + valid.shape[-1]], atol=1e-12)
    # a delta is mapped to the (true-convolution) kernel centred at (kh//2, kw//2)
    delta = torch.zeros(1, 1, 16, 15, dtype=torch.float64)
    delta[..., 8, 7] = 1
    out = Blur(kernel=kernel).A(delta)[0, 0]
    assert torch.allclose(out[8 - kh // 2:8 - kh // 2 + kh, 7 - kw // 2:7 - kw // 2 + kw], kernel, atol=1e-12)
    # sum-one kernels keep constants with reflect / circular boundaries
    c = torch.full((1, 1, 16, 16), 3.0, dtype=torch.float64)
    for bd in ("circular", "reflect"):
        assert torch.allclose(Blur(sigma=1.5, boundary=bd).A(c), c, atol=1e-6)


def test_blur_per_channel_kernels():
    g = _g(13)
    x = torch.randn(2, 3, 10, 10, generator=g, dtype=torch.float64)
    kernels = torch.rand(1, 3, 3, 3, generator=g, dtype=torch.float64)
    for bd in ("circular", "valid", "reflect"):
        op = Blur(kernel=kernels, boundary=bd)
        y = op.A(x)
        for c in range(3):
            one = Blur(kernel=kernels[0, c], boundary=bd).A(x[:, c:c + 1])
            assert torch.allclose(y[:, c:c + 1], one, atol=1e-12)
        assert op.adjointness_error(x, torch.randn(y.shape, generator=g, dtype=torch.float64)) < 1e-12


def test_downsampling_decimates_filtered_image():
    x = torch.randn(2, 1, 16, 16, generator=_g(14), dtype=torch.float64)
    assert torch.equal(Downsampling((1, 16, 16), 2, filter=None).A(x), x[..., ::2, ::2])
    op = Downsampling((1, 16, 16), 4, filter="bicubic")  # sampling phase f/2 - 1 = 1: block centres
    assert torch.allclose(op.A(x), Blur(kernel=bicubic_kernel(4).double()).A(x)[..., 1::4, 1::4], atol=1e-12)
    op2 = Downsampling((1, 16, 16), 2, filter="bicubic")  # phase 0
    assert torch.allclose(op2.A(x), Blur(kernel=bicubic_kernel(2).double()).A(x)[..., ::2, ::2], atol=1e-12)
    c = torch.full((1, 1, 16, 16), 2.0, dtype=torch.float64)
    assert torch.allclose(op.A(c), torch.full((1, 1, 4, 4), 2.0, dtype=torch.float64), atol=1e-6)
    # the aliased spectrum of plain decimation is 1 everywhere (A Aᵀ = I)
    plain = Downsampling((1, 8, 8), 2, filter=None)
    assert torch.allclose(plain.aliased_spectrum(x), torch.ones(4, 4, dtype=torch.float64))


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_downsampling_is_image_resizing(factor):
    """The docstring's convention: away from the (circular) border, ``A`` is the anti-aliased bicubic
    downscaling of ``PIL.Image.resize`` (each low-resolution pixel centred on its f x f block)."""
    from PIL import Image

    x = torch.rand(1, 1, 64, 64, generator=_g(41), dtype=torch.float64)
    y = Downsampling((1, 64, 64), factor, filter="bicubic").A(x)[0, 0]
    img = Image.fromarray(x[0, 0].float().numpy(), mode="F").resize((64 // factor,) * 2, Image.BICUBIC)
    ref = torch.from_numpy(np.array(img)).double()
    inner = slice(3, 64 // factor - 3)  # PIL clamps at the border, A wraps around
    assert float((y[inner, inner] - ref[inner, inner]).abs().max()) < 1e-5  # float32 PIL; a 1-px shift gives > 0.05


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("size", [48, 64])
def test_bicubic_downsampling_commutes_with_rotations_and_flips(factor, size):
    """Block-centred sampling: the grid is symmetric about the image centre, so ``A R = R' A`` for the
    90° rotations and flips ``R`` (the premise of the SEI paper's "rotations do not help SR")."""
    x = torch.rand(2, 1, size, size, generator=_g(42), dtype=torch.float64)
    op = Downsampling((1, size, size), factor, filter="bicubic")
    for k in (1, 2, 3):
        assert torch.allclose(op.A(torch.rot90(x, k, (-2, -1))), torch.rot90(op.A(x), k, (-2, -1)), atol=1e-12)
    for dims in ((-1,), (-2,)):
        assert torch.allclose(op.A(torch.flip(x, dims)), torch.flip(op.A(x), dims), atol=1e-12)


def test_compressed_sensing_matrix_statistics():
    m, shape = 64, (1, 8, 8)
    op = CompressedSensing(m, shape, generator=_g(15))
    G = op.matrix.double()
    n_entries = G.numel()
    # m·G_ij² ~ χ²₁: mean 1, variance 2, so the SE of the mean is sqrt(2 / 4096) = 0.022; 4 SE
    assert abs(float((G**2).mean() * m) - 1) < 4 * math.sqrt(2 / n_entries)
    assert abs(float(G.mean())) < 4 / math.sqrt(m * n_entries)
    y = op.A(torch.zeros((2,) + shape))
    assert y.shape == (2, 1, 1, m)


def test_batched_cg_keeps_converged_samples_at_the_minimum_norm_solution():
    from selfinv.physics import conjugate_gradient

    g = _g(0)
    n = 64
    Q, _ = torch.linalg.qr(torch.randn(2, n, n, generator=g, dtype=torch.float64))
    # sample 0: singular, well conditioned on its range (converges in a few steps);
    # sample 1: condition number 1e6 (keeps the batch iterating)
    d0 = torch.cat([1 + torch.rand(n // 2, generator=g, dtype=torch.float64), torch.zeros(n // 2, dtype=torch.float64)])
    d1 = torch.logspace(0, -6, n, dtype=torch.float64)
    M = torch.stack([Q[0] @ torch.diag(d0) @ Q[0].T, Q[1] @ torch.diag(d1) @ Q[1].T])

    def apply(v):
        return (M @ v.reshape(2, n, 1)).reshape(v.shape)

    b = apply(torch.randn(2, 1, 1, n, generator=g, dtype=torch.float64))
    x = conjugate_gradient(apply, b, max_iter=200, tol=1e-6)
    x_min = (torch.linalg.pinv(M[0]) @ b[0].reshape(n, 1)).reshape(1, 1, n)
    # CG from 0 stays in the range of M, so it converges to the minimum-norm solution
    assert rel(x[0], x_min) < 1e-3


@pytest.mark.parametrize("name", list(CASES))
def test_measurement_shape_is_the_shape_of_A_x(name):
    """One contract for sizes: ``measurement_shape`` of an image shape is what ``A`` returns, and
    ``for_measurement`` of that shape is an operator that takes it."""
    op, x = make(name)
    shape = tuple(op.A(x).shape[1:])
    assert tuple(op.measurement_shape(tuple(x.shape[1:]))) == shape
    again = op.for_measurement(shape)
    assert tuple(again.A(x).shape[1:]) == shape
