"""Is Poisson SURE's gap to supervised an estimator bias? The exact Hudson risk of trained networks.

For ``y = γ P(x/γ)`` Hudson's identity ``E[x_i g(y)] = E[y_i g(y - γ e_i)]`` gives the exact unbiased risk

``R_H(y) = ( ||y - h(y)||² - γ Σ y_i + 2 Σ_i y_i (h_i(y) - h_i(y - γ e_i)) ) / n``,

one network evaluation per pixel (``n`` shifted copies, evaluated in chunks). ``SURE(noise="poisson")``
replaces ``h_i(y) - h_i(y - γ e_i)`` by its second-order Taylor expansion estimated with one Monte-Carlo
probe. For each checkpoint (the network of a ``denoising-poisson`` claim row, e.g. the ``last.ckpt`` of
``runs/cpu/denoising-poisson__sure``) this prints, on ``--crops`` fixed 32×32 crops of each natural-gray
test image with one fixed Poisson draw:

* the true MSE ``||h(y) - x||²/n`` (and the mean PSNR over the crops);
* the exact Hudson risk ``R_H`` (its mean over crops equals the true MSE up to the noise of one draw);
* the Monte-Carlo / Taylor SURE averaged over ``--probes`` probes, minus ``R_H``: the bias of the
  estimator the network was trained on (Taylor remainder + finite-difference error), and the spread of
  one probe's estimate.

If the SURE-trained network's Monte-Carlo SURE sits below its exact risk (while the supervised network's
does not), the training exploited an estimator bias; if both agree and the supervised network has the
lower exact risk, the SURE-trained network is a worse minimiser of an unbiased objective (optimisation).

Usage:
    python benchmarks/poisson_sure_bias.py CKPT [CKPT ...] [--gain 0.05] [--probes 64] [--tau 0.01]
        [--crops 4] [--seed 1] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from selfinv.data.bundled import load_dataset
from selfinv.losses.sure import mc_second_order_derivatives
from selfinv.training.loading import load_trained

SIZE = 32


def test_crops(per_image: int) -> torch.Tensor:
    """Fixed 32×32 crops of the natural-gray test images: the centre, then the quarter points."""
    out = []
    for im in load_dataset("natural-gray", split="test").images:
        H, W = im.shape[-2:]
        corners = [(H // 2 - SIZE // 2, W // 2 - SIZE // 2), (H // 4, W // 4), (3 * H // 4 - SIZE, W // 4),
                   (H // 4, 3 * W // 4 - SIZE), (3 * H // 4 - SIZE, 3 * W // 4 - SIZE)][:per_image]
        out += [im[..., a:a + SIZE, b:b + SIZE] for a, b in corners]
    return torch.stack(out).float()


def hudson_shift_term(f, y: torch.Tensor, hy: torch.Tensor, gain: float, chunk: int = 256) -> torch.Tensor:
    """Per sample ``Σ_i y_i (h_i(y) - h_i(y - γ e_i))``, by one evaluation per pixel."""
    n = y[0].numel()
    out = torch.zeros(len(y), dtype=y.dtype)
    eye = torch.eye(n, dtype=y.dtype).view(n, *y.shape[1:])
    for k in range(len(y)):
        shifted = []
        for s in range(0, n, chunk):
            e = eye[s:s + chunk]
            shifted.append((f(y[k:k + 1] - gain * e) * e).flatten(1).sum(1))
        out[k] = (y[k].flatten() * (hy[k].flatten() - torch.cat(shifted))).sum()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--gain", type=float, default=0.05)
    p.add_argument("--probes", type=int, default=64)
    p.add_argument("--tau", type=float, default=0.01)
    p.add_argument("--crops", type=int, default=4, help="crops per test image (1-5)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x = test_crops(a.crops)
    y = a.gain * torch.poisson(x / a.gain, generator=torch.Generator().manual_seed(a.seed))
    n = y[0].numel()
    print(f"Poisson gain {a.gain}, {len(x)} crops {SIZE}x{SIZE} of the natural-gray test images, seed {a.seed}; "
          f"Monte-Carlo SURE: tau {a.tau}, mean of {a.probes} probes\n")
    print("| checkpoint | PSNR (mean over crops) | true MSE | exact Hudson risk (Δ vs true, ± se) | MC/Taylor SURE − Hudson "
          "(% of true MSE) | sd of one probe |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in a.checkpoints:
        run = load_trained(path)
        module, physics = run.module, run.module.physics

        def f(v: torch.Tensor) -> torch.Tensor:
            return module(v, physics)

        with torch.no_grad():
            hy = f(y)
            true = ((hy - x) ** 2).flatten(1).sum(1) / n
            base = ((y - hy) ** 2).flatten(1).sum(1) - a.gain * y.flatten(1).sum(1)
            exact = (base + 2 * hudson_shift_term(f, y, hy, a.gain)) / n
            mc = []
            for s in range(a.probes):
                d1, d2 = mc_second_order_derivatives(f, y, a.tau, torch.Generator().manual_seed(1000 + s),
                                                     a.gain * y, a.gain ** 2 * y / 2, fy=hy)
                mc.append((base + 2 * (d1 - d2)) / n)
            mc_t = torch.stack(mc)
        diff = exact - true
        bias = float((mc_t.mean(0) - exact).mean())
        psnr = float((-10 * torch.log10(true)).mean())
        print(f"| {path} | {psnr:.2f} | {float(true.mean()):.3e} | {float(exact.mean()):.3e} ({float(diff.mean()):+.1e} ± "
              f"{float(diff.std() / len(diff) ** 0.5):.1e}) | {bias:+.2e} ({100 * bias / float(true.mean()):+.1f} %) "
              f"| {float(mc_t.std(0).mean()):.2e} |")


if __name__ == "__main__":
    main()
