"""Training engine: metrics against scikit-image, checkpoints (atomic, weights_only, loss state,
RNG), seeded sampler, measurement split, validation with autograd."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from selfinv.config import RunConfig
from selfinv.data.measurements import MeasurementDataset
from selfinv.losses.base import Loss, WeightedSum
from selfinv.physics import Denoising, GaussianNoise
from selfinv.training.checkpoint import atomic_save, load_checkpoint
from selfinv.training.datamodule import EpochSeededSampler, MeasurementDataModule, has_ground_truth, split_measurements
from selfinv.training.engine import build_trainer
from selfinv.training.metrics import psnr, ssim
from selfinv.training.module import SelfSupervisedModule


# -- metrics ---------------------------------------------------------------------------------
def test_psnr_and_ssim_match_scikit_image():
    import skimage.metrics as metrics
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 32, 40, generator=g, dtype=torch.float64)
    x[1] = torch.linspace(0, 1, 40, dtype=torch.float64).expand(32, 40)  # smooth image
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours_p, ours_s = psnr(y, x), ssim(y, x)
    for i in range(3):
        a, b = x[i, 0].numpy(), y[i, 0].numpy()
        ref_p = metrics.peak_signal_noise_ratio(a, b, data_range=1.0)
        ref_s = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False)
        # both in float64 with the same window and border crop: agreement to rounding
        assert abs(float(ours_p[i]) - ref_p) < 1e-9
        assert abs(float(ours_s[i]) - ref_s) < 1e-9
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=x.dtype))


def test_ssim_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 1, 16, 16\)"):
        ssim(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 17))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


# -- checkpoints --------------------------------------------------------------------------------
def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "a.ckpt"
    atomic_save({"w": torch.ones(3)}, path)
    with pytest.raises(Exception):
        atomic_save({"w": lambda: 0}, path)  # not picklable: the write fails midway
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["a.ckpt"]  # no temporary file left behind


class _MultiplierLoss(Loss):
    """MC-like loss with a learned-state buffer updated every step (stands in for UNSURE's multiplier)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("multiplier", torch.zeros(()))

    def forward(self, y, physics, model, x=None, generator=None):
        n = torch.randn(y.shape, generator=generator, device=y.device)
        if self.training:
            self.multiplier += 1.0
        return (model(y + 0.01 * n, physics) - y).pow(2).mean()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, y, physics):
        return self.conv(physics.A_dagger(y))


def _tiny_setup(tmp_path, loss, n=12):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 12, 12, generator=g)
    physics = Denoising(GaussianNoise(0.1))
    ds = MeasurementDataset(x, physics, seed=1, keep_ground_truth=True)
    train, val = split_measurements(ds, 0.25, seed=0)
    dm = MeasurementDataModule(train, val, batch_size=3)
    cfg = RunConfig()
    cfg.trainer.output_dir = str(tmp_path)
    cfg.trainer.max_steps, cfg.trainer.progress_bar, cfg.trainer.figures = 6, False, False
    cfg.trainer.accelerator = "cpu"
    torch.manual_seed(0)
    module = SelfSupervisedModule(_Net(), physics, WeightedSum([loss], names=["mult"]), lr=1e-2, seed=3,
                                  config={"note": "plain"})
    return module, dm, build_trainer(cfg, has_truth=True)


def test_checkpoint_is_weights_only_and_holds_loss_state_and_rng(tmp_path):
    module, dm, trainer = _tiny_setup(tmp_path, _MultiplierLoss())
    trainer.fit(module, datamodule=dm)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # torch.load(weights_only=True)
    assert float(ckpt["state_dict"]["loss.losses.0.multiplier"]) == 6.0  # one increment per step
    assert ckpt["optimizer_states"][0]["state"]  # Adam moments
    rng = ckpt["selfinv_rng"]
    assert {"loss_generator", "torch", "numpy", "python"} <= set(rng)
    assert ckpt["hyper_parameters"]["config"] == {"note": "plain"}
    # the saved loss-generator state is the one the run had at the end
    assert torch.equal(rng["loss_generator"], module.generator.get_state())


def test_losses_that_differentiate_the_network_work_in_validation(tmp_path):
    """The contract: a loss that needs autograd at evaluation (SURE's exact divergence) enables it
    itself; validation runs under no_grad and must not touch the weights."""
    class GradLoss(Loss):
        def forward(self, y, physics, model, x=None, generator=None):
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                out = model(y, physics)
                (div,) = torch.autograd.grad(out.sum(), y, create_graph=torch.is_grad_enabled())
            return (out - y).pow(2).mean() + 0.0 * div.mean()

    module, dm, trainer = _tiny_setup(tmp_path, GradLoss())
    res = trainer.validate(module, datamodule=dm)
    assert np.isfinite(res[0]["val/loss"]) and "val/psnr" in res[0]
    assert all(p.grad is None for p in module.parameters())  # validation did not touch the weights


# -- data order and split ---------------------------------------------------------------------
def test_epoch_seeded_sampler_replays_an_epoch():
    s = EpochSeededSampler(20, seed=4)
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(1)
    b = list(s)
    s2 = EpochSeededSampler(20, seed=4)
    s2.set_epoch(3)
    assert a == list(s2) and a != b and sorted(a) == list(range(20))


def test_split_holds_out_measurements_disjointly():
    ds = MeasurementDataset.from_tensors(torch.rand(10, 1, 4, 4))
    tr, va = split_measurements(ds, 0.2, seed=0)
    assert len(va) == 2 and len(tr) == 8
    assert set(tr.indices).isdisjoint(va.indices) and set(tr.indices) | set(va.indices) == set(range(10))
    assert not has_ground_truth(va)
    with pytest.raises(ValueError, match="val_fraction"):
        split_measurements(ds, 0.99, seed=0)


def test_select_by_psnr_needs_ground_truth(tmp_path):
    cfg = RunConfig()
    cfg.select_by = "val/psnr"
    cfg.trainer.output_dir = str(tmp_path)
    with pytest.raises(ValueError, match="ground truth"):
        build_trainer(cfg, has_truth=False)


def test_selection_gap_reads_the_validation_rows(tmp_path):
    from selfinv.report import selection_gap

    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train/loss,val/loss,val/psnr\n"
                 "0,4,0.5,,\n0,4,,0.30,20.0\n1,9,,0.20,22.5\n2,14,,0.25,23.0\n")
    gap = selection_gap(str(p))
    # lowest val/loss is step 9 (22.5 dB); best PSNR is step 14 (23.0 dB)
    assert gap["psnr_selected_by_loss"] == 22.5 and gap["psnr_selected_by_psnr"] == 23.0
    assert abs(gap["gap_db"] - 0.5) < 1e-12 and gap["n_validations"] == 3
