"""Tests of selfinv.physics.tomography: the strip-integral Radon transform, its
exact adjoint, FBP, and the Beer-Lambert transmission model.

Reference numbers quoted in the tolerances were measured with this code
(float64, CPU); see each test.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from selfinv.physics.noise import GaussianNoise
from selfinv.physics.radon import detector_center, rotation_center
from selfinv.physics.tomography import BeerLambertCT, Tomography, radon_matrix

CENTERINGS = ("skimage", "geometric")


def _smooth_phantom(n: int, sigma: float = 2.0) -> torch.Tensor:
    """Shepp-Logan resized to n x n and Gaussian-smoothed, (1, 1, n, n) float64."""
    import skimage  # noqa: F401  (a dependency of selfinv)
    from scipy.ndimage import gaussian_filter
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    p = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    return torch.tensor(gaussian_filter(p, sigma), dtype=torch.float64)[None, None]


def _disc_image(n: int, r: float, cx: float, cy: float, sub: int = 8, centering: str = "skimage") -> torch.Tensor:
    """Pixel averages (sub x sub supersampling) of the indicator of a disc; coordinates in
    image widths from the centre of rotation, y pointing up."""
    s = 1.0 / n
    off = (torch.arange(sub, dtype=torch.float64) + 0.5) / sub - 0.5
    coord = (torch.arange(n, dtype=torch.float64) - rotation_center(n, centering)) * s
    X = coord[None, :, None, None] + off[None, None, None, :] * s
    Y = -coord[:, None, None, None] - off[None, None, :, None] * s
    return (((X - cx) ** 2 + (Y - cy) ** 2) <= r * r).double().mean((-1, -2))


def _disc_sinogram(n: int, D: int, angles: torch.Tensor, r: float, cx: float, cy: float,
                   centering: str = "skimage") -> torch.Tensor:
    """Analytic Radon transform of the disc, 2 sqrt(r^2 - (t - c.e)^2), averaged over each bin."""
    s = 1.0 / n
    th = torch.deg2rad(angles.double())[:, None]
    tk = (torch.arange(D, dtype=torch.float64) - detector_center(D, centering)) * s
    centre = cx * torch.cos(th) + cy * torch.sin(th)

    def primitive(u):
        u = u.clamp(-r, r)
        return u * torch.sqrt(r * r - u * u) + r * r * torch.asin(u / r)

    return (primitive(tk + s / 2 - centre) - primitive(tk - s / 2 - centre)) / s


# -------------------------------------------------------------------------------------
# The matrix and its adjoint
# -------------------------------------------------------------------------------------
@pytest.mark.parametrize("centering", CENTERINGS)
@pytest.mark.parametrize("n", [32, 33])
@pytest.mark.parametrize("angles", [None, [0.0, 10.0, 45.0, 50.0, 90.0, 100.0, 135.0, 170.0, 179.5, -20.0, 200.0],
                                    [0.0, 180.0, 30.0, 30.0, 90.0]])
def test_adjoint_is_exact_transpose(n, angles, centering):
    # A^T is built from the same sparse entries as A: only float64 rounding remains
    # (measured <= 1e-17); 1e-12 leaves a wide margin yet fails for any real mismatch.
    # The last angle set repeats views (0 = 180, 30 twice): their back-projections add up.
    g = torch.Generator().manual_seed(0)
    t = Tomography(n, angles=None if angles is None else torch.tensor(angles), centering=centering)
    x = torch.rand(2, 3, n, n, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, t.n_views, t.n_detectors, generator=g, dtype=torch.float64)
    assert t.adjointness_error(x, y) < 1e-12


@pytest.mark.parametrize("centering", CENTERINGS)
@pytest.mark.parametrize("n", [31, 32])
def test_symmetry_reduction_equals_plain_matrix(n, centering):
    # 60 evenly spaced views go through 16 base angles and 4 symmetries of the grid (padded
    # by a zero row and column for an even n with the skimage centring); A and A^T must
    # equal the plain matrix and its transpose up to float64 rounding (measured 2e-13 on
    # entries of size ~20).
    t = Tomography(n, n_views=60, centering=centering, pixel_size=1.0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, n, n, generator=g, dtype=torch.float64)
    M = radon_matrix(n, t.angles[0], pixel_size=1.0, centering=centering)
    ref = (M @ x.reshape(2, -1).t()).t().reshape(2, 1, 60, -1)
    assert torch.allclose(t.A(x), ref, rtol=0, atol=1e-11)
    direct = Tomography(n, n_views=60, use_symmetry=False, centering=centering, pixel_size=1.0)
    assert torch.allclose(direct.A(x), ref, rtol=0, atol=1e-11)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    back = (M.t() @ w.reshape(2, -1).t()).t().reshape(2, 1, n, n)
    assert torch.allclose(t.A_adjoint(w), back, rtol=0, atol=1e-11)


@pytest.mark.parametrize("centering", CENTERINGS)
def test_each_view_conserves_mass(centering):
    # Each pixel's footprint has area s^2 and bins have width s, so every view sums to
    # s * sum(x) exactly when the detector holds every footprint. The corner pixel farthest
    # from the skimage centre reaches sqrt(2) (n/2 + 1/2) from it: ceil(sqrt(2) (n + 1)) + 1
    # bins hold it whatever the parity.
    n = 32
    angles = torch.tensor([0.0, 17.0, 45.0, 90.0, 123.4, 135.0])
    D = math.ceil(math.sqrt(2) * (n + 1)) + 1
    t = Tomography(n, angles=angles, n_detectors=D, centering=centering)
    x = torch.rand(1, 1, n, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sums = t.A(x).sum(-1)
    assert torch.allclose(sums, x.sum() / n * torch.ones_like(sums), rtol=1e-12, atol=0)
    # the default detector (skimage's size) holds the footprints of the disc inscribed in the image
    t = Tomography(n, angles=angles, centering=centering)
    disc = x * _disc_image(n, 0.5, 0.0, 0.0, sub=1, centering=centering)
    sums = t.A(disc).sum(-1)
    assert torch.allclose(sums, disc.sum() / n * torch.ones_like(sums), rtol=1e-12, atol=0)


def test_per_sample_angles_match_individual_operators_and_adjoint():
    n = 24
    g = torch.Generator().manual_seed(3)
    a1 = torch.arange(20, dtype=torch.float64) * 9.0
    a2 = torch.sort(torch.rand(20, generator=g, dtype=torch.float64) * 180).values
    t = Tomography(n, n_views=20).with_params(angles=torch.stack([a1, a2, a1]))
    x = torch.rand(3, 2, n, n, generator=g, dtype=torch.float64)
    y = t.A(x)
    for b, a in enumerate([a1, a2, a1]):
        assert torch.allclose(y[b], Tomography(n, angles=a).A(x[b:b + 1])[0], rtol=0, atol=1e-13)
    w = torch.randn(y.shape, generator=g, dtype=torch.float64)
    assert t.adjointness_error(x, w) < 1e-12
    with pytest.raises(ValueError, match="angles for 3 samples but the batch has 2"):
        t.A(x[:2])


def test_gradient_of_A_is_the_adjoint():
    n = 16
    t = Tomography(n, n_views=12)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, n, n, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 12, t.n_detectors, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((t.A(x) * w).sum(), x)
    assert torch.allclose(grad, t.A_adjoint(w), rtol=0, atol=1e-12)
    small = Tomography(6, n_views=4)  # gradcheck is O(entries^2): keep it tiny
    z = torch.randn(1, 1, 4, small.n_detectors, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(small.A_adjoint, (z,))
    assert torch.autograd.gradgradcheck(small.A, (torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True),))


# -------------------------------------------------------------------------------------
# Accuracy
# -------------------------------------------------------------------------------------
@pytest.mark.parametrize("centering", CENTERINGS)
@pytest.mark.parametrize("n, bound", [(32, 0.02), (64, 0.01)])
def test_agrees_with_analytic_radon_of_a_disc(n, bound, centering):
    # The pixelised disc differs from the true disc along its edge, so the error is
    # O(1/n): measured 1.2-1.4 % at n=32 and 0.7 % at n=64 (bounds ~1.4x that).
    t = Tomography(n, centering=centering)
    img = _disc_image(n, 0.3, 0.1, -0.05, centering=centering)
    ref = _disc_sinogram(n, t.n_detectors, t.angles[0], 0.3, 0.1, -0.05, centering=centering)
    y = t.A(img[None, None])[0, 0]
    assert ((y - ref).norm() / ref.norm()).item() < bound


def _skimage_phantom(n: int) -> np.ndarray:
    import skimage  # noqa: F401  (a dependency of selfinv)
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)


# (n, D = ceil(sqrt(2) n)): every parity of the image and of the detector
@pytest.mark.parametrize("n, D", [(32, 46), (33, 47), (64, 91), (65, 92)])
def test_matches_skimage_radon(n, D):
    # skimage.transform.radon(circle=False) pads the image to ceil(sqrt(2) n), rotates it
    # about pixel (n//2, n//2) with bilinear interpolation and sums the columns into bins
    # centred at t = k - D//2. Ours integrates exact pixel footprints on the same geometry:
    # measured 0.28-0.41 % relative difference on the (sharp) Shepp-Logan phantom
    # (0.06-0.21 % on camera()), the interpolation's smoothing of edges, shrinking with n.
    # The previous centring ((n-1)/2, (D-1)/2) was off by half a pixel: 8-18 % at even n.
    from skimage.transform import radon

    img = _skimage_phantom(n)
    th = np.arange(60) * 3.0
    ref = radon(img, th, circle=False)  # (D, views), pixel size 1
    t = Tomography(n, angles=torch.tensor(th), pixel_size=1.0)
    assert t.n_detectors == D == ref.shape[0]
    ours = t.A(torch.tensor(img)[None, None])[0, 0].T.numpy()
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 0.006
    # angles are counter-clockwise as in skimage: a single oblique view agrees too
    one = Tomography(n, angles=torch.tensor([30.0]), pixel_size=1.0).A(torch.tensor(img)[None, None])[0, 0, 0]
    ref30 = radon(img, [30.0], circle=False)[:, 0]
    assert np.linalg.norm(one.numpy() - ref30) / np.linalg.norm(ref30) < 0.006


@pytest.mark.parametrize("n", [63, 64])
def test_matches_skimage_radon_circle(n):
    # circle=True: a detector of n bins centred at n//2 (image zero outside the inscribed disc)
    from skimage.transform import radon

    img = _skimage_phantom(n) * _disc_image(n, (n // 2) / n, 0.0, 0.0, sub=1).numpy()
    th = np.arange(60) * 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage warns when the image is not zero outside its circle
        ref = radon(img, th, circle=True)
    t = Tomography(n, angles=torch.tensor(th), n_detectors=n, pixel_size=1.0)
    ours = t.A(torch.tensor(img)[None, None])[0, 0].T.numpy()
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 0.006


@pytest.mark.parametrize("n, bound", [(32, 0.03), (64, 0.025)])
def test_fbp_error_on_smooth_phantom(n, bound):
    # FBP (Ram-Lak, 60 views) of A x for the smoothed Shepp-Logan phantom: measured
    # relative error 2.38 % at n=32 and 1.62 % at n=64 (1.6 % with 180 views, so it is
    # the filter/footprint discretisation, not angular undersampling); global scale
    # off by 0.6-1 %. A Hann window trades resolution for noise: 6.0 % / 3.8 %.
    x = _smooth_phantom(n)
    t = Tomography(n, n_views=60)
    rec = t.A_dagger(t.A(x))
    assert ((rec - x).norm() / x.norm()).item() < bound
    hann = t.fbp(t.A(x), window="hann")
    assert ((hann - x).norm() / x.norm()).item() < 2.5 * bound


def test_fbp_of_camera_matches_skimage_iradon():
    # camera() resized to 64x64, 60 views, Ram-Lak filter. skimage's iradon of its own radon
    # (circle=False) has a 5.34 % relative error; ours 5.33 % (5.26-5.38 % at n = 63..65).
    # Before the centring fix, D - n = 27 odd put pixel centres on bin edges at 0 and 90
    # degrees and the FBP error was 7.63 % (1.43x skimage's): a 5 % margin separates both.
    import skimage  # noqa: F401  (a dependency of selfinv)
    from skimage.data import camera
    from skimage.transform import iradon, radon, resize

    n = 64
    img = resize(camera().astype(np.float64) / 255, (n, n), anti_aliasing=True)
    th = np.arange(60) * 3.0
    ref = iradon(radon(img, th, circle=False), th, output_size=n, filter_name="ramp", circle=False)
    err_skimage = np.linalg.norm(ref - img) / np.linalg.norm(img)
    t = Tomography(n, n_views=60)
    x = torch.tensor(img)[None, None]
    rec = t.fbp(t.A(x))
    err = ((rec - x).norm() / x.norm()).item()
    assert err < 1.05 * err_skimage


@pytest.mark.parametrize("n", [64, 65])
def test_fbp_of_a_centred_point(n):
    # A unit pixel at the centre of rotation (n//2, n//2), 60 views: the FBP peak stays on it
    # with height 0.66 (both n). skimage's iradon gives 0.83: it back-projects by linear
    # interpolation at the pixel centre, whereas our back-projector is the exact adjoint, which
    # averages each oblique view over the pixel's footprint a second time. With the previous
    # centring the point sat half a bin off the detector grid: 0.35 (n = 64) and 0.23 (n = 65).
    t = Tomography(n, n_views=60)
    x = torch.zeros(1, 1, n, n, dtype=torch.float64)
    x[..., n // 2, n // 2] = 1.0
    rec = t.fbp(t.A(x))[0, 0]
    assert divmod(int(rec.argmax()), n) == (n // 2, n // 2)
    assert rec.max().item() > 0.6
    assert abs(rec.sum().item() - 1.0) < 0.05  # mass of the response (measured 1.00)


def test_cg_dagger_is_least_squares():
    # 60 views x 46 bins > 32^2 unknowns: CG on the normal equations recovers x
    # (measured 0.08 % after 300 iterations), much better than FBP's 2.35 %.
    n = 32
    x = _smooth_phantom(n)
    t = Tomography(n, n_views=60, dagger="cg")
    t.cg_max_iter = 300
    rec = t.A_dagger(t.A(x))
    assert ((rec - x).norm() / x.norm()).item() < 0.005


# -------------------------------------------------------------------------------------
# Parameters, sampling and errors
# -------------------------------------------------------------------------------------
def test_sample_params_offset_and_uniform_are_seeded():
    t = Tomography(16, n_views=10, angle_sampling="offset")
    p1 = t.sample_params(4, torch.Generator().manual_seed(5))
    p2 = t.sample_params(4, torch.Generator().manual_seed(5))
    assert torch.equal(p1["angles"], p2["angles"]) and p1["angles"].shape == (4, 10)
    step = torch.diff(p1["angles"], dim=1)
    assert torch.allclose(step, torch.full_like(step, 18.0))
    assert bool(((p1["angles"][:, 0] >= 0) & (p1["angles"][:, 0] < 18)).all())
    u = Tomography(16, n_views=10, angle_sampling="uniform").sample_params(3, torch.Generator().manual_seed(6))
    assert u["angles"].shape == (3, 10) and bool((u["angles"] >= 0).all() & (u["angles"] < 180).all())
    assert Tomography(16).sample_params(4) == {} and not Tomography(16).is_random
    t2 = t.resample(4, torch.Generator().manual_seed(5))
    assert torch.equal(t2.angles, p1["angles"]) and t.angles.shape == (1, 10)  # original not mutated


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="square"):
        Tomography((32, 48))
    t = Tomography(32, n_views=8)
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        t.A(torch.zeros(1, 1, 32, 30))
    with pytest.raises(ValueError, match="sinogram"):
        t.A_adjoint(torch.zeros(1, 1, 8, 10))
    with pytest.raises(ValueError, match="sinogram"):
        t.A_dagger(torch.zeros(1, 8, 46))
    with pytest.raises(TypeError, match="floating-point"):
        t.A(torch.zeros(1, 1, 32, 32, dtype=torch.int64))
    with pytest.raises(ValueError, match="dagger"):
        Tomography(32, dagger="sart")
    with pytest.raises(ValueError, match="window"):
        Tomography(32, window="blackman")
    with pytest.raises(ValueError, match="angles must have shape"):
        t.with_params(angles=torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="unknown parameter"):
        t.with_params(mask=torch.zeros(1))


def test_noise_is_applied_with_generator():
    t = Tomography(16, n_views=6, noise=GaussianNoise(0.1))
    x = torch.rand(2, 1, 16, 16)
    y1 = t(x, torch.Generator().manual_seed(7))
    y2 = t(x, torch.Generator().manual_seed(7))
    assert torch.equal(y1, y2)
    # the noise std of y - A x is sigma: 2*6*23 = 276 entries, SE of the std ~ 0.1/sqrt(2*276)
    assert abs((y1 - t.A(x)).std().item() - 0.1) < 3 * 0.1 / math.sqrt(2 * 276)


# -------------------------------------------------------------------------------------
# Beer-Lambert
# -------------------------------------------------------------------------------------
def test_beer_lambert_mean_and_variance_of_counts():
    n, draws = 16, 200
    ct = BeerLambertCT(Tomography(n, n_views=8), I0=500.0, mu=3.0)
    x = _disc_image(n, 0.4, 0.0, 0.0)[None, None].float()
    z = ct.A(x)  # mean counts I0 exp(-mu A x)
    assert torch.allclose(z, 500.0 * torch.exp(-3.0 * ct.tomography.A(x)))
    y = ct(x.expand(draws, 1, n, n), torch.Generator().manual_seed(8))
    # pooled test: sum(y - z) / sqrt(sum z) ~ N(0, 1) for Poisson counts
    zz = z.expand_as(y).double()
    stat = ((y.double() - zz).sum() / zz.sum().sqrt()).item()
    assert abs(stat) < 3
    # Poisson variance = mean: mean of (y - z)^2 / z is 1 with SE sqrt((2 + 1/z) / N)
    ratio = ((y.double() - zz) ** 2 / zz).mean().item()
    se = math.sqrt((2 + (1 / zz).mean().item()) / zz.numel())
    assert abs(ratio - 1) < 3 * se


def test_beer_lambert_linearisation_and_dagger():
    # linearise(y) - A x has std ~ 1 / (mu sqrt(counts)); with I0 = 1e7 and
    # exp(-mu A x) >= exp(-3 * 0.8) the counts are >= 9e5: std <= 3.5e-4, so 3e-3
    # (relative to max A x ~ 0.8) is > 8 sigma on the max over 16 x 23 entries.
    n = 16
    ct = BeerLambertCT(Tomography(n, n_views=16), I0=1e7, mu=3.0)
    x = _disc_image(n, 0.4, 0.0, 0.0)[None, None]
    y = ct(x, torch.Generator().manual_seed(9))
    lin = ct.linearise(y)
    assert (lin - ct.tomography.A(x)).abs().max().item() < 3e-3
    assert torch.allclose(ct.A_dagger(y), ct.tomography.fbp(lin))
    # a zero count is clamped to 1, not -log(0)
    assert torch.isfinite(ct.linearise(torch.zeros_like(y))).all()


def test_beer_lambert_params_delegate_to_tomography():
    ct = BeerLambertCT(Tomography(16, n_views=6, angle_sampling="offset"))
    assert ct.is_random and ct.params()["angles"].shape == (1, 6)
    ct2 = ct.resample(2, torch.Generator().manual_seed(10))
    assert ct2.angles.shape == (2, 6) and ct.angles.shape == (1, 6)
    assert ct2.A(torch.rand(2, 1, 16, 16)).shape == (2, 1, 6, 23)
    with pytest.raises(TypeError, match="Tomography"):
        BeerLambertCT(object())
    with pytest.raises(ValueError, match="I0"):
        BeerLambertCT(Tomography(16), I0=-1.0)


# -------------------------------------------------------------------------------------
# The same geometry at another image size
# -------------------------------------------------------------------------------------
def test_for_image_size_keeps_the_geometry():
    ct64 = Tomography(64, n_views=30, noise=GaussianNoise(0.01), window="hann", angle_sampling="offset")
    ct128 = ct64.for_image_size(128)
    assert (ct128.img_size, ct128.n_detectors, ct128.pixel_size) == (128, 182, 1 / 128)
    assert torch.equal(ct128.angles, ct64.angles) and ct128.noise is ct64.noise
    assert (ct128.window, ct128.angle_sampling, ct128.centering) == ("hann", "offset", "skimage")
    assert ct64.img_size == 64 and ct64.n_detectors == 91  # the original is not mutated
    x = torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    assert torch.equal(ct128.A(x), Tomography(128, n_views=30).A(x))
    # per-sample angles, an explicit pixel size and the geometric centring's detector rule carry over
    per_sample = ct64.resample(2, torch.Generator().manual_seed(12)).for_image_size(128)
    assert per_sample.angles.shape == (2, 30) and per_sample.A(x).shape == (2, 1, 30, 182)
    assert Tomography(64, pixel_size=0.5).for_image_size(128).pixel_size == 0.5
    assert Tomography(64, centering="geometric").for_image_size(65).n_detectors == 93  # 92 + 1: D - N even
    assert Tomography(64, n_detectors=100).for_image_size(128, n_detectors=190).n_detectors == 190
    with pytest.raises(ValueError, match=r"explicit n_detectors=100 for 64x64 .* 128x128 .* gives 182"):
        Tomography(64, n_detectors=100).for_image_size(128)
    with pytest.raises(ValueError, match="square"):
        ct64.for_image_size((128, 96))


def test_for_sinogram_infers_the_image_size():
    ct = Tomography(64, n_views=60)
    assert ct.for_sinogram(torch.zeros(1, 1, 60, 91)) is ct
    assert ct.for_sinogram((3, 1, 60, 182)).img_size == 128
    assert ct.for_sinogram((60, 142)).img_size == 100  # skimage's radon(circle=False) of a 100x100 image
    assert ct.for_sinogram((60, 150), img_size=100).n_detectors == 150  # a wider detector, by choice
    with pytest.raises(ValueError, match=r"93 detector bins.*N=65 gives 92, N=66 gives 94.*pass img_size"):
        ct.for_sinogram((1, 1, 60, 93))
    with pytest.raises(ValueError, match=r"59 views .* 60 angles"):
        ct.for_sinogram((1, 1, 59, 182))
    with pytest.raises(ValueError, match="explicit n_detectors=100.*pass img_size"):
        Tomography(64, n_views=60, n_detectors=100).for_sinogram((60, 182))
    ct2 = BeerLambertCT(ct, I0=1e3)
    assert ct2.for_sinogram((1, 1, 60, 91)) is ct2
    big = ct2.for_sinogram((1, 1, 60, 182))
    assert big.tomography.img_size == 128 and big.I0 is ct2.I0 and ct2.tomography.img_size == 64


def test_back_projection_model_from_64_crops_reconstructs_a_128_slice():
    # backbone(A† y) is fully convolutional: only the physics is rebuilt for the larger slice.
    from selfinv.models import BackProjection, DnCNN

    torch.manual_seed(0)
    model = BackProjection(DnCNN(depth=3, channels=8)).double()
    ct64 = Tomography(64, n_views=60)
    crops = _smooth_phantom(64)
    assert model(ct64.A(crops), ct64).shape == (1, 1, 64, 64)
    x = _smooth_phantom(128)
    y = Tomography(128, n_views=60).A(x)  # a 128x128 slice measured with the same angles
    ct128 = ct64.for_sinogram(y)
    with torch.no_grad():
        out = model(y, ct128)
    assert out.shape == (1, 1, 128, 128)
    assert torch.allclose(out, model.backbone(ct128.fbp(y)))
    # the rebuilt operator's FBP is the 128x128 one (measured 1.69 %, 1.62 % at 64x64)
    assert ((ct128.fbp(y) - x).norm() / x.norm()).item() < 0.025
