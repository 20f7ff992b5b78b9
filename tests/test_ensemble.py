"""The geometric self-ensemble: the operators that declare ``commutes_with_dihedral`` do commute with the 8 flips /
90° rotations (and their noise is invariant), the ensemble is equivariant and leaves an equivariant map unchanged,
and ``selfinv predict --ensemble`` writes the mean of the 8 transformed reconstructions or refuses operators that do
not commute."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_denoiser_config

from selfinv.cli import main
from selfinv.config import from_dict
from selfinv.models.ensemble import DIHEDRAL, dihedral_ensemble, dihedral_inverse, dihedral_transform
from selfinv.physics import MRI, Blur, Denoising, GaussianNoise
from selfinv.physics.noise import ColoredGaussianNoise, GammaNoise, PoissonNoise, UnknownNoise
from selfinv.training.engine import fit

COMMUTING = {
    "denoising gaussian": lambda: Denoising(GaussianNoise(0.1)),
    "denoising poisson": lambda: Denoising(PoissonNoise(0.05)),
    "denoising gamma": lambda: Denoising(GammaNoise(10)),
    "denoising coloured isotropic": lambda: Denoising(ColoredGaussianNoise(0.1, torch.ones(3, 3))),
    "blur gaussian circular": lambda: Blur(sigma=1.5, boundary="circular"),
    "blur gaussian valid": lambda: Blur(sigma=1.0, boundary="valid"),
    "blur gaussian reflect": lambda: Blur(sigma=1.0, boundary="reflect"),
    "blur box": lambda: Blur(kind="box", radius=1),
}
NOT_COMMUTING = {
    "denoising, noise correlated along rows": lambda: Denoising(ColoredGaussianNoise(0.1, torch.ones(1, 3))),
    "denoising, unknown noise": lambda: Denoising(UnknownNoise()),
    "blur, anisotropic kernel": lambda: Blur(kernel=torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 0.0]])),
    "blur, even kernel": lambda: Blur(kernel=torch.full((2, 2), 0.25)),
    "mri": lambda: MRI((16, 16), acceleration=4, generator=torch.Generator().manual_seed(0)),
}


@pytest.mark.parametrize("name", list(COMMUTING))
def test_declared_commuting_operators_commute_with_every_flip_and_rotation(name):
    physics = COMMUTING[name]()
    assert physics.commutes_with_dihedral()
    x = torch.rand(2, 1, 16, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for k, flip in DIHEDRAL:
        torch.testing.assert_close(physics.A(dihedral_transform(x, k, flip)), dihedral_transform(physics.A(x), k, flip))


@pytest.mark.parametrize("name", list(NOT_COMMUTING))
def test_operators_that_do_not_commute_say_so(name):
    assert not NOT_COMMUTING[name]().commutes_with_dihedral()


def test_the_anisotropic_blur_would_break_the_ensemble():  # why it must say so: A T != T A for some T
    physics = NOT_COMMUTING["blur, anisotropic kernel"]()
    x = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    assert (physics.A(dihedral_transform(x, 1, False)) - dihedral_transform(physics.A(x), 1, False)).abs().max() > 1e-3


def test_transform_and_inverse_are_the_dihedral_group():
    y = torch.rand(1, 1, 5, 7)
    images = {tuple(dihedral_transform(y, k, f).flatten().tolist()) for k, f in DIHEDRAL}
    assert len(images) == 8  # 8 distinct elements on a generic image
    for k, flip in DIHEDRAL:
        assert torch.equal(dihedral_inverse(dihedral_transform(y, k, flip), k, flip), y)


def test_the_ensemble_is_equivariant_and_keeps_an_equivariant_map():
    y = torch.rand(2, 1, 8, 6, generator=torch.Generator().manual_seed(2))
    weight = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(3))

    def biased(t):  # a direction-dependent filter
        return torch.nn.functional.conv2d(t, weight, padding=1)

    ens = dihedral_ensemble(biased, y)
    assert (ens - biased(y)).abs().max() > 1e-3
    for k, flip in DIHEDRAL:
        torch.testing.assert_close(dihedral_ensemble(biased, dihedral_transform(y, k, flip)),
                                   dihedral_transform(ens, k, flip))
    torch.testing.assert_close(dihedral_ensemble(lambda t: t.square() + 1, y), y.square() + 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens")
    cfg = tiny_denoiser_config("supervised", sigma=0.1, num_patches=16, batch_size=4, steps=2)
    fit(from_dict({**cfg, "trainer": {**cfg["trainer"], "output_dir": str(out)}}))
    return str(out / "checkpoints" / "last.ckpt")


def _predict(checkpoint, source, out, *extra) -> int:
    return main(["predict", "--checkpoint", checkpoint, "--input", str(source), "--output", str(out),
                 "--progress", "false", "--dtype", "float32", *extra])


def test_predict_ensemble_is_the_mean_of_the_transformed_predictions(checkpoint, tmp_path, one_thread):
    rng = np.random.default_rng(0)
    y = (rng.random((20, 14)) + 0.1 * rng.standard_normal((20, 14))).astype(np.float32)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "y.npy", y)
    for i, (k, flip) in enumerate(DIHEDRAL):
        (tmp_path / f"t{i}").mkdir()
        np.save(tmp_path / f"t{i}" / "y.npy", dihedral_transform(torch.from_numpy(y), k, flip).numpy())
        assert _predict(checkpoint, tmp_path / f"t{i}", tmp_path / f"out{i}") == 0
    assert _predict(checkpoint, tmp_path / "in", tmp_path / "ens", "--ensemble", "true") == 0
    assert _predict(checkpoint, tmp_path / "in", tmp_path / "one") == 0
    back = [dihedral_inverse(torch.from_numpy(np.load(tmp_path / f"out{i}" / "y.npy")), k, flip).numpy()
            for i, (k, flip) in enumerate(DIHEDRAL)]
    ens = np.load(tmp_path / "ens" / "y.npy")
    np.testing.assert_allclose(ens, np.mean(back, axis=0), atol=1e-5)
    assert np.abs(ens - np.load(tmp_path / "one" / "y.npy")).max() > 1e-4  # the untrained net is not equivariant


def test_predict_ensemble_refuses_an_operator_that_does_not_commute(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    cfg = tiny_denoiser_config("supervised", sigma=0.1, num_patches=16, batch_size=4, steps=1)
    cfg["physics"]["noise"] = {"name": "colored_gaussian", "args": {"sigma": 0.1, "kernel": [[1.0, 1.0, 1.0]]}}
    fit(from_dict({**cfg, "trainer": {**cfg["trainer"], "output_dir": str(out)}}))
    np.save(tmp_path / "y.npy", np.random.default_rng(0).random((16, 16)).astype(np.float32))
    assert _predict(str(out / "checkpoints" / "last.ckpt"), tmp_path / "y.npy", tmp_path / "o", "--ensemble",
                    "true") == 2
    err = capsys.readouterr().err
    assert "--ensemble" in err and "Denoising with ColoredGaussianNoise does not" in err
