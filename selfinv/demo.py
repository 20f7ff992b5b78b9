"""``selfinv demo``: self-supervised denoising of real photographs on a CPU in a few minutes.

1. Simulate ``y = x + sigma n`` (Gaussian, ``sigma = 0.1``) on random patches of the
   bundled ``natural-gray`` *train* images; 10 % of the measurements are held out
   for self-supervised validation.
2. Train the same small U-Net twice with the same wall-clock budget: with SURE
   (measurements only; Stein 1981) and with the supervised loss (the ceiling).
   Each keeps the checkpoint with the best validation loss.
3. Reconstruct centred crops of the ``natural-gray`` *test* images and print
   PSNR/SSIM of the noisy input, ``A† y`` (= ``y`` for denoising), SURE and
   supervised; write figures and ``results.json`` into the run folder.
"""

from __future__ import annotations

import json
import os
import time

import torch


def _config(loss: str, out: str, minutes: float, steps: int, patch: int, n_patches: int, seed: int):
    from selfinv.config import RunConfig, validate

    cfg = RunConfig()
    cfg.data.dataset, cfg.data.patch_size, cfg.data.num_patches = "natural-gray", patch, n_patches
    cfg.data.batch_size, cfg.data.val_fraction, cfg.data.seed = 16, 0.1, seed
    cfg.physics.name, cfg.physics.noise.name, cfg.physics.noise.args = "denoising", "gaussian", {"sigma": 0.1}
    cfg.model.backbone.name = "unet"
    cfg.model.backbone.args = {"scales": 3, "base_channels": 8, "batch_norm": False, "residual": True}
    cfg.losses[0].name, cfg.losses[0].args = loss, ({"divergence": "mc"} if loss == "sure" else {})
    cfg.optim.lr = 2e-3
    cfg.trainer.max_steps, cfg.trainer.max_epochs = steps, None
    cfg.trainer.max_time_minutes = minutes
    cfg.trainer.accelerator, cfg.trainer.seed, cfg.trainer.output_dir = "cpu", seed, out
    cfg.trainer.log_every_n_steps = 5
    validate(cfg)
    return cfg


def run_demo(minutes: float = 4.0, out: str = "runs/demo", steps: int = 600, patch_size: int = 48,
             num_patches: int = 512, test_size: int = 128, seed: int = 0) -> dict:
    """Train SURE and supervised denoisers on the bundled photographs and print the PSNR table.

    Args:
        minutes: wall-clock cap (both trainings, simulation and evaluation); each training stops at
            ``steps`` or at its half of the time left, whichever comes first (busy machines).
        steps: optimiser steps per training (same for SURE and supervised).
        out: run folder (figures, checkpoints, logs, results.json).
        patch_size, num_patches: training patches cut from the train images.
        test_size: size of the centred test crops.
        seed: seed of patches, noise, initialisation and loss draws.
    """
    t0 = time.time()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else os.cpu_count() or 1))
    from selfinv import report
    from selfinv.data.bundled import load_dataset
    from selfinv.training.checkpoint import load_checkpoint
    from selfinv.training.engine import build_module, fit
    from selfinv.training.metrics import psnr, ssim

    os.makedirs(out, exist_ok=True)
    overhead_min = 0.6  # imports, simulation, checkpoints, test evaluation (measured on 2 CPU cores)
    per_run = max(0.25, (minutes - overhead_min - (time.time() - t0) / 60) / 2)
    results: dict = {"sigma": 0.1, "minutes_per_training": per_run}
    models = {}
    for k, loss in enumerate(("sure", "supervised")):
        if k == 1:  # give the second training whatever the first left over
            per_run = max(0.25, minutes - overhead_min / 2 - (time.time() - t0) / 60)
        cfg = _config(loss, os.path.join(out, loss), per_run, steps, patch_size, num_patches, seed)
        print(f"[demo] training with {loss}: {steps} steps or {per_run:.1f} min ...", flush=True)
        trainer, _ = fit(cfg)
        best = trainer.checkpoint_callback.best_model_path
        module = build_module(cfg)
        module.load_state_dict(load_checkpoint(best)["state_dict"])
        models[loss] = module.eval()
        results[f"{loss}_steps"] = int(trainer.global_step)
        results[f"{loss}_checkpoint"] = best

    # test: centred crops of the held-out test photographs
    imgs = load_dataset("natural-gray", split="test")
    crops = []
    for im in imgs.images:
        H, W = im.shape[-2:]
        s = min(test_size, H, W)
        crops.append(im[..., (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s])
    x = torch.stack(crops)
    physics = models["sure"].physics
    y = physics(x, generator=torch.Generator().manual_seed(seed + 12345))
    with torch.no_grad():
        recs = {"noisy y": y, "A† y": physics.A_dagger(y),
                "self-supervised (SURE)": models["sure"](y, physics),
                "supervised (ceiling)": models["supervised"](y, physics)}
    rows = {k: (float(psnr(v, x).mean()), float(ssim(v, x).mean())) for k, v in recs.items()}
    table = report.psnr_table(rows)
    results["test_images"] = list(imgs.names)
    results["table"] = {k: {"psnr": p, "ssim": s} for k, (p, s) in rows.items()}
    report.reconstruction_figure(os.path.join(out, "demo_sure.png"), y, recs["A† y"],
                                 recs["self-supervised (SURE)"], x)
    report.reconstruction_figure(os.path.join(out, "demo_supervised.png"), y, recs["A† y"],
                                 recs["supervised (ceiling)"], x)
    results["seconds"] = time.time() - t0
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nselfinv demo: Gaussian denoising, sigma = 0.1, test crops {test_size}x{test_size} of "
          f"{', '.join(imgs.names)} (natural-gray test split)")
    print(table)
    print(f"SURE steps: {results['sure_steps']}, supervised steps: {results['supervised_steps']}; "
          f"total {results['seconds']:.0f} s; figures and logs in {out}")
    return results
