"""Training-step benchmark of every selfinv loss, side by side with DeepInverse, and the engine's overhead.

One full training step (forward, loss, backward, Adam step) per self-supervised
loss, on the reference workload ../shared/anchor/bench_losses.py (a batch of
8x1x64x64 images ``x ~ U[0, 1)`` (seed 1), σ = 0.1, gain γ = 0.1, Adam, 2 torch
threads). selfinv runs its **default network** (``selfinv.config.DEFAULT_BACKBONE``,
channels-last) behind ``BackProjection(init="adjoint")`` in its **default precision**
(``precision: auto``: bf16 autocast where the CPU has bf16 units; the physics stays in
float32); deepinv its anchor script (UNet(1, 1, scales=3), 2,069,441 parameters, fp32).
Every loss starts from the same initial weights; the measurement is simulated once,
outside the timed step; median over ``--steps`` steps after ``--warmup`` untimed ones.
The ratio columns divide by the supervised step *of the same network and library*
(the blind-spot loss needs ``BlindSpotNet`` and the autoencoder loss
``BottleneckAutoencoder``; each gets its own supervised reference row):
``x supervised`` and ``x (evals x sup.)`` = step / (declared evaluations × supervised
step), which is 1 when the network evaluations are the only cost.

**Engine overhead**: the supervised and SURE steps are also run through the Lightning
engine (``engine.fit`` on the same batch size and network), timed as the interval
between consecutive ``on_train_batch_end`` calls (so data loading, logging, the
divergence record and every hook are inside), and compared to the bare step measured
in the same run, in ``--engine-rounds`` rounds that alternate bare and engine (the
median of the rounds' ratios: a 2-core machine drifts by 10-15 % within minutes).

Network evaluations per step are given twice: declared by the loss
(``loss.evaluations_per_step``, evaluations *with* gradient) and counted for real
by wrapping the reconstructor with ``EvaluationCounter`` (``+k`` = extra
evaluations without gradient, e.g. Neighbor2Neighbor's regulariser target).

The deepinv side is the anchor script run in its own virtual environment in a
subprocess right after ours (same machine, same threads, same steps); its rows
are matched to ours by name (``ANCHOR_NAME``); speed-up = deepinv ms / selfinv ms
(> 1: selfinv is faster).

Usage:
    python benchmarks/loss_steps.py [--out DIR] [--steps 20] [--warmup 3]
        [--only SUBSTRING ...] [--no-deepinv] [--quick] [--engine-rounds 3]
        [--deepinv-python ../.venv-deepinv/bin/python] [--anchor PATH]

Writes DIR/loss_steps.md and DIR/loss_steps.json (DIR defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfinv import losses as L  # noqa: E402
from selfinv import physics as P  # noqa: E402
from selfinv import transforms as T  # noqa: E402
from selfinv.config import DEFAULT_BACKBONE, from_dict  # noqa: E402
from selfinv.models import BackProjection, BlindSpotNet, BottleneckAutoencoder, UNet  # noqa: E402
from selfinv.training.optimizers import adam  # noqa: E402
from selfinv.training.precision import resolve_precision  # noqa: E402

from common import anchor_script, deepinv_python, environment, markdown_table, setup, write_results  # noqa: E402

B, C, H = 8, 1, 64
SIGMA, GAIN = 0.1, 0.1
GAMMA_SHAPE = 100.0  # Gamma noise y ~ G(ℓ, ℓ/x): relative std 1/sqrt(ℓ) = 0.1, like σ
LR = 2e-3
DEFAULT_DEEPINV_PYTHON = deepinv_python()
DEFAULT_ANCHOR = anchor_script("bench_losses.py")
NETWORKS = ("UNet", "BlindSpotNet", "BottleneckAutoencoder")


def make_backbone(network: str) -> nn.Module:
    """The backbone of a case (UNet = selfinv's default network)."""
    if network == "UNet":
        return UNet(1, 1, **DEFAULT_BACKBONE)
    if network == "BlindSpotNet":
        return BlindSpotNet(1, 1)
    if network == "BottleneckAutoencoder":
        return BottleneckAutoencoder(1, 1)
    raise ValueError(f"unknown network {network!r}, expected one of {NETWORKS}")


class EvaluationCounter(nn.Module):
    """Wraps a reconstructor ``model(y, physics)`` and counts its evaluations, with and without gradient, in
    batches (a call on a doubled batch, SURE's two evaluations in one pass, counts two)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.with_grad = 0
        self.without_grad = 0

    def reset(self) -> None:
        self.with_grad = self.without_grad = 0

    def forward(self, y: Tensor, physics) -> Tensor:
        n = round(y.shape[0] / B)
        if torch.is_grad_enabled():
            self.with_grad += n
        else:
            self.without_grad += n
        return self.model(y, physics)


# ---------------------------------------------------------------------------- the workloads

@dataclass
class Case:
    """One row: a loss on a physics; ``measure(x, gen)`` returns ``(y, physics, extra loss kwargs)``."""

    name: str
    network: str
    make_loss: Callable[[], L.Loss]
    measure: Callable[[Tensor, torch.Generator], tuple]
    anchor: str | None = None  # the anchor's row name for the same workload
    note: str = ""
    reference: bool = False  # the supervised reference of its network
    extra: dict = field(default_factory=dict)


def _simulate(physics) -> Callable:
    def measure(x, gen):
        return physics(x, gen), physics, {}
    return measure


def _simulate_pair(physics) -> Callable:
    """Noise2Noise: two independent noisy copies of the same x."""
    def measure(x, gen):
        return physics(x, gen), physics, {"y2": physics(x, gen)}
    return measure


def _simulate_per_sample(physics) -> Callable:
    """A batch measured with B different operators (per-sample masks)."""
    def measure(x, gen):
        op = physics.resample(x.shape[0], gen, device=x.device)
        return op(x, gen), op, {}
    return measure


def cases() -> list[Case]:
    gauss = lambda: P.Denoising(P.GaussianNoise(SIGMA))  # noqa: E731
    poisson = lambda: P.Denoising(P.PoissonNoise(GAIN))  # noqa: E731
    pg = lambda: P.Denoising(P.PoissonGaussianNoise(GAIN, SIGMA))  # noqa: E731
    gamma = lambda: P.Denoising(P.GammaNoise(GAMMA_SHAPE))  # noqa: E731

    def inpaint(noise=None):  # 50 % of the pixels; the construction-time mask is fixed (seed 0)
        return P.Inpainting((C, H, H), keep_ratio=0.5, noise=noise, generator=torch.Generator().manual_seed(0))

    down = lambda: P.Downsampling((C, H, H), factor=2, filter="bicubic", noise=P.GaussianNoise(SIGMA))  # noqa: E731
    # the anchor rotates by any angle with nearest-neighbour interpolation (deepinv 0.5.0 default)
    rotate = lambda: T.Rotate(multiples_of_90=False, interpolation="nearest")  # noqa: E731
    mc = L.MeasurementConsistency
    ws = L.WeightedSum
    sure = L.SURE
    return [
        Case("supervised (UNet)", "UNet", L.SupervisedLoss, _simulate(gauss()),
             "supervised MSE (denoising)", reference=True),
        Case("MC (denoising)", "UNet", mc, _simulate(gauss())),
        Case("Noise2Noise", "UNet", L.Noise2Noise, _simulate_pair(gauss())),
        Case("R2R Gaussian", "UNet", lambda: L.R2R("gaussian", alpha=0.15), _simulate(gauss()), "R2R"),
        Case("R2R Poisson", "UNet", lambda: L.R2R("poisson", alpha=0.15), _simulate(poisson())),
        Case("R2R Gamma", "UNet", lambda: L.R2R("gamma", alpha=0.15), _simulate(gamma()),
             note="ℓ = 100"),
        Case("SURE Gaussian (MC div.)", "UNet", lambda: sure("gaussian"), _simulate(gauss()), "SURE Gaussian"),
        Case("SURE Poisson (MC div.)", "UNet", lambda: sure("poisson"), _simulate(poisson()), "SURE Poisson",
             note="the default: the 2nd-order term (3 evaluations) makes it exact for affine networks, bias "
                  "O(γ³) instead of O(γ²)"),
        Case("SURE Poisson, 1st order (MC div.)", "UNet", lambda: sure("poisson", second_order=False),
             _simulate(poisson()), note="second_order: false — 2 evaluations, deepinv's form"),
        Case("SURE Poisson-Gaussian (MC div.)", "UNet", lambda: sure("poisson_gaussian"), _simulate(pg()),
             "SURE Poisson-Gaussian", note="2nd-order term: 3 evaluations"),
        Case("UNSURE (gaussian)", "UNet", lambda: L.UNSURE("gaussian"), _simulate(gauss()), "UNSURE (Gaussian)"),
        Case("Noise2Score", "UNet", lambda: L.Noise2Score("gaussian"), _simulate(gauss()),
             "Noise2Score (ScoreLoss)"),
        Case("splitting (N2V, 10 % hidden)", "UNet", lambda: L.SplittingLoss(mask_prob=0.1), _simulate(gauss()),
             "SplittingLoss (N2V-style, denoising)", note="deepinv: split_ratio 0.9"),
        Case("Neighbor2Neighbor", "UNet", L.Neighbor2Neighbor, _simulate(gauss()), "Neighbor2Neighbor"),
        Case("MC + EI rotate (inpainting 50 %)", "UNet", lambda: ws([mc(), L.EquivariantImaging(rotate())]),
             _simulate(inpaint()), "MC + EI Rotate (inpainting)"),
        Case("MC + EI shift (inpainting 50 %)", "UNet", lambda: ws([mc(), L.EquivariantImaging(T.Shift())]),
             _simulate(inpaint()), "MC + EI Shift (inpainting)"),
        Case("MC + MOI (inpainting, per-sample masks)", "UNet", L.MultiOperatorImaging,
             _simulate_per_sample(inpaint()), "MC + MOI (4 inpainting masks)",
             note="deepinv: 4 fixed masks; selfinv: a fresh mask per sample"),
        Case("MC + MOI + EI rotate (per-sample masks)", "UNet",
             lambda: ws([L.MultiOperatorImaging(), L.EquivariantImaging(rotate())]),
             _simulate_per_sample(inpaint()), "MC + MOEI Rotate (4 masks)",
             note="deepinv: MOEILoss (one term), 4 fixed masks"),
        Case("SSDU (inpainting, per-sample masks)", "UNet", L.SSDUSplitting, _simulate_per_sample(inpaint())),
        Case("REI (SURE + EI shift, noisy inpainting)", "UNet",
             lambda: L.RobustEquivariantImaging(sure("gaussian"), T.Shift()),
             _simulate(inpaint(P.GaussianNoise(SIGMA)))),
        Case("SEI (SURE + scale EI, x2 bicubic)", "UNet", lambda: L.ScaleEquivariantImaging(sure("gaussian")),
             _simulate(down()), "SURE + EI Scale (SEI, x2 downsampling)"),
        Case("supervised (BlindSpotNet)", "BlindSpotNet", L.SupervisedLoss, _simulate(gauss()), reference=True),
        Case("blind-spot", "BlindSpotNet", L.BlindSpotLoss, _simulate(gauss())),
        Case("supervised (BottleneckAutoencoder)", "BottleneckAutoencoder", L.SupervisedLoss, _simulate(gauss()),
             reference=True),
        Case("autoencoder", "BottleneckAutoencoder", L.AutoencoderLoss, _simulate(gauss())),
    ]


# ---------------------------------------------------------------------------- timing

def autocast(precision: str):
    """The autocast context of a Lightning precision string on the CPU."""
    import contextlib

    if precision == "bf16-mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bare_stepper(case: Case, init_states: dict, x: Tensor, precision: str):
    """``(step, model, loss_fn, backbone)``: one bare training step of ``case`` (forward, loss, backward, Adam)
    on a fixed simulated batch, from the shared initial weights; ``step()`` returns the loss value."""
    setup(0)
    gen = torch.Generator(device=x.device).manual_seed(1)
    backbone = make_backbone(case.network).to(x.device)
    backbone.load_state_dict(init_states[case.network])
    backbone = backbone.to(memory_format=torch.channels_last)
    model = EvaluationCounter(BackProjection(backbone, init="adjoint")).train()
    loss_fn = case.make_loss().to(x.device).train()
    xin = x.clamp_min(1e-3) if "Gamma" in case.name else x  # Gamma noise needs x > 0
    y, physics, extra = case.measure(xin, gen)
    loss_fn.check(physics)
    opt = adam(model.parameters(), lr=LR)  # the engine's optimiser

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = loss_fn(y, physics, model, x=xin, generator=gen, **extra)
        loss.backward()
        opt.step()
        return loss.item()

    return step, model, loss_fn, backbone


def run_case(case: Case, init_states: dict, x: Tensor, warmup: int, steps: int, precision: str) -> dict:
    """Time ``steps`` training steps after ``warmup``; count the network evaluations of one step."""
    step, model, loss_fn, backbone = bare_stepper(case, init_states, x, precision)
    model.reset()
    step()  # first warm-up step: count the evaluations
    counted = (model.with_grad, model.without_grad)
    for _ in range(max(warmup - 1, 0)):
        step()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times, last = [], float("nan")
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        last = step()
        sync()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "loss": case.name, "network": case.network, "loss_class": type(loss_fn).__name__,
        "median_ms": 1e3 * statistics.median(times), "q1_ms": 1e3 * q[0], "q3_ms": 1e3 * q[2],
        "min_ms": 1e3 * min(times), "steps": len(times), "last_loss": last,
        "declared_evaluations": int(loss_fn.evaluations_per_step),
        "counted_evaluations_with_grad": counted[0], "counted_evaluations_without_grad": counted[1],
        "n_params": sum(p.numel() for p in backbone.parameters()),
        "anchor": case.anchor, "note": case.note, "reference": case.reference,
    }


ENGINE_LOSSES = {"supervised (UNet)": [{"name": "supervised"}], "SURE Gaussian (MC div.)": [{"name": "sure"}]}


def run_engine(name: str, warmup: int, steps: int, work: Path, bare=None) -> dict:
    """The same step through ``engine.fit`` (default network, precision, schedule; batch B), timed between
    consecutive ``on_train_batch_end`` calls: everything the engine does per step is inside.

    ``bare`` (a ``bare_stepper`` step): also run one bare step inside each ``on_train_batch_end``, timed on
    its own and left out of the engine's interval, so that engine and bare steps alternate one by one and a
    drift of the machine's speed falls on both alike (``paired_*``)."""
    import lightning.pytorch as pl

    from selfinv.data.measurements import MeasurementDataset
    from selfinv.training import engine

    setup(0)
    g = torch.Generator().manual_seed(2)
    xs = torch.rand(64 * B, C, H, H, generator=g)
    ys = xs + SIGMA * torch.randn(xs.shape, generator=g)
    path = work / "engine_measurements.npz"
    if not path.exists():
        MeasurementDataset.from_tensors(ys, x=xs).save(path)

    class Intervals(pl.Callback):
        def __init__(self) -> None:
            self.t: list[float] = []
            self.bare: list[float] = []
            self.last: float | None = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self.last is not None:
                self.t.append(now - self.last)
            if bare is not None:
                t0 = time.perf_counter()
                bare()
                now = time.perf_counter()
                self.bare.append(now - t0)
            self.last = now

    cfg = from_dict({"data": {"path": str(path), "dataset": None, "normalize": "none", "batch_size": B,
                              "val_fraction": 0.0},
                     "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": SIGMA}}},
                     "model": {"reconstructor": {"name": "back_projection", "args": {"init": "adjoint"}}},
                     "losses": ENGINE_LOSSES[name],
                     "trainer": {"max_steps": warmup + steps + 1, "accelerator": "cpu", "progress_bar": False,
                                 "figures": False, "output_dir": str(work / "engine"), "checkpoint_every": 1000}})
    cb = Intervals()
    trainer, _ = engine.fit(cfg, extra_callbacks=[cb])
    t = cb.t[warmup:]
    out = {"engine_median_ms": 1e3 * statistics.median(t), "engine_min_ms": 1e3 * min(t), "engine_steps": len(t),
           "engine_precision": str(trainer.precision)}
    if bare is not None:
        b = cb.bare[warmup + 1:]  # the bare step after engine step k follows it in time: pairs (t[k], b[k])
        out.update(paired_engine_ms=1e3 * statistics.median(t), paired_bare_ms=1e3 * statistics.median(b),
                   paired_ratio=statistics.median(t) / statistics.median(b),
                   paired_ratio_of_pairs=statistics.median(e / v for e, v in zip(t, b, strict=True)))
    return out


def engine_overhead(case: Case, init_states: dict, x: Tensor, warmup: int, steps: int, precision: str,
                    rounds: int, first_bare_ms: float) -> dict:
    """``rounds`` alternations of the bare step and the engine run of ``case`` (the first bare step is the row's
    own), each round's ratio engine median / bare median, and their median: on a 2-core machine the step time
    drifts by 10-15 % from one minute to the next, so a single bare-then-engine pair can put a slow minute on
    one side only."""
    bares, engines, ratios = [], [], []
    engine_min, precision_used = float("inf"), ""
    for i in range(max(1, rounds)):
        bare = first_bare_ms if i == 0 else run_case(case, init_states, x, warmup, steps, precision)["median_ms"]
        e = run_engine(case.name, warmup, steps, Path(tempfile.mkdtemp(prefix="loss-steps-")))
        bares.append(bare)
        engines.append(e["engine_median_ms"])
        ratios.append(e["engine_median_ms"] / bare)
        engine_min, precision_used = min(engine_min, e["engine_min_ms"]), e["engine_precision"]
    # and engine and bare steps alternating one by one in one run (a bare step inside each engine step's end)
    paired = run_engine(case.name, warmup, steps, Path(tempfile.mkdtemp(prefix="loss-steps-")),
                        bare=bare_stepper(case, init_states, x, precision)[0])
    return {"engine_median_ms": statistics.median(engines), "engine_min_ms": engine_min,
            "engine_precision": precision_used, "engine_overhead": statistics.median(ratios),
            "engine_ratios": ratios, "engine_bare_ms": bares, "engine_ms": engines,
            **{k: v for k, v in paired.items() if k.startswith("paired_")}}


def run_deepinv(python: str, anchor: str, names: list[str] | None, steps: int, warmup: int) -> tuple[dict, str]:
    """Run the anchor script in the deepinv environment; returns (its JSON, error message or '')."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [python, str(Path(anchor).name), "--out", tmp, "--steps", str(steps), "--warmup", str(warmup)]
        if names is not None:
            cmd += ["--only", *names]
        proc = subprocess.run(cmd, cwd=str(Path(anchor).parent), capture_output=True, text=True)
        out = Path(tmp) / "losses.json"
        if proc.returncode != 0 or not out.exists():
            return {}, f"deepinv run failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        return json.loads(out.read_text()), ""


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------- report

def merge(ours: list[dict], theirs: dict) -> None:
    """Attach deepinv's median (and ratio to its supervised step) to our rows, by anchor name."""
    by_name = {r["loss"]: r for r in theirs.get("results", [])}
    refs = {r["network"]: r["median_ms"] for r in ours if r.get("reference") and "median_ms" in r}
    for r in ours:
        if "median_ms" in r:
            ref = refs.get(r["network"])
            r["ratio_to_supervised"] = r["median_ms"] / ref if ref else None
        d = by_name.get(r.get("anchor") or "")
        if d is None:
            continue
        if "error" in d:
            r["deepinv_error"] = d["error"]
            continue
        r["deepinv_ms"] = d["median_ms"]
        r["deepinv_min_ms"] = d.get("min_ms")
        r["deepinv_ratio_to_supervised"] = d.get("ratio_to_supervised")
        r["deepinv_losses"] = d.get("losses")
        if "median_ms" in r:
            r["speedup"] = d["median_ms"] / r["median_ms"]
            if d.get("min_ms"):
                r["speedup_min"] = d["min_ms"] / r["min_ms"]


def engine_lines(ours: list[dict]) -> list[str]:
    """The engine-overhead table (engine step / bare step of the same loss and network, same run)."""
    def paired(r: dict) -> str:
        if "paired_ratio" not in r:
            return "-"
        return (f"{r['paired_engine_ms']:.1f} / {r['paired_bare_ms']:.1f} = {r['paired_ratio']:.3f} "
                f"({r['paired_ratio_of_pairs']:.3f})")

    rows = [[r["loss"], f"{statistics.median(r.get('engine_bare_ms', [r['median_ms']])):.1f}",
             f"{r['engine_median_ms']:.1f}", f"{r['engine_overhead']:.3f}",
             " / ".join(f"{v:.3f}" for v in r.get("engine_ratios", [r["engine_overhead"]])),
             f"{r['engine_min_ms'] / r['min_ms']:.3f}", paired(r), r["engine_precision"]]
            for r in ours if "engine_overhead" in r]
    if not rows:
        return []
    return ["## Engine overhead", "",
            "The same loss and network trained through `engine.fit` (default configuration, in-memory measurement "
            "file, batch 8), timed between consecutive `on_train_batch_end` calls (data loading, logging, the "
            "divergence record and every hook included), against the bare step of the same loss, in rounds that "
            "alternate the two (the first round's bare step is the table's above); `engine / bare` is the median "
            "of the rounds' ratios of medians, each round's ratio beside it; the bare and engine columns are "
            "medians over the rounds. `paired`: one more engine run in which a bare step (its own copy of the "
            "network and optimiser, on a fixed batch) runs inside every engine step's `on_train_batch_end`, timed "
            "apart and left out of the engine's interval, so the two alternate step by step and a drift of the "
            "machine falls on both: median engine ms / median bare ms = ratio (median of the step pairs' "
            "ratios).", "",
            markdown_table(["loss", "bare step ms", "engine step ms", "engine / bare", "rounds",
                            "engine / bare (minima)", "paired engine / bare", "precision"], rows), ""]


def _evals(r: dict) -> str:
    counted = str(r["counted_evaluations_with_grad"])
    if r["counted_evaluations_without_grad"]:
        counted += f" (+{r['counted_evaluations_without_grad']} no-grad)"
    return counted


def build_report(ours: list[dict], env: dict, deepinv_env: dict | None, notes: list[str], args,
                 load_before: str, load_after: str, precision: str) -> str:
    f1 = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    f2 = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    rows = []
    for r in ours:
        if "error" in r:
            rows.append([r["loss"], r["network"], "FAILED"] + ["-"] * 9)
            continue
        mismatch = "" if r["declared_evaluations"] == r["counted_evaluations_with_grad"] else " ≠"
        per_eval = (r["ratio_to_supervised"] / r["declared_evaluations"]
                    if r.get("ratio_to_supervised") and r["declared_evaluations"] else None)
        rows.append([r["loss"], r["network"], f1(r["median_ms"]), f1(r["min_ms"]), f2(r.get("ratio_to_supervised")),
                     f2(per_eval), str(r["declared_evaluations"]) + mismatch, _evals(r), f1(r.get("deepinv_ms")),
                     f1(r.get("deepinv_min_ms")), f2(r.get("deepinv_ratio_to_supervised")),
                     "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x",
                     "-" if r.get("speedup_min") is None else f"{r['speedup_min']:.2f}x"])
    header = ["loss (batch 8x1x64x64)", "network", "step ms", "min ms", "x supervised", "x (evals x sup.)",
              "evals declared",
              "evals counted", "deepinv ms", "deepinv min ms", "deepinv x sup.", "speed-up", "speed-up (min)"]
    lines = [
        "# Training step per loss (selfinv vs deepinv)", "",
        f"One full step (forward, loss, backward, Adam) on a batch of {B}x{C}x{H}x{H}, σ = {SIGMA}, "
        f"γ = {GAIN}; median of {args.steps} steps after {args.warmup} warm-up steps; "
        f"{env.get('torch_threads')} torch threads; CPU {env.get('cpu')}.",
        f"selfinv: its default network UNet(1, 1, **{DEFAULT_BACKBONE}) (channels-last) wrapped by "
        f"BackProjection(init='adjoint'), precision {precision}, physics in float32; deepinv: its anchor "
        "UNet(1, 1, scales=3) (2,069,441 parameters, fp32) in ArtifactRemoval(mode='adjoint'). Ratios compare each "
        "library with its own supervised step.",
        "`step ms` = median, `min ms` = fastest step (less sensitive to other jobs on the machine); "
        "`x supervised` = median step / median supervised step of the same network (and the same library); "
        "`evals declared` = `loss.evaluations_per_step` (with gradient; ≠ marks a mismatch with the count); "
        "`evals counted` = calls of the reconstructor in one step, counted by a wrapper; "
        "`speed-up` = deepinv ms / selfinv ms on medians, `speed-up (min)` on minima (> 1: selfinv faster).", "",
        markdown_table(header, rows), "", *engine_lines(ours),
        f"Load average before: `{load_before}`; after: `{load_after}` (2 cores shared with other jobs: "
        "under load > 2 the 2-thread steps slow down several-fold and unevenly, so compare "
        "ratios only when both load figures are below ~2; both sides were run back to back).",
        f"selfinv side: torch {env.get('torch')}, Python {env.get('python')}.",
    ]
    if deepinv_env:
        lines.append(f"deepinv side: torch {deepinv_env.get('torch')}, deepinv {deepinv_env.get('deepinv')}, "
                     f"{deepinv_env.get('torch_threads')} threads.")
    row_notes = [f"- {r['loss']}: {r['note']}" for r in ours if r.get("note")]
    if row_notes:
        lines += ["", "Notes on the workloads:", *row_notes]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per loss (median)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one is counted)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only the cases whose name contains one of these substrings (case-insensitive); "
                         "the supervised reference of each network used is always run")
    ap.add_argument("--no-deepinv", action="store_true", help="time selfinv only")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 timed steps, 1 warm-up")
    ap.add_argument("--precision", default="auto", help="selfinv's precision (default: auto, as a user gets)")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-overhead measurement")
    ap.add_argument("--engine-rounds", type=int, default=3,
                    help="rounds of (bare step, engine run) for the engine overhead; the table gives the median of "
                         "the rounds' ratios (default 3)")
    ap.add_argument("--deepinv-python", default=DEFAULT_DEEPINV_PYTHON)
    ap.add_argument("--anchor", default=DEFAULT_ANCHOR, help="the anchor bench_losses.py")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    if args.steps < 1 or args.warmup < 1:
        ap.error(f"--steps and --warmup must be >= 1, got {args.steps}, {args.warmup}")

    setup(0)
    load_before = uptime()
    selected = cases()
    if args.only:
        keys = [k.lower() for k in args.only]
        wanted = [c for c in selected if any(k in c.name.lower() for k in keys)]
        nets = {c.network for c in wanted}
        selected = [c for c in selected if c in wanted or (c.reference and c.network in nets)]
        if not wanted:
            ap.error(f"--only {args.only} matches no case; names: {[c.name for c in cases()]}")
    init_states = {}
    for net in sorted({c.network for c in selected}):
        torch.manual_seed(0)
        init_states[net] = {k: v.clone() for k, v in make_backbone(net).state_dict().items()}
    x = torch.rand(B, C, H, H, generator=torch.Generator().manual_seed(1))

    precision = resolve_precision(args.precision, "cpu")
    ours = []
    for case in selected:
        try:
            r = run_case(case, init_states, x, args.warmup, args.steps, precision)
        except Exception as e:  # record and continue
            print(f"{case.name}: FAILED {type(e).__name__}: {e}", flush=True)
            ours.append({"loss": case.name, "network": case.network, "anchor": case.anchor,
                         "error": f"{type(e).__name__}: {e}"})
            continue
        if case.name in ENGINE_LOSSES and not args.no_engine:
            r.update(engine_overhead(case, init_states, x, args.warmup, args.steps, precision, args.engine_rounds,
                                     r["median_ms"]))
        ours.append(r)
        print(f"{case.name:45s} {r['median_ms']:8.1f} ms  evals {r['declared_evaluations']} / {_evals(r)}"
              + (f"  engine {r['engine_median_ms']:.1f} ms (x{r['engine_overhead']:.3f})" if "engine_overhead" in r
                 else ""), flush=True)

    notes: list[str] = []
    theirs, deepinv_env = {}, None
    if not args.no_deepinv:
        if not Path(args.deepinv_python).exists():
            notes.append(f"deepinv not run: {args.deepinv_python} does not exist")
        else:
            names = sorted({c.anchor for c in selected if c.anchor} | {"supervised MSE (denoising)"})
            print("running the deepinv anchor ...", flush=True)
            theirs, err = run_deepinv(args.deepinv_python, args.anchor, names, args.steps, args.warmup)
            if err:
                notes.append(err)
            deepinv_env = theirs.get("env")
            for d in theirs.get("results", []):
                if "error" in d:
                    notes.append(f"deepinv {d['loss']}: {d['error']}")
    merge(ours, theirs)
    load_after = uptime()
    env = environment()
    report = build_report(ours, env, deepinv_env, notes, args, load_before, load_after, precision)
    out = write_results(args.out, "loss_steps", {
        "env": env, "deepinv_env": deepinv_env, "uptime_before": load_before, "uptime_after": load_after,
        "workload": {"batch": [B, C, H, H], "sigma": SIGMA, "gain": GAIN, "gamma_shape": GAMMA_SHAPE,
                     "lr": LR, "steps": args.steps, "warmup": args.warmup, "precision": precision,
                     "model": f"BackProjection(UNet(1, 1, **{DEFAULT_BACKBONE}), init='adjoint')"},
        "results": ours, "deepinv_results": theirs.get("results", []), "notes": notes}, report)
    print("\n" + report)
    print(f"\nwritten to {out}/loss_steps.md and loss_steps.json")


if __name__ == "__main__":
    main()
