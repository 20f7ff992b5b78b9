"""Learning from *incomplete* measurements: the seeds' tables, measured.

One network per row, trained through the engine (``selfinv.training.engine.fit``
with a ``RunConfig`` built from a dict) for the same fixed number of optimisation
steps, then evaluated on held-out test images with the loss's test-time
estimator (``loss.estimator(model)``, i.e. ``SelfSupervisedModule.forward``).
Quality = mean PSNR / SSIM over the test set against the ground truth; time =
median wall-clock time of a training step, and its ratio to the supervised step
of the same task measured in the same run.

Tasks (rows without training are the classic linear reconstructions):

* inpainting — natural-gray 48x48 patches, 50 % of pixels kept, σ = 0.01, a
  fresh random mask per measurement (per-sample masks for *every* row, so that
  MOI has several operators; EI here also sees many masks).
* mri — mri-slices resized to 64x64 (whole slices), ×4 random Cartesian lines
  with 8 % centre, ONE fixed mask for all measurements (the classic EI setting),
  σ = 0.005; and a noisy variant σ = 0.05 (EI vs robust EI). The k-space is
  SIMULATED from magnitude images (real image, no phase, single coil).
* ct — mri-slices 64x64, 30 equispaced views (parallel beam), Poisson–Gaussian
  noise (gain 1e-3, σ = 0.01) on the sinogram; FBP init.
* deblur / sr — natural-gray 48x48 patches, Gaussian blur σ = 2 (circular) or
  ×2 bicubic downsampling, Gaussian noise σ = 5/255 (the SEI setting).

Usage::

    python benchmarks/incomplete.py [--quick] [--out DIR] [--threads 2] [--only SUBSTR ...]
        [--steps N] [--keep-runs]

``--only`` keeps rows whose ``task/method`` contains one of the substrings (the
supervised row of a task is always kept when a trained row of that task runs, it
is the reference of the time ratio). Writes DIR/incomplete.md and DIR/incomplete.json.
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfinv.config import from_dict  # noqa: E402
from selfinv.data.bundled import load_dataset  # noqa: E402
from selfinv.data.measurements import MeasurementDataset  # noqa: E402
from selfinv.data.patches import fixed_crops  # noqa: E402
from selfinv.physics import MRI  # noqa: E402
from selfinv.physics.base import Physics  # noqa: E402
from selfinv.training import engine  # noqa: E402
from selfinv.training.metrics import psnr, ssim  # noqa: E402

from common import environment, markdown_table, setup, write_results  # noqa: E402

MRI_SIZE = 64
BATCH = 4
SEED = 0
TEST_SEED = 12345


# -- task definitions ----------------------------------------------------------------------

@dataclass
class Task:
    """One inverse problem: how to build its physics/data config and its test set."""

    name: str
    title: str
    physics: dict
    dataset: str                      # 'natural-gray' (engine patches) or 'mri-slices' (own file)
    channels: int = 1                 # 2 for complex MRI images
    init: str = "dagger"
    lr: float = 1e-3
    fixed_mri_mask: bool = False
    patch: int = 48                   # natural-gray training patches / test crops; mri-slices are 64x64
    methods: list[tuple[str, list[dict] | None]] = field(default_factory=list)
    baselines: list[str] = field(default_factory=lambda: ["dagger"])


def sure(noise: str = "gaussian") -> dict:
    return {"name": "sure", "args": {"noise": noise, "tau": 0.01, "divergence": "mc"}}


SHIFT = {"name": "shift"}
ROT90 = {"name": "rotate", "args": {"multiples_of_90": True}}
ROT_ANY = {"name": "rotate", "args": {"multiples_of_90": False, "degrees": [-180.0, 180.0]}}
SCALE = {"name": "scale", "args": {"factors": [0.75, 0.5]}}
MC = {"name": "mc"}
SUP = [{"name": "supervised"}]
#: SSDU scoring the whole observed residual (tutorial form), not only the held-out entries
SSDU_FULL = {"name": "ssdu", "args": {"split_ratio": 0.6, "penalize": "full"}}
#: method-name prefix: train on measurements with a fresh MRI mask each (test set unchanged: the fixed mask)
PER_SAMPLE = "~"


def tasks() -> list[Task]:
    g = lambda s: {"name": "gaussian", "args": {"sigma": s}}  # noqa: E731
    return [
        Task("inpainting", "Inpainting, 50 % pixels, σ = 0.01, natural-gray 48x48, per-sample masks",
             {"name": "inpainting", "args": {"keep_ratio": 0.5, "per_sample": True}, "noise": g(0.01)},
             "natural-gray",
             methods=[("MC", [MC]),
                      ("MOI", [{"name": "moi"}]),
                      ("EI-shift + MC", [MC, {"name": "ei", "args": {"transform": SHIFT}}]),
                      ("SSDU", [{"name": "ssdu", "args": {"split_ratio": 0.6}}]),
                      ("SSDU (full loss)", [SSDU_FULL]),
                      ("supervised", SUP)]),
        Task("mri", "MRI x4 Cartesian (one fixed mask), σ = 0.005, mri-slices 64x64 (simulated k-space)",
             {"name": "mri", "args": {"acceleration": 4, "center_fraction": 0.08, "pattern": "random"},
              "noise": g(0.005)},
             "mri-slices", channels=2, init="adjoint", fixed_mri_mask=True, patch=MRI_SIZE,
             methods=[("MC", [MC]),
                      ("EI-rot90 + MC", [MC, {"name": "ei", "args": {"transform": ROT90}}]),
                      ("SSDU (fixed mask)", [{"name": "ssdu", "args": {"split_ratio": 0.6}}]),
                      (PER_SAMPLE + "SSDU (per-sample masks)", [{"name": "ssdu", "args": {"split_ratio": 0.6}}]),
                      ("SSDU (full loss, fixed mask)", [SSDU_FULL]),
                      (PER_SAMPLE + "SSDU (full loss, per-sample masks)", [SSDU_FULL]),
                      ("supervised", SUP)]),
        Task("mri-noisy", "MRI x4 Cartesian (one fixed mask), σ = 0.05, mri-slices 64x64 (simulated k-space)",
             {"name": "mri", "args": {"acceleration": 4, "center_fraction": 0.08, "pattern": "random"},
              "noise": g(0.05)},
             "mri-slices", channels=2, init="adjoint", fixed_mri_mask=True, patch=MRI_SIZE,
             methods=[("EI-rot90 + MC", [MC, {"name": "ei", "args": {"transform": ROT90}}]),
                      ("REI-rot90 (SURE)", [{"name": "robust_ei",
                                             "args": {"fidelity": sure(), "transform": ROT90}}]),
                      ("supervised", SUP)]),
        Task("ct", "Sparse-view CT, 30 views, Poisson-Gaussian (gain 1e-3, σ = 0.01), mri-slices 64x64",
             {"name": "tomography", "args": {"img_size": 64, "n_views": 30},
              "noise": {"name": "poisson_gaussian", "args": {"gain": 1e-3, "sigma": 0.01}}},
             "mri-slices", patch=MRI_SIZE,
             methods=[("MC", [MC]),
                      ("EI-rot + MC", [MC, {"name": "ei", "args": {"transform": ROT_ANY}}]),
                      ("REI-rot (SURE)", [{"name": "robust_ei",
                                           "args": {"fidelity": sure("poisson_gaussian"), "transform": ROT_ANY}}]),
                      ("supervised", SUP)]),
        Task("deblur", "Deblurring, Gaussian σ = 2 (circular), noise σ = 5/255, natural-gray 48x48",
             {"name": "blur", "args": {"kind": "gaussian", "sigma": 2.0, "boundary": "circular"},
              "noise": g(5 / 255)},
             "natural-gray", init="adjoint", baselines=["dagger", "adjoint"],
             methods=[("SURE", [sure()]),
                      ("EI-shift (REI, SURE)", [{"name": "robust_ei", "args": {"fidelity": sure(), "transform": SHIFT}}]),
                      ("EI-rot90 (REI, SURE)", [{"name": "robust_ei", "args": {"fidelity": sure(), "transform": ROT90}}]),
                      ("SEI (SURE)", [{"name": "scale_ei", "args": {"sure": sure(), "transform": SCALE}}]),
                      ("supervised", SUP)]),
        Task("sr", "Super-resolution x2 (bicubic filter), noise σ = 5/255, natural-gray 48x48",
             {"name": "downsampling", "args": {"factor": 2, "filter": "bicubic"}, "noise": g(5 / 255)},
             "natural-gray", init="dagger", baselines=["dagger", "bicubic"],
             methods=[("SURE", [sure()]),
                      ("EI-shift (REI, SURE)", [{"name": "robust_ei", "args": {"fidelity": sure(), "transform": SHIFT}}]),
                      ("EI-rot90 (REI, SURE)", [{"name": "robust_ei", "args": {"fidelity": sure(), "transform": ROT90}}]),
                      ("SEI (SURE)", [{"name": "scale_ei", "args": {"sure": sure(), "transform": SCALE}}]),
                      ("supervised", SUP)]),
    ]


BASELINE_NAMES = {"inpainting": "A†y (masked)", "mri": "zero-filled A†y", "mri-noisy": "zero-filled A†y",
                  "ct": "FBP (A†y)", "deblur": "A†y (Tikhonov ε=1e-3)", "sr": "A†y"}


# -- data ---------------------------------------------------------------------------------

def mri_slices(split: str, channels: int) -> Tensor:
    ims = torch.stack(load_dataset("mri-slices", split, size=MRI_SIZE).images).float().clamp(0, 1)
    if channels == 2:
        ims = torch.cat([ims, torch.zeros_like(ims)], dim=1)
    return ims


def test_images(task: Task, n_max: int) -> Tensor:
    if task.dataset == "natural-gray":
        x = fixed_crops(load_dataset("natural-gray", "test").images, task.patch).float()
        if x.shape[0] > n_max:  # evenly spaced subset, fixed
            idx = torch.linspace(0, x.shape[0] - 1, n_max).round().long()
            x = x[idx]
        return x
    return mri_slices("test", task.channels)[:n_max]


def base_config(task: Task, losses: list[dict], steps: int, out_dir: str, num_patches: int) -> dict:
    phys = copy.deepcopy(task.physics)
    cfg = {
        "data": {"dataset": task.dataset,
                 "patch_size": task.patch, "num_patches": num_patches, "batch_size": BATCH,
                 "val_fraction": 0.1, "seed": SEED},
        "physics": phys,
        "model": {"backbone": {"name": "unet", "args": {"in_channels": task.channels, "out_channels": task.channels,
                                                       "scales": 3, "base_channels": 16, "batch_norm": False}},
                  "reconstructor": {"name": "back_projection", "args": {"init": task.init}}},
        "losses": copy.deepcopy(losses),
        "optim": {"lr": task.lr, "scheduler": "none"},
        "trainer": {"max_steps": steps, "max_epochs": None, "early_stopping_patience": 0, "seed": SEED,
                    "output_dir": out_dir, "progress_bar": False, "figures": False, "val_every": 10 ** 6,
                    "checkpoint_every": 10 ** 6, "log_every_n_steps": 50, "accelerator": "cpu"},
        "select_by": "val/loss",
    }
    return cfg


def fixed_mask_physics(physics: Physics, seed: int) -> Physics:
    """The same MRI operator with one fixed mask drawn from its own distribution (seeded)."""
    p = physics
    mask = p.sample_params(1, torch.Generator().manual_seed(seed), None)["mask"]
    return MRI(img_size=tuple(p.img_size), acceleration=p.acceleration, center_fraction=p.center_fraction,
               pattern=p.pattern, mask=mask, noise=p.noise)


def task_physics(task: Task, cfg_dict: dict, per_sample: bool = False) -> Physics:
    phys = engine.build_physics(from_dict(cfg_dict))
    if task.fixed_mri_mask and not per_sample:
        phys = fixed_mask_physics(phys, SEED + 7)
    return phys


def measurement_file(task: Task, cfg_dict: dict, folder: Path, per_sample: bool = False) -> str:
    """Simulate the training measurements of an mri-slices task once (train + val slices)."""
    path = folder / f"{task.name}_train{'_per_sample' if per_sample else ''}.npz"
    if not path.exists():
        x = torch.cat([mri_slices("train", task.channels), mri_slices("val", task.channels)])
        ds = MeasurementDataset(x, task_physics(task, cfg_dict, per_sample), seed=SEED + 1, keep_ground_truth=True,
                                metadata={"note": "k-space simulated from magnitude images"
                                          if task.name.startswith("mri") else "simulated"})
        ds.save(path)
    return str(path)


# -- evaluation -----------------------------------------------------------------------------

def magnitude(x: Tensor) -> Tensor:
    """|x| for 2-channel complex images, x itself otherwise (PSNR/SSIM are on magnitudes for MRI)."""
    return x.pow(2).sum(1, keepdim=True).sqrt() if x.shape[1] == 2 else x


def quality(x_hat: Tensor, x: Tensor) -> dict:
    xh, xt = magnitude(x_hat).float(), magnitude(x).float()
    p = psnr(xh.clamp(0, 1), xt)
    s = ssim(xh.clamp(0, 1), xt)
    n = p.numel()
    return {"psnr": float(p.mean()), "psnr_se": float(p.std() / math.sqrt(n)) if n > 1 else 0.0,
            "ssim": float(s.mean()), "n_test": n}


def evaluate(fn: Callable[[Tensor, Physics], Tensor], test: dict, chunk: int = 16) -> dict:
    outs = []
    with torch.no_grad():
        for i in range(0, test["y"].shape[0], chunk):
            sl = slice(i, i + chunk)
            phys = test["physics"].with_params(**{k: v[sl] for k, v in test["params"].items()})
            outs.append(fn(test["y"][sl], phys))
    return quality(torch.cat(outs), test["x"])


def make_test(task: Task, physics: Physics, n_max: int) -> dict:
    x = test_images(task, n_max)
    ds = MeasurementDataset(x, physics, seed=TEST_SEED, keep_ground_truth=True)
    y = torch.stack(ds.y)
    keys = ds.params[0].keys() if ds.params else []
    params = {k: torch.stack([p[k] for p in ds.params]) for k in keys}
    return {"x": x, "y": y, "params": params, "physics": physics}


def bicubic_upsampling(y: Tensor, physics: Physics) -> Tensor:
    f = physics.factor
    return F.interpolate(y, scale_factor=f, mode="bicubic", align_corners=False)


class StepTimer(pl.Callback):
    """Wall-clock time of every optimisation step (batch start to batch end)."""

    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._t0)


# -- main --------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    setup(SEED, args.threads)
    steps = args.steps or (20 if args.quick else 600)
    num_patches = 64 if args.quick else 1024
    n_test = 8 if args.quick else 64
    work = Path(tempfile.mkdtemp(prefix="selfinv_incomplete_"))
    rows: list[dict] = []
    print(f"[incomplete] budget: {steps} steps x batch {BATCH} (natural-gray 48x48 patches, mri-slices {MRI_SIZE}x{MRI_SIZE}), UNet(scales 3, base 16, no BN), "
          f"Adam, threads={args.threads}; test images per task <= {n_test}", flush=True)
    try:
        for task in tasks():
            selected = [(m, l) for m, l in task.methods
                        if not args.only or any(s in f"{task.name}/{m.removeprefix(PER_SAMPLE)}" for s in args.only)]
            base_selected = not args.only or any(s in f"{task.name}/baseline" or s == task.name for s in args.only)
            if not selected and not base_selected:
                continue
            if selected and not any(m == "supervised" for m, _ in selected):
                selected.append(("supervised", SUP))
            cfg0 = base_config(task, SUP, steps, str(work / "probe"), num_patches)
            physics = task_physics(task, cfg0)
            test = make_test(task, physics, n_test)
            for b in task.baselines:
                fn = {"dagger": lambda y, p: p.A_dagger(y), "adjoint": lambda y, p: p.A_adjoint(y),
                      "bicubic": bicubic_upsampling}[b]
                q = evaluate(fn, test)
                name = {"dagger": BASELINE_NAMES[task.name], "adjoint": "Aᵀy (network input)",
                        "bicubic": "bicubic interpolation"}[b]
                rows.append({"task": task.name, "title": task.title, "method": name, "trained": False, **q})
                print(f"[incomplete] {task.name:10s} {name:26s} PSNR {q['psnr']:.2f} SSIM {q['ssim']:.3f}",
                      flush=True)
            sup_ms = None
            ordered = sorted(selected, key=lambda ml: ml[0] != "supervised")
            for method, losses in ordered:
                per_sample = method.startswith(PER_SAMPLE)
                method = method.removeprefix(PER_SAMPLE)
                out_dir = work / f"{task.name}_{len(rows)}"
                cfg_dict = base_config(task, losses, steps, str(out_dir), num_patches)
                if task.dataset == "mri-slices":
                    cfg_dict["data"]["path"] = measurement_file(task, cfg_dict, work, per_sample)
                    cfg_dict["data"]["val_fraction"] = 0.15
                cfg = from_dict(cfg_dict)
                timer = StepTimer()
                t0 = time.perf_counter()
                trainer, module = engine.fit(cfg, extra_callbacks=[timer])
                wall = time.perf_counter() - t0
                module.eval()
                q = evaluate(module, test)
                med = 1e3 * statistics.median(timer.times[2:] or timer.times)
                if method == "supervised":
                    sup_ms = med
                row = {"task": task.name, "title": task.title, "method": method, "trained": True,
                       "losses": losses, "steps": int(trainer.global_step), "step_ms": med,
                       "step_ratio": med / sup_ms if sup_ms else None, "train_s": wall,
                       "evaluations_per_step": int(module.loss.evaluations_per_step), **q}
                rows.append(row)
                print(f"[incomplete] {task.name:10s} {method:26s} PSNR {q['psnr']:.2f} SSIM {q['ssim']:.3f} "
                      f"step {med:.1f} ms ({wall:.0f} s)", flush=True)
                if not args.keep_runs:
                    shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        if not args.keep_runs:
            shutil.rmtree(work, ignore_errors=True)
    return {"steps": steps, "batch_size": BATCH, "patch": {t.name: t.patch for t in tasks()}, "num_patches": num_patches,
            "n_test_max": n_test, "quick": bool(args.quick), "threads": args.threads, "rows": rows,
            "environment": environment()}


#: the seeds' qualitative expectations, checked against the measured numbers (never tuned):
#: (task, method prefix, kind) with kind 'null' (≈ the linear baseline: less than a quarter of the gap to
#: supervised recovered), 'gap' (at least half of the gap recovered), 'no-gain' (within 0.5 dB of SURE
#: alone) or 'beats:<method>' (higher PSNR than that row of the same task).
EXPECTATIONS = [
    ("inpainting", "MC", "null"), ("inpainting", "MOI", "gap"), ("inpainting", "EI", "gap"),
    ("inpainting", "SSDU", "gap"), ("inpainting", "SSDU (full", "gap"),
    ("mri", "MC", "null"), ("mri", "EI", "gap"), ("mri", "SSDU (per-sample", "gap"), ("mri", "SSDU (full loss, per-sample", "gap"),
    ("mri-noisy", "REI", "beats:EI-rot90 + MC"),
    ("ct", "EI", "gap"), ("ct", "REI", "gap"), ("ct", "REI", "beats:MC"),
    ("deblur", "EI-shift", "no-gain"), ("deblur", "EI-rot90", "no-gain"), ("deblur", "SEI", "beats:SURE"),
    ("deblur", "SEI", "gap"),
    ("sr", "EI-shift", "no-gain"), ("sr", "EI-rot90", "no-gain"), ("sr", "SEI", "beats:SURE"), ("sr", "SEI", "gap"),
]


def expectation_notes(rows: list[dict]) -> list[str]:
    """One line per expectation: the measured numbers and whether they agree."""
    notes = []
    for task, prefix, kind in EXPECTATIONS:
        rs = [r for r in rows if r["task"] == task]
        row = next((r for r in rs if r["trained"] and r["method"].startswith(prefix)), None)
        sup = next((r for r in rs if r["method"] == "supervised"), None)
        base = next((r for r in rs if not r["trained"]), None)
        if task == "deblur":  # the network input Aᵀy is the meaningful linear reference here
            base = next((r for r in rs if r["method"].startswith("Aᵀy")), base)
        if row is None or sup is None or base is None:
            continue
        gap = sup["psnr"] - base["psnr"]
        if kind in ("null", "gap") and gap < 0.5:
            notes.append(f"* inconclusive — {task} / {row['method']}: supervised ({sup['psnr']:.2f} dB) does not beat "
                         f"{base['method']} ({base['psnr']:.2f} dB) by 0.5 dB at this budget, so there is no gap "
                         f"to recover; the row measured {row['psnr']:.2f} dB.")
            continue
        frac = (row["psnr"] - base["psnr"]) / gap if abs(gap) > 1e-6 else float("nan")
        what = (f"{task} / {row['method']}: {row['psnr']:.2f} dB vs {base['method']} {base['psnr']:.2f} dB and "
                f"supervised {sup['psnr']:.2f} dB"
                + (f" ({100 * frac:.0f} % of the gap recovered)" if gap >= 0.5 else " (no gap: supervised ≤ baseline)"))
        if kind == "null":
            ok, expect = abs(frac) < 0.25, "≈ the linear baseline (nothing learnt in the null space)"
        elif kind == "gap":
            ok, expect = frac >= 0.5, "recovers at least half of the gap to supervised"
        elif kind == "no-gain":
            ref = next((r for r in rs if r["method"] == "SURE"), None)
            if ref is None:
                continue
            ok = row["psnr"] < ref["psnr"] + 0.5
            expect = (f"no gain (< 0.5 dB) over SURE alone ({ref['psnr']:.2f} dB): A commutes with the "
                      "transform")
        else:
            other = kind.split(":", 1)[1]
            ref = next((r for r in rs if r["method"] == other), None)
            if ref is None:
                continue
            ok, expect = row["psnr"] > ref["psnr"], f"better than {other} ({ref['psnr']:.2f} dB)"
        notes.append(f"* {'as expected' if ok else '**DIFFERS**'} — expected {expect}; measured {what}.")
    return notes


def _cells(r: dict) -> list[str]:
    return [r["task"], r["method"], f"{r['psnr']:.2f}", f"{r['psnr_se']:.2f}", f"{r['ssim']:.3f}",
            f"{r['step_ms']:.1f}" if r.get("step_ms") else "-",
            f"{r['step_ratio']:.1f}x" if r.get("step_ratio") else "-"]


def to_markdown(data: dict, command: str) -> str:
    lines = ["# Learning from incomplete measurements", "",
             f"Command: `{command}`", "",
             f"Budget: {data['steps']} Adam steps per trained row, batch {data['batch_size']} of "
             "images (natural-gray 48x48 random patches, mri-slices whole 64x64 slices), UNet (3 scales, base 16 channels, no batch norm) "
             "behind BackProjection (init shown per task), lr 1e-3, no scheduler, final weights "
             "evaluated (no checkpoint selection). Quality on held-out test images "
             f"(≤ {data['n_test_max']} per task) with the loss's test-time estimator; ± is the standard error "
             "of the mean PSNR over test images. Time = median training step, ratio to the supervised step "
             "of the same task in the same run.", ""]
    header = ["task", "method", "PSNR (dB)", "± se", "SSIM", "step (ms)", "× sup. step"]
    table = [_cells(r) for r in data["rows"]]
    lines.append(markdown_table(header, table))
    sup = data.get("supplement")
    if sup:
        lines += ["", f"Supplementary rows, same budget ({sup['steps']} steps), second invocation "
                  f"`{sup['command']}` (its supervised rows re-trained as the time reference, shown for "
                  "reproducibility; the expectation checks below use the main table's supervised rows):", ""]
        lines.append(markdown_table(header, [_cells(r) for r in sup["rows"]]))
    lines += ["", "Tasks:", ""]
    seen = set()
    for r in data["rows"]:
        if r["task"] not in seen:
            seen.add(r["task"])
            lines.append(f"* **{r['task']}** — {r['title']}")
    lines += ["", "Notes:", "",
              "* MRI k-space is SIMULATED from magnitude images (mri-slices, real-valued, no phase, single coil); "
              "PSNR/SSIM are computed on the magnitude of the 2-channel reconstruction.",
              "* Inpainting uses a fresh random mask per measurement for every row (MOI needs several operators). "
              "MRI uses ONE fixed Cartesian mask for every row (the classic EI setting) except 'SSDU (per-sample "
              "masks)', trained on measurements with a fresh mask each and tested on the same fixed-mask test set; CT uses fixed equispaced "
              "angles; blur and downsampling are single fixed operators.",
              "* 'EI-shift/rot (REI, SURE)' for deblurring / SR is robust EI (SURE + EI with re-noised virtual "
              "measurements) with shifts or 90° rotations, so it differs from SEI only in the transform group "
              "(and SEI's stop-gradient).",
              "* 'SSDU' rows use SSDUSplitting's default held-out loss (Yaman et al.: only the observed entries "
              "hidden from the network are scored); 'SSDU (full loss)' rows score the whole observed residual "
              "(the tutorial's form, penalize='full'). Test-time estimator: average over 8 seeded splits."]
    extra = [r for r in data.get("supplement", {}).get("rows", [])
             if r["trained"] and r["method"] != "supervised"
             and not any(m["task"] == r["task"] and m["method"] == r["method"] for m in data["rows"])]
    checks = expectation_notes(data["rows"] + extra)
    if checks:
        lines += ["", "Expectations of the tutorial / SEI paper, checked automatically on the numbers above:", ""]
        lines += checks
    lines += data.get("notes", [])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget (smoke test)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of 'task/method' to run")
    ap.add_argument("--steps", type=int, default=None, help="override the step budget")
    ap.add_argument("--keep-runs", action="store_true", help="keep the run folders (temporary dir)")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="only rewrite the Markdown from an existing incomplete.json (adds --note lines)")
    ap.add_argument("--supplement", default=None, metavar="JSON",
                    help="run the --only rows and add them (not their supervised reference) to an existing "
                         "incomplete.json as a supplementary table, then re-render the Markdown")
    ap.add_argument("--note", action="append", default=[], help="extra note for the Markdown (with --render)")
    args = ap.parse_args(argv)
    if args.render:
        import json

        data = json.loads(Path(args.render).read_text())
        data["notes"] = data.get("notes", []) + [f"* {n}" for n in args.note]
        out = write_results(args.out or Path(args.render).parent, "incomplete", data,
                            to_markdown(data, data["command"]))
        print(f"[incomplete] re-rendered {out}/incomplete.md")
        return
    command = "python benchmarks/incomplete.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.supplement:
        import json

        main_data = json.loads(Path(args.supplement).read_text())
        t0 = time.perf_counter()
        extra = run(args)
        main_data["supplement"] = {"command": command, "total_s": time.perf_counter() - t0,
                                   "steps": extra["steps"], "rows": extra["rows"]}
        out = write_results(args.out or Path(args.supplement).parent, "incomplete", main_data,
                            to_markdown(main_data, main_data["command"]))
        print(f"[incomplete] added {len(extra['rows'])} supplementary rows to {out}/incomplete.md and .json")
        return
    t0 = time.perf_counter()
    data = run(args)
    data["total_s"] = time.perf_counter() - t0
    data["command"] = command
    out = write_results(args.out, "incomplete", data, to_markdown(data, command))
    print(f"[incomplete] wrote {out}/incomplete.md and .json in {data['total_s']:.0f} s")


if __name__ == "__main__":
    main()
