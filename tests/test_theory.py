"""Identifiability (rank conditions) on the tutorial's cases, with exact expected ranks."""

import pytest
import torch

from selfinv.physics import MRI, Blur, CompressedSensing, Denoising, Inpainting, box_kernel
from selfinv.theory import identifiability, operator_matrix, physics_in_dtype
from selfinv.transforms import Rotate, Scale, Shift


def test_operator_matrix_of_a_known_map():
    mat_true = torch.randn(5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mat = operator_matrix(lambda x: x.flatten(1) @ mat_true.T, (1, 3, 4), batch_size=5)
    assert torch.equal(mat, mat_true)


def test_inpainting_one_mask_is_not_enough_several_are(gen):
    physics = Inpainting((1, 16, 16), 0.5, generator=gen)
    one = identifiability(physics, img_size=(1, 16, 16))
    observed = int(physics.mask.sum())
    assert one.rank == observed and one.null_space_dim == 256 - observed and not one.identifiable
    assert one.m == observed and one.n == 256 and not one.bound_satisfied
    # 30 masks: P(a given pixel is never observed) = 2^-30, so full rank unless a 1e-7 event happens
    many = identifiability(physics, img_size=(1, 16, 16), n_operators=30, generator=gen)
    assert many.identifiable and many.n_operators == 30 and many.bound_satisfied
    # an exact finite set: two complementary masks
    m = physics.mask
    pair = identifiability(physics, img_size=(1, 16, 16),
                           operators=[physics.with_params(mask=m), physics.with_params(mask=1 - m)])
    assert pair.identifiable and pair.n_operators == 2
    assert "LEARNABLE" in str(pair) and "NOT LEARNABLE" in str(one)


def test_circular_blur_stays_rank_deficient_with_shifts_and_rotations():
    # 3x3 box on 9x9: the 1-D response (1 + 2 cos w)/3 vanishes at w = 2 pi k/3, i.e. at
    # 2 of 9 frequencies per axis, so rank(A) = 7 * 7 = 49 exactly.
    physics = Blur(kernel=box_kernel(1))
    plain = identifiability(physics, img_size=(1, 9, 9))
    assert plain.rank == 49
    shifts = identifiability(physics, Shift(), img_size=(1, 9, 9))
    assert shifts.rank == 49 and shifts.group_size == 81 and shifts.group_exact
    assert shifts.equivariant is True and shifts.equivariance_residual < 1e-8
    assert "equivariant" in shifts.verdict
    rot = identifiability(physics, Rotate(), img_size=(1, 9, 9))
    assert rot.rank == 49 and rot.group_size == 4 and rot.equivariant is True


def test_compressed_sensing_quarter_measurements_full_rank_with_all_shifts():
    physics = CompressedSensing(64, (1, 16, 16), generator=torch.Generator().manual_seed(0))
    plain = identifiability(physics, img_size=(1, 16, 16))
    assert plain.rank == 64 and plain.m == 64 and plain.null_space_dim == 192
    shifts = identifiability(physics, Shift(), img_size=(1, 16, 16))
    assert shifts.identifiable and shifts.rank_without_transform == 64
    assert shifts.equivariant is False
    assert shifts.bound == 1.0 and shifts.bound_satisfied


def test_mri_one_mask_rank_deficient_rotations_help_but_not_enough():
    physics = MRI((16, 16), acceleration=4, generator=torch.Generator().manual_seed(0))
    one = identifiability(physics)  # channels probed: 2 (real/imag), n = 512
    lines = int(physics.mask.sum())
    assert one.image_shape == (2, 16, 16)
    assert one.rank == 2 * 16 * lines  # each kept k-space entry gives a real and an imaginary measurement
    rot = identifiability(physics, Rotate())
    # 90° rotations turn columns into rows; the k-space entries with neither row nor column kept stay unseen
    assert one.rank < rot.rank < 512
    assert rot.equivariant is False


def test_denoising_is_identifiable_and_equivariance_not_applicable():
    rep = identifiability(Denoising(), Shift(), img_size=(1, 4, 4))
    assert rep.identifiable and rep.equivariant is None
    assert "n/a" in str(rep)


def test_physics_in_dtype_leaves_the_original_untouched():
    physics = Inpainting((1, 8, 8), 0.5, generator=torch.Generator().manual_seed(0))
    copy64 = physics_in_dtype(physics, torch.float64)
    assert copy64.mask.dtype == torch.float64 and physics.mask.dtype == torch.float32


def test_scalings_break_the_blur_equivariance():
    # SEI's point (Scanvic et al. 2024): downscaling moves unseen high frequencies into the seen band.
    from selfinv.transforms import Scale

    rep = identifiability(Blur(kernel=box_kernel(1)), Scale(), img_size=(1, 9, 9), n_transforms=16,
                          generator=torch.Generator().manual_seed(0))
    assert not rep.group_exact and rep.group_size == 16
    assert rep.rank > rep.rank_without_transform == 49 and rep.equivariant is False


# -- conditioning-aware verdict, spectrum, determinism ---------------------------------------------
def test_gaussian_blur_under_shifts_is_not_declared_learnable_whatever_rtol():
    # circular Gaussian blur (sigma = 2) commutes with shifts; its transfer function decays to ~1e-8 of
    # its peak on 16x16, below the float64 rounding floor of the Gram eigenvalues: rank 179 at
    # rtol = 1e-5. Lowering rtol (as far as 1e-8) must not turn it "learnable": the condition number is huge.
    physics = Blur(kind="gaussian", sigma=2.0)
    rep = identifiability(physics, Shift(), img_size=(1, 16, 16))
    assert rep.rank == 179 and rep.equivariant is True
    assert rep.level == "not learnable" and not rep.learnable
    assert rep.spectrum.below[1e-4] > 100  # more than 100 of the 256 directions seen below 1e-4 s_max
    # shifts add nothing (equivariant), so the plain operator has the same spectrum: check rtol on it
    for rtol in (1e-6, 1e-8):
        plain = identifiability(physics, img_size=(1, 16, 16), rtol=rtol)
        assert plain.level in ("not learnable", "numerically unstable") and not plain.learnable
        assert plain.condition_number > 1e6


def test_scale_group_on_gaussian_blur_is_numerically_unstable_not_learnable():
    # 32 sampled scalings make the rank full, but s_min / s_max = 8.5e-5 (condition number 1.2e4 > 1e4):
    # previously declared learnable. Deterministic: the default generator is seeded.
    rep = identifiability(Blur(kind="gaussian", sigma=2.0), Scale(factors=(0.75, 0.5)), img_size=(1, 16, 16))
    assert rep.rank == rep.n == 256 and rep.rank_without_transform == 179
    assert rep.condition_number > rep.cond_threshold == 1e4
    assert rep.level == "numerically unstable" and not rep.learnable
    assert "NUMERICALLY UNSTABLE" in rep.verdict and "numerically unstable" in str(rep)
    s = rep.singular_values
    assert rep.spectrum.s_max == pytest.approx(float(s.max())) and rep.spectrum.s_min == pytest.approx(float(s.min()))
    assert rep.spectrum.below == {t: int((s < t * s.max()).sum()) for t in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)}


def test_well_conditioned_cases_are_learnable():
    rep = identifiability(Denoising(), img_size=(1, 4, 4))
    assert rep.level == "learnable" and rep.condition_number == pytest.approx(1.0)
    assert "LEARNABLE in principle" in rep.verdict


def test_repeated_calls_give_identical_reports():
    # operators and transform elements are drawn from the default (seeded) generator: same ranks and
    # singular values bit for bit, also with a single drawn operator
    inp = Inpainting((1, 8, 8), 0.5, generator=torch.Generator().manual_seed(0))
    for kwargs in ({"n_operators": 1}, {"n_operators": 3}):
        a, b = identifiability(inp, img_size=(1, 8, 8), **kwargs), identifiability(inp, img_size=(1, 8, 8), **kwargs)
        assert a.operators_drawn and a.rank == b.rank and torch.equal(a.singular_values, b.singular_values)
    blur = Blur(kernel=box_kernel(1))
    a = identifiability(blur, Scale(), img_size=(1, 9, 9), n_transforms=8)
    b = identifiability(blur, Scale(), img_size=(1, 9, 9), n_transforms=8)
    assert torch.equal(a.singular_values, b.singular_values)


@pytest.mark.parametrize("G", [1, 2, 3, 4])
def test_inpainting_rank_with_G_random_masks(G):
    # a pixel is observed by at least one of G Bernoulli(1/2) masks with probability p = 1 - 0.5^G, so the
    # rank (pixels observed at least once) is Binomial(n, p): mean n p (the tutorial's n(1 - 0.5^G)),
    # sd sqrt(n p (1 - p)) = 8, 6.9, 5.3, 3.9 for G = 1..4 at n = 256; we accept 4 sd (false alarm 6e-5).
    # It must also equal, exactly, the number of pixels covered by the union of the drawn masks.
    n = 256
    physics = Inpainting((1, 16, 16), 0.5, generator=torch.Generator().manual_seed(0))
    rep = identifiability(physics, img_size=(1, 16, 16), n_operators=G, generator=torch.Generator().manual_seed(G))
    g = torch.Generator().manual_seed(G)  # the same draws, redone
    union = torch.stack([physics.resample(1, g).mask for _ in range(G)]).amax(0)
    assert rep.rank == int(union.sum())
    p = 1 - 0.5**G
    assert abs(rep.rank - n * p) <= 4 * (n * p * (1 - p)) ** 0.5, (rep.rank, n * p)
    assert rep.level == "not learnable"  # P(all 256 pixels covered) <= (15/16)^256 ~ 7e-8


def test_rtol_must_sit_below_the_conditioning_threshold():
    with pytest.raises(ValueError, match=r"rtol must be in \(0, 1/cond_threshold\)"):
        identifiability(Denoising(), img_size=(1, 4, 4), rtol=1e-3, cond_threshold=1e4)
