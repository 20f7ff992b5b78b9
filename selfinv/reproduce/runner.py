"""``selfinv reproduce``: train every claim's networks through the engine, cache each finished row, report.

One command reproduces the claims of the tutorial and of the papers it cites
(``selfinv.reproduce.denoising``, ``.incomplete``, ``.sei``, ``.theory``)::

    selfinv reproduce [--quick] [--only PATTERN] [--device cuda]

Every trained row is one YAML file of ``configs/claims/`` (``selfinv fit --config
configs/claims/X.yaml`` trains the same network) run by ``selfinv.training.engine.fit``,
then evaluated on its task's fixed test set with the loss's test-time estimator.
During training a callback evaluates the test set after every validation (the
PSNR-vs-steps curve, beside ``val/loss``); at the end the final weights and the
engine's own ``best-*.ckpt`` (selected by ``val/loss``) are evaluated.

Cache (``runs/reproduce/cache/``): one ``ROW__KEY.json`` per finished row (written last,
atomically; a ``.npz`` beside it holds the reconstruction shown in the figures), where
``KEY`` hashes the row's full resolved config, its test set and the code version (the
sources of the library, the engine and this package, not the report). A rerun skips
finished rows; a killed run loses only the rows it was training. Training folders
(checkpoints, logs) are under ``runs/reproduce/runs/``.

Workers (``--workers``): on a CPU every available core trains its own row, one torch thread
each, in a worker process (``plan_workers``): the claim networks are too small for a second
thread to pay, so two cores finish the table in about half the time of one process.

Size presets: ``cpu`` (default: the YAML files as they are, sized for a 2-core CPU),
``quick`` (``--quick``: a few dozen steps per row, a smoke test of the whole pipeline, not
a measurement) and ``gpu`` (``--device cuda``: 4x the steps and training data, twice the
patch size for the photograph tasks and the default 32-channel U-Net). Reports:
``benchmarks/results/claims.md|json`` (``claims_quick``, ``claims_gpu`` for the other
presets) and PNG figures in ``benchmarks/results/claims/``.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from selfinv.reproduce.claims import Claim, Row, Task, TestSpec

PRESETS = ("quick", "cpu", "gpu")
#: bump when the evaluation protocol changes (invalidates the cache)
EVAL_VERSION = 1
#: seed of the test-time estimators' random draws (R2R recorruptions, SSDU splits)
ESTIMATOR_SEED = 99
#: a supervised reference is converged when the last 20 % of its steps gain less than this (dB)
CONVERGENCE_DB = 0.1
#: library sources whose content defines the numbers of a row (the cache key's code version)
_CODE_PARTS = ("physics", "losses", "models", "transforms", "training", "data", "utils", "theory", "reproduce")
_CODE_FILES = ("config.py", "registry.py", "options.py", "safe_yaml.py")
#: what only presents or judges finished rows: the report, and the claims with their checks (a row's config file
#: and test set, which the family modules name, are in the cache key themselves)
_NOT_CODE = ("reproduce/report.py", "reproduce/claims.py", "reproduce/denoising.py", "reproduce/incomplete.py",
             "reproduce/sei.py", "reproduce/theory.py", "reproduce/selection.py")


# -- families ----------------------------------------------------------------------------------------------

def families() -> dict[str, Any]:
    from selfinv.reproduce import denoising, incomplete, sei, theory

    return {"denoising": denoising, "incomplete": incomplete, "sei": sei, "theory": theory}


@dataclass
class Plan:
    tasks: dict[str, Task]
    rows: dict[str, Row]
    claims: list[Claim]


def full_plan() -> Plan:
    tasks: dict[str, Task] = {}
    rows: dict[str, Row] = {}
    claims: list[Claim] = []
    for fam in families().values():
        tasks.update({t.key: t for t in fam.tasks()})
        rows.update({r.key: r for r in fam.rows()})
        claims += fam.claims()
    from selfinv.reproduce.selection import selection_claims

    claims += selection_claims(list(rows.values()))
    return Plan(tasks, rows, claims)


def _matches(name: str, pattern: str) -> bool:
    """``pattern``: comma-separated alternatives, each a substring or a glob with ``* ? [``."""
    return any(fnmatch.fnmatch(name, p) if any(c in p for c in "*?[") else p in name
               for p in (p.strip() for p in pattern.split(",")) if p)


def select(plan: Plan, only: str | None) -> tuple[list[Row], list[Claim]]:
    """Rows and claims matching ``only`` (a substring, or a glob with ``* ? [``) in their key, family or task;
    the supervised reference of every selected row is added, and every row a selected claim needs."""
    if not only:
        return list(plan.rows.values()), list(plan.claims)
    claims = [c for c in plan.claims if _matches(c.key, only) or _matches(c.family, only)]
    keys = {k for k in plan.rows if _matches(k, only) or _matches(plan.tasks[plan.rows[k].task].family, only)}
    for c in claims:
        keys.update(c.rows)
    for k in list(keys):
        ref = plan.rows[k].reference
        if ref is not None:
            keys.add(ref)
    claims += [c for c in plan.claims if c not in claims and c.rows and set(c.rows) <= keys]
    return [r for k, r in plan.rows.items() if k in keys], claims


# -- configs and presets ----------------------------------------------------------------------------------------

#: the folder of the running reproduction (``--configs``), read by the theory claims
_ACTIVE_CONFIGS: list[Path] = []


def configs_dir(configs: str | None = None) -> Path:
    """``configs`` if given, else the running reproduction's, else ``./configs/claims``, else ``configs/claims``
    of the checkout holding this package (an editable install)."""
    if configs is None and _ACTIVE_CONFIGS:
        return _ACTIVE_CONFIGS[-1]
    candidates = [Path(configs)] if configs else [Path("configs/claims"),
                                                  Path(__file__).resolve().parents[2] / "configs" / "claims"]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"the claim configs folder was not found (looked in {[str(c) for c in candidates]}); "
                            "run from the selfinv checkout or give --configs PATH/TO/configs/claims")


def load_row_config(row: Row, folder: Path) -> dict:
    from selfinv.config import load_yaml

    path = folder / row.config
    if not path.exists():
        raise FileNotFoundError(f"{row.key}: its config {path} does not exist")
    return load_yaml(str(path))


def train_size(num_patches: int, val_fraction: float) -> int:
    """Training measurements the engine keeps (``split_measurements`` holds out ``ceil(f N)``)."""
    return num_patches - (max(1, math.ceil(val_fraction * num_patches)) if val_fraction > 0 else 0)


def patches_for(n_train: int, val_fraction: float) -> int:
    """The smallest ``num_patches`` that leaves exactly ``n_train`` training measurements."""
    n = n_train
    while train_size(n, val_fraction) < n_train:
        n += 1
    if train_size(n, val_fraction) != n_train:
        raise ValueError(f"no data.num_patches leaves exactly {n_train} training measurements at val_fraction "
                         f"{val_fraction}")
    return n


def steps_per_validation(cfg: dict) -> int:
    """Optimiser steps between two validations of the engine (``val_every`` epochs of
    ``ceil(n_train / batch)`` steps)."""
    d, t = cfg["data"], cfg["trainer"]
    n_train = train_size(int(d["num_patches"]), float(d.get("val_fraction", 0.1)))
    return math.ceil(n_train / int(d.get("batch_size", 8))) * int(t.get("val_every", 1))


def apply_preset(cfg: dict, preset: str, device: str, run_dir: str) -> dict:
    """The row's config for ``preset`` (``cpu``: the file unchanged) and the engine settings of the runner."""
    cfg = copy.deepcopy(cfg)
    d, t = cfg.setdefault("data", {}), cfg.setdefault("trainer", {})
    if preset == "quick":
        batch = min(int(d.get("batch_size", 8)), 8)
        d["batch_size"] = batch
        d["num_patches"] = patches_for(10 * batch, float(d.get("val_fraction", 0.1)))
        t["max_steps"], t["val_every"] = 40, 1
    elif preset == "gpu":
        # 4x the steps and 4x the training measurements: epochs 4x longer, the same number of validations
        t["max_steps"] = 4 * int(t["max_steps"])
        n_train = 4 * train_size(int(d["num_patches"]), float(d.get("val_fraction", 0.1)))
        d["num_patches"] = patches_for(n_train, float(d.get("val_fraction", 0.1)))
        if d.get("dataset") == "natural-gray":
            d["patch_size"] = 2 * int(d.get("patch_size", 64))
        bb = cfg.get("model", {}).get("backbone", {})
        if bb.get("name") == "unet" and int(bb.get("args", {}).get("base_channels", 32)) < 32:
            bb["args"]["base_channels"] = 32
    if preset in ("quick", "gpu"):  # annealing schedules follow the step budget
        for loss in cfg.get("losses", []):
            if "anneal_steps" in loss.get("args", {}):
                loss["args"]["anneal_steps"] = int(t["max_steps"])
    t.update({"output_dir": run_dir, "progress_bar": False, "figures": False,
              "accelerator": "cuda" if device == "cuda" else "cpu", "max_epochs": None})
    return cfg


def preset_test(spec: TestSpec, preset: str) -> TestSpec:
    return replace(spec, limit=min(spec.limit or 8, 8)) if preset == "quick" else spec


def seeded(cfg: dict, k: int) -> dict:
    """The row's config trained with seed ``trainer.seed + k`` (initialisation and the losses' random
    draws; data, noise and test set unchanged) in its own training folder; ``k = 0`` is ``cfg`` itself."""
    if k == 0:
        return cfg
    cfg = copy.deepcopy(cfg)
    t = cfg["trainer"]
    t["seed"] = int(t.get("seed", 0)) + k
    t["output_dir"] = f"{t['output_dir']}__seed{k}"
    return cfg


def keyed_run_dir(cfg: dict, key: str) -> dict:
    """``cfg`` training in ``<output_dir>__<key>``: a folder of its own per config and code version, so that two
    ``reproduce`` invocations sharing a cache (``--only`` subsets run side by side, or variants of a row's
    config) never train into, or wipe, each other's checkpoints (``train_row`` empties the folder first)."""
    cfg = copy.deepcopy(cfg)
    cfg["trainer"]["output_dir"] = f"{cfg['trainer']['output_dir']}__{key}"
    return cfg


#: per-item metric lists of a row's result, averaged over training seeds by ``merge_seeds``
PER_ITEM = ("psnr", "mse", "ssim", "null_error")


def merge_seeds(results: list[dict]) -> dict:
    """One row's results over training seeds (``results[k]`` trained with seed offset ``k``).

    The per-item metrics are averaged over the seeds, item by item, so every claim compares
    seed-averaged networks on the same test items; ``seed_psnr`` keeps each seed's mean PSNR (the
    report shows their spread). The val/loss pick's per-item PSNR is averaged the same way (its step is
    the first seed's, ``seed_steps`` all of them); the curve and the timings are the first seed's.

    >>> merge_seeds([{"psnr": [30.0, 20.0], "mse": [1.0, 3.0], "ssim": None, "wall_seconds": 5.0},
    ...              {"psnr": [31.0, 22.0], "mse": [2.0, 1.0], "ssim": None, "wall_seconds": 7.0}])["psnr"]
    [30.5, 21.0]
    """
    if len(results) == 1:
        return results[0]
    merged = dict(results[0])
    for metric in PER_ITEM:
        lists = [r.get(metric) for r in results]
        if any(v is None for v in lists):
            merged[metric] = None
            continue
        if len({len(v) for v in lists}) != 1:
            raise ValueError(f"the seeds of row {results[0].get('row')} were evaluated on different test sets")
        merged[metric] = [statistics.fmean(vals) for vals in zip(*lists, strict=True)]
    bests = [r.get("best") or {} for r in results]
    if all(b.get("psnr") for b in bests) and len({len(b["psnr"]) for b in bests}) == 1:
        # the val/loss pick, averaged like the final weights, so "pick − final" compares like with like
        merged["best"] = dict(bests[0], psnr=[statistics.fmean(v) for v in zip(*(b["psnr"] for b in bests),
                                                                                  strict=True)],
                              seed_steps=[b.get("step") for b in bests])
    else:
        merged["best"] = {}
    merged["seed_psnr"] = [statistics.fmean(r["psnr"]) for r in results]
    merged["seed_keys"] = [r.get("key") for r in results]
    merged["wall_seconds"] = sum(r.get("wall_seconds", 0.0) for r in results)
    merged["seed_times"] = [{k: r.get(k) for k in ("finished", "wall_seconds", "start_time", "end_time",
                                                   "environment")} for r in results]
    return merged


# -- cache ---------------------------------------------------------------------------------------------------------

def code_version(root: Path | None = None) -> str:
    """Hash of the sources that define a row's numbers (see ``_CODE_PARTS``), plus selfinv's version; ``root``:
    the package folder (default: the imported one)."""
    import selfinv

    root = Path(selfinv.__file__).resolve().parent if root is None else Path(root)
    h = hashlib.sha256(selfinv.__version__.encode())
    files = [root / f for f in _CODE_FILES]
    for part in _CODE_PARTS:
        files += sorted((root / part).rglob("*.py"))
    for f in files:
        rel = f.relative_to(root).as_posix()
        if rel in _NOT_CODE or not f.exists():
            continue
        h.update(rel.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def row_key(row: Row, cfg: dict, test: TestSpec, code: str) -> str:
    plain = copy.deepcopy(cfg)
    plain.get("trainer", {}).pop("output_dir", None)
    payload = {"row": row.key, "config": plain, "test": asdict(test), "eval": EVAL_VERSION, "code": code}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Cache:
    """``folder/ROW__KEY.json`` (+ ``.npz``) per finished row."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _stem(self, row: Row, key: str) -> Path:
        return self.folder / f"{row.key.replace('/', '__')}__{key}"

    def load(self, row: Row, key: str) -> dict | None:
        path = self._stem(row, key).with_suffix(".json")
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def image(self, row: Row, key: str) -> Tensor | None:
        path = self._stem(row, key).with_suffix(".npz")
        if not path.exists():
            return None
        import numpy as np

        with np.load(path) as z:
            return torch.from_numpy(z["x_hat"].astype("float32"))

    def save(self, row: Row, key: str, result: dict, image: Tensor | None) -> Path:
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        stem = self._stem(row, key)
        if image is not None:
            tmp = stem.parent / (stem.name + ".tmp.npz")
            np.savez_compressed(tmp, x_hat=image.cpu().numpy().astype("float16"))
            os.replace(tmp, stem.with_suffix(".npz"))
        tmp_json = stem.parent / (stem.name + ".json.tmp")
        tmp_json.write_text(json.dumps(result, indent=1, default=str))
        os.replace(tmp_json, stem.with_suffix(".json"))  # written last: the row is finished
        return stem.with_suffix(".json")


# -- test sets and evaluation ------------------------------------------------------------------------------------

@dataclass
class TestSet:
    x: Tensor
    y: Tensor
    params: dict[str, Tensor]
    physics: Any
    grid_index: int
    null_space: bool = False

    def operator(self, sl: slice):
        return self.physics.with_params(**{k: v[sl] for k, v in self.params.items()}) if self.params \
            else self.physics


def magnitude(x: Tensor) -> Tensor:
    """``|x|`` of 2-channel complex images (MRI), ``x`` itself otherwise."""
    return x.pow(2).sum(1, keepdim=True).sqrt() if x.shape[1] == 2 else x


def build_test_set(cfg: dict, spec: TestSpec, device: str = "cpu") -> TestSet:
    """The task's fixed test set: clean test images (``spec``), measured once by the config's physics
    (operators drawn per item where the physics is random), all from ``spec.seed``."""
    from selfinv.config import from_dict
    from selfinv.data.bundled import load_dataset
    from selfinv.data.patches import fixed_crops
    from selfinv.training.engine import build_physics, map_intensity

    images = load_dataset(spec.dataset, "test", **spec.dataset_args).images
    if spec.crop is not None:
        x = fixed_crops(images, spec.crop)
    else:
        x = torch.stack(list(images))
    x = x.float()
    if spec.limit is not None:
        x = x[:spec.limit]
    x = map_intensity(x, cfg.get("data", {}).get("intensity_range"))
    channels = int(cfg.get("model", {}).get("backbone", {}).get("args", {}).get("in_channels", 1))
    if channels == 2 and x.shape[1] == 1:
        x = torch.cat([x, torch.zeros_like(x)], dim=1)
    test_cfg = copy.deepcopy(cfg)
    test_cfg.setdefault("data", {})["patch_size"] = int(x.shape[-1])
    physics = build_physics(from_dict(test_cfg)).to(device)
    g = torch.Generator(device=device).manual_seed(spec.seed)
    x = x.to(device)
    params = physics.sample_params(x.shape[0], g, x.device) if physics.is_random else {}
    op = physics.with_params(**params) if params else physics
    with torch.no_grad():
        y = op(x, generator=g)
    grid = int(torch.argmax(magnitude(x).flatten(1).std(1)))  # the most textured item
    return TestSet(x, y, params, physics, grid, spec.null_space)


def per_item_metrics(x_hat: Tensor, x: Tensor, with_ssim: bool = True) -> dict[str, list[float]]:
    from selfinv.training.metrics import psnr, ssim

    xh, xt = magnitude(x_hat.float()).clamp(0, 1), magnitude(x.float())
    out = {"psnr": psnr(xh, xt).tolist(), "mse": (xh - xt).double().pow(2).flatten(1).mean(1).tolist()}
    if with_ssim and min(xt.shape[-2:]) >= 11:
        out["ssim"] = ssim(xh, xt).tolist()
    return out


@torch.no_grad()
def reconstruct(fn, test: TestSet, chunk: int = 8) -> Tensor:
    """``fn(y, physics, generator)`` over the test set in chunks (one seeded generator for the whole set)."""
    g = torch.Generator(device=test.y.device).manual_seed(ESTIMATOR_SEED)
    outs = []
    for i in range(0, test.y.shape[0], chunk):
        sl = slice(i, i + chunk)
        outs.append(fn(test.y[sl], test.operator(sl), g).float())
    return torch.cat(outs)


def baseline_fn(kind: str):
    import torch.nn.functional as F

    if kind == "measurement":
        return lambda y, p, g: y
    if kind == "dagger":
        return lambda y, p, g: p.A_dagger(y)
    if kind == "adjoint":
        return lambda y, p, g: p.A_adjoint(y)
    if kind == "bicubic":
        return lambda y, p, g: F.interpolate(y, scale_factor=p.factor, mode="bicubic", align_corners=False)
    raise ValueError(f"unknown baseline kind {kind!r}")


@torch.no_grad()
def null_space_errors(x_hat: Tensor, test: TestSet, chunk: int = 8) -> list[float]:
    """Per item ``‖P_N(x̂ − x)‖ / ‖P_N x‖`` with ``P_N = I − A†A`` (the item's operator): 1 for ``A†y`` (it puts
    0 there), below 1 when the reconstruction recovered part of what ``A`` does not see."""
    out: list[float] = []
    for i in range(0, x_hat.shape[0], chunk):
        sl = slice(i, i + chunk)
        op = test.operator(sl)
        d = (x_hat[sl] - test.x[sl]).to(test.y.dtype)
        xt = test.x[sl].to(test.y.dtype)
        dn, xn = d - op.A_dagger(op.A(d)), xt - op.A_dagger(op.A(xt))
        out += (dn.double().flatten(1).norm(dim=1) / xn.double().flatten(1).norm(dim=1)).tolist()
    return out


def evaluate_module(module, test: TestSet, with_ssim: bool = True) -> tuple[dict[str, list[float]], Tensor]:
    was = module.training
    module.eval()
    try:
        x_hat = reconstruct(lambda y, p, g: module(y, p, g), test)
    finally:
        module.train(was)
    metrics = per_item_metrics(x_hat, test.x, with_ssim)
    if test.null_space:
        metrics["null_error"] = null_space_errors(x_hat, test)
    return metrics, x_hat[test.grid_index]


def _curve_probe(test: TestSet):
    import lightning.pytorch as pl

    class CurveProbe(pl.Callback):
        """Test PSNR at step 0 and after every validation (with ``val/loss`` / ``val/psnr``); step times."""

        def __init__(self) -> None:
            self.records: list[dict] = []
            self.step_times: list[float] = []
            self._t0 = 0.0

        def _record(self, trainer, pl_module) -> None:
            m = per_item_metrics(reconstruct(lambda y, p, g: pl_module(y, p, g), test), test.x, with_ssim=False)
            metrics = trainer.callback_metrics
            rec = {"step": int(trainer.global_step), "test_psnr": statistics.fmean(m["psnr"])}
            for k in ("val/loss", "val/psnr"):
                if k in metrics:
                    rec[k.replace("/", "_")] = float(metrics[k])
            self.records.append(rec)

        def _record_in_eval_mode(self, trainer, pl_module) -> None:
            was = pl_module.training
            pl_module.eval()
            try:
                self._record(trainer, pl_module)
            finally:
                pl_module.train(was)

        def on_train_start(self, trainer, pl_module) -> None:
            self._record_in_eval_mode(trainer, pl_module)

        def on_validation_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self._record_in_eval_mode(trainer, pl_module)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.step_times.append(time.perf_counter() - self._t0)

    return CurveProbe()


def convergence_gain(curve: list[dict], metric: str = "test_psnr") -> float | None:
    """PSNR gained over the last 20 % of the steps (final minus the last point at or before 80 %)."""
    if len(curve) < 2:
        return None
    final = curve[-1]
    early = [c for c in curve if c["step"] <= 0.8 * final["step"]]
    if not early:
        return None
    return final[metric] - early[-1][metric]


def train_row(row: Row, cfg: dict, test: TestSet, device: str) -> tuple[dict, Tensor]:
    """Train ``row`` through the engine and measure it (see the module docstring)."""
    from selfinv.config import from_dict
    from selfinv.training.checkpoint import read_checkpoint
    from selfinv.training.engine import fit

    out_dir = Path(cfg["trainer"]["output_dir"])
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a killed attempt: start the row again
    run_cfg = from_dict(cfg)
    probe = _curve_probe(test)
    t0 = time.perf_counter()
    trainer, module = fit(run_cfg, extra_callbacks=[probe])
    train_s = time.perf_counter() - t0
    module.to(device)
    final, grid = evaluate_module(module, test)
    curve = probe.records
    if not curve or curve[-1]["step"] != int(trainer.global_step):
        curve.append({"step": int(trainer.global_step), "test_psnr": statistics.fmean(final["psnr"])})
    best: dict[str, Any] = {}
    cb = trainer.checkpoint_callback
    best_path = getattr(cb, "best_model_path", "") if cb is not None else ""
    if best_path and Path(best_path).exists():
        ckpt = read_checkpoint(best_path)
        state = {k: v for k, v in module.state_dict().items()}
        module.load_state_dict(ckpt["state_dict"])
        module.to(device)
        m, _ = evaluate_module(module, test, with_ssim=False)
        module.load_state_dict(state)
        best = {"step": int(ckpt.get("global_step", -1)), "psnr": m["psnr"], "file": Path(best_path).name,
                "val_loss": float(cb.best_model_score) if cb.best_model_score is not None else None}
    extras: dict[str, Any] = {}
    for name, buf in module.loss.named_buffers():
        if name.endswith("eta"):
            extras[f"final_{name}"] = buf.detach().cpu().flatten().tolist()
    times = probe.step_times[10:] or probe.step_times
    result = {
        "row": row.key, "label": row.label, "config_file": row.config, "reference": row.reference,
        "config": cfg, "steps": int(trainer.global_step), "psnr": final["psnr"], "mse": final["mse"],
        "ssim": final.get("ssim"), "null_error": final.get("null_error"), "curve": curve,
        "convergence_gain": convergence_gain(curve),
        "best": best, "ms_per_step": 1e3 * statistics.median(times) if times else None,
        "train_seconds": train_s, "parameters": sum(p.numel() for p in module.model.parameters()),
        "evaluations_per_step": int(module.loss.evaluations_per_step), "extras": extras,
    }
    return result, grid


def environment(device: str, workers: int = 1) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "workers": workers, "device": device, "machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return env


# -- training rows, in this process or in worker processes ------------------------------------------------------

#: at most this many worker processes by default (each holds its data, network and test set in memory)
MAX_AUTO_WORKERS = 8


def plan_workers(workers: int | None, threads: int | None, device: str, jobs: int) -> tuple[int, int]:
    """``(worker processes, torch threads per worker)`` for ``jobs`` rows to train.

    The networks of the claim rows are small: on a CPU a second thread speeds a step up by a few per cent
    (SURE on the 16-channel U-Net at 32²: 42 steps/s on one thread, 44 on two), while two rows trained side by
    side, one thread each, finish in the time of one. So by default every available core trains its own row
    (at most ``MAX_AUTO_WORKERS``), one thread each; ``threads`` alone sets the threads per worker and
    the workers fill the remaining cores. A CUDA device trains one row at a time. Never more compute threads
    than available cores: ``workers × threads`` above them is refused.
    """
    from selfinv.utils.threads import available_cores

    cores = available_cores()
    for name, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if workers is None:
        if device == "cuda":
            workers = 1
        else:
            workers = max(1, min(MAX_AUTO_WORKERS, cores // (threads or 1)))
    workers = max(1, min(workers, jobs))
    if threads is None:
        threads = max(1, cores // workers) if device == "cpu" else torch.get_num_threads()
    if device == "cpu" and workers * threads > cores:
        raise ValueError(f"--workers {workers} × --threads {threads} = {workers * threads} compute threads, more "
                         f"than the {cores} cores available to this process: lower one of them")
    return workers, threads


def _train_and_save(row: Row, cfg: dict, spec: TestSpec, key: str, test: TestSet, preset: str, code: str,
                    device: str, store: Cache, workers: int) -> dict:
    t0, start_time = time.perf_counter(), time.time()
    result, grid = train_row(row, cfg, test, device)
    result.update({"key": key, "preset": preset, "code": code, "test": asdict(spec),
                   "wall_seconds": time.perf_counter() - t0, "environment": environment(device, workers),
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "start_time": start_time,
                   "end_time": time.time()})
    store.save(row, key, result, grid)
    return result


def _progress(count: str, row: Row, k: int, result: dict, t_start: float) -> str:
    return (f"[reproduce] {count} {row.key}{f' (seed +{k})' if k else ''}: PSNR "
            f"{statistics.fmean(result['psnr']):.2f} dB, {result['steps']} steps, "
            f"{result['ms_per_step']:.1f} ms/step, {result['wall_seconds']:.0f} s "
            f"(total {time.perf_counter() - t_start:.0f} s)")


_WORKER: dict[str, Any] = {}


def _worker_init(threads: int, configs: str, workers: int) -> None:
    torch.set_num_threads(threads)
    _ACTIVE_CONFIGS[:] = [Path(configs)]
    _WORKER.update(tests={}, workers=workers)
    quiet_lightning()


def _worker_job(row: Row, cfg: dict, spec: TestSpec, key: str, preset: str, code: str, device: str,
                cache: str) -> dict:
    tests = _WORKER["tests"]
    if row.task not in tests:  # a task's test set is built once per worker, from its seed: the same in all
        tests[row.task] = build_test_set(cfg, spec, device)
    result = _train_and_save(row, cfg, spec, key, tests[row.task], preset, code, device, Cache(cache),
                             _WORKER["workers"])
    return {k: result[k] for k in ("psnr", "steps", "ms_per_step", "wall_seconds")}


def _train_in_workers(jobs: list[tuple], workers: int, threads: int, preset: str, code: str, device: str,
                      cache: Path, configs: Path, log, t_start: float) -> None:
    """Train ``jobs`` (row, cfg, spec, key, seed index) in ``workers`` processes, each row cached by its
    worker as it finishes. A failing row stops the others once their current rows are cached; its error is
    raised here."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads, str(configs), workers)) as pool:
        futures = {pool.submit(_worker_job, row, cfg, spec, key, preset, code, device, str(cache)): (row, k)
                   for row, cfg, spec, key, k in jobs}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)  # a line per row as it finishes
            for f in finished:
                row, k = futures[f]
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise RuntimeError(f"row {row.key}{f' (seed +{k})' if k else ''} failed in its worker: "
                                       f"{f.exception()}") from f.exception()
                done += 1
                log(_progress(f"{done}/{len(jobs)}", row, k, f.result(), t_start))


# -- the command --------------------------------------------------------------------------------------------------

def check_plan(plan: Plan, folder: Path) -> None:
    """Every row's config exists, and a row shares data, physics, optimiser and budget with its reference
    (supervised = same network, data and budget; the network may differ only where the row's method needs
    its own architecture, and then its reference uses the same one)."""
    for row in plan.rows.values():
        if row.reference is None:
            continue
        cfg, ref = load_row_config(row, folder), load_row_config(plan.rows[row.reference], folder)
        for section in ("data", "physics", "optim", "trainer"):
            a, b = cfg.get(section, {}), ref.get(section, {})
            if section == "trainer":
                a = {k: v for k, v in a.items() if k != "output_dir"}
                b = {k: v for k, v in b.items() if k != "output_dir"}
            if a != b:
                raise ValueError(f"{row.key} ({row.config}) and its reference {row.reference} differ in '{section}'")
        if cfg.get("model") != ref.get("model"):
            raise ValueError(f"{row.key} ({row.config}) and its reference {row.reference} use different networks")


def reproduce(quick: bool = False, only: str | None = None, device: str = "cpu", out: str = "benchmarks/results",
              cache: str = "runs/reproduce/cache", configs: str | None = None, dry_run: bool = False,
              cached_only: bool = False, seeds: int = 1, workers: int | None = None, threads: int | None = None,
              log=print) -> dict:
    """Run (or read from the cache) the selected rows and write the report; returns the report data.
    ``cached_only``: train nothing; rows not in the cache are left out (their claims read "not run").
    ``seeds``: train every row with ``seeds`` training seeds (``trainer.seed + 0 … seeds-1``) and judge the
    claims on the seed-averaged per-item metrics (``merge_seeds``).
    ``workers`` / ``threads``: rows trained at once (each in its own process) and torch threads of each
    (``plan_workers``; one worker trains in this process)."""
    from selfinv.reproduce import report

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    preset = "quick" if quick else ("gpu" if device == "cuda" else "cpu")
    folder = configs_dir(configs)
    _ACTIVE_CONFIGS[:] = [folder]
    plan = full_plan()
    check_plan(plan, folder)
    rows, claims = select(plan, only)
    store = Cache(cache)
    code = code_version()
    runs_root = Path(cache).parent / "runs" / preset
    t_start = time.perf_counter()
    tests: dict[str, TestSet] = {}
    resolved: dict[str, list[tuple[dict, TestSpec, str]]] = {}
    for row in rows:
        task = plan.tasks[row.task]
        spec = preset_test(task.test, preset)
        cfg = apply_preset(load_row_config(row, folder), preset, device, str(runs_root / row.key.replace("/", "__")))
        resolved[row.key] = [(keyed_run_dir(c, key), spec, key)
                             for c in (seeded(cfg, k) for k in range(seeds)) for key in [row_key(row, c, spec, code)]]
    todo = [(r, k) for r in rows for k, (_, _, key) in enumerate(resolved[r.key]) if store.load(r, key) is None]
    n_workers, n_threads = plan_workers(workers, threads, device, 0 if cached_only else len(todo))
    log(f"[reproduce] preset {preset}: {len(rows)} rows selected × {seeds} training seed(s), "
        f"{len(rows) * seeds - len(todo)} cached, {len(todo)} to train; {len(claims)} claims; code {code}; "
        f"cache {store.folder}; {n_workers} worker(s) × {n_threads} thread(s)")
    if dry_run:
        for r, k in todo:
            cfg = resolved[r.key][k][0]
            log(f"  would train {r.key} ({r.config}{f', seed +{k}' if k else ''}): "
                f"{cfg['trainer']['max_steps']} steps")
        return {}
    quiet_lightning()
    if n_workers > 1:
        jobs = [(r, *resolved[r.key][k], k) for r, k in todo]
        _train_in_workers(jobs, n_workers, n_threads, preset, code, device, store.folder, folder, log, t_start)
    threads_before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(n_threads)
    try:
        results, images = _collect(rows, resolved, store, tests, cached_only, preset, code, device, log, t_start)
    finally:
        torch.set_num_threads(threads_before)
    data = report.write(plan, claims, results, images, preset, device, out, code,
                        time.perf_counter() - t_start, log=log, seeds=seeds)
    return data


def _collect(rows: list[Row], resolved: dict, store: Cache, tests: dict, cached_only: bool, preset: str, code: str,
             device: str, log, t_start: float) -> tuple[dict[str, dict], dict[str, Tensor]]:
    """Every selected row from the cache, training here (one worker) the rows not in it (unless
    ``cached_only``); rows with seeds missing from the cache are left out."""
    results: dict[str, dict] = {}
    images: dict[str, Tensor] = {}
    for i, row in enumerate(rows):
        per_seed: list[dict] = []
        for k, (cfg, spec, key) in enumerate(resolved[row.key]):
            cached = store.load(row, key)
            if cached is None and cached_only:
                break
            if cached is None:
                if row.task not in tests:
                    tests[row.task] = build_test_set(cfg, spec, device)
                result = _train_and_save(row, cfg, spec, key, tests[row.task], preset, code, device, store, 1)
                cached = result
                log(_progress(f"{i + 1}/{len(rows)}", row, k, result, t_start))
            per_seed.append(cached)
        if len(per_seed) < len(resolved[row.key]):  # cached_only and a seed not in the cache: the row is not reported
            continue
        results[row.key] = merge_seeds(per_seed)
        img = store.image(row, resolved[row.key][0][2])
        if img is not None:
            images[row.key] = img
    return results, images


def quiet_lightning() -> None:
    import lightning.pytorch  # noqa: F401 - sets its loggers' levels on import: import first, then lower them

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*EquivariantImaging on denoising.*")


def reproduce_cmd(quick: bool = False, only: Optional[str] = None, device: Literal["cpu", "cuda"] = "cpu",
                  out: str = "benchmarks/results", cache: str = "runs/reproduce/cache",
                  configs: Optional[str] = None, threads: Optional[int] = None, dry_run: bool = False,
                  cached_only: bool = False, seeds: int = 1, workers: Optional[int] = None) -> str:
    """Reproduce the claims of the tutorial and papers: train every claim's networks, cache each row, report.

    Args:
        quick: tiny budgets (a smoke test of the whole pipeline in minutes, not a measurement).
        only: run only the rows and claims whose key, task or family contains PATTERN (a glob with * ? [;
            comma-separated alternatives, e.g. 'denoising-gaussian,sei-sr2').
        device: 'cpu' (the budgets of configs/claims) or 'cuda' (the gpu size preset: more steps, larger
            patches, the default 32-channel U-Net).
        out: folder of claims.md / claims.json and the figures.
        cache: folder of the finished rows (a rerun skips them; a killed run resumes).
        configs: folder of the claim configs (default: configs/claims of the checkout).
        threads: torch CPU threads of each worker (default: the available cores shared between the workers).
        dry_run: list what would be trained and exit.
        cached_only: train nothing: report the rows already in the cache (the others' claims read "not run").
        seeds: training seeds per row (the config's seed + 0, 1, …): claims are judged on the seed-averaged
            per-item metrics and the report lists each seed's PSNR.
        workers: rows trained at once, each in its own process (default: one per available CPU core, one
            thread each, at most 8 — the claim networks are small and gain little from a second thread; 1 on
            CUDA).
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available to this torch")
    data = reproduce(quick=quick, only=only, device=device, out=out, cache=cache, configs=configs,
                     dry_run=dry_run, cached_only=cached_only, seeds=seeds, workers=workers, threads=threads)
    return data.get("markdown_path", "") if data else ""
