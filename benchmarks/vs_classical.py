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

Usage:
    python benchmarks/vs_classical.py [--steps 12000] [--only sure supervised] [--out DIR] [--threads 2]

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
from selfinv.config import from_dict  # noqa: E402
from selfinv.data.bundled import load_dataset  # noqa: E402
from selfinv.data.measurements import MeasurementDataset  # noqa: E402
from selfinv.training import engine  # noqa: E402
from selfinv.training.metrics import psnr, ssim  # noqa: E402

from anchor_train import SIGMA, anchor_data  # noqa: E402
from common import environment, markdown_table, setup, write_results  # noqa: E402

NAME = "vs_classical"


def bm3d_denoise(y: torch.Tensor) -> torch.Tensor:
    import bm3d

    return torch.from_numpy(bm3d.bm3d(y[0].double().numpy(), SIGMA)).float()[None]


def test_sets() -> dict[str, tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]]:
    data = anchor_data()
    imgs = load_dataset("natural-gray", split="test")
    g = torch.Generator().manual_seed(1234)
    xs = list(imgs.images)
    ys = [x + SIGMA * torch.randn(x.shape, generator=g) for x in xs]
    return {"anchor camera crops (64 x 64x64)": (data["y_test"], list(data["x_test"]), list(data["y_test"])),
            f"natural-gray test ({', '.join(imgs.names)}), whole": (None, xs, ys)}


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
    for loss in args.only:
        setup(0, args.threads)
        cfg = from_dict({"data": {"path": str(path), "dataset": None, "normalize": "none", "val_fraction": 0.0},
                         "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": SIGMA}}},
                         "losses": [{"name": loss}],
                         "trainer": {"max_steps": args.steps, "accelerator": "cpu", "progress_bar": False,
                                     "figures": False, "checkpoint_every": 1000, "output_dir": str(work / loss)}})
        t0 = time.perf_counter()
        _, module = engine.fit(cfg)
        trained[loss] = time.perf_counter() - t0
        module.eval()

        def net(y, module=module):
            with torch.no_grad():
                return module(y[None], module.physics)[0]

        label = f"{loss} ({args.steps} steps, {trained[loss] / 60:.1f} min)"
        for name, (_, xs, ys) in sets.items():
            rows.setdefault(label, {})[name] = evaluate(net, xs, ys)
    names = list(sets)
    table = markdown_table(["method"] + [f"{n} PSNR ± SE" for n in names] + [f"{n} SSIM" for n in names],
                           [[m] + [f"{r[n]['psnr']:.2f} ± {r[n]['psnr_se']:.2f}" for n in names]
                            + [f"{r[n]['ssim']:.4f}" for n in names] for m, r in rows.items()])
    env = environment()
    md = ["# The default network against BM3D (Gaussian σ = 0.1)", "",
          f"Training: the anchor workload's {len(data['x_train'])} patches, the default configuration, "
          f"{args.steps} steps per loss. BM3D gets the true σ.", "", table, "",
          f"Load average at the start {load_start}, at the end {env.get('load_average')}.",
          f"Command: `{' '.join(sys.argv)}`"]
    write_results(args.out, NAME, {"rows": rows, "steps": args.steps, "train_seconds": trained, "env": env,
                                   "load_average_start": load_start}, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
