"""Fine-tuning a pretrained network on ONE measurement (N = 1), through the engine.

Rows (``--only`` takes their names):

* ``denoise``: a UNet trained (supervised, short) on natural-gray patches at sigma = 0.05 is applied to
  the single test image ``camera`` (centre 256x256 crop) at sigma = 0.15, before and after fine-tuning
  on that one noisy image with SURE (true sigma), SURE (sigma estimated from the image, ``auto``) and
  UNSURE (sigma unknown). Reference: the same network trained supervised at sigma = 0.15 with the same
  pretraining budget (matched training data — what the fine-tuning tries to approach).
* ``mri``: a UNet (back-projection of the adjoint) trained supervised on x4 random-Cartesian MRI
  (mri-slices, 64x64 patches) is applied to one x8 measurement of a test slice (centre 64x64 crop of
  ``mni152_z066``), before and after fine-tuning with MC + EI (rotations) and with MC alone.
  Reference: the same network trained supervised at x8, same budget.

Quality numbers depend on the fixed step budgets only; seconds are wall-clock on this CPU
(``--threads``) and include Lightning's set-up. Usage::

    python benchmarks/finetune.py --quick            # smoke run (tiny budgets)
    python benchmarks/finetune.py --threads 1        # full run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import environment, markdown_table, setup, write_results  # noqa: E402

ROWS = ("denoise", "mri")


def _pretrain(cfg_dict: dict, out: str) -> tuple[str, float]:
    """Train through the engine; return (last checkpoint, seconds per step)."""
    from selfinv.config import from_dict
    from selfinv.training.engine import fit

    cfg_dict = {**cfg_dict, "trainer": {**cfg_dict["trainer"], "output_dir": out}}
    t0 = time.perf_counter()
    trainer, _ = fit(from_dict(cfg_dict))
    sec = time.perf_counter() - t0
    return str(Path(out) / "checkpoints" / "last.ckpt"), sec / max(1, trainer.global_step)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    from selfinv.training.metrics import psnr

    return float(psnr(a.float(), b.float()).mean())


def _trainer(steps: int) -> dict:
    return {"max_steps": steps, "accelerator": "cpu", "progress_bar": False, "figures": False,
            "val_every": 1000, "checkpoint_every": 1000, "log_every_n_steps": 50, "seed": 0}


def run_denoise(quick: bool, work: str) -> list[dict]:
    from selfinv.data.bundled import load_dataset
    from selfinv.finetune import finetune

    pre_steps, ft_steps = (4, 3) if quick else (300, 150)
    size = 64 if quick else 256

    def cfg(sigma: float) -> dict:
        return {"data": {"dataset": "natural-gray", "patch_size": 48, "num_patches": 8 * pre_steps,
                         "batch_size": 8, "val_fraction": 0.05, "seed": 0},
                "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": sigma}}},
                "model": {"backbone": {"name": "unet", "args": {"scales": 2, "base_channels": 16,
                                                                "batch_norm": False}}},
                "losses": [{"name": "supervised"}], "optim": {"lr": 1e-3}, "trainer": _trainer(pre_steps)}

    ck05, sup_step = _pretrain(cfg(0.05), f"{work}/den_pre_005")
    ck15, _ = _pretrain(cfg(0.15), f"{work}/den_pre_015")
    img = load_dataset("natural-gray", "test").images[0]  # camera
    top, left = (img.shape[-2] - size) // 2, (img.shape[-1] - size) // 2
    x = img[..., top:top + size, left:left + size].float()
    y = x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2024))
    rows = []
    noisy = _psnr(y[None], x[None])
    variants = [("SURE (true sigma=0.15)", "sure", {"name": "gaussian", "args": {"sigma": 0.15}}),
                ("SURE (sigma auto)", "sure", {"name": "gaussian", "args": {"sigma": "auto"}}),
                ("UNSURE (sigma unknown)", "unsure", None)]
    for label, loss, noise in variants:
        r = finetune(ck05, y, losses=loss, steps=ft_steps, lr=2e-4, batch_size=8, patch_size=48, noise=noise,
                     seed=0, output_dir=f"{work}/den_ft_{loss}_{len(rows)}")
        rows.append({"row": "denoise", "method": label, "psnr_input": noisy,
                     "psnr_before": _psnr(r.x_before, x[None]), "psnr_after": _psnr(r.x_after, x[None]),
                     "steps": r.steps, "seconds": r.seconds, "sec_per_step": r.seconds / max(1, r.steps),
                     "sup_sec_per_step": sup_step,
                     "sigma_estimate": (r.noise_estimate or {}).get("estimated", {}).get("sigma")})
    # reference: supervised at the right noise level, same pretraining budget (no fine-tuning)
    from selfinv.config import from_dict
    from selfinv.training.checkpoint import load_checkpoint
    from selfinv.training.engine import build_module

    ck = load_checkpoint(ck15)
    m = build_module(from_dict(ck["hyper_parameters"]["config"]))
    m.load_state_dict(ck["state_dict"])
    m.eval()
    with torch.no_grad():
        ref = _psnr(m(y[None]), x[None])
    rows.append({"row": "denoise", "method": "reference: supervised trained at sigma=0.15", "psnr_input": noisy,
                 "psnr_before": ref, "psnr_after": None, "steps": 0, "seconds": None, "sec_per_step": None,
                 "sup_sec_per_step": sup_step, "sigma_estimate": None})
    return rows


def run_mri(quick: bool, work: str) -> list[dict]:
    from selfinv.config import from_dict
    from selfinv.data.bundled import load_dataset
    from selfinv.data.measurements import MeasurementDataset
    from selfinv.finetune import finetune
    from selfinv.training.checkpoint import load_checkpoint
    from selfinv.training.engine import build_module, build_physics

    pre_steps, ft_steps = (4, 3) if quick else (300, 100)
    size = 64

    def cfg(acc: int) -> dict:
        return {"data": {"dataset": "mri-slices", "patch_size": size, "num_patches": 8 * pre_steps,
                         "batch_size": 8, "val_fraction": 0.05, "seed": 0},
                "physics": {"name": "mri", "args": {"acceleration": acc, "center_fraction": 0.08,
                                                    "pattern": "random"},
                            "noise": {"name": "gaussian", "args": {"sigma": 0.005}}},
                "model": {"backbone": {"name": "unet", "args": {"in_channels": 2, "out_channels": 2, "scales": 2,
                                                                "base_channels": 16, "batch_norm": False}},
                          "reconstructor": {"name": "back_projection", "args": {"init": "adjoint"}}},
                "losses": [{"name": "supervised"}], "optim": {"lr": 1e-3}, "trainer": _trainer(pre_steps)}

    ck4, sup_step = _pretrain(cfg(4), f"{work}/mri_pre_x4")
    ck8, _ = _pretrain(cfg(8), f"{work}/mri_pre_x8")
    test = load_dataset("mri-slices", "test")
    img = test.images[test.names.index("mni152_z066")]
    o = (img.shape[-1] - size) // 2
    x1 = img[..., o:o + size, o:o + size].float()
    x = torch.cat([x1, torch.zeros_like(x1)], 0)  # complex image, imaginary part 0
    phys8 = build_physics(from_dict(cfg(8)))
    item = MeasurementDataset(x[None], phys8, seed=2024, keep_ground_truth=True)[0]
    y, params = item["y"], item["params"]
    ei = {"name": "ei", "args": {"transform": {"name": "rotate", "args": {"multiples_of_90": True}}}}
    rows = []
    for label, losses in [("MC + EI (rotations)", [{"name": "mc"}, ei]), ("MC only", [{"name": "mc"}])]:
        r = finetune(ck4, y, params, losses=losses, steps=ft_steps, lr=2e-4, batch_size=2,
                     physics_args={"acceleration": 8}, seed=0, output_dir=f"{work}/mri_ft_{len(rows)}")
        with torch.no_grad():
            dagger = _psnr(r.module.physics.with_params(**{k: v[None] for k, v in params.items()})
                           .A_adjoint(y[None]), x[None])
        rows.append({"row": "mri", "method": label, "psnr_input": dagger,
                     "psnr_before": _psnr(r.x_before, x[None]), "psnr_after": _psnr(r.x_after, x[None]),
                     "steps": r.steps, "seconds": r.seconds, "sec_per_step": r.seconds / max(1, r.steps),
                     "sup_sec_per_step": sup_step, "sigma_estimate": None})
    ck = load_checkpoint(ck8)
    m = build_module(from_dict(ck["hyper_parameters"]["config"]))
    m.load_state_dict(ck["state_dict"])
    m.eval()
    with torch.no_grad():
        ref = _psnr(m(y[None], m.physics.with_params(**{k: v[None] for k, v in params.items()})), x[None])
    rows.append({"row": "mri", "method": "reference: supervised trained at x8", "psnr_input": rows[0]["psnr_input"],
                 "psnr_before": ref, "psnr_after": None, "steps": 0, "seconds": None, "sec_per_step": None,
                 "sup_sec_per_step": sup_step, "sigma_estimate": None})
    return rows


def _f(v, d=2):
    return "-" if v is None else f"{v:.{d}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", choices=ROWS, default=list(ROWS))
    args = ap.parse_args(argv)
    setup(0, args.threads)
    work = tempfile.mkdtemp(prefix="bench_finetune_")
    t0 = time.perf_counter()
    rows: list[dict] = []
    if "denoise" in args.only:
        rows += run_denoise(args.quick, work)
    if "mri" in args.only:
        rows += run_mri(args.quick, work)
    header = ["task", "method", "PSNR input", "PSNR before", "PSNR after", "gain dB", "steps", "seconds",
              "s/step", "ratio to sup. step"]
    table = []
    for r in rows:
        gain = None if r["psnr_after"] is None else r["psnr_after"] - r["psnr_before"]
        ratio = None if r["sec_per_step"] is None else r["sec_per_step"] / r["sup_sec_per_step"]
        table.append([r["row"], r["method"], _f(r["psnr_input"]), _f(r["psnr_before"]), _f(r["psnr_after"]),
                      _f(gain), r["steps"], _f(r["seconds"], 1), _f(r["sec_per_step"], 3), _f(ratio, 1)])
    md = "\n".join([
        "# Fine-tuning on a single measurement (N = 1)",
        "",
        f"Mode: {'quick (smoke)' if args.quick else 'full'}; threads {args.threads}; total "
        f"{time.perf_counter() - t0:.0f} s.",
        "",
        markdown_table(header, table),
        "",
        "Notes:",
        "* denoise: supervised UNet pretrained at sigma=0.05 (natural-gray train patches 48x48, batch 8), applied "
        "to camera (centre crop) at sigma=0.15; fine-tuning uses random 48x48 crops of that ONE noisy image, Adam "
        "lr 2e-4. 'PSNR input' = noisy image. The reference row is a supervised model trained at sigma=0.15 on the "
        "training set with the same pretraining budget (its PSNR is in the 'before' column).",
        "* mri: supervised UNet pretrained at x4, one x8 measurement (random Cartesian lines, 8% centre, "
        "sigma=0.005) of a held-out slice; 'PSNR input' = zero-filled adjoint. Fine-tuning uses that measurement "
        "only (batch of 2 copies; EI draws rotations by multiples of 90 degrees).",
        "* seconds = wall clock of the fine-tuning trainer.fit (Lightning set-up included) on a shared 2-core CPU; "
        "'ratio to sup. step' divides by the seconds/step of the supervised pretraining in the same run.",
        "* Budgets are fixed step counts; nothing was tuned on the test image.",
    ])
    data = {"rows": rows, "quick": args.quick, "threads": args.threads, "env": environment(),
            "only": args.only}
    out = write_results(args.out, "finetune" + ("_quick" if args.quick else ""), data, md)
    print(md)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
