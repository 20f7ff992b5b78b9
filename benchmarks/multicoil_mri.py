"""Multi-coil MRI files: every coil with its sensitivities (``physics: mri_multicoil``) against one virtual coil.

Data (made here, like ``docs/your-data.md`` example 3, but multi-coil): the 60 training slices of the bundled
``mri-slices`` (real MRI magnitude images, 128 x 128) seen by 8 simulated receive coils
(``simulated_sensitivities``), white complex noise of σ = ``--noise`` (image units) on every k-space sample,
written as 30 fastMRI multi-coil files of 2 slices, each undersampled 4x (8 % central lines) with a mask of
its own, in scanner-like units (x 3e-5); the held-out file holds the 12 test slices with another mask.

Both runs go through the command line a user types (``selfinv fit`` on the folder, ``selfinv predict`` on
the held-out file), with the shipped configs and the same budget:

* ``configs/your_data_mri_ssdu.yaml`` (``physics: mri``): each slice's coils compressed to one virtual coil;
* ``configs/your_data_mri_multicoil_ssdu.yaml`` (``physics: mri_multicoil``): every coil, ESPIRiT maps.

Baselines: the root-sum-of-squares of the zero-filled coil images (fastMRI's zero-filled image), the
virtual coil's zero-filled image, and ``Aᵀ y`` with the estimated maps. PSNR / SSIM of the magnitude against
the ground truth ``|x|`` (the root-sum-of-squares of the fully sampled coil images: the maps are normalised).

Usage::

    python benchmarks/multicoil_mri.py [--steps 2000] [--threads 2] [--out benchmarks/results] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import environment, markdown_table, setup, write_results  # noqa: E402

UNITS = 3e-5
COILS = 8
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _write(path: Path, x: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor, noise: float,
           g: torch.Generator) -> None:
    import h5py

    from selfinv.physics import MultiCoilMRI
    from selfinv.physics.mri_multicoil import coils_to_complex

    op = MultiCoilMRI(x.shape[-2:], mask=mask, sensitivities=maps)
    y = op.A(torch.cat([x, 0 * x], 1).double())
    y = (y + noise * torch.randn(y.shape, generator=g, dtype=torch.float64)) * op.mask
    with h5py.File(path, "w") as f:
        f["kspace"] = (coils_to_complex(y) * UNITS).numpy().astype(np.complex64)
        f["mask"] = mask.numpy().astype(bool)


def make_data(root: Path, noise: float, n_train: int | None = None) -> tuple[Path, Path, torch.Tensor]:
    from selfinv.data.bundled import load_dataset
    from selfinv.physics import mri_mask
    from selfinv.physics.mri_multicoil import simulated_sensitivities

    train = torch.stack(load_dataset("mri-slices", split="train").images)[:n_train].double()
    test = torch.stack(load_dataset("mri-slices", split="test").images).double()
    maps = simulated_sensitivities(COILS, 128, 128, torch.float64)
    g = torch.Generator().manual_seed(0)
    folder = root / "scans"
    folder.mkdir(parents=True)
    for f in range(0, len(train), 2):
        m = mri_mask(128, acceleration=4, center_fraction=0.08, generator=g)[0, 0, 0].double()
        _write(folder / f"file{f // 2:02d}.h5", train[f:f + 2], m, maps, noise, g)
    m = mri_mask(128, acceleration=4, center_fraction=0.08, generator=torch.Generator().manual_seed(99))[0, 0, 0]
    _write(root / "heldout.h5", test, m.double(), maps, noise, g)
    return folder, root / "heldout.h5", test[:, 0]


def _metrics(rec: np.ndarray, truth: torch.Tensor) -> tuple[float, float, list[float]]:
    from selfinv.training.metrics import psnr, ssim

    r = torch.from_numpy(np.asarray(rec, dtype=np.float64) / UNITS).float()[:, None]
    t = truth.float()[:, None]
    p = psnr(r.clamp(0, 1), t)
    return float(p.mean()), float(ssim(r.clamp(0, 1), t).mean()), [float(v) for v in p]


def baselines(heldout: Path) -> dict[str, np.ndarray]:
    import h5py

    from selfinv.data.readers import compress_coils
    from selfinv.physics import MultiCoilMRI, estimate_sensitivities
    from selfinv.physics.mri import _centred, _ifft2

    with h5py.File(heldout, "r") as f:
        k = torch.from_numpy(f["kspace"][()]).to(torch.complex128)
        mask = torch.from_numpy(f["mask"][()].astype(np.float64))
    coil_images = _centred(_ifft2, k)
    virtual, _ = compress_coils(k.numpy())
    adjoint = []
    for s in range(k.shape[0]):
        maps = estimate_sensitivities(k[s], mask)[None].double()
        op = MultiCoilMRI((128, 128), mask=mask, sensitivities=maps)
        y = torch.view_as_real(k[s:s + 1]).movedim(-1, 2).reshape(1, -1, 128, 128)
        adjoint.append(op.A_adjoint(y)[0].pow(2).sum(0).sqrt())
    return {"zero-filled, root-sum-of-squares of the coil images": coil_images.abs().pow(2).sum(1).sqrt().numpy(),
            "zero-filled, one virtual coil (what physics: mri sees)":
                _centred(_ifft2, torch.from_numpy(virtual)).abs().numpy(),
            "zero-filled, Aᵀ y with the estimated maps (what physics: mri_multicoil starts from)":
                torch.stack(adjoint).numpy()}


def run(config: str, scans: Path, heldout: Path, out: Path, steps: int) -> tuple[np.ndarray, float]:
    import warnings

    from selfinv.cli import main

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the virtual-coil compression warning, once per file
        code = main(["fit", "--config", str(CONFIGS / config), "--data.path", str(scans), "--trainer.output_dir",
                     str(out), "--trainer.max_steps", str(steps), "--trainer.progress_bar", "false",
                     "--trainer.figures", "false"])
        assert code == 0, f"fit {config} failed"
        seconds = time.perf_counter() - t0
        code = main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input", str(heldout),
                     "--output", str(out / "rec"), "--format", "npy", "--progress", "false"])
        assert code == 0, f"predict {config} failed"
    return np.load(out / "rec" / "heldout.npy"), seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=0.01, help="k-space noise σ in image units (images in [0, 1])")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="10 steps on 8 slices: a smoke test, not a measurement")
    args = ap.parse_args(argv)
    setup(threads=args.threads)
    steps = 10 if args.quick else args.steps
    rows = []
    per_slice = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scans, heldout, truth = make_data(root, args.noise, 8 if args.quick else None)
        for name, rec in baselines(heldout).items():
            p, s, items = _metrics(rec, truth)
            rows.append([name, f"{p:.2f}", f"{s:.3f}", "—"])
            per_slice[name] = items
        for label, config in (("SSDU, one virtual coil (physics: mri)", "your_data_mri_ssdu.yaml"),
                              ("SSDU, every coil with ESPIRiT maps (physics: mri_multicoil)",
                               "your_data_mri_multicoil_ssdu.yaml")):
            rec, seconds = run(config, scans, heldout, root / config.removesuffix(".yaml"), steps)
            p, s, items = _metrics(rec, truth)
            rows.append([f"{label}, `{config}`", f"**{p:.2f}**", f"**{s:.3f}**", f"{seconds / 60:.1f} min"])
            per_slice[label] = items
    import os

    md = (f"# Multi-coil MRI files: every coil against one virtual coil\n\n"
          f"{8 if args.quick else 60} training slices of `mri-slices` in fastMRI multi-coil files of 2 "
          f"({COILS} simulated coils, 4x, 8 % central lines, a mask per file, k-space noise σ = {args.noise} "
          f"in image units), {steps} steps of "
          f"each shipped config through `selfinv fit`; the held-out file (the 12 test slices, its own mask) "
          f"through `selfinv predict`. Magnitude against the ground truth.\n\n"
          + markdown_table(["reconstruction of the held-out file", "PSNR (dB)", "SSIM", "training"], rows)
          + f"\n\nLoad average at the end: {list(os.getloadavg())}. Command: "
            f"`python benchmarks/multicoil_mri.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    data = {"rows": rows, "per_slice_psnr": per_slice, "steps": steps, "noise": args.noise, "env": environment()}
    print(md)
    if not args.quick:
        write_results(args.out, "multicoil_mri", data, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
