"""Does training earn its place? The default network against BM3D, the classical denoiser a user tries first.

Gaussian denoising σ = 0.1. The default configuration (``losses: [{name: sure}]`` or
``supervised``, default network, optimiser and schedule) trains through the engine on
the anchor workload's training patches (all 64×64 patches at stride 32 of the 15
scikit-image images, noise seed 1) for ``--steps`` steps, then is tested

* on the anchor's test: the 64 crops 64×64 of ``camera()`` (noise seed 3), PSNR averaged
  over the crops, BM3D applied per crop (what the network sees);
* on the ``natural-gray`` test images (camera, coins, flower), whole images (noise seed
  1234), PSNR averaged over the images, BM3D on each whole image (its best case).

BM3D (the ``bm3d`` package) gets the true σ. The network is applied to whole images as
to crops (fully convolutional). Each row also gives its training time.

The ways tried to beat BM3D, each a row of its own:

* ``--base-channels C`` / ``--scales S``: a wider / deeper U-Net than the default (16 channels, 3 scales);
* ``--ensemble``: the geometric self-ensemble at test time (Lim et al. 2017, "Enhanced deep residual
  networks for single image super-resolution", §3.4): the network's outputs on the 8 flips / 90° rotations
  of ``y``, mapped back and averaged (8 evaluations; exact for denoising, whose operator commutes with them);
* ``--finetune-steps N``: test-time SURE fine-tuning (``selfinv.finetune``, the tutorial's "fine-tuning on
  one measurement"): the trained network adapted to each noisy test image by SURE on random 64×64 crops
  of that image alone (for the anchor, the 64 crops reassembled into the one noisy ``camera`` image they tile),
  then applied to it. Only ``y`` and σ are used: BM3D gets as much.

``--workdir DIR --reuse`` takes the networks a previous run trained in DIR instead of training again.

Usage:
    python benchmarks/vs_classical.py [--steps 12000] [--only sure supervised] [--base-channels 16]
        [--scales 3] [--ensemble] [--finetune-steps 0] [--out DIR] [--threads 2] [--workdir DIR [--reuse]]

Writes DIR/vs_classical.md and DIR/vs_classical.json (DIR defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfinv.config import DEFAULT_BACKBONE, from_dict  # noqa: E402
from selfinv.data.bundled import load_dataset  # noqa: E402
from selfinv.data.measurements import MeasurementDataset  # noqa: E402
from selfinv.models.ensemble import dihedral_ensemble  # noqa: E402
from selfinv.training import engine  # noqa: E402
from selfinv.training.metrics import psnr, ssim  # noqa: E402

from anchor_train import SIGMA, anchor_data  # noqa: E402
from common import environment, markdown_table, setup, write_results  # noqa: E402

NAME = "vs_classical"


def bm3d_denoise(y: torch.Tensor) -> torch.Tensor:
    import bm3d

    return torch.from_numpy(bm3d.bm3d(y[0].double().numpy(), SIGMA)).float()[None]


def tile(crops: torch.Tensor) -> torch.Tensor:
    """The (n², C, p, p) row-major non-overlapping crops of one image back into that (C, n·p, n·p) image."""
    n = round(len(crops) ** 0.5)
    c, p = crops.shape[1], crops.shape[-1]
    return crops.reshape(n, n, c, p, p).permute(2, 0, 3, 1, 4).reshape(c, n * p, n * p)


def untile(image: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of ``tile``: the (C, H, W) image as its row-major (H/p · W/p, C, p, p) crops."""
    c, h, w = image.shape
    return image.reshape(c, h // p, p, w // p, p).permute(1, 3, 0, 2, 4).reshape(-1, c, p, p)


def test_sets() -> dict[str, tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]]:
    """name -> (the noisy images a test-time method adapts to, the clean items, the noisy items)."""
    data = anchor_data()
    imgs = load_dataset("natural-gray", split="test")
    g = torch.Generator().manual_seed(1234)
    xs = list(imgs.images)
    ys = [x + SIGMA * torch.randn(x.shape, generator=g) for x in xs]
    return {"anchor camera crops (64 x 64x64)": ([tile(data["y_test"])], list(data["x_test"]), list(data["y_test"])),
            f"natural-gray test ({', '.join(imgs.names)}), whole": (ys, xs, ys)}


def _no_grad_apply(module, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(y[None], module.physics)[0]


def ensemble(net, y: torch.Tensor) -> torch.Tensor:
    """``selfinv.models.ensemble.dihedral_ensemble`` of ``net`` (one (C, H, W) image in, one out) on ``y``."""
    return dihedral_ensemble(lambda t: net(t[0])[None], y[None])[0]


def evaluate(fn, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> dict:
    ps, ss = [], []
    t0 = time.perf_counter()
    for x, y in zip(xs, ys, strict=True):
        out = fn(y)
        ps.append(float(psnr(out[None].float(), x[None].float())))
        ss.append(float(ssim(out[None].float(), x[None].float())))
    n = len(ps)
    mean = sum(ps) / n
    se = (sum((p - mean) ** 2 for p in ps) / max(1, n - 1) / n) ** 0.5
    return {"psnr": mean, "psnr_se": se, "ssim": sum(ss) / n, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--only", nargs="+", choices=("sure", "supervised"), default=["supervised", "sure"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--reuse", action="store_true", help="take the networks already trained in --workdir")
    ap.add_argument("--base-channels", type=int, default=DEFAULT_BACKBONE["base_channels"])
    ap.add_argument("--scales", type=int, default=DEFAULT_BACKBONE["scales"])
    ap.add_argument("--ensemble", action="store_true", help="also the 8-fold geometric self-ensemble")
    ap.add_argument("--finetune-steps", type=int, default=0, help="also test-time SURE fine-tuning, this many steps")
    ap.add_argument("--finetune-lr", type=float, default=1e-4)
    ap.add_argument("--finetune-batch", type=int, default=16)
    args = ap.parse_args(argv)
    setup(0, args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vs-classical-"))
    data = anchor_data()
    path = work / "train.npz"
    MeasurementDataset.from_tensors(data["y_train"], x=data["x_train"]).save(path)
    sets = test_sets()
    load_start = environment().get("load_average")
    rows: dict[str, dict] = {}
    for name, (_, xs, ys) in sets.items():
        rows.setdefault("noisy input", {})[name] = evaluate(lambda y: y, xs, ys)
        rows.setdefault("BM3D (σ given)", {})[name] = evaluate(bm3d_denoise, xs, ys)
    trained: dict[str, float] = {}
    backbone = dict(DEFAULT_BACKBONE, base_channels=args.base_channels, scales=args.scales)
    network = ("default network" if backbone == DEFAULT_BACKBONE
               else f"U-Net {args.scales} scales, {args.base_channels} channels")
    for loss in args.only:
        setup(0, args.threads)
        cfg = from_dict({"data": {"path": str(path), "dataset": None, "normalize": "none", "val_fraction": 0.0},
                         "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": SIGMA}}},
                         "model": {"backbone": {"name": "unet", "args": backbone}},
                         "losses": [{"name": loss}],
                         "trainer": {"max_steps": args.steps, "accelerator": "cpu", "progress_bar": False,
                                     "figures": False, "checkpoint_every": 1000, "output_dir": str(work / loss)}})
        checkpoint = work / loss / "checkpoints" / "last.ckpt"
        if args.reuse and checkpoint.exists():
            from selfinv.training.loading import load_trained

            module = load_trained(checkpoint).module
            trained[loss] = float("nan")
        else:
            t0 = time.perf_counter()
            _, module = engine.fit(cfg)
            trained[loss] = time.perf_counter() - t0
        module.eval()
        n_params = sum(p.numel() for p in module.model.parameters())

        def net(y, module=module):
            return _no_grad_apply(module, y)

        took = "trained by an earlier run" if trained[loss] != trained[loss] else f"{trained[loss] / 60:.1f} min"
        label = f"{loss}, {network} ({n_params:,} parameters; {args.steps} steps, {took})"
        for name, (_, xs, ys) in sets.items():
            rows.setdefault(label, {})[name] = evaluate(net, xs, ys)
        if args.ensemble:
            for name, (_, xs, ys) in sets.items():
                rows.setdefault(f"{label} + 8-fold self-ensemble", {})[name] = evaluate(
                    lambda y, net=net: ensemble(net, y), xs, ys)
        if args.finetune_steps:
            from selfinv.finetune import finetune

            tuned = f"{label} + test-time SURE fine-tuning ({args.finetune_steps} steps)"
            for name, (images, xs, ys) in sets.items():
                t0 = time.perf_counter()
                tuned_modules = [finetune(checkpoint, image, losses="sure", steps=args.finetune_steps,
                                          lr=args.finetune_lr, batch_size=args.finetune_batch, patch_size=64,
                                          seed=0).module.eval() for image in images]
                seconds = time.perf_counter() - t0
                # each item through the network tuned on its image (the anchor's crops: the one camera image)
                nets = {id(y): (lambda t, m=tuned_modules[0 if len(images) < len(xs) else i]:
                                _no_grad_apply(m, t)) for i, y in enumerate(ys)}
                rows.setdefault(tuned, {})[name] = evaluate(lambda y, nets=nets: nets[id(y)](y), xs, ys)
                if args.ensemble:
                    rows.setdefault(f"{tuned} + 8-fold self-ensemble", {})[name] = evaluate(
                        lambda y, nets=nets: ensemble(nets[id(y)], y), xs, ys)
                rows[tuned][name]["finetune_seconds"] = seconds
    names = list(sets)
    table = markdown_table(["method"] + [f"{n} PSNR ± SE" for n in names] + [f"{n} SSIM" for n in names],
                           [[m] + [f"{r[n]['psnr']:.2f} ± {r[n]['psnr_se']:.2f}" for n in names]
                            + [f"{r[n]['ssim']:.4f}" for n in names] for m, r in rows.items()])
    env = environment()
    md = ["# The default network against BM3D (Gaussian σ = 0.1)", "",
          f"Training: the anchor workload's {len(data['x_train'])} patches, the default configuration, "
          f"{args.steps} steps per loss. BM3D gets the true σ. A test-time fine-tuning's seconds (all images of "
          f"a set): " + ", ".join(f"{m.split(' + ')[0].split(',')[0]} on {n.split(' (')[0]}: "
                                  f"{r[n]['finetune_seconds']:.0f} s"
                                  for m, r in rows.items() for n in names if "finetune_seconds" in r[n]) + ".",
          "", table, "",
          f"Load average at the start {load_start}, at the end {env.get('load_average')}.",
          f"Command: `{' '.join(sys.argv)}`"]
    write_results(args.out, NAME, {"rows": rows, "steps": args.steps, "backbone": backbone, "train_seconds": trained, "env": env,
                                   "load_average_start": load_start}, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
