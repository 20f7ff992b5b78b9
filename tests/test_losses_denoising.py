"""Denoising losses of the tutorial, Part 2: proofs by Monte Carlo on fixed functions.

Unbiasedness tests use *paired* differences ``d = L(y) - risk(y)`` computed on the
same noisy draws, split into ``K`` independent chunks; the standard error is
``SE = std(d_k) / sqrt(K)`` and we accept ``|mean(d)| < 4 SE`` (a 4-sigma band:
false alarm rate ~6e-5 for a correct implementation). Each test also asserts that
``4 SE`` is much smaller than the size of the error a typical bug would make
(forgotten constant, factor 2 on the divergence), so the tests can fail.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfinv.losses import (
    R2R,
    SURE,
    UNSURE,
    AutoencoderLoss,
    BlindSpotLoss,
    LossConfigError,
    MeasurementConsistency,
    Neighbor2Neighbor,
    Noise2Noise,
    Noise2Score,
    SplittingLoss,
    SupervisedLoss,
)
from selfinv.losses.sure import exact_diagonal_derivatives, mc_divergence, mc_second_order_derivatives
from selfinv.physics import (
    ColoredGaussianNoise,
    Denoising,
    GammaNoise,
    GaussianNoise,
    LinearPhysics,
    NoNoise,
    PoissonGaussianNoise,
    PoissonNoise,
)

DT = torch.float64


# ----------------------------------------------------------------------------- helpers
class Backbone(nn.Module):
    """Reconstructor ``model(y, physics) = net(y)`` (denoising)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y, physics):
        return self.net(y)


def smoothing_filter() -> nn.Module:
    """Fixed 3x3 filter (centre 0.4), zero padding: a linear, non-trivial f (div = 0.4 n)."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    w = torch.full((3, 3), 0.6 / 8)
    w[1, 1] = 0.4
    conv.weight.data[:] = w
    return Backbone(conv).to(DT).requires_grad_(False)


class SmoothPlusCNN(nn.Module):
    """``smooth(y) + 0.1 c2(tanh(c1(y - 0.6)))``: the random CNN (tanh in its non-linear regime,
    pre-activations of std ~1) makes f non-linear while f stays close to x, which keeps the
    variance of the paired differences (dominated by ``(y-x)ᵀ(f(y)-x)``) small."""

    def __init__(self, seed: int):
        super().__init__()
        self.smooth = smoothing_filter().net
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(8, 1, 3, padding=1, bias=False)
        self.c1.weight.data = torch.randn(self.c1.weight.shape, generator=g)
        self.c2.weight.data = 0.1 * torch.randn(self.c2.weight.shape, generator=g)

    def forward(self, y):
        return self.smooth(y) + 0.1 * self.c2(torch.tanh(self.c1(y - 0.6)))


def frozen_cnn(seed: int = 0) -> nn.Module:
    """Frozen random CNN with a tanh: a non-linear f."""
    return Backbone(SmoothPlusCNN(seed)).to(DT).requires_grad_(False)


pytestmark = pytest.mark.usefixtures("one_thread")


FUNCTIONS = {"filter": smoothing_filter, "cnn": frozen_cnn}


def clean_image(h: int = 8, w: int = 8, lo: float = 0.2, hi: float = 1.0) -> torch.Tensor:
    """A smooth test image with values in [lo, hi] (smooth, so the filter is a decent denoiser)."""
    r = torch.arange(h, dtype=DT)[:, None] / h
    c = torch.arange(w, dtype=DT)[None, :] / w
    img = 0.5 + 0.5 * torch.sin(2.0 * math.pi * r + 1.0) * torch.cos(math.pi * c + 0.3)
    return (lo + (hi - lo) * img).reshape(1, 1, h, w)


def mean_and_se(d: torch.Tensor) -> tuple[float, float]:
    d = torch.as_tensor(d, dtype=DT).detach().flatten()
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def per_entry_risk(model, y, physics, x):
    return float(((physics.A(model(y, physics)) - physics.A(x)) ** 2).mean())


# ----------------------------------------------------------------------------- SURE
SURE_CASES = {
    # noise name, noise model, bug scale: size of the error if the constant or the divergence weight were wrong
    "gaussian": lambda: GaussianNoise(0.1),
    "poisson": lambda: PoissonNoise(0.02),
    "poisson_gaussian": lambda: PoissonGaussianNoise(0.02, 0.05),
}


@pytest.mark.parametrize("fname", ["filter", "cnn"])
@pytest.mark.parametrize("noise", list(SURE_CASES))
def test_sure_is_unbiased_for_the_mse(noise, fname):
    physics = Denoising(SURE_CASES[noise]())
    model = FUNCTIONS[fname]()
    loss = SURE(noise=noise, tau=1e-3)
    x = clean_image().expand(200, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    d, const = [], []
    for _ in range(20):
        y = physics(x, generator=g)
        d.append(float(loss(y, physics, model, generator=g)) - per_entry_risk(model, y, physics, x))
        const.append(float(physics.noise.variance(x).mean()))
    mean, se = mean_and_se(d)
    # power: forgetting the constant E||y-x||²/n (>= 0.0025 here) would be caught
    assert 4 * se < 0.1 * min(const)
    assert abs(mean) < 4 * se, (mean, se)


@pytest.mark.parametrize("noise, size, batch, chunks", [("gaussian", 8, 200, 10), ("poisson_gaussian", 4, 300, 10)])
def test_sure_exact_divergence_mode_is_unbiased(noise, size, batch, chunks):
    physics = Denoising(SURE_CASES[noise]())
    model = frozen_cnn()
    loss = SURE(noise=noise, divergence="exact")  # PG: exact first and second diagonal derivatives
    x = clean_image(size, size).expand(batch, 1, size, size)
    g = torch.Generator().manual_seed(1)
    d = []
    with torch.no_grad():
        for _ in range(chunks):
            y = physics(x, generator=g)
            d.append(float(loss(y, physics, model, generator=g)) - per_entry_risk(model, y, physics, x))
    mean, se = mean_and_se(d)
    assert 4 * se < 0.2 * float(physics.noise.variance(x).mean())  # forgetting the constant is caught
    assert abs(mean) < 4 * se, (mean, se)


@pytest.mark.parametrize("noise", ["gaussian", "poisson"])
def test_sure_probes_average_independent_monte_carlo_estimates(noise):
    """``probes: K`` keeps the mean of the one-probe estimate and divides its variance by K, at the declared
    cost of K (Gaussian) or 2K (Poisson second order) evaluations besides ``f(y)``."""
    physics = Denoising(SURE_CASES[noise]())
    model = frozen_cnn()
    calls = []
    model.register_forward_hook(lambda mod, args, out: calls.append(out.shape[0]))  # samples evaluated
    y = physics(clean_image().expand(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    values = {}
    for k in (1, 4):
        loss = SURE(noise=noise, tau=1e-3, probes=k)
        assert loss.evaluations_per_step == 1 + (1 if noise == "gaussian" else 2) * k
        g = torch.Generator().manual_seed(k)
        vals = []
        with torch.no_grad():
            for _ in range(400):
                calls.clear()
                vals.append(float(loss(y, physics, model, generator=g)))
                assert sum(calls) == loss.evaluations_per_step * len(y)
        values[k] = torch.tensor(vals, dtype=DT)
    m1, se1 = mean_and_se(values[1])
    m4, se4 = mean_and_se(values[4])
    assert abs(m1 - m4) < 4 * math.hypot(se1, se4), (m1, m4, se1, se4)
    # sd ratio 1/2 in theory; with 400 draws each sd is estimated to ~3.5 % (1/sqrt(2*400)), so 0.40-0.60
    # is > 4 standard errors of the ratio either side; K = 1 (ratio 1) or K = 2 (0.71) would be caught
    ratio = float(values[4].std() / values[1].std())
    assert 0.40 < ratio < 0.60, ratio


@pytest.mark.parametrize("fname", ["filter", "cnn"])
def test_sure_with_rademacher_probes_is_unbiased_for_the_mse(fname):
    physics = Denoising(GaussianNoise(0.1))
    model = FUNCTIONS[fname]()
    loss = SURE(noise="gaussian", tau=1e-3, probe="rademacher")
    x = clean_image().expand(200, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    d = []
    for _ in range(20):
        y = physics(x, generator=g)
        d.append(float(loss(y, physics, model, generator=g)) - per_entry_risk(model, y, physics, x))
    mean, se = mean_and_se(d)
    assert 4 * se < 0.1 * 0.1**2  # forgetting the constant σ² would be caught
    assert abs(mean) < 4 * se, (mean, se)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_mc_divergence_variance_is_hutchinsons(probe):
    """For a linear map ``J`` the one-probe estimate ``ωᵀJω`` is exact in τ: mean ``tr J`` and variance
    ``2‖J_s‖²_F`` (Gaussian) or ``2‖J_s‖²_F − 2 Σ J_ii²`` (Rademacher), ``J_s = (J + Jᵀ)/2``."""
    n = 16
    g = torch.Generator().manual_seed(3)
    J = (0.2 * torch.randn(n, n, generator=g, dtype=DT) + torch.diag(1 + torch.rand(n, generator=g, dtype=DT)))
    Js = (J + J.T) / 2
    expected_var = 2 * float((Js**2).sum()) - (2 * float((torch.diagonal(J) ** 2).sum()) if probe == "rademacher"
                                                else 0.0)
    y = torch.zeros(4000, n, dtype=DT)
    d = mc_divergence(lambda v: v @ J.T, y, 1.0, torch.Generator().manual_seed(4), probe=probe)
    mean, se = mean_and_se(d)
    assert abs(mean - float(torch.trace(J))) < 4 * se, (mean, float(torch.trace(J)), se)
    var = float(d.var())
    se_var = float(((d - d.mean()) ** 4).mean() - var**2) ** 0.5 / len(d) ** 0.5
    assert abs(var - expected_var) < 4 * se_var, (var, expected_var, se_var)
    # the two formulas differ by 2 Σ J_ii² (about 2/3 of the Gaussian variance here): far more than 4 SE
    assert 2 * float((torch.diagonal(J) ** 2).sum()) > 8 * se_var


def test_mc_divergence_central_difference_is_exact_for_quadratic_maps():
    """For ``f(v) = v + c v²`` (entry-wise) the central difference returns the Hutchinson estimate ``ωᵀJ(y)ω``
    exactly, probe by probe (the ``τ²`` terms vanish); the forward one adds ``τ c Σ ω³``, which does not."""
    y = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=DT)
    c, tau = 0.7, 0.05
    def f(v):
        return v + c * v**2
    central = mc_divergence(f, y, tau, torch.Generator().manual_seed(1), central=True)
    forward = mc_divergence(f, y, tau, torch.Generator().manual_seed(1))
    omega = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    hutchinson = ((1 + 2 * c * y) * omega**2).flatten(1).sum(1)
    torch.testing.assert_close(central, hutchinson)
    torch.testing.assert_close(forward, hutchinson + tau * c * (omega**3).flatten(1).sum(1))
    assert (forward - hutchinson).abs().min() > 1e-3


@pytest.mark.parametrize("fname", ["filter", "cnn"])
@pytest.mark.parametrize("noise", ["gaussian", "poisson"])
def test_sure_with_central_differences_is_unbiased_and_costs_three_evaluations(noise, fname):
    physics = Denoising(SURE_CASES[noise]())
    model = FUNCTIONS[fname]()
    loss = SURE(noise=noise, tau=1e-3, difference="central", second_order=False)
    assert loss.evaluations_per_step == 3 and "difference='central'" in repr(loss)
    calls = []
    handle = model.register_forward_hook(lambda mod, args, out: calls.append(out.shape[0])) \
        if isinstance(model, nn.Module) else None
    x = clean_image().expand(200, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    d, const = [], []
    for _ in range(20):
        y = physics(x, generator=g)
        calls.clear()
        d.append(float(loss(y, physics, model, generator=g)) - per_entry_risk(model, y, physics, x))
        const.append(float(physics.noise.variance(x).mean()))
    if handle is not None:  # per_entry_risk evaluated the model once more
        assert sum(calls) == (loss.evaluations_per_step + 1) * len(x)
    mean, se = mean_and_se(d)
    assert 4 * se < 0.1 * min(const)  # forgetting the constant would be caught
    assert abs(mean) < 4 * se, (mean, se)
    with pytest.raises(LossConfigError, match="difference must be 'forward' or 'central', got 'backward'"):
        SURE(difference="backward")


def test_sure_rademacher_probe_refused_by_second_order_poisson_sure():
    with pytest.raises(LossConfigError, match="skewed two-point probe"):
        SURE(noise="poisson", probe="rademacher")
    assert SURE(noise="poisson", probe="rademacher", second_order=False).probe == "rademacher"
    with pytest.raises(LossConfigError, match="probe must be one of"):
        SURE(probe="uniform")


def test_sure_probes_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(LossConfigError, match="probes must be an integer >= 1"):
            SURE(probes=bad)


def test_sure_margin_estimates_the_interior_risk():
    physics = Denoising(GaussianNoise(0.1))
    model = smoothing_filter()
    m = 2
    loss = SURE(noise="gaussian", tau=1e-3, margin=m)
    x = clean_image(10, 10).expand(200, 1, 10, 10)
    g = torch.Generator().manual_seed(2)
    d = []
    for _ in range(20):
        y = physics(x, generator=g)
        risk = float(((model(y, physics) - x)[..., m:-m, m:-m] ** 2).mean())
        d.append(float(loss(y, physics, model, generator=g)) - risk)
    mean, se = mean_and_se(d)
    assert 4 * se < 0.1 * 0.1**2
    assert abs(mean) < 4 * se


def test_mc_divergence_matches_exact_divergence():
    # a strongly curved CNN (tanh of large pre-activations): sizeable first and second derivatives
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1)).to(DT)
    net[0].weight.data *= 4
    net.requires_grad_(False)
    y = clean_image(8, 8)

    def fn(v):
        return net(v)

    _, d1, d2 = exact_diagonal_derivatives(fn, y, second_order=True, create_graph=False)
    exact1, exact2 = float(d1.detach().sum()), float(d2.detach().sum())
    g = torch.Generator().manual_seed(4)
    K = 4000
    yy = y.expand(K, 1, 8, 8)
    # first order, Gaussian probe (bias O(tau²) ~ 1e-6: negligible against SE)
    mean, se = mean_and_se(mc_divergence(fn, yy, 1e-3, g))
    assert abs(mean - exact1) < 4 * se, (mean, exact1, se)
    assert 4 * se < 0.2 * abs(exact1)  # the test resolves the divergence itself
    # skewed probe: first and second order
    e1, e2 = mc_second_order_derivatives(fn, yy, 1e-3, g)
    mean1, se1 = mean_and_se(e1)
    mean2, se2 = mean_and_se(e2)
    assert abs(mean1 - exact1) < 4 * se1
    assert abs(mean2 - exact2) < 4 * se2, (mean2, exact2, se2)
    assert 4 * se2 < 0.2 * abs(exact2)  # a zero or mis-scaled second-order estimate would be caught


def test_exact_derivatives_match_autograd_jacobian():
    model = frozen_cnn(5)
    y = clean_image(5, 5)
    out, d1, _ = exact_diagonal_derivatives(lambda v: model(v, None), y, create_graph=False)
    J = torch.autograd.functional.jacobian(lambda v: model.net(v), y).reshape(25, 25)
    torch.testing.assert_close(d1.flatten(), J.diagonal())


def test_sure_gradient_reaches_parameters():
    physics = Denoising(GaussianNoise(0.1))
    net = nn.Conv2d(1, 1, 3, padding=1).to(DT)
    y = physics(clean_image().expand(4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    for mode in ("mc", "exact"):
        net.zero_grad()
        SURE(divergence=mode)(y, physics, Backbone(net), generator=torch.Generator().manual_seed(1)).backward()
        assert net.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- exact-derivative SURE
def affine_cnn(seed: int = 0) -> nn.Module:
    """``f(y) = H y + b``: a 3x3 convolution with bias (zero padding); ``∂²f = 0``."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(1, 1, 3, padding=1).to(DT)
    conv.weight.data = 0.2 * torch.randn(conv.weight.shape, generator=g, dtype=DT)
    conv.weight.data[0, 0, 1, 1] = 0.5
    conv.bias.data = torch.tensor([0.05], dtype=DT)
    return Backbone(conv)


@pytest.mark.parametrize("noise", ["gaussian", "poisson", "poisson_gaussian"])
@pytest.mark.parametrize("second_order", [True, False])
def test_exact_sure_of_an_affine_model_is_the_closed_form(noise, second_order):
    # h(y) = H y + b has ∂_i h_i = H_ii and ∂²_i h_i = 0, so
    # SURE = (||y - H y - b||² - Σ c_i + 2 Σ w_i H_ii) / n exactly (float64: agreement to 1e-12).
    from selfinv.theory import operator_matrix

    physics = Denoising(SURE_CASES[noise]())
    model = affine_cnn()
    y = physics(clean_image(6, 6).expand(2, 1, 6, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        H = operator_matrix(lambda v: model(v, physics) - model(torch.zeros_like(v), physics), (1, 6, 6))
        b = model(torch.zeros(1, 1, 6, 6, dtype=DT), physics).flatten()
    yf = y.reshape(2, 36)
    s2 = float(getattr(physics.noise, "sigma", None) or 0.0) ** 2
    gain = float(physics.noise.gain) if physics.noise.gain is not None else 0.0
    wts = gain * yf + s2  # c_i = w_i
    ref = (((yf - yf @ H.T - b) ** 2).sum() - wts.sum() + 2 * (wts * H.diagonal()).sum()) / 72
    loss = SURE(noise=noise, divergence="exact", second_order=second_order)
    value = loss(y, physics, model)
    assert abs(float(value.detach()) - float(ref)) < 1e-12, (float(value), float(ref))
    value.backward()  # the gradient reaches the weights (it raised on the second derivative before)
    assert model.net.weight.grad.abs().sum() > 0


class TinyTanhCNN(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(1, 3, 3, padding=1).to(DT)
        self.c2 = nn.Conv2d(3, 1, 3, padding=1).to(DT)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g, dtype=DT)

    def forward(self, y, physics=None):
        return self.c2(torch.tanh(self.c1(y)))


def test_exact_sure_matches_finite_differences_for_a_nonlinear_model():
    # central differences per entry: truncation O(e²) (e²/6 |∂³h| and e²/12 |∂⁴h|), round-off
    # ~1e-16/e² = 1e-10 at e = 1e-3. Measured: max |exact - FD| = 7e-7 (first) and 2.1e-6 (second
    # derivatives, which reach 2.2) at e = 1e-3, 4x smaller at e = 5e-4: hence the 1e-5 tolerance, and
    # the factor ~4 between the two steps shows the remaining gap is the O(e²) truncation of FD.
    physics = Denoising(PoissonGaussianNoise(0.02, 0.05))
    model = TinyTanhCNN()
    y = physics(clean_image(4, 4).expand(2, 1, 4, 4), generator=torch.Generator().manual_seed(5))

    def fd(e):
        d1, d2 = torch.zeros(2, 16, dtype=DT), torch.zeros(2, 16, dtype=DT)
        with torch.no_grad():
            h0 = model(y).reshape(2, 16)
            for k in range(16):
                ek = torch.zeros(1, 16, dtype=DT)
                ek[0, k] = e
                hp = model(y + ek.reshape(1, 1, 4, 4)).reshape(2, 16)[:, k]
                hm = model(y - ek.reshape(1, 1, 4, 4)).reshape(2, 16)[:, k]
                d1[:, k] = (hp - hm) / (2 * e)
                d2[:, k] = (hp - 2 * h0[:, k] + hm) / e**2
        return d1, d2

    d1_fd, d2_fd = fd(1e-3)
    _, d1, d2 = exact_diagonal_derivatives(model, y, second_order=True, create_graph=False)
    err1 = float((d1.reshape(2, 16) - d1_fd).abs().max())
    err2 = float((d2.reshape(2, 16) - d2_fd).abs().max())
    assert err1 < 1e-5 and err2 < 1e-5, (err1, err2)
    assert float(d2_fd.abs().max()) > 0.1  # a non-trivial second derivative is checked
    err2_half = float((d2.reshape(2, 16) - fd(5e-4)[1]).abs().max())
    assert 3 < err2 / err2_half < 5, (err2, err2_half)
    # the loss value from the finite-difference diagonals
    yf = y.reshape(2, 16)
    w, v = 0.02 * yf + 0.05**2, 0.02**2 * yf / 2 + 0.02 * 0.05**2
    with torch.no_grad():
        h0 = model(y).reshape(2, 16)
    ref = (((yf - h0) ** 2).sum() - w.sum() + 2 * (w * d1_fd).sum() - 2 * (v * d2_fd).sum()) / 32
    with torch.no_grad():
        value = SURE("poisson_gaussian", divergence="exact")(y, physics, Backbone(model))
    assert abs(float(value) - float(ref)) < 1e-5 * float((w.abs() + v.abs()).sum()) / 32


def test_exact_sure_gradient_is_the_gradient_of_the_full_graph():
    # the memory-bounded version (entries recomputed one by one in the backward pass) must give the
    # gradient of the naive computation that keeps every entry's graph: float64, 1e-10 relative
    physics = Denoising(PoissonGaussianNoise(0.02, 0.05))
    model = TinyTanhCNN(1)
    y = physics(clean_image(4, 4).expand(2, 1, 4, 4), generator=torch.Generator().manual_seed(6))
    params = list(model.parameters())
    value = SURE("poisson_gaussian", divergence="exact")(y, physics, Backbone(model))
    got = torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True)
    hy, d1, d2 = exact_diagonal_derivatives(model, y, second_order=True, create_graph=True)
    w, v = 0.02 * y + 0.05**2, 0.02**2 * y / 2 + 0.02 * 0.05**2
    naive = (((y - hy) ** 2).sum() - w.sum() + 2 * (w * d1).sum() - 2 * (v * d2).sum()) / 32
    assert abs(float(value.detach()) - float(naive.detach())) < 1e-12
    ref = torch.autograd.grad(naive, params, allow_unused=True, materialize_grads=True)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(float(g.abs().sum()) > 0 for g in got[:-1])  # all but the last bias (no effect on ∂h)


def test_exact_sure_refuses_large_measurements_naming_the_size():
    physics = Denoising(GaussianNoise(0.1))
    y = torch.rand(1, 1, 9, 9, dtype=DT)
    with pytest.raises(ValueError, match=r"81 entries per sample.*max_exact_entries=64"):
        SURE(divergence="exact", max_exact_entries=64)(y, physics, smoothing_filter())
    assert SURE(divergence="exact").max_exact_entries == 4096


_MEMORY_SCRIPT = """
import resource, torch
from torch import nn
from selfinv.losses import SURE
from selfinv.physics import Denoising, PoissonGaussianNoise
torch.set_num_threads(1)
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1),
                                 nn.Tanh(), nn.Conv2d(16, 1, 3, padding=1)).double()
    def forward(self, y, physics):
        return self.net(y)
torch.manual_seed(0)
model, physics = M(), Denoising(PoissonGaussianNoise(0.02, 0.05))
y = physics(0.2 + 0.8 * torch.rand(4, 1, 8, 8, dtype=torch.float64))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
SURE("poisson_gaussian", divergence="exact")(y, physics, model).backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_exact_sure_training_memory_does_not_grow_with_the_entries():
    # keeping the derivative graphs of all 64 entries (and differentiating through their stack, n² work)
    # took ~1.9 GB here; one entry's graph at a time takes a few tens of MB (peak RSS of a fresh process)
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, env=env, check=False,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    assert peak_mb < 300, peak_mb


# ----------------------------------------------------------------------------- R2R / GR2R
R2R_CASES = {
    "gaussian": (lambda: GaussianNoise(0.1), lambda x, a: 0.1**2 / a),
    "poisson": (lambda: PoissonNoise(0.05), lambda x, a: 0.05 * float(x.mean()) / a),
    "gamma": (lambda: GammaNoise(20.0), lambda x, a: float((x**2).mean()) / (20.0 * a)),
}


@pytest.mark.parametrize("noise", list(R2R_CASES))
def test_r2r_pair_is_uncorrelated_and_unbiased(noise):
    make_noise, _ = R2R_CASES[noise]
    physics = Denoising(make_noise())
    loss = R2R(noise=noise, alpha=0.3)
    x = clean_image().expand(4000, 1, 8, 8)
    g = torch.Generator().manual_seed(5)
    y = physics(x, generator=g)
    y1, y2 = loss.recorrupt(y, physics, g)
    e1, e2 = (y1 - x).flatten(), (y2 - x).flatten()  # entries are independent draws
    # covariance ≈ 0: compare with the scale sqrt(var1 var2) (a correlated split of the
    # tutorial's misprinted Gaussian formula would give |corr| ~ 0.5 at alpha=0.3)
    cov, se = mean_and_se(e1 * e2)
    scale = float(e1.std() * e2.std())
    assert abs(cov) < 4 * se and 4 * se < 0.02 * scale, (cov, se, scale)
    for e in (e1, e2):  # both halves unbiased for x
        mean, se = mean_and_se(e)
        assert abs(mean) < 4 * se and 4 * se < 0.02 * float(x.mean())


@pytest.mark.parametrize("fname", ["filter", "cnn"])
@pytest.mark.parametrize("noise", list(R2R_CASES))
def test_r2r_is_unbiased_up_to_its_constant(noise, fname):
    make_noise, constant = R2R_CASES[noise]
    physics = Denoising(make_noise())
    alpha = 0.3
    loss = R2R(noise=noise, alpha=alpha)
    model = FUNCTIONS[fname]()
    x = clean_image().expand(200, 1, 8, 8)
    g = torch.Generator().manual_seed(6)
    d = []
    for _ in range(20):
        y = physics(x, generator=g)
        state = g.get_state()
        value = float(loss(y, physics, model, generator=g))
        g.set_state(state)
        y1, y2 = loss.recorrupt(y, physics, g)  # the very draws the loss used
        assert value == pytest.approx(float(((y2 - model(y1, physics)) ** 2).mean()), rel=1e-12)
        d.append(value - per_entry_risk(model, y1, physics, x) - constant(x, alpha))
    mean, se = mean_and_se(d)
    assert 4 * se < 0.1 * constant(x, alpha)
    assert abs(mean) < 4 * se, (mean, se)


def test_r2r_estimator_averages_recorruptions():
    physics = Denoising(GaussianNoise(0.1))
    model = smoothing_filter()
    loss = R2R(noise="gaussian", alpha=0.3, n_test=400)
    y = physics(clean_image(), generator=torch.Generator().manual_seed(0))
    est = loss.estimator(model)(y, physics, torch.Generator().manual_seed(1))
    # linear f and E[y1 | y] = y: the average tends to f(y); per-pixel SE of the mean
    # of N outputs = std(f(y1) - f(y)) / sqrt(N) with std <= sqrt(a/(1-a)) sigma |w|_2
    se = math.sqrt(0.3 / 0.7) * 0.1 * math.sqrt(0.4**2 + 8 * (0.6 / 8) ** 2) / math.sqrt(400)
    assert float((est - model(y, physics)).abs().max()) < 5 * se


def test_poisson_r2r_rejects_non_integer_counts():
    physics = Denoising(PoissonNoise(0.1))
    with pytest.raises(ValueError, match=r"integer.*is the gain right, or do the data carry a detector offset"):
        R2R(noise="poisson").recorrupt(torch.full((1, 1, 4, 4), 0.123, dtype=DT), physics)


# ----------------------------------------------------------------------------- Noise2Noise
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("fname", ["filter", "cnn"])
def test_noise2noise_is_unbiased_up_to_sigma2(fname, symmetric):
    # one direction: E[L] = risk of f(y) + σ²; both directions drawn: the mean of the risks of f(y) and f(y2)
    sigma = 0.1
    physics = Denoising(GaussianNoise(sigma))
    model = FUNCTIONS[fname]()
    loss = Noise2Noise(symmetric=symmetric)
    x = clean_image().expand(200, 1, 8, 8)
    g = torch.Generator().manual_seed(8)
    d = []
    for _ in range(20):
        y, y2 = physics(x, generator=g), physics(x, generator=g)
        risk = per_entry_risk(model, y, physics, x)
        if symmetric:
            risk = (risk + per_entry_risk(model, y2, physics, x)) / 2
        d.append(float(loss(y, physics, model, y2=y2, generator=g)) - risk - sigma**2)
    mean, se = mean_and_se(d)
    assert 4 * se < 0.1 * sigma**2
    assert abs(mean) < 4 * se


# ----------------------------------------------------------------------------- Noise2Score / Tweedie
PI, MU, S = torch.tensor([0.3, 0.7], dtype=DT), torch.tensor([-1.0, 1.5], dtype=DT), torch.tensor([0.3, 0.5], dtype=DT)


def gmm_score(y: torch.Tensor, extra_var: float) -> torch.Tensor:
    """Score of ``Σ π_k N(μ_k, s_k² + extra_var)`` (entry-wise), closed form."""
    var = S**2 + extra_var
    yk = y[..., None]
    logw = torch.log(PI) - 0.5 * torch.log(var) - 0.5 * (yk - MU) ** 2 / var
    w = torch.softmax(logw, dim=-1)
    return (w * (MU - yk) / var).sum(-1)


def gmm_posterior_mean(y: torch.Tensor, sigma: float) -> torch.Tensor:
    var = S**2 + sigma**2
    yk = y[..., None]
    w = torch.softmax(torch.log(PI) - 0.5 * torch.log(var) - 0.5 * (yk - MU) ** 2 / var, dim=-1)
    return (w * (MU + S**2 / var * (yk - MU))).sum(-1)


class ScoreModel(nn.Module):
    def __init__(self, extra_var: float, scale: float = 1.0):
        super().__init__()
        self.extra_var, self.scale = extra_var, scale

    def forward(self, y, physics):
        return self.scale * gmm_score(y, self.extra_var)


def test_tweedie_gives_the_posterior_mean_of_a_gaussian_mixture():
    sigma = 0.4
    physics = Denoising(GaussianNoise(sigma))
    y = torch.linspace(-3, 4, 70, dtype=DT).reshape(1, 1, 7, 10)
    assert float(physics.noise.sigma) == sigma  # stored in float64: no float32 rounding
    est = Noise2Score(noise="gaussian").estimator(ScoreModel(sigma**2))(y, physics)
    torch.testing.assert_close(est, gmm_posterior_mean(y, sigma), rtol=1e-12, atol=1e-12)


def test_noise2score_loss_is_minimised_by_the_smoothed_score():
    sigma, sigma_a = 0.4, 0.2
    physics = Denoising(GaussianNoise(sigma))
    loss = Noise2Score(sigma_max=sigma_a, sigma_min=sigma_a)
    g = torch.Generator().manual_seed(9)
    d = {0.8: [], 1.25: []}
    for _ in range(20):
        comp = torch.multinomial(PI, 4096, replacement=True, generator=g)
        x = (MU[comp] + S[comp] * torch.randn(4096, generator=g, dtype=DT)).reshape(64, 1, 8, 8)
        y = physics(x, generator=g)
        state = g.get_state()
        best = float(loss(y, physics, ScoreModel(sigma**2 + sigma_a**2), generator=g))
        for c in d:
            g.set_state(state)
            d[c].append(float(loss(y, physics, ScoreModel(sigma**2 + sigma_a**2, c), generator=g)) - best)
    for c, vals in d.items():
        mean, se = mean_and_se(vals)
        assert mean > 4 * se, (c, mean, se)  # the true score is strictly better than a rescaled one


def test_noise2score_anneals_and_saves_its_step():
    loss = Noise2Score(sigma_max=0.1, sigma_min=0.01, anneal_steps=2)
    physics = Denoising(GaussianNoise(0.1))
    y = torch.zeros(1, 1, 4, 4)
    model = ScoreModel(0.02)
    assert loss.current_sigma() == pytest.approx(0.1)
    loss(y, physics, model)
    assert loss.current_sigma() == pytest.approx(math.sqrt(0.1 * 0.01))
    loss(y, physics, model)
    assert loss.current_sigma() == pytest.approx(0.01)
    assert int(loss.state_dict()["step"]) == 2


def test_tweedie_gamma_and_poisson_forms():
    # Gamma: for a point prior x = x0 the score of p_y = Gamma(l, l/x0) is (l-1)/y - l/x0, and
    # Tweedie must return x0 exactly.
    ell, x0 = 5.0, 0.7
    y = torch.linspace(0.1, 2.0, 12, dtype=DT).reshape(1, 1, 3, 4)

    class GammaScore(nn.Module):
        def forward(self, v, physics):
            return (ell - 1) / v - ell / x0

    est = Noise2Score(noise="gamma").estimator(GammaScore())(y, Denoising(GammaNoise(ell)))
    torch.testing.assert_close(est, torch.full_like(y, x0))

    # Poisson: for p_y ∝ exp(-b y) (exponential prior, continuous approximation) the
    # estimator is (y + γ) exp(-γ b)
    class ExpScore(nn.Module):
        def forward(self, v, physics):
            return torch.full_like(v, -2.0)

    est = Noise2Score(noise="poisson").estimator(ExpScore())(y, Denoising(PoissonNoise(0.1)))
    torch.testing.assert_close(est, (y + 0.1) * math.exp(-0.2))


# ----------------------------------------------------------------------------- splitting (N2V / N2S)
class Recorder(nn.Module):
    """A small conv net that records its input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1).to(DT)
        self.inputs = []

    def forward(self, y, physics):
        self.inputs.append(y)
        return self.conv(y)


@pytest.mark.parametrize("replace", ["neighbour", "random"])
def test_splitting_never_reads_the_hidden_pixels(replace):
    physics = Denoising(GaussianNoise(0.1))
    loss = SplittingLoss(mask_prob=0.3, replace=replace)  # many hidden pixels: neighbours often hidden too
    y = physics(clean_image(9, 7).expand(6, 1, 9, 7), generator=torch.Generator().manual_seed(0))
    y = y.clone().requires_grad_(True)
    model = Recorder()
    value = loss(y, physics, model, generator=torch.Generator().manual_seed(3))
    _, mask = loss.split(y, torch.Generator().manual_seed(3))
    assert mask.sum() > 10
    # the network input does not depend on y at hidden pixels (gradient exactly 0)
    (jac_sum,) = torch.autograd.grad(model.inputs[0].sum(), y, retain_graph=True)
    assert torch.all(jac_sum[mask.expand_as(y) > 0] == 0)
    # perturbing y at hidden pixels leaves the network input unchanged
    y_pert = y.detach() + 5.0 * mask
    y_a_pert, _ = loss.split(y_pert, torch.Generator().manual_seed(3))
    torch.testing.assert_close(y_a_pert, model.inputs[0].detach())
    # the loss is the mean over hidden pixels only
    expected = ((mask * (y - model.conv(model.inputs[0])) ** 2).sum() / mask.sum())
    torch.testing.assert_close(value, expected)
    # and the gradient reaches the parameters
    value.backward()
    assert model.conv.weight.grad.abs().sum() > 0


def test_splitting_replaces_a_hidden_pixel_by_a_uniformly_drawn_kept_neighbour():
    """Noise2Void's replacement: one of the pixel's kept 8-neighbours, each with probability 1 / (number
    kept). Distinct pixel values identify the neighbour taken; a chi-square test per number kept (fixed
    seeds; threshold p > 1e-3, the false-alarm rate of a correct sampler)."""
    from scipy.stats import chisquare

    B, H, W = 16, 34, 34
    y = torch.arange(B * H * W, dtype=DT).reshape(B, 1, H, W) / (B * H * W)
    loss = SplittingLoss(mask_prob=0.3)
    y_a, mask = loss.split(y, torch.Generator().manual_seed(0))
    ring = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    ranks: dict[int, list[int]] = {}
    for b, _, i, j in torch.nonzero(mask[:, :, 1:-1, 1:-1]).tolist():
        i, j = i + 1, j + 1
        kept = [(dy, dx) for dy, dx in ring if mask[b, 0, i + dy, j + dx] == 0]
        taken = [(dy, dx) for dy, dx in ring if y[b, 0, i + dy, j + dx] == y_a[b, 0, i, j]]
        if not kept:
            continue
        assert len(taken) == 1 and taken[0] in kept
        ranks.setdefault(len(kept), []).append(kept.index(taken[0]))
    tested = 0
    for n, rs in ranks.items():
        if len(rs) >= 20 * n:
            counts = torch.bincount(torch.tensor(rs), minlength=n).tolist()
            assert chisquare(counts).pvalue > 1e-3, (n, counts)
            tested += 1
    assert tested >= 3


@pytest.mark.parametrize("radius", [0, 2])
def test_splitting_takes_every_channel_from_one_kept_ring_pixel(radius):
    """Colour images: a pixel of the excluded set takes all its channels from the same kept pixel of the ring
    at distance radius + 1 (reflected at the border); the other pixels are unchanged."""
    B, C, H, W = 3, 3, 13, 11
    y = torch.arange(B * C * H * W, dtype=DT).reshape(B, C, H, W)  # every value names its position
    loss = SplittingLoss(mask_prob=0.1, exclusion_radius=radius)
    y_a, mask = loss.split(y, torch.Generator().manual_seed(1))
    excluded = mask if radius == 0 else torch.nn.functional.max_pool2d(mask, 2 * radius + 1, 1, radius)
    assert torch.equal(y_a[(excluded == 0).expand_as(y)], y[(excluded == 0).expand_as(y)])
    s = radius + 1
    reflect = [(lambda v, n: abs(v) if v < n else 2 * (n - 1) - v)]
    checked = 0
    for b, _, i, j in torch.nonzero(excluded).tolist():
        ring = {(reflect[0](i + dy, H), reflect[0](j + dx, W)) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
                if max(abs(dy), abs(dx)) == s}
        kept = {p for p in ring if excluded[b, 0, p[0], p[1]] == 0}
        if not kept:  # no kept pixel in the ring: a random value (tested elsewhere)
            continue
        src = divmod(int(y_a[b, 0, i, j]) - b * C * H * W, W)
        assert src in kept and all(int(y_a[b, c, i, j]) == int(y[b, c, src[0], src[1]]) for c in range(C))
        checked += 1
    assert checked > 10


def test_splitting_test_time_modes():
    physics = Denoising(GaussianNoise(0.1))
    y = torch.full((2, 1, 8, 8), 0.37, dtype=DT)
    identity = Backbone(nn.Identity())
    # on a constant image every replacement equals the constant: 'average' must return it
    # exactly, which requires the M = (Σ diag m_b)^-1 normalisation
    avg = SplittingLoss(mask_prob=0.1, mode="average", n_test=5).estimator(identity)
    torch.testing.assert_close(avg(y, physics, torch.Generator().manual_seed(0)), y)
    # on a random image, 'average' with f = identity reproduces, at each pixel hidden at least
    # once, the mean of its replacement values (never y itself unless a neighbour equals it)
    yr = torch.rand(1, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(1))
    loss = SplittingLoss(mask_prob=0.5, mode="average", n_test=3)
    out = loss.estimator(identity)(yr, physics, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    num, den = 0, 0
    for _ in range(3):
        ya, m = loss.split(yr, g)
        num, den = num + m * ya, den + m
    torch.testing.assert_close(out, torch.where(den > 0, num / den.clamp_min(1), yr))
    split = SplittingLoss(mode="split").estimator(identity)(yr, physics, torch.Generator().manual_seed(4))
    assert (split != yr).any() and split.shape == yr.shape
    full = SplittingLoss(mode="full")
    assert not full.custom_estimator and torch.equal(full.estimator(identity)(yr, physics), identity(yr, physics))


# ----------------------------------------------------------------------------- Neighbor2Neighbor
def test_neighbor2neighbor_pairs_are_adjacent_and_gradients_flow():
    loss = Neighbor2Neighbor(gamma=2.0)
    H, W = 6, 8
    coords = torch.arange(H * W, dtype=DT).reshape(1, 1, H, W)
    pairs = loss.sample_pairs(coords, torch.Generator().manual_seed(0))
    a, b = loss.subsample(coords, pairs[:, 0]), loss.subsample(coords, pairs[:, 1])
    ra, ca, rb, cb = a // W, a % W, b // W, b % W
    assert torch.all((ra - rb).abs() + (ca - cb).abs() == 1)  # edge-adjacent, different pixels
    assert torch.all(ra // 2 == torch.arange(H // 2, dtype=DT)[:, None])  # one pair per 2x2 cell
    physics = Denoising(GaussianNoise(0.1))
    net = nn.Conv2d(1, 1, 3, padding=1).to(DT)
    y = physics(clean_image(8, 8).expand(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    loss(y, physics, Backbone(net), generator=torch.Generator().manual_seed(1)).backward()
    assert net.weight.grad.abs().sum() > 0


def test_neighbor2neighbor_rejects_odd_sizes():
    physics = Denoising(GaussianNoise(0.1))
    with pytest.raises(LossConfigError, match="even"):
        Neighbor2Neighbor()(torch.zeros(1, 1, 63, 63), physics, Backbone(nn.Identity()))


# ----------------------------------------------------------------------------- UNSURE
class Scale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, y, physics):
        return self.c * y


def probe(y, seed):
    """The Monte-Carlo direction UNSURE draws with ``Generator().manual_seed(seed)``."""
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)


def test_unsure_multiplier_ascends_and_is_checkpointed():
    physics = Denoising(GaussianNoise(0.1))
    y = physics(clean_image().expand(400, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    n = y.numel()
    loss = UNSURE(step=0.1)
    loss.train()
    # f = 0.5 y: true divergence 0.5 per entry; MC estimate 0.5 mean(ω²) (exact for linear f up to the
    # probe): eta = step * 2 * 0.5 mean(ω²), E = 0.1, SE = 0.1 sqrt(2/n) (~1% here)
    loss(y, physics, Scale(0.5), generator=torch.Generator().manual_seed(1))
    assert float(loss.eta) == pytest.approx(0.1 * float((probe(y, 1) ** 2).mean()), rel=1e-5)
    assert float(loss.eta) == pytest.approx(0.1, abs=4 * 0.1 * math.sqrt(2 / n))
    loss(y, physics, Scale(-0.5), generator=torch.Generator().manual_seed(1))  # negative divergence
    assert float(loss.eta) == pytest.approx(0.0, abs=1e-6)
    loss(y, physics, Scale(0.5))
    assert float(loss.eta) > 0.05
    loss.eval()
    before = float(loss.eta)
    loss(y, physics, Scale(0.5))
    assert float(loss.eta) == before  # no ascent at evaluation
    state = loss.state_dict()
    assert "eta" in state
    fresh = UNSURE()
    fresh.load_state_dict(state)
    assert float(fresh.eta) == before


@pytest.mark.parametrize("penalty", [0.0, 0.05])
def test_unsure_loss_uses_the_multiplier(penalty):
    physics = Denoising(GaussianNoise(0.1))
    y = torch.rand(2, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    loss = UNSURE(eta_init=0.01, penalty=penalty).eval()
    val = loss(y, physics, Scale(0.5), generator=torch.Generator().manual_seed(1))
    div = 0.5 * (probe(y, 1) ** 2).sum()  # (ωᵀ/τ)(f(y+τω) - f(y)) for f = 0.5 y
    n = y.numel()
    # ||y - f||²/n + 2 eta div/n + (rho/2) (div/n)²  (augmented Lagrangian)
    expected = float(((0.5 * y) ** 2).mean() + 2 * 0.01 * div / n + 0.5 * penalty * (div / n) ** 2)
    assert float(val) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("variant", ["gaussian", "colored", "poisson_gaussian"])
def test_unsure_gradients_reach_parameters_after_the_ascent_step(variant):
    physics = Denoising(PoissonGaussianNoise(0.05, 0.05))
    y = physics(clean_image().expand(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    net = nn.Conv2d(1, 1, 3, padding=1).to(DT)
    loss = UNSURE(variant=variant, eta_init=0.1).train()
    loss(y, physics, Backbone(net), generator=torch.Generator().manual_seed(1)).backward()
    assert net.weight.grad.abs().sum() > 0


def test_unsure_colored_multiplier_tracks_its_offset():
    physics = Denoising(ColoredGaussianNoise(0.1, torch.ones(2, 2)))

    class Shift(nn.Module):  # f_i = y_{i - e}, e = (1, 0): ∂f_i/∂y_{i+d} = 1 iff d = (-1, 0)
        def forward(self, y, physics):
            return torch.roll(y, shifts=(1, 0), dims=(-2, -1))

    loss = UNSURE(variant="colored", radius=1, step=1.0).train()
    y = torch.zeros(200, 1, 8, 8, dtype=DT)
    loss(y, physics, Shift(), generator=torch.Generator().manual_seed(0))
    eta = loss.eta
    # each D_d is a sum of 12800 products ω_{i+d} ω_{i-e}: mean δ_{d,-e} per entry, SE 1/sqrt(12800)
    # per entry -> eta_d = 2 D_d / n with SE 2/sqrt(12800) ~ 0.018
    assert eta[0, 1] == pytest.approx(2.0, abs=4 * 2 / math.sqrt(12800))
    others = torch.cat([eta.flatten()[:1], eta.flatten()[2:]])
    assert others.abs().max() < 4 * 2 / math.sqrt(12800)
    assert loss.state_dict()["eta"].shape == (3, 3)


def test_unsure_poisson_gaussian_has_two_multipliers():
    physics = Denoising(PoissonGaussianNoise(0.05, 0.05))
    y = physics(clean_image().expand(4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    loss = UNSURE(variant="poisson_gaussian", step=0.1).train()
    loss(y, physics, Scale(0.5), generator=torch.Generator().manual_seed(1))
    # linear f: D_y = 0.5 Σ y_i ω_i², D = 0.5 Σ ω_i² (expectations 0.5 Σ y and 0.5 n): both ascend
    w2 = probe(y, 1) ** 2
    assert loss.eta.shape == (2,)
    assert float(loss.eta[0]) == pytest.approx(0.1 * float((y * w2).mean()), rel=1e-5)
    assert float(loss.eta[1]) == pytest.approx(0.1 * float(w2.mean()), rel=1e-5)
    assert float(loss.eta[0]) > 0 and float(loss.eta[1]) > 0


# ----------------------------------------------------------------------------- simple losses
class Double(LinearPhysics):
    def A(self, x):
        return 2 * x

    def A_adjoint(self, y):
        return 2 * y

    def A_dagger(self, y):
        return y / 2


def test_measurement_consistency_minimiser_is_identity_and_general_A():
    y = torch.rand(2, 1, 5, 5, dtype=DT)
    assert float(MeasurementConsistency()(y, Denoising(GaussianNoise(0.1)), Backbone(nn.Identity()))) == 0.0

    class Pinv(nn.Module):
        def forward(self, y, physics):
            return physics.A_dagger(y)

    assert float(MeasurementConsistency()(y, Double(), Pinv())) == 0.0
    val = MeasurementConsistency()(y, Double(), Backbone(nn.Identity()))  # ||y - 2y||² = mean(y²)
    assert float(val) == pytest.approx(float((y**2).mean()))
    assert float(AutoencoderLoss()(y, Double(), Backbone(nn.Identity()))) == pytest.approx(float((y**2).mean()))


def test_supervised_loss():
    y, x = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    loss = SupervisedLoss()
    assert loss.needs_ground_truth
    assert float(loss(y, Denoising(), Backbone(nn.Identity()), x=x)) == pytest.approx(float(((x - y) ** 2).mean()))
    with pytest.raises(LossConfigError, match="ground truth"):
        loss(y, Denoising(), Backbone(nn.Identity()))


# ----------------------------------------------------------------------------- incompatible pairs
@pytest.mark.parametrize("loss, physics, match", [
    (SURE("gaussian"), Denoising(NoNoise()), "no noise level"),
    (SURE("gaussian"), Denoising(PoissonNoise(0.1)), "poisson"),
    (SURE("poisson"), Denoising(GaussianNoise(0.1)), "gaussian"),
    (SURE("poisson_gaussian"), Denoising(PoissonNoise(0.1)), "poisson"),
    (SURE("gaussian"), Denoising(ColoredGaussianNoise(0.1, torch.ones(2, 2))), "UNSURE"),
    (R2R("gamma"), Denoising(GaussianNoise(0.1)), "gaussian"),
    (R2R("gaussian"), Denoising(PoissonGaussianNoise(0.1, 0.1)), "poisson_gaussian"),
    (Noise2Score("gaussian"), Double(GaussianNoise(0.1)), "A = I"),
    (Noise2Score("gamma"), Denoising(GaussianNoise(0.1)), "gaussian"),
    (Neighbor2Neighbor(), Double(GaussianNoise(0.1)), "Denoising"),
    (BlindSpotLoss(), Double(GaussianNoise(0.1)), "Denoising"),
    (SplittingLoss(), Denoising(ColoredGaussianNoise(0.1, torch.ones(2, 2))), "independent"),
])
def test_incompatible_pairs_raise(loss, physics, match):
    with pytest.raises(LossConfigError, match=match):
        loss.check(physics)


def test_noise2noise_symmetric_draws_each_direction_half_the_time_and_validates_one():
    # with f(y) = 2y the two directions give different values: ||y2 - 2y||² and ||y - 2y2||²
    physics = Denoising(GaussianNoise(0.1))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 8, 8, generator=g)
    y, y2 = physics(x, generator=g), physics(x, generator=g)
    model = lambda v, p: 2 * v  # noqa: E731
    forward, backward = float(((y2 - 2 * y) ** 2).mean()), float(((y - 2 * y2) ** 2).mean())
    assert abs(forward - backward) > 1e-3
    loss = Noise2Noise()
    values = [float(loss(y, physics, model, y2=y2, generator=g)) for _ in range(200)]
    n_forward = sum(abs(v - forward) < 1e-6 for v in values)
    n_backward = sum(abs(v - backward) < 1e-6 for v in values)
    assert n_forward + n_backward == 200
    assert 70 <= n_forward <= 130  # Binomial(200, 1/2): mean 100, sd 7.1 -> ±30 is 4.2 sd
    assert float(loss.validation_loss(y, physics, model, y2=y2, generator=g)) == pytest.approx(forward, abs=1e-7)
    one_way = Noise2Noise(symmetric=False)
    assert all(float(one_way(y, physics, model, y2=y2, generator=g)) == pytest.approx(forward, abs=1e-7)
               for _ in range(20))
    with pytest.raises(LossConfigError, match="symmetric must be true or false"):
        Noise2Noise(symmetric="yes")


def test_noise2noise_without_pair_raises():
    with pytest.raises(LossConfigError, match="y2"):
        Noise2Noise()(torch.zeros(1, 1, 4, 4), Denoising(GaussianNoise(0.1)), Backbone(nn.Identity()))


def test_per_sample_noise_levels():
    # SURE accepts per-sample sigma (B,): value equals the mean of per-sample SUREs
    sig = torch.tensor([0.05, 0.2])
    physics = Denoising(GaussianNoise(sig))
    y = physics(clean_image().expand(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    model = smoothing_filter()
    both = SURE(divergence="exact")(y, physics, model)
    parts = [SURE(divergence="exact")(y[i:i + 1], Denoising(GaussianNoise(float(sig[i]))), model) for i in range(2)]
    assert float(both.detach()) == pytest.approx(float(sum(parts).detach() / 2), rel=1e-5)


def test_a_custom_noise_model_is_refused_by_the_family_specific_losses():
    from selfinv.physics import NoiseModel

    class Custom(NoiseModel):
        def sample(self, z, generator=None):
            return z

    for loss in (SURE("gaussian"), R2R("gaussian"), Noise2Score("gaussian")):
        with pytest.raises(LossConfigError, match="custom"):
            loss.check(Denoising(Custom()))


# ----------------------------------------------------------------------------- dtype of the noise parameters
# sigma = 0.1 rounded to float32 is 0.1 + 1.5e-9: it would shift SURE by ~1e-10 and R2R by ~1e-10, far
# above the float64 round-off of these sums of 200 terms (~1e-16), hence the 1e-12 tolerance.
def test_float64_sure_uses_the_float64_noise_level():
    from selfinv.theory import operator_matrix

    sigma, n = 0.1, 64
    physics = Denoising(GaussianNoise(sigma))
    model = smoothing_filter()
    y = physics(clean_image().expand(3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    H = operator_matrix(lambda v: model(v, physics), (1, 8, 8))  # f(y) = H y, float64
    yf = y.reshape(3, n)
    resid = ((yf - yf @ H.T) ** 2).sum()
    ref = (resid - 3 * n * sigma**2 + 2 * sigma**2 * 3 * torch.trace(H)) / (3 * n)
    with torch.no_grad():
        got = SURE("gaussian", divergence="exact")(y, physics, model)
    assert got.dtype == torch.float64
    assert abs(float(got) - float(ref)) < 1e-12, (float(got), float(ref))


def test_float64_r2r_uses_the_float64_noise_level():
    sigma, a = 0.1, 0.15
    physics = Denoising(GaussianNoise(sigma))
    model = smoothing_filter()
    y = physics(clean_image().expand(3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    omega = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    y1, y2 = y + (a / (1 - a)) ** 0.5 * sigma * omega, y - ((1 - a) / a) ** 0.5 * sigma * omega
    ref = ((y2 - model(y1, physics)) ** 2).mean()
    got = R2R("gaussian", alpha=a)(y, physics, model, generator=torch.Generator().manual_seed(1))
    assert got.dtype == torch.float64
    assert abs(float(got) - float(ref)) < 1e-12, (float(got), float(ref))


def test_mc_divergence_with_a_step_as_large_as_the_structure_misses_the_local_slope():
    # h(v) = v - (τ/2π) sin(2πv/τ) has slope 2 at v = τ(k + 1/2) but slope 1 on average over a period:
    # a finite difference with step τ sees the average, one with τ/1000 the local slope (what SURE needs).
    tau = 0.01
    def h(v):
        return v - tau / (2 * math.pi) * torch.sin(2 * math.pi * v / tau)
    y = tau * (torch.randint(0, 50, (4, 1, 64, 64), generator=torch.Generator().manual_seed(0)).double() + 0.5)
    n = y[0].numel()
    # per-sample standard errors: 0.022 (fine, 2ω²) and 0.011 (coarse); tolerance 0.1
    fine = mc_divergence(h, y, tau / 1000, torch.Generator().manual_seed(1)) / n
    coarse = mc_divergence(h, y, tau, torch.Generator().manual_seed(1)) / n
    assert torch.allclose(fine, torch.full_like(fine, 2.0), atol=0.1)
    assert torch.allclose(coarse, torch.full_like(coarse, 1.0), atol=0.1)


def test_sure_warns_when_its_step_is_large_against_the_noise():
    import warnings

    y = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    def model(v, physics):
        return 0.5 * v
    with pytest.warns(UserWarning, match=r"tau = 0.01 is 0.51 × σ .*use tau: 0.002 \(1/10 of it\) or tau: auto"):
        SURE(noise="gaussian")(y, Denoising(GaussianNoise(0.0196)), model)
    # Poisson: against the root-mean-square noise level sqrt(mean(γ y)) of the batch, here sqrt(1e-3 / 2) = 0.022
    level = math.sqrt(1e-3 * float(y.mean()))
    with pytest.warns(UserWarning, match=rf"tau = 0.01 is {0.01 / level:.2f} × the noise level .* \(= {level:.4g} .*"
                                         rf"use tau: {level / 6:.2g} \(1/6 of it\)"):
        SURE(noise="poisson")(y, Denoising(PoissonNoise(1e-3)), model, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SURE(noise="gaussian", tau=0.001)(y, Denoising(GaussianNoise(0.0196)), model)
        SURE(noise="gaussian")(y, Denoising(GaussianNoise(0.1)), model)
        SURE(noise="gaussian").check(Denoising(GaussianNoise(0.0196)))  # config-time check: units not known yet
        SURE(noise="poisson")(y, Denoising(PoissonNoise(0.05)), model, generator=torch.Generator().manual_seed(0))


def test_sure_tau_auto_is_a_tenth_of_the_noise_level_of_each_batch():
    """tau: auto uses σ/10 (the smallest σ of a per-sample batch) for the first-order estimate and, for Poisson
    noise, the root-mean-square noise level sqrt(mean(γ y + σ²)) of the batch over 6 (second order) or 10 (first
    order): the same value as the explicit step, no warning at a σ where the default step warns; refused where it
    has no meaning, with the reason."""
    import warnings

    from selfinv.losses.base import LossConfigError

    y = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=DT)
    model = frozen_cnn()
    physics = Denoising(GaussianNoise(0.0196))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = SURE(tau="auto")(y, physics, model, generator=torch.Generator().manual_seed(1))
    explicit = SURE(tau=0.0196 / 10)(y, physics, model, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(auto, explicit)
    per_sample = Denoising(GaussianNoise(torch.tensor([0.05, 0.02, 0.1])))
    assert float(SURE(tau="auto").step_size(per_sample)) == pytest.approx(0.002)
    assert "tau=auto" in repr(SURE(tau="auto"))
    poisson = Denoising(PoissonGaussianNoise(0.02, 0.05))
    level = math.sqrt(0.02 * float(y.mean()) + 0.05**2)
    for second_order, divisor in ((True, 6), (False, 10)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            auto = SURE(noise="poisson_gaussian", tau="auto", second_order=second_order)(
                y, poisson, model, generator=torch.Generator().manual_seed(1))
        assert float(SURE(noise="poisson_gaussian", tau="auto", second_order=second_order).step_size(poisson, y)) \
            == pytest.approx(level / divisor)
        explicit = SURE(noise="poisson_gaussian", tau=level / divisor, second_order=second_order)(
            y, poisson, model, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(auto, explicit)
    with pytest.raises(LossConfigError, match="needs the measurements: its step follows their noise level"):
        SURE(noise="poisson", tau="auto").step_size(Denoising(PoissonNoise(0.05)))
    with pytest.raises(LossConfigError, match="tau: auto sets the step of the Monte-Carlo .* divergence 'exact'"):
        SURE(tau="auto", divergence="exact")
    with pytest.raises(LossConfigError, match="a number > 0 or 'auto', got 'big'"):
        SURE(tau="big")
