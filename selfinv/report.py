"""Figures a user would rather look at than read (matplotlib, PNG files).

Figures are drawn on ``matplotlib.figure.Figure`` objects rendered by the Agg canvas
directly: importing this module neither imports pyplot nor changes the user's
matplotlib backend, and matplotlib itself is imported only when a figure is drawn.

* ``reconstruction_figure``: measurement, ``A† y``, reconstruction and ground truth
  (when known), with PSNR in the titles when the truth is known.
* ``loss_curves_figure``: training and validation curves from a Lightning
  ``metrics.csv`` (CSVLogger).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Sequence

import numpy as np
from torch import Tensor


def _figure(rows: int, cols: int, figsize: tuple[float, float]):
    """A new figure and its ``(rows, cols)`` array of axes, independent of pyplot's state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def to_display(img: Tensor) -> np.ndarray:
    """(C, H, W) -> 2-D array for ``imshow``: 1 channel as is, 2 channels (complex) as magnitude,
    3 channels as RGB, anything else as the channel mean."""
    img = img.detach().float().cpu()
    if img.ndim == 2:
        return img.numpy()
    if img.shape[0] == 1:
        return img[0].numpy()
    if img.shape[0] == 2:
        return img.pow(2).sum(0).sqrt().numpy()
    if img.shape[0] == 3:
        return img.permute(1, 2, 0).clamp(0, 1).numpy()
    return img.mean(0).numpy()


def _psnr(a: Tensor, b: Tensor) -> float:
    mse = float((a.float() - b.float()).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def reconstruction_figure(path: str, y: Tensor, x_dagger: Tensor, x_hat: Tensor, x: Tensor | None = None,
                          max_rows: int = 3) -> str:
    """Write a grid (rows = samples) of measurement | A†y | reconstruction | truth to ``path``."""
    n = min(max_rows, y.shape[0])
    cols = 4 if x is not None else 3
    fig, axes = _figure(n, cols, (3 * cols, 3 * n))
    for i in range(n):
        panels = [("measurement y", y[i]), ("A† y", x_dagger[i]), ("reconstruction", x_hat[i])]
        if x is not None:
            panels.append(("ground truth", x[i]))
        for j, (title, img) in enumerate(panels):
            ax = axes[i, j]
            shown = to_display(img)
            # images share the [0, 1] display range; a measurement too when it is an image
            # (denoising, inpainting, blur); sinograms are auto-scaled, k-space as log-magnitude
            fixed = j > 0 or (img.shape == x_dagger[i].shape and img.shape[0] != 2)
            if j == 0 and img.shape[0] == 2:
                shown = np.log1p(shown / max(float(shown.max()), 1e-12) * 1e3)
            if shown.ndim == 2:
                ax.imshow(shown, cmap="gray", vmin=0 if fixed else None, vmax=1 if fixed else None)
            else:
                ax.imshow(shown)
            if x is not None and title in ("A† y", "reconstruction") and img.shape == x[i].shape:
                title = f"{title}\n{_psnr(img, x[i]):.2f} dB"
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def read_metrics_csv(path: str) -> dict[str, list[tuple[int, float]]]:
    """Series ``name -> [(step, value), ...]`` from a Lightning CSVLogger ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for k, v in row.items():
                if k in ("step", "epoch") or v in ("", None):
                    continue
                series.setdefault(k, []).append((step, float(v)))
    return series


def loss_curves_figure(path: str, metrics_csv: str, keys: Sequence[str] | None = None) -> str:
    """Plot training / validation losses (and validation PSNR when logged) against the step."""
    series = read_metrics_csv(metrics_csv)
    losses = [k for k in (keys or sorted(series)) if k.startswith(("train/", "val/"))
              and not any(s in k for s in ("psnr", "ssim"))]
    has_psnr = "val/psnr" in series
    fig, axes = _figure(1, 2 if has_psnr else 1, (11 if has_psnr else 6, 4))
    ax = axes[0, 0]
    for k in losses:
        steps, values = zip(*series[k], strict=True)
        ax.plot(steps, values, label=k, marker="o" if k.startswith("val/") else None,
                markersize=3, linewidth=1.5 if k.endswith("/loss") else 0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses and all(v > 0 for k in losses for _, v in series[k]):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("losses (val = held-out measurements)")
    if has_psnr:
        ax2 = axes[0, 1]
        for k in ("val/psnr", "val/psnr_dagger"):
            if k in series:
                steps, values = zip(*series[k], strict=True)
                ax2.plot(steps, values, marker="o", markersize=3, label=k)
        ax2.set_xlabel("step")
        ax2.set_ylabel("PSNR (dB)")
        ax2.legend(fontsize=7)
        ax2.set_title("validation PSNR (logged, not used for selection)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def psnr_table(rows: dict[str, tuple[float, float]]) -> str:
    """A Markdown table ``method | PSNR (dB) | SSIM`` from ``{method: (psnr, ssim)}``."""
    lines = ["| method | PSNR (dB) | SSIM |", "|---|---:|---:|"]
    for name, (p, s) in rows.items():
        lines.append(f"| {name} | {p:.2f} | {s:.4f} |")
    return "\n".join(lines)


__all__ = ["reconstruction_figure", "loss_curves_figure", "read_metrics_csv", "psnr_table", "to_display",
           "selection_gap"]


def selection_gap(metrics_csv: str) -> dict[str, float]:
    """How much PSNR self-supervised model selection loses against oracle selection.

    Reads the validation rows of a run's ``metrics.csv``: the checkpoint selected by the
    lowest ``val/loss`` (no ground truth) vs the one with the highest ``val/psnr``.
    Returns ``{"psnr_selected_by_loss", "psnr_selected_by_psnr", "gap_db", "n_validations"}``.
    """
    s = read_metrics_csv(metrics_csv)
    if "val/psnr" not in s or "val/loss" not in s:
        raise ValueError(f"{metrics_csv} needs val/loss and val/psnr columns (ground truth known)")
    loss = dict(s["val/loss"])
    ps = dict(s["val/psnr"])
    steps = sorted(set(loss) & set(ps))
    by_loss = min(steps, key=lambda k: loss[k])
    by_psnr = max(steps, key=lambda k: ps[k])
    return {"psnr_selected_by_loss": ps[by_loss], "psnr_selected_by_psnr": ps[by_psnr],
            "gap_db": ps[by_psnr] - ps[by_loss], "n_validations": float(len(steps))}
