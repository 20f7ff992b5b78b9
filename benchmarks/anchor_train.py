"""Time-to-quality on the reference training workload, selfinv vs DeepInverse, back to back.

The workload is ../shared/anchor/bench_train.py: Gaussian denoising σ = 0.1 of
images in [0, 1]; training set = all 64×64 patches at stride 32 of the 15
scikit-image images (selfinv's bundled ``natural-gray-anchor`` train split, 4770
patches); test = the 64 non-overlapping 64×64 crops of ``camera()``. Noise with
the same seed semantics: ``y_train = x_train + σ·randn(generator seed 1)`` drawn once
for the whole stacked patch tensor, ``y_test`` likewise with seed 3.

selfinv runs **its default configuration**, as a user gets it: ``losses: [{name: sure}]``
(or ``supervised``), the default network (``selfinv.config.DEFAULT_BACKBONE``), the
default optimiser and schedule (Adam, warm-up + cosine over the run's time budget),
the default precision (bf16 autocast where the CPU has bf16 units), the default batch
(``--batch``, 16). deepinv runs the anchor script as it is (its 2.07 M-parameter UNet,
fp32, batch 8, Adam 1e-3). Each of supervised MSE and SURE trains for a **budget of
training time** (default 120 s); test PSNR (mean over the 64 crops of ``10 log10(1/MSE)``,
no clipping) is measured every ``--eval-every`` seconds of training time; evaluation
time is not counted. BM3D (the ``bm3d`` package, σ given), applied per crop, is the
classical reference a user would try first.

selfinv trains **through the engine**: the measurements are written once to an
``.npz`` measurement file and ``engine.fit`` runs a ``RunConfig`` that reads it
(``data.path``); the ``TrainingBudget`` callback times each training step
(``on_train_batch_start`` → ``on_train_batch_end``: forward, loss, backward, Adam
step and the engine's per-step logging; the data loading is outside, as in the
anchor, where indexing happens before its clock starts), evaluates on the test
crops whenever the accumulated step time passes the next evaluation point and
stops the trainer when it passes the budget.

Known differences from the anchor (stated in the output too):

* the engine runs without a validation split (``data.val_fraction = 0``: all 4770
  patches train); the learning-rate schedule runs over ``trainer.max_time_minutes`` =
  1.1 × the budget (the engine's wall clock includes its data loading and logging, which
  the budget, like the anchor's, does not), so it is at ~91 % when the budget stops it;
* the batch order is the engine's (a permutation per epoch seeded by ``(seed, epoch)``),
  not the anchor's ``randperm(generator seed 2)``; initial weights are selfinv's UNet
  initialisation (seed 0), not deepinv's (different architectures anyway).

deepinv then runs the anchor script itself, in its own virtual environment, in a
subprocess right after ours (same machine, same threads, same budget), and the two
curves are merged.

Usage:
    python benchmarks/anchor_train.py [--budget 120] [--eval-every 20] [--no-deepinv] [--no-bm3d] [--quick]
        [--only supervised|sure] [--out DIR] [--threads 2] [--batch 16] [--device cpu|cuda]
        [--deepinv-python ../.venv-deepinv/bin/python] [--anchor ../shared/anchor/bench_train.py]

``--device cuda`` runs the selfinv side on the GPU (bf16 autocast) and states the GPU model,
batch and steps/s; the deepinv anchor script is CPU-only as written.

``--quick``: budget 10 s, evaluation every 5 s. Needs a QUIET machine for meaningful
timings (the full comparison takes ~9 minutes). Writes DIR/anchor_train.md and
DIR/anchor_train.json (DIR defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfinv.config import from_dict  # noqa: E402
from selfinv.data.bundled import load_dataset  # noqa: E402
from selfinv.data.measurements import MeasurementDataset  # noqa: E402
from selfinv.data.patches import fixed_crops, grid_patches  # noqa: E402
from selfinv.training import engine  # noqa: E402
from selfinv.training.metrics import psnr  # noqa: E402

from common import (  # noqa: E402
    RESULTS_DIR,
    anchor_script,
    deepinv_python,
    environment,
    markdown_table,
    setup,
    write_results,
)

NAME = "anchor_train"
SIGMA, PATCH, STRIDE, BATCH = 0.1, 64, 32, 16
ANCHOR_BATCH, ANCHOR_LR = 8, 1e-3
TRAIN_NOISE_SEED, TEST_NOISE_SEED = 1, 3
N_TRAIN_PATCHES, N_TEST_CROPS = 4770, 64
DEFAULT_DEEPINV_PYTHON = deepinv_python()
DEFAULT_ANCHOR = anchor_script("bench_train.py")
METHODS = ("supervised", "sure")
LOSSES = {"supervised": [{"name": "supervised"}], "sure": [{"name": "sure"}]}  # the defaults


def anchor_data() -> dict[str, Tensor]:
    """Clean patches/crops and their noisy measurements, exactly as the anchor script draws them."""
    train = load_dataset("natural-gray-anchor", split="train").images
    x_train = torch.cat([grid_patches(im, PATCH, STRIDE) for im in train])
    x_test = fixed_crops(load_dataset("natural-gray-anchor", split="test").images, PATCH)
    if len(x_train) != N_TRAIN_PATCHES or len(x_test) != N_TEST_CROPS:
        raise RuntimeError(f"natural-gray-anchor gave {len(x_train)} train patches and {len(x_test)} test crops, "
                           f"the anchor workload has {N_TRAIN_PATCHES} and {N_TEST_CROPS}")
    y_train = x_train + SIGMA * torch.randn(x_train.shape, generator=torch.Generator().manual_seed(TRAIN_NOISE_SEED))
    y_test = x_test + SIGMA * torch.randn(x_test.shape, generator=torch.Generator().manual_seed(TEST_NOISE_SEED))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


class TrainingBudget(pl.Callback):
    """Stop after ``budget_s`` seconds of training-step time; test PSNR every ``eval_every_s`` of it.

    A step is timed from ``on_train_batch_start`` to ``on_train_batch_end`` (Lightning calls the
    latter after the optimiser step); evaluations happen outside the timed windows.
    """

    def __init__(self, y_test: Tensor, x_test: Tensor, budget_s: float, eval_every_s: float, label: str = ""):
        super().__init__()
        self.y_test, self.x_test = y_test, x_test
        self.budget_s, self.eval_every_s, self.label = budget_s, eval_every_s, label
        self.elapsed, self.steps, self.next_eval = 0.0, 0, eval_every_s
        self.step_s: list[float] = []
        self.losses: list[float] = []
        self.curve: list[dict] = []
        self._t0 = 0.0

    @torch.no_grad()
    def evaluate(self, pl_module: pl.LightningModule) -> float:
        was_training = pl_module.training
        pl_module.eval()
        y = self.y_test.to(pl_module.device)
        out = torch.cat([pl_module(b, pl_module.physics) for b in y.split(16)])
        pl_module.train(was_training)
        return psnr(out.float(), self.x_test.to(out.device).float()).mean().item()

    def _record(self, pl_module: pl.LightningModule) -> None:
        p = self.evaluate(pl_module)
        entry = {"train_s": round(self.elapsed, 2), "steps": self.steps, "psnr": p}
        if self.losses:
            entry["mean_loss_last_20"] = statistics.fmean(self.losses[-20:])
        self.curve.append(entry)
        print(f"[{self.label}] t={self.elapsed:.1f}s steps={self.steps} PSNR={p:.2f}", flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self._record(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dt = time.perf_counter() - self._t0
        self.step_s.append(dt)
        self.elapsed += dt
        self.steps += 1
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(float(loss))
        if self.elapsed >= self.next_eval or self.elapsed >= self.budget_s:
            self._record(pl_module)
            while self.next_eval <= self.elapsed:
                self.next_eval += self.eval_every_s
        if self.elapsed >= self.budget_s:
            trainer.should_stop = True


def run_config(method: str, data_path: Path, workdir: Path, budget: float, batch: int, device: str) -> dict:
    """The user's default configuration (model, optimiser, schedule, precision), reading the anchor's
    measurements, with the run's time budget (see the module docstring)."""
    return {
        "data": {"path": str(data_path), "dataset": None, "normalize": "none", "batch_size": batch,
                 "val_fraction": 0.0, "seed": 0},
        "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": SIGMA}}},
        "losses": LOSSES[method],
        "trainer": {"max_steps": -1, "max_epochs": 100000, "max_time_minutes": 1.1 * budget / 60, "seed": 0,
                    "output_dir": str(workdir / method), "progress_bar": False, "figures": False,
                    "log_every_n_steps": 50, "early_stopping_patience": 0, "checkpoint_every": 100000,
                    "accelerator": "cuda" if device == "cuda" else "cpu"},
    }


def run_selfinv(method: str, data: dict[str, Tensor], data_path: Path, workdir: Path, budget: float,
                eval_every: float, batch: int = BATCH, device: str = "cpu") -> dict:
    cfg = from_dict(run_config(method, data_path, workdir, budget, batch, device))
    cb = TrainingBudget(data["y_test"], data["x_test"], budget, eval_every, label=f"selfinv {method}")
    trainer, module = engine.fit(cfg, extra_callbacks=[cb])
    n_params = sum(p.numel() for p in module.model.parameters())
    return {"method": method, "steps": cb.steps, "train_s": cb.elapsed,
            "ms_per_step_mean": 1e3 * cb.elapsed / max(1, cb.steps),
            "ms_per_step_median": 1e3 * statistics.median(cb.step_s) if cb.step_s else None,
            "n_params": n_params, "curve": cb.curve, "precision": str(trainer.precision),
            "backbone": cfg.model.backbone.args, "batch": batch, "device": device}


def run_bm3d(data: dict[str, Tensor]) -> dict | None:
    """BM3D with the true σ on each test crop (the ``bm3d`` package), or None when it is not installed."""
    try:
        import bm3d
    except ImportError:
        print(f"[{NAME}] bm3d is not installed (pip install bm3d): no classical reference", flush=True)
        return None
    t0 = time.perf_counter()
    out = torch.stack([torch.from_numpy(bm3d.bm3d(y[0].double().numpy(), SIGMA)).float()[None]
                       for y in data["y_test"]])
    return {"psnr": psnr(out, data["x_test"]).mean().item(), "seconds": time.perf_counter() - t0}


def curves_figure(path: Path, ours: dict[str, dict], theirs: dict[str, dict] | None, noisy: float,
                  bm3d_psnr: float | None) -> Path:
    """PSNR against training seconds for every (library, method), with the noisy input and BM3D levels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for lib, runs, style in (("selfinv", ours, "-"), ("deepinv", theirs or {}, "--")):
        for m, r in runs.items():
            t = [c["train_s"] for c in r["curve"]]
            p = [c["psnr"] for c in r["curve"]]
            ax.plot(t, p, style, marker="o", markersize=3, label=f"{lib} {m}")
    ax.axhline(noisy, color="gray", linewidth=0.8, label="noisy input")
    if bm3d_psnr is not None:
        ax.axhline(bm3d_psnr, color="black", linestyle="-.", linewidth=1.2, label="BM3D (σ given)")
        ax.set_ylim(top=max(ax.get_ylim()[1], bm3d_psnr + 0.7))  # not on the frame
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test PSNR (dB), camera crops")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def run_deepinv(python: str, anchor: Path, budget: float, eval_every: float, threads: int) -> dict:
    """The anchor script in deepinv's environment; returns its ``train.json``."""
    if threads != 2:
        print(f"[{NAME}] note: the anchor script always uses 2 threads (ours: {threads})", flush=True)
    out = Path(tempfile.mkdtemp(prefix="anchor-train-"))
    cmd = [python, anchor.name, "--out", str(out), "--budget", str(budget), "--eval-every", str(eval_every)]
    print(f"[{NAME}] deepinv: (cd {anchor.parent} && {' '.join(cmd)})", flush=True)
    subprocess.run(cmd, cwd=anchor.parent, check=True)
    return json.loads((out / "train.json").read_text())


def curve_table(ours: dict[str, dict], theirs: dict[str, dict] | None) -> str:
    """One row per evaluation point: training seconds, steps and PSNR of each (library, method)."""
    cols: list[tuple[str, dict]] = []
    for m in METHODS:
        if m in ours:
            cols.append((f"selfinv {m}", ours[m]))
        if theirs and m in theirs:
            cols.append((f"deepinv {m}", theirs[m]))
    header = ["eval"] + [f"{name} {c}" for name, _ in cols for c in ("t (s)", "steps", "PSNR")]
    n = max(len(r["curve"]) for _, r in cols)
    rows = []
    for i in range(n):
        row: list[object] = [i]
        for _, r in cols:
            c = r["curve"][i] if i < len(r["curve"]) else None
            row += [f"{c['train_s']:.1f}", c["steps"], f"{c['psnr']:.2f}"] if c else ["-", "-", "-"]
        rows.append(row)
    return markdown_table(header, rows)


def summary_table(ours: dict[str, dict], theirs: dict[str, dict] | None) -> str:
    header = ["method", "selfinv final PSNR", "deepinv final PSNR", "selfinv steps", "deepinv steps",
              "selfinv ms/step", "deepinv ms/step", "step speed-up (deepinv/selfinv)",
              "selfinv ratio to sup.", "deepinv ratio to sup."]
    rows = []
    for m in METHODS:
        o, t = ours.get(m), (theirs or {}).get(m)
        so, st = (ours.get("supervised") or {}), ((theirs or {}).get("supervised") or {})

        def ms(r):
            return None if r is None else r.get("ms_per_step_median")

        def f(v, d=2):
            return "-" if v is None else f"{v:.{d}f}"

        ratio = lambda a, b: None if a is None or not b else a / b  # noqa: E731
        rows.append([m, f(o and o["curve"][-1]["psnr"]), f(t and t["curve"][-1]["psnr"]),
                     o["steps"] if o else "-", t["steps"] if t else "-", f(ms(o), 0), f(ms(t), 0),
                     f(ratio(ms(t), ms(o))), f(ratio(ms(o), ms(so) if so else None)),
                     f(ratio(ms(t), ms(st) if st else None))])
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=None, help="training seconds per method (default 120; quick 10)")
    ap.add_argument("--eval-every", type=float, default=None, help="seconds of training between test evaluations "
                    "(default 20; quick 5)")
    ap.add_argument("--no-deepinv", action="store_true", help="skip the deepinv side")
    ap.add_argument("--no-bm3d", action="store_true", help="skip the BM3D reference")
    ap.add_argument("--quick", action="store_true", help="budget 10 s, evaluation every 5 s")
    ap.add_argument("--only", nargs="+", choices=METHODS, default=None, help="methods of the selfinv side")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the anchor uses 2)")
    ap.add_argument("--batch", type=int, default=BATCH, help="selfinv's batch size (default 16)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the selfinv side")
    ap.add_argument("--deepinv-python", default=DEFAULT_DEEPINV_PYTHON)
    ap.add_argument("--anchor", default=DEFAULT_ANCHOR)
    ap.add_argument("--workdir", default=None, help="folder for the runs and the measurement file (default: temp)")
    args = ap.parse_args(argv)
    budget = args.budget if args.budget is not None else (10.0 if args.quick else 120.0)
    eval_every = args.eval_every if args.eval_every is not None else (5.0 if args.quick else 20.0)
    methods = [m for m in METHODS if args.only is None or m in args.only]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"[{NAME}] --device cuda: no CUDA device is available to this torch")
    setup(0, args.threads)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="selfinv-anchor-train-"))
    workdir.mkdir(parents=True, exist_ok=True)

    data = anchor_data()
    noisy = psnr(data["y_test"], data["x_test"]).mean().item()
    data_path = workdir / "anchor_train_measurements.npz"
    MeasurementDataset.from_tensors(data["y_train"], x=data["x_train"],
                                    metadata={"workload": "anchor bench_train.py", "sigma": SIGMA,
                                              "noise_seed": TRAIN_NOISE_SEED}).save(data_path)
    print(f"[{NAME}] train patches {len(data['x_train'])}, test crops {len(data['x_test'])}, "
          f"noisy-input PSNR {noisy:.2f} dB; budget {budget} s, eval every {eval_every} s", flush=True)
    load_start = environment().get("load_average")

    ours: dict[str, dict] = {}
    for m in methods:
        setup(0, args.threads)
        ours[m] = run_selfinv(m, data, data_path, workdir, budget, eval_every, args.batch, args.device)
    theirs = None
    deepinv_raw = None
    if not args.no_deepinv:
        deepinv_raw = run_deepinv(args.deepinv_python, Path(args.anchor).resolve(), budget, eval_every,
                                  args.threads)
        theirs = {r["method"]: r for r in deepinv_raw["runs"]}
        if abs(deepinv_raw["noisy_psnr"] - noisy) > 1e-3 or deepinv_raw["n_train_patches"] != len(data["x_train"]):
            print(f"[{NAME}] WARNING: the deepinv side saw different data (noisy PSNR "
                  f"{deepinv_raw['noisy_psnr']:.3f} vs {noisy:.3f}, {deepinv_raw['n_train_patches']} patches)")
    setup(0, args.threads)
    classical = None if args.no_bm3d or args.quick else run_bm3d(data)

    env = environment()
    out_dir = Path(args.out) if args.out else RESULTS_DIR
    figure = curves_figure(out_dir / f"{NAME}.png", ours, theirs, noisy, classical and classical["psnr"])
    first = ours[methods[0]]
    device_note = (f"GPU {torch.cuda.get_device_name(0)}, " if args.device == "cuda" else "") + \
        f"batch {args.batch}, precision {first['precision']}"
    rates = ", ".join(f"{m} {1e3 / r['ms_per_step_median']:.1f} steps/s" for m, r in ours.items()
                      if r["ms_per_step_median"])
    title = "# Time to quality on the anchor training workload: selfinv vs deepinv"
    md = [title + (" (QUICK smoke run)" if args.quick else ""), "",
          f"Gaussian denoising σ = {SIGMA}, {len(data['x_train'])} training patches 64×64 (stride 32) of the 15 "
          f"scikit-image images, test = the 64 crops of camera(). selfinv: its default configuration (UNet "
          f"{first['backbone']}, {first['n_params']:,} parameters; Adam, warm-up + cosine over the time budget; "
          f"{device_note}; {rates}). deepinv: the anchor script (UNet(1, 1, scales=3), 2,069,441 parameters, fp32, "
          f"batch {ANCHOR_BATCH}, Adam {ANCHOR_LR}). {budget:g} s of training time per method, test PSNR every "
          f"{eval_every:g} s of training (evaluation not counted). Noisy-input PSNR {noisy:.2f} dB"
          + (f"; BM3D with σ given, per crop: {classical['psnr']:.2f} dB ({classical['seconds']:.0f} s for the 64 "
             f"crops)" if classical else "") + ". Both sides ran back to back on the same machine.",
          "", "## Summary (final evaluation point)", "", summary_table(ours, theirs), "",
          f"![PSNR against training time]({figure.name})", "",
          "## PSNR (dB) against training seconds", "", curve_table(ours, theirs), "",
          "## Notes", "",
          "* selfinv trains through `engine.fit` (RunConfig reading the measurements from an .npz file); the "
          "`TrainingBudget` callback times each step from `on_train_batch_start` to `on_train_batch_end` "
          "(forward, loss, backward, Adam step and the engine's logging), evaluates outside that clock and "
          "stops the trainer at the budget.",
          "* differences from the anchor: all 4770 patches train (no validation split); the batch order is the "
          "engine's seeded per-epoch permutation, not `randperm(seed 2)`; each library uses its own network "
          "and initialisation; the learning-rate schedule runs over 1.1 × the budget of wall time.",
          "* the ms/step columns are medians over all steps; PSNR at equal *time* compares libraries, PSNR at "
          "equal *steps* compares the losses (see the steps columns).",
          f"* load average at the start {load_start}, at the end {env.get('load_average')}.",
          f"* command: `{' '.join(sys.argv)}`"]
    result = {"name": NAME, "quick": args.quick, "budget_s": budget, "eval_every_s": eval_every,
              "sigma": SIGMA, "patch": PATCH, "stride": STRIDE, "batch": args.batch, "device": args.device,
              "n_train_patches": len(data["x_train"]), "n_test_crops": len(data["x_test"]), "noisy_psnr": noisy,
              "bm3d": classical, "env": env, "load_average_start": load_start, "command": sys.argv,
              "configs": {m: run_config(m, data_path, workdir, budget, args.batch, args.device) for m in methods},
              "selfinv": ours, "deepinv": deepinv_raw}
    out = write_results(args.out, NAME, result, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {out / (NAME + '.md')}, {out / (NAME + '.json')} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
