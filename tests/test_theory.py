"""Identifiability (rank conditions) on the tutorial's cases, with exact expected ranks."""

import torch

from selfinv.physics import MRI, Blur, CompressedSensing, Denoising, Inpainting, box_kernel
from selfinv.theory import identifiability, operator_matrix, physics_in_dtype
from selfinv.transforms import Rotate, Shift


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
