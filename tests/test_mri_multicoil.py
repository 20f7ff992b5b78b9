"""Multi-coil MRI: the operator against an explicit per-coil FFT, its pseudo-inverse, ESPIRiT maps against
known ones, and a fastMRI multi-coil file from reading to training to its reconstruction file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from selfinv.physics import MRI, MultiCoilMRI, estimate_sensitivities, mri_mask
from selfinv.physics.mri_multicoil import (
    calibration_lines,
    coils_to_channels,
    coils_to_complex,
    simulated_sensitivities,
)


def _complex_maps(s: torch.Tensor) -> torch.Tensor:
    """``(..., C, 2, H, W)`` -> complex ``(..., C, H, W)``."""
    return torch.view_as_complex(s.movedim(-3, -1).contiguous())


def _centred_fft(z: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


@pytest.mark.parametrize("size", [(16, 12), (15, 13)])
def test_each_coil_is_the_single_coil_operator_of_its_weighted_image(size):
    # y_c = M F (S_c x): coil c of the multi-coil k-space equals the single-coil MRI of S_c x with the same
    # mask (float64: both are the same FFTs, agreement to ~1e-15); Aᵀ = Σ_c S̄_c Fᴴ M, exact adjoint.
    H, W = size
    g = torch.Generator().manual_seed(H)
    s = torch.randn(2, 3, 2, H, W, generator=g, dtype=torch.float64)  # per-sample, unnormalised maps
    op = MultiCoilMRI((H, W), acceleration=4, center_fraction=0.2, sensitivities=s, generator=g).resample(2, g)
    single = MRI((H, W), mask=op.mask)
    x = torch.randn(2, 2, H, W, generator=g, dtype=torch.float64)
    y = op.A(x)
    assert y.shape == (2, 6, H, W)
    sc = _complex_maps(s)
    for c in range(3):
        weighted = torch.view_as_real(torch.complex(x[:, 0], x[:, 1]) * sc[:, c]).movedim(-1, 1)
        assert torch.allclose(y[:, 2 * c:2 * c + 2], single.A(weighted), rtol=0, atol=1e-12)
    w = torch.randn(y.shape, generator=g, dtype=torch.float64)
    assert op.adjointness_error(x, w) < 1e-12
    assert torch.allclose(coils_to_channels(coils_to_complex(w)), w)


def test_fully_sampled_with_normalised_maps_is_an_isometry_and_its_adjoint_the_inverse():
    op = MultiCoilMRI((24, 20), mask=torch.ones(20, dtype=torch.float64), coils=5)
    op = op.with_params(sensitivities=op.sensitivities.double())
    s = _complex_maps(op.sensitivities)
    assert torch.allclose(s.abs().pow(2).sum(1), torch.ones(1, 24, 20, dtype=torch.float64))
    x = torch.randn(2, 2, 24, 20, dtype=torch.float64)
    assert torch.allclose(op.A(x).norm(), x.norm())
    assert torch.allclose(op.A_adjoint(op.A(x)), x, atol=1e-12)
    assert torch.allclose(op.A_dagger(op.A(x)), x, atol=1e-6)  # CG stops at a relative residual of 1e-6


def test_undersampled_pseudo_inverse_is_the_minimum_norm_least_squares_solution():
    # CG from 0 on AᵀA x = Aᵀ y (tol 1e-6, at most 200 steps). At acceleration 2 with 6 coils the normal
    # operator is well conditioned where the coils see: the normal-equation residual falls below 1e-6 of Aᵀ y
    # (asserted at 1e-5). The maps are 0 on the first 4 columns (outside the coils' field of view): images
    # there are the null space, and the minimum-norm solution is exactly 0 on them (CG iterates stay in the
    # range of Aᵀ, which is 0 there: asserted to round-off).
    g = torch.Generator().manual_seed(0)
    op = MultiCoilMRI((16, 16), acceleration=2, center_fraction=0.25, coils=6, generator=g)
    maps = op.sensitivities.double().clone()
    maps[..., :4] = 0
    op = op.with_params(sensitivities=maps)
    y = torch.randn(1, 12, 16, 16, generator=g, dtype=torch.float64) * op.measurement_mask(
        torch.zeros(1, 12, 16, 16, dtype=torch.float64))
    d = op.A_dagger(y)
    assert op.A_adjoint(op.A(d) - y).norm() < 1e-5 * op.A_adjoint(y).norm()
    assert d[..., :4].abs().max() < 1e-12 * d.abs().max()
    assert d[..., 4:].abs().min() > 0


def test_espirit_recovers_the_coil_maps_of_an_object():
    # noise-free k-space of an elliptical object seen by 8 simulated coils, sampled at acceleration 4 with 12 %
    # central lines: the estimated maps equal the true ones up to a phase per pixel, |<ŝ(p), s(p)>| ≥ 0.99 at
    # 95 % of the object's pixels (measured: median 0.9999); pixels far outside the object get no map.
    H, W = 96, 80
    s = simulated_sensitivities(8, H, W, torch.float64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                            torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    obj = (xx ** 2 / 0.5 + yy ** 2 / 0.6) < 1
    image = obj * (1 + 0.5 * torch.sin(6 * xx) * torch.cos(4 * yy))
    mask = mri_mask(W, 4, 0.12, generator=torch.Generator().manual_seed(0))[0, 0, 0].double()
    k = MultiCoilMRI((H, W), mask=mask, sensitivities=s).A(torch.stack([image, 0 * image])[None])
    est = estimate_sensitivities(torch.complex(k[0, 0::2], k[0, 1::2]), mask)
    assert est.shape == (8, 2, H, W) and est.dtype == torch.float64
    agreement = (_complex_maps(est).conj() * _complex_maps(s[0])).sum(0).abs()
    assert float((agreement[obj] >= 0.99).double().mean()) >= 0.95
    far = (xx ** 2 + yy ** 2) > 1.5  # the image corners, well outside the object
    assert float(_complex_maps(est).abs().pow(2).sum(0)[far].max()) == 0.0


def test_calibration_lines_need_a_sampled_centre():
    m = torch.zeros(16)
    m[6:10] = 1
    m[1] = 1
    assert calibration_lines(m) == (6, 10)
    m[8] = 0
    with pytest.raises(ValueError, match="centre column is not sampled"):
        calibration_lines(m)
    k = torch.zeros(2, 8, 16, dtype=torch.complex64)
    m2 = torch.zeros(16)
    m2[7:9] = 1
    with pytest.raises(ValueError, match="keeps 2 fully sampled central k-space line"):
        estimate_sensitivities(k, m2)


def _multicoil_file(path, slices, H=48, W=40, coils=6, seed=0, noise=0.0):
    import h5py

    g = torch.Generator().manual_seed(seed)
    s = simulated_sensitivities(coils, H, W, torch.float64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                            torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    images = torch.stack([((xx ** 2 / 0.5 + yy ** 2 / 0.6) < 1) * (1 + 0.4 * torch.sin((3 + i) * xx + i))
                          for i in range(slices)])
    mask = mri_mask(W, 4, 0.16, generator=g)[0, 0, 0].double()
    op = MultiCoilMRI((H, W), mask=mask, sensitivities=s)
    y = op.A(torch.stack([images, 0 * images], 1)) * 3e-5
    y = (y + noise * 3e-5 * torch.randn(y.shape, generator=g, dtype=torch.float64)) * mask
    kspace = coils_to_complex(y).numpy().astype(np.complex64)
    with h5py.File(path, "w") as f:
        f["kspace"] = kspace
        f["mask"] = mask.numpy().astype(bool)
    return kspace, mask.numpy(), images


def test_a_multicoil_file_is_read_coil_by_coil_with_its_maps_for_a_multicoil_physics(tmp_path):
    from selfinv.data.readers import keeping_coils
    from selfinv.data.sources import read_source

    kspace, mask, _ = _multicoil_file(tmp_path / "brain.h5", 2)
    with pytest.warns(UserWarning, match="physics.name: mri_multicoil reconstructs from every coil"):
        compressed = read_source(tmp_path / "brain.h5")  # the single-coil default, unchanged
    assert compressed[0].y.shape == (2, 48, 40)
    with keeping_coils():
        ms = read_source(tmp_path / "brain.h5")
    assert len(ms) == 2 and all(m.kind == "kspace" for m in ms)
    assert ms[0].y.shape == (12, 48, 40)
    np.testing.assert_array_equal(ms[1].y[4].numpy(), kspace[1, 2].real)
    np.testing.assert_array_equal(ms[1].y[5].numpy(), kspace[1, 2].imag)
    np.testing.assert_array_equal(ms[0].params["mask"].reshape(-1).numpy(), mask)
    assert ms[0].params["sensitivities"].shape == (6, 2, 48, 40)


MULTICOIL_CONFIG = """
data: {val_fraction: 0.25, batch_size: 2}
physics: {name: mri_multicoil, args: {acceleration: 4, center_fraction: 0.16}, noise: {name: unknown}}
model: {backbone: {name: unet, args: {in_channels: 2, out_channels: 2, scales: 2, base_channels: 4}},
        reconstructor: {name: unrolled, args: {n_iter: 2, init: adjoint, step_size: 1.0}}}
losses: [{name: ssdu, args: {split_ratio: 0.6, penalize: held-out, test_mode: full}}]
trainer: {max_steps: 3, progress_bar: false, figures: false, log_every_n_steps: 1}
"""


def test_multicoil_files_train_and_predict_with_each_slice_maps(tmp_path):
    import h5py

    from selfinv.cli import main
    from selfinv.data.readers import keeping_coils
    from selfinv.data.sources import read_source
    from selfinv.training.loading import load_trained

    data = tmp_path / "scans"
    data.mkdir()
    for i in range(2):
        _multicoil_file(data / f"scan{i}.h5", 2, seed=i, noise=0.01)
    cfg = tmp_path / "mc.yaml"
    cfg.write_text(MULTICOIL_CONFIG)
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--data.path", str(data), "--trainer.output_dir", str(out)]) == 0
    ckpt = out / "checkpoints" / "last.ckpt"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(data / "scan1.h5"), "--output",
                 str(tmp_path / "rec")]) == 0
    with h5py.File(tmp_path / "rec" / "scan1.h5", "r") as f:
        assert sorted(f) == ["mask", "reconstruction_selfinv"]
        got = f["reconstruction_selfinv"][()]
    assert got.shape == (2, 48, 40)
    # the reconstruction is the network applied with that slice's mask and estimated maps, in the file's units
    run = load_trained(ckpt)
    with keeping_coils():
        m = read_source(data / "scan1.h5")[1]
    op = run.module.physics.for_measurement(tuple(m.y.shape)).with_params(
        **{k: v[None] for k, v in m.params.items()})
    est = run.module.loss.estimator(run.module.model)
    with torch.no_grad():
        x = run.normalization.undo(est(run.normalization.apply(m.y[None]), op, torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(got[1], x[0].pow(2).sum(0).sqrt().numpy(), rtol=1e-4, atol=1e-9)


def test_bundled_images_simulate_multicoil_kspace_through_the_config():
    from selfinv.config import from_dict
    from selfinv.training.engine import load_data

    cfg = from_dict({"data": {"dataset": "mri-slices", "patch_size": 32, "num_patches": 4, "val_fraction": 0.5},
                     "physics": {"name": "mri_multicoil", "args": {"acceleration": 4, "coils": 4},
                                 "noise": {"name": "gaussian", "args": {"sigma": 0.01}}},
                     "model": {"backbone": {"name": "unet", "args": {"in_channels": 2, "out_channels": 2}}},
                     "losses": [{"name": "ssdu"}]})
    data = load_data(cfg)
    item = data.train[0]
    assert item["y"].shape == (8, 32, 32) and item["x"].shape == (2, 32, 32)


def test_images_and_arrays_without_maps_are_refused_by_the_mri_physics(tmp_path, capsys):
    # an image given to an MRI physics was read as k-space (a 2-channel one trained; a grayscale one failed on
    # its channel count); a plain k-space array has no coil sensitivities for mri_multicoil
    import tifffile

    from selfinv.cli import main

    tifffile.imwrite(tmp_path / "cells.tif", (np.random.default_rng(0).random((32, 32)) * 1000).astype(np.uint16))
    np.save(tmp_path / "k.npy", np.random.default_rng(1).standard_normal((3, 32, 32)).astype(np.complex64))
    cfg = tmp_path / "mc.yaml"
    cfg.write_text(MULTICOIL_CONFIG)
    single = Path(__file__).resolve().parents[1] / "configs" / "your_data_mri_ssdu.yaml"
    for config in (str(cfg), str(single)):
        assert main(["fit", "--config", config, "--data.path", str(tmp_path / "cells.tif"),
                     "--trainer.output_dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "cells (" in err and "is an image (1 channel(s)), but physics 'mri" in err and "trains on MRI k-space" \
            in err and err.count("\n") == 1
    assert main(["fit", "--config", str(cfg), "--data.path", str(tmp_path / "k.npy"), "--trainer.output_dir",
                 str(tmp_path / "run")]) == 2
    assert "holds no coil sensitivities: physics 'mri_multicoil' reads multi-coil k-space from fastMRI HDF5" in \
        capsys.readouterr().err


def test_reconstructions_are_zero_where_no_coil_sees_the_image():
    # pixels outside every coil's sensitivity are in the null space of every measurement: nothing trains the
    # network there (it left a grey frame around the brain in benchmarks/multicoil_mri.py), so the
    # reconstructors return 0 there, the minimum-norm value; elsewhere, and for other operators, nothing changes
    from selfinv.models.reconstructor import BackProjection
    from selfinv.models.unet import UNet
    from selfinv.models.unrolled import UnrolledProximalGradient

    g = torch.Generator().manual_seed(0)
    op = MultiCoilMRI((16, 16), acceleration=2, center_fraction=0.25, coils=3, generator=g)
    maps = op.sensitivities.clone()
    maps[..., :5] = 0
    op = op.with_params(sensitivities=maps)
    y = op.A(torch.rand(2, 2, 16, 16, generator=g))
    torch.manual_seed(0)
    for model in (BackProjection(UNet(2, 2, scales=2, base_channels=4), init="adjoint"),
                  UnrolledProximalGradient(lambda: UNet(2, 2, scales=2, base_channels=4), n_iter=2, init="adjoint",
                                           channels=2)):
        x = model(y, op)
        assert x[..., :5].abs().max() == 0 and x[..., 5:].abs().min() > 0
    single = MRI((16, 16), acceleration=2, center_fraction=0.25, generator=g)
    x = torch.rand(1, 2, 16, 16, generator=g)
    assert single.restrict_to_field_of_view(x) is x
