"""Every loss trains on every device: two engine steps of each registered loss, on the CPU and on CUDA.

Each loss runs from one of the ``configs/claims`` configs that use it (its real physics, noise, network
and reconstructor), shrunk to a few patches and two optimiser steps, in the default precision (bf16
autocast on CPUs with bf16 units and on CUDA). What must hold on each device: the run finishes, the
weights stay finite and move, and the module really ran there. The CUDA cases are skipped on a machine
without a GPU; the CPU cases run the same code, so the test itself is exercised everywhere.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from selfinv import registry
from selfinv.config import from_dict, load_yaml
from selfinv.training.engine import fit

pytestmark = pytest.mark.slow

CLAIMS = Path(__file__).resolve().parent.parent / "configs" / "claims"

#: loss name -> a claim config that trains it
CONFIG_OF = {
    "autoencoder": "denoising_gaussian_autoencoder.yaml",
    "blindspot": "denoising_gaussian_blindspot.yaml",
    "ei": "inpainting_ei.yaml",
    "mc": "inpainting_mc.yaml",
    "moi": "inpainting_moi.yaml",
    "neighbor2neighbor": "denoising_gaussian_neighbor2neighbor.yaml",
    "noise2noise": "denoising_gaussian_noise2noise.yaml",
    "noise2score": "denoising_gaussian_noise2score.yaml",
    "r2r": "denoising_poisson_r2r.yaml",
    "robust_ei": "ct_noisy_rei.yaml",
    "scale_ei": "sei_sr2_sei.yaml",
    "splitting": "denoising_gaussian_noise2void.yaml",
    "ssdu": "mri_unrolled_ssdu.yaml",
    "supervised": "denoising_gaussian_supervised.yaml",
    "sure": "denoising_poisson_sure.yaml",
    "unsure": "denoising_gaussian_unsure.yaml",
}

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA GPU"))]


def test_every_registered_loss_has_a_device_case():
    assert sorted(CONFIG_OF) == sorted(registry.names("loss"))


def _tiny(name: str, device: str, out: Path) -> dict:
    raw = load_yaml(CLAIMS / CONFIG_OF[name])
    assert any(spec["name"] == name for spec in raw["losses"]), (name, CONFIG_OF[name])
    raw["data"].update({"num_patches": 8, "batch_size": 2, "val_fraction": 0.25})
    raw["trainer"].update({"max_steps": 2, "accelerator": device, "devices": 1, "output_dir": str(out),
                           "progress_bar": False, "figures": False, "log_every_n_steps": 1,
                           "precision": "auto"})
    return raw


class _InitialWeights(pl.Callback):
    """Keeps a copy of the network's weights as training starts (on the device they are on)."""

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(CONFIG_OF))
def test_two_steps_of_every_loss(tmp_path, name, device):
    cfg = from_dict(_tiny(name, device, tmp_path / "run"))
    initial = _InitialWeights()
    trainer, module = fit(cfg, extra_callbacks=[initial])
    assert trainer.global_step == 2
    trained = module.model.state_dict()
    assert {v.device.type for v in trained.values()} == {device}
    assert all(torch.isfinite(v.float()).all() for v in trained.values())
    moved = max(float((trained[k].float() - v.float()).abs().max()) for k, v in initial.state.items()
                if v.is_floating_point())
    assert moved > 0, f"{name} on {device}: two optimiser steps left the weights unchanged"
