"""Does checkpoint selection by the self-supervised validation loss match selection by true PSNR?

The target: selection by the self-supervised validation loss lands within 0.3 dB of
selection by true PSNR on one denoising and one incomplete-measurement run.

Two self-supervised runs train **through the engine** (``engine.fit`` with a
``RunConfig`` built from a dict), validating every (short) epoch on a held-out
10 % of the **measurements**: the engine logs ``val/loss`` (the self-supervised
loss, no ground truth) and, beside it, ``val/psnr`` (ground truth, never used
for training):

* ``denoising-sure``: Gaussian denoising σ = 0.1 of ``natural-gray`` 48×48 patches, SURE
  (Monte-Carlo divergence), UNet(scales 3, 16 channels) + BackProjection;
* ``inpainting-mc-ei``: inpainting (50 % of the pixels kept, a new mask per measurement,
  σ = 0.01) of 32×32 patches, measurement consistency + equivariant imaging over shifts;
* ``*-supervised``: the same network, data, steps and validation schedule trained with the
  supervised loss (the quality ceiling the benchmark rules ask for).

A callback (``TestEvaluator``) evaluates the model on the **test split** of
``natural-gray`` (fixed non-overlapping crops of the test images, measurements
simulated once with a fixed seed) right after every validation, so the test PSNR
of every candidate checkpoint is known. Reported per run:

* test PSNR of the checkpoint with the lowest ``val/loss`` (self-supervised selection),
* test PSNR of the checkpoint with the highest ``val/psnr`` (oracle selection on the val split),
* the gap (oracle − self-supervised) on the test split — the number the issue asks for —
  and the same gap on the val split from ``selfinv.report.selection_gap(metrics.csv)``,
* the best test PSNR over all checkpoints (an upper bound no selection rule can beat),
* a cross-check: the engine's own best checkpoint file (``ModelCheckpoint`` on
  ``val/loss``) is reloaded and evaluated on the test split; it must equal the
  self-supervised pick.

Budgets are numbers of optimisation steps (quality does not depend on machine load);
the median time per training step and its ratio to the supervised step of the same
task are reported separately.

Usage:
    python benchmarks/validation_selection.py [--quick] [--out DIR] [--threads 2]
        [--only ROW ...] [--steps N] [--val-every-steps N] [--workdir DIR]
    python benchmarks/validation_selection.py --render-from DIR/validation_selection.json
        (re-render the Markdown and the curve analysis from saved results, no training)

Writes DIR/validation_selection.md and DIR/validation_selection.json (DIR defaults to
benchmarks/results).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfinv.config import from_dict  # noqa: E402
from selfinv.data.bundled import load_dataset  # noqa: E402
from selfinv.data.measurements import MeasurementDataset, collate_measurements  # noqa: E402
from selfinv.data.patches import fixed_crops  # noqa: E402
from selfinv.report import selection_gap  # noqa: E402
from selfinv.training import engine  # noqa: E402
from selfinv.training.checkpoint import read_checkpoint  # noqa: E402
from selfinv.training.metrics import psnr, ssim  # noqa: E402

from common import environment, markdown_table, setup, write_results  # noqa: E402

NAME = "validation_selection"
#: the issue's tolerance on the selection gap
TOLERANCE_DB = 0.3
TEST_SEED = 12345
BACKBONE = {"name": "unet", "args": {"scales": 3, "base_channels": 16, "batch_norm": False}}

#: task -> default budget (steps, steps between validations), data and physics; the losses differ per row.
#: Sized so that the four runs fit in ~10 minutes on one busy core (SURE steps cost 2x a supervised step).
TASKS: dict[str, dict] = {
    "denoising": {
        "steps": 500, "val_every_steps": 25,
        "data": {"dataset": "natural-gray", "patch_size": 48, "batch_size": 16, "val_fraction": 0.1},
        "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": 0.1}}},
    },
    "inpainting": {
        "steps": 600, "val_every_steps": 30,
        "data": {"dataset": "natural-gray", "patch_size": 32, "batch_size": 16, "val_fraction": 0.1},
        "physics": {"name": "inpainting", "args": {"keep_ratio": 0.5, "per_sample": True},
                    "noise": {"name": "gaussian", "args": {"sigma": 0.01}}},
    },
}

#: row -> (task, losses); rows run in this order
ROWS: dict[str, tuple[str, list[dict]]] = {
    "denoising-sure": ("denoising", [{"name": "sure", "args": {"noise": "gaussian", "divergence": "mc",
                                                                "tau": 0.01}}]),
    "denoising-supervised": ("denoising", [{"name": "supervised"}]),
    "inpainting-mc-ei": ("inpainting", [{"name": "mc", "weight": 1.0},
                                        {"name": "ei", "weight": 1.0, "args": {"transform": {"name": "shift"}}}]),
    "inpainting-supervised": ("inpainting", [{"name": "supervised"}]),
}


class TestEvaluator(pl.Callback):
    """After every validation: PSNR/SSIM of ``pl_module(y, A)`` on fixed test measurements, keyed by step.

    Also records the validation metrics of the same step (``val/loss``, ``val/psnr``) and the
    time of every training step (``on_train_batch_start`` → ``on_train_batch_end``).
    """

    def __init__(self, test: MeasurementDataset, batch_size: int = 64):
        super().__init__()
        self.test, self.batch_size = test, batch_size
        self.records: list[dict] = []
        self.step_seconds: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_seconds.append(time.perf_counter() - self._t0)

    @torch.no_grad()
    def evaluate(self, pl_module: pl.LightningModule) -> dict:
        was_training = pl_module.training
        pl_module.eval()
        ps, ss = [], []
        n = len(self.test)
        for start in range(0, n, self.batch_size):
            batch = collate_measurements([self.test[i] for i in range(start, min(n, start + self.batch_size))])
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            phys = pl_module.physics.with_params(**batch["params"])
            x_hat = pl_module(batch["y"], phys).float()
            ps.append(psnr(x_hat, batch["x"].float()))
            ss.append(ssim(x_hat, batch["x"].float()))
        pl_module.train(was_training)
        return {"test_psnr": torch.cat(ps).mean().item(), "test_ssim": torch.cat(ss).mean().item()}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        rec = {"step": int(trainer.global_step), "epoch": int(trainer.current_epoch),
               "val_loss": float(m["val/loss"]), "val_psnr": float(m["val/psnr"])}
        rec.update(self.evaluate(pl_module))
        self.records.append(rec)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # average ranks of ties
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks, ties averaged)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var > 0 else float("nan")


def selection_analysis(curve: list[dict], min_validations: int = 5) -> dict:
    """How robust the self-supervised pick is, from the recorded curve (no retraining).

    * ``worst_prefix_gap_db``: the largest test-split gap (oracle − self-supervised) had the run been
      stopped after any number ``k >= min_validations`` of validations (selection among the first ``k``
      checkpoints), and the ``k`` where it happens;
    * ``spearman_loss_psnr``: rank correlation of ``-val/loss`` with ``val/psnr`` over all validations;
    * ``spearman_loss_test``: the same with the test PSNR.
    """
    worst, worst_k = 0.0, None
    for k in range(min(min_validations, len(curve)), len(curve) + 1):
        sub = curve[:k]
        by_loss = min(sub, key=lambda r: r["val_loss"])
        by_psnr = max(sub, key=lambda r: r["val_psnr"])
        gap = by_psnr["test_psnr"] - by_loss["test_psnr"]
        if worst_k is None or gap > worst:
            worst, worst_k = gap, k
    neg_loss = [-r["val_loss"] for r in curve]
    return {"worst_prefix_gap_db": worst, "worst_prefix_k": worst_k, "min_validations": min_validations,
            "spearman_loss_psnr": spearman(neg_loss, [r["val_psnr"] for r in curve]),
            "spearman_loss_test": spearman(neg_loss, [r["test_psnr"] for r in curve])}


def test_measurements(task: str, cfg) -> MeasurementDataset:
    """Fixed non-overlapping crops of the ``natural-gray`` test images through the task's physics."""
    physics = engine.build_physics(cfg)
    images = load_dataset(cfg.data.dataset, split="test").images
    x = fixed_crops(images, cfg.data.patch_size)
    return MeasurementDataset(x, physics, seed=TEST_SEED, keep_ground_truth=True)


def run_config(row: str, steps: int, val_every_steps: int, workdir: Path) -> dict:
    task, losses = ROWS[row]
    t = TASKS[task]
    train_fraction = 1.0 - t["data"]["val_fraction"]
    # one epoch = val_every_steps steps: validation (and checkpointing) happens every epoch
    num_patches = int(math.ceil(val_every_steps * t["data"]["batch_size"] / train_fraction))
    return {
        "data": {**t["data"], "num_patches": num_patches, "seed": 0},
        "physics": t["physics"],
        "model": {"backbone": BACKBONE, "reconstructor": {"name": "back_projection", "args": {"init": "dagger"}}},
        "losses": losses,
        "optim": {"lr": 1e-3, "scheduler": "none"},
        "trainer": {"max_steps": steps, "seed": 0, "output_dir": str(workdir / row), "progress_bar": False,
                    "figures": False, "log_every_n_steps": 10, "early_stopping_patience": 0,
                    "accelerator": "cpu", "deterministic": False},
        "select_by": "val/loss",
    }


def load_weights(module: pl.LightningModule, path: str) -> None:
    state = read_checkpoint(path)["state_dict"]  # weights-only load: a checkpoint is data
    module.load_state_dict(state)


def run_row(row: str, steps: int, val_every_steps: int, workdir: Path) -> dict:
    task, _ = ROWS[row]
    raw = run_config(row, steps, val_every_steps, workdir)
    cfg = from_dict(copy.deepcopy(raw))
    test = test_measurements(task, cfg)
    evaluator = TestEvaluator(test)
    t0 = time.perf_counter()
    trainer, module = engine.fit(cfg, extra_callbacks=[evaluator])
    wall = time.perf_counter() - t0
    recs = evaluator.records
    if not recs:
        raise RuntimeError(f"{row}: no validation happened (steps {steps} < val_every_steps {val_every_steps}?)")
    by_loss = min(recs, key=lambda r: r["val_loss"])
    by_psnr = max(recs, key=lambda r: r["val_psnr"])
    best_test = max(recs, key=lambda r: r["test_psnr"])
    csv = Path(cfg.trainer.output_dir) / "logs" / "metrics.csv"
    val_gap = selection_gap(str(csv))
    # cross-check with the engine's own selection: reload its best checkpoint file
    best_path = trainer.checkpoint_callback.best_model_path
    load_weights(module, best_path)
    ckpt_eval = evaluator.evaluate(module)
    noisy = float(torch.stack([psnr(engine.build_physics(cfg).A_dagger(it["y"][None]), it["x"][None])[0]
                               for it in (test[i] for i in range(len(test)))]).mean())
    steps_ms = [1e3 * s for s in evaluator.step_seconds[5:]] or [1e3 * s for s in evaluator.step_seconds]
    return {
        "row": row, "task": task, "losses": [l["name"] for l in raw["losses"]], "config": raw,
        "steps": int(trainer.global_step), "validations": len(recs), "val_every_steps": val_every_steps,
        "n_test": len(test), "test_psnr_dagger": noisy,
        "by_val_loss": by_loss, "by_val_psnr": by_psnr, "best_test": best_test, "final": recs[-1],
        "gap_test_db": by_psnr["test_psnr"] - by_loss["test_psnr"],
        "gap_val_db": val_gap["gap_db"], "selection_gap_csv": val_gap,
        "engine_checkpoint": {"path": best_path, **ckpt_eval},
        "step_ms_median": statistics.median(steps_ms), "wall_s": wall, "curve": recs,
        "analysis": selection_analysis(recs),
    }


def render(results: dict[str, dict], args: argparse.Namespace, env: dict, command: str) -> str:
    header = ["run", "steps", "every", "vals", "A†y", "test @min val/loss", "test @max val/psnr", "gap test (dB)",
              "gap val (dB)", "best test (any ckpt)", "final", "engine ckpt", "worst prefix gap", "ρ(-loss, psnr)", "ms/step", "vs sup."]
    rows = []
    for name, r in results.items():
        a = r.setdefault("analysis", selection_analysis(r["curve"]))
        sup = results.get(f"{r['task']}-supervised")
        ratio = "-" if sup is None else f"{r['step_ms_median'] / sup['step_ms_median']:.2f}x"
        rows.append([name, r["steps"], r["val_every_steps"], r["validations"], f"{r['test_psnr_dagger']:.2f}",
                     f"{r['by_val_loss']['test_psnr']:.2f} (s{r['by_val_loss']['step']})",
                     f"{r['by_val_psnr']['test_psnr']:.2f} (s{r['by_val_psnr']['step']})",
                     f"{r['gap_test_db']:+.2f}", f"{r['gap_val_db']:+.2f}",
                     f"{r['best_test']['test_psnr']:.2f} (s{r['best_test']['step']})",
                     f"{r['final']['test_psnr']:.2f}", f"{r['engine_checkpoint']['test_psnr']:.2f}",
                     f"{a['worst_prefix_gap_db']:+.2f} (k={a['worst_prefix_k']})", f"{a['spearman_loss_psnr']:.2f}",
                     f"{r['step_ms_median']:.1f}", ratio])
    md = [f"# Checkpoint selection by the self-supervised validation loss{' (QUICK smoke run)' if args.quick else ''}",
          "",
          "Target: selection by the self-supervised validation loss must land within "
          f"{TOLERANCE_DB} dB of selection by true PSNR. Each run trains through `engine.fit`, validates every "
          "epoch (*every* column, in steps) on a held-out 10 % of the measurements (`val/loss`, with `val/psnr` "
          "logged beside it from the ground truth) and, right after each validation, is evaluated on the "
          "**test split** of `natural-gray` (non-overlapping crops of camera, coins, flower; measurements "
          f"simulated once, seed {TEST_SEED}). PSNR in dB, (sN) = step of the chosen checkpoint.",
          "",
          markdown_table(header, rows),
          "",
          "Columns: *test @min val/loss* = test PSNR of the checkpoint the self-supervised criterion selects "
          "(no ground truth); *test @max val/psnr* = test PSNR of the checkpoint selected with ground truth "
          "on the val split; *gap test* = their difference (the reported number; positive = the "
          "self-supervised pick is worse); *gap val* = the same gap measured on the val split "
          "(`selfinv.report.selection_gap` on the run's metrics.csv); *best test* = best checkpoint on the "
          "test set itself (a bound no rule reaches without test labels); *engine ckpt* = the engine's own "
          "best checkpoint file (ModelCheckpoint on val/loss) reloaded and evaluated on the test split (must "
          "equal the first column); *worst prefix gap* = the largest test gap had the run been stopped after any "
          "k ≥ 5 validations (selection among the first k checkpoints; computed from the recorded curve, no "
          "retraining), with that k; *ρ(-loss, psnr)* = Spearman rank correlation of −val/loss with val/psnr over "
          "all validations; *ms/step* = median training-step time, *vs sup.* = ratio to the "
          "supervised step of the same task in this run.",
          ""]
    notes = ["## Verdict", ""]
    for name, r in results.items():
        if r["losses"] == ["supervised"]:
            a = r["analysis"]
            if a["worst_prefix_gap_db"] > TOLERANCE_DB:
                sub = r["curve"][:a["worst_prefix_k"]]
                bl, bp = min(sub, key=lambda c: c["val_loss"]), max(sub, key=lambda c: c["val_psnr"])
                notes.append(
                    f"* reference **{name}**: even the supervised validation loss (MSE on the val split) would miss "
                    f"by {a['worst_prefix_gap_db']:+.2f} dB had the run stopped after k = {a['worst_prefix_k']} "
                    f"validations: it picks step {bl['step']} (val loss {bl['val_loss']:.5f}, val PSNR "
                    f"{bl['val_psnr']:.2f}, test {bl['test_psnr']:.2f}) over step {bp['step']} (val loss "
                    f"{bp['val_loss']:.5f}, val PSNR {bp['val_psnr']:.2f}, test {bp['test_psnr']:.2f}): with a small "
                    "val split, near-equal mean squared errors can hide different mean PSNRs (the mean of a log is "
                    "not the log of the mean) — a limit of loss-based selection itself, not of self-supervision.")
            continue
        sup = results.get(f"{r['task']}-supervised")
        ok = r["gap_test_db"] <= TOLERANCE_DB
        line = (f"* **{name}**: gap {r['gap_test_db']:+.2f} dB on the test split "
                f"({'within' if ok else 'NOT within'} {TOLERANCE_DB} dB), {r['gap_val_db']:+.2f} dB on the val split.")
        if sup is not None:
            line += (f" Quality against the supervised model (same network, data, {sup['steps']} steps): "
                     f"{r['by_val_loss']['test_psnr']:.2f} vs {sup['by_val_loss']['test_psnr']:.2f} dB "
                     f"({r['by_val_loss']['test_psnr'] - sup['by_val_loss']['test_psnr']:+.2f} dB).")
        consistent = abs(r["engine_checkpoint"]["test_psnr"] - r["by_val_loss"]["test_psnr"]) < 1e-3
        if not consistent:
            line += (" WARNING: the engine's best checkpoint does not reproduce the loss-selected evaluation "
                     f"({r['engine_checkpoint']['test_psnr']:.3f} vs {r['by_val_loss']['test_psnr']:.3f} dB).")
        a = r["analysis"]
        line += (f" Stopped after any k ≥ {a['min_validations']} validations, the worst gap would have been "
                 f"{a['worst_prefix_gap_db']:+.2f} dB (k = {a['worst_prefix_k']}); Spearman ρ(−val/loss, val/psnr) = "
                 f"{a['spearman_loss_psnr']:.2f}, ρ(−val/loss, test PSNR) = {a['spearman_loss_test']:.2f}.")
        last = r["curve"][-1]["step"]
        tail = 3 * r["val_every_steps"]
        if last - r["by_val_loss"]["step"] < tail and last - r["by_val_psnr"]["step"] < tail:
            line += (" Caveat: both picks lie in the last 3 validations — the run is still improving at the end of "
                     "its budget, so the full-run gap mostly tests the final stretch; the prefix figure is the "
                     "stronger evidence. Long runs that overfit few measurements are not covered here.")
        if not ok:
            line += (f" The self-supervised pick is step {r['by_val_loss']['step']}, the PSNR pick step "
                     f"{r['by_val_psnr']['step']}: see the curve in the JSON for where val/loss and val/psnr "
                     "disagree.")
        notes.append(line)
    notes += ["", "## Setup", "",
              "* budget: the *steps* column (same for a task's self-supervised and supervised runs), Adam lr 1e-3, constant (no scheduler, so the "
              "curves fluctuate and selection has something to choose), batch 16, seed 0; "
              "UNet(scales=3, 16 base channels, no batch norm) + BackProjection(A†).",
              "* denoising: σ = 0.1, 48×48 patches, SURE with the Monte-Carlo divergence (τ = 0.01); "
              "inpainting: 50 % of the pixels kept (new mask per measurement), σ = 0.01, 32×32 patches, "
              "MC + EI over shifts. Training measurements are random patches of the natural-gray train "
              "images, as many as make one epoch = *every* steps "
              + ", ".join(f"({n}: {r['config']['data']['num_patches']} patches)" for n, r in results.items())
              + "; 10 % of the measurements are held out for validation.",
              "* the validation loss is evaluated with a generator re-seeded at each validation "
              "(SURE's Monte-Carlo probe and EI's transforms are the same at every validation).",
              f"* threads: {env['torch_threads']}, load average at the end: {env.get('load_average')}.",
              f"* command: `{command}`"]
    return "\n".join(md + notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget (smoke test)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", default=None, help=f"substrings of rows to run, rows: {list(ROWS)}")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimisation steps of every run (default per task: denoising 500, inpainting 600; quick 20)")
    ap.add_argument("--val-every-steps", type=int, default=None, help="steps per epoch = between validations "
                    "(default per task: denoising 25, inpainting 30; quick 5)")
    ap.add_argument("--workdir", default=None, help="folder for the runs' logs/checkpoints (default: a temp dir)")
    ap.add_argument("--render-from", default=None, metavar="JSON",
                    help="no training: rewrite the Markdown (and the analysis in the JSON) from a saved JSON")
    args = ap.parse_args(argv)
    if args.render_from:
        saved = json.loads(Path(args.render_from).read_text())
        args.quick = saved["quick"]
        command = " ".join(saved["command"]) + f"  (Markdown re-rendered from the JSON by: {' '.join(sys.argv)})"
        md = render(saved["results"], args, saved["env"], command)
        out = write_results(args.out or Path(args.render_from).parent, NAME, saved, md)
        print(md)
        print(f"wrote {out / (NAME + '.md')} and {out / (NAME + '.json')}")
        return 0
    setup(0, args.threads)
    rows = [r for r in ROWS if args.only is None or any(s in r for s in args.only)]
    if not rows:
        ap.error(f"--only {args.only} matches no row of {list(ROWS)}")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="selfinv-valsel-"))
    results: dict[str, dict] = {}
    for row in rows:
        task = TASKS[ROWS[row][0]]
        steps = args.steps or (20 if args.quick else task["steps"])
        every = args.val_every_steps or (5 if args.quick else task["val_every_steps"])
        print(f"[{NAME}] {row}: {steps} steps, validation every {every}", flush=True)
        r = run_row(row, steps, every, workdir)
        results[row] = r
        print(f"[{NAME}] {row}: test @min val/loss {r['by_val_loss']['test_psnr']:.2f} dB, "
              f"@max val/psnr {r['by_val_psnr']['test_psnr']:.2f} dB, gap {r['gap_test_db']:+.2f} dB, "
              f"{r['step_ms_median']:.1f} ms/step, {r['wall_s']:.0f} s", flush=True)
    env = environment()
    md = render(results, args, env, " ".join(sys.argv))
    data = {"name": NAME, "quick": args.quick, "tolerance_db": TOLERANCE_DB, "threads": args.threads, "env": env,
            "workdir": str(workdir), "command": sys.argv, "results": results}
    out = write_results(args.out, NAME, data, md)
    print(md)
    print(f"wrote {out / (NAME + '.md')} and {out / (NAME + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
