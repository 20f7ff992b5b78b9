"""The report of ``selfinv reproduce``: ``claims.md``, ``claims.json`` and the PNG figures.

Presentation only (not part of the cache key): the numbers come from the cached rows and from the
classical reconstructions of each task's test set, recomputed here (they are deterministic and cheap).
"""

from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from selfinv.reproduce.claims import Claim, Results, Verdict, mean_se
from selfinv.reproduce.runner import (
    CONVERGENCE_DB,
    Plan,
    TestSpec,
    baseline_fn,
    build_test_set,
    environment,
    per_item_metrics,
    reconstruct,
)

NAMES = {"cpu": "claims", "quick": "claims_quick", "gpu": "claims_gpu"}


def _budget(cfg: dict) -> str:
    d, t = cfg.get("data", {}), cfg.get("trainer", {})
    bb = cfg.get("model", {}).get("backbone", {})
    net = bb.get("name", "?")
    if net == "unet":
        net = f"UNet{bb.get('args', {}).get('base_channels', 32)}"
    rec = cfg.get("model", {}).get("reconstructor", {}).get("name")
    if rec == "unrolled":
        net = f"unrolled×{cfg['model']['reconstructor'].get('args', {}).get('n_iter', 5)} {net}"
    return f"{t.get('max_steps')} steps × {d.get('batch_size')} × {d.get('patch_size')}², {net}"


def _baselines(plan: Plan, results: dict[str, dict], device: str) -> tuple[dict, dict]:
    """Per task: baseline name -> per-item metrics, and the images of the grid item (x, baselines)."""
    out: dict[str, dict[str, dict]] = {}
    grids: dict[str, dict[str, Tensor]] = {}
    for task_key, task in plan.tasks.items():
        done = [r for r in results.values() if r["row"].split("/", 1)[0] == task_key]
        if not done:
            continue
        ref = next((r for r in done if r.get("reference") is None), done[0])
        spec = TestSpec(**ref["test"])
        test = build_test_set(ref["config"], spec, device)
        out[task_key] = {}
        grids[task_key] = {"ground truth": test.x[test.grid_index].cpu()}
        for name, kind in task.baselines.items():
            x_hat = reconstruct(baseline_fn(kind), test)
            if x_hat.shape != test.x.shape:
                continue
            out[task_key][name] = per_item_metrics(x_hat, test.x)
            grids[task_key][name] = x_hat[test.grid_index].cpu()
    return out, grids


def _convergence_notes(claim: Claim, plan: Plan, results: dict[str, dict]) -> list[str]:
    notes = []
    refs = {plan.rows[k].reference or k for k in claim.rows if k in plan.rows}
    for ref in sorted(refs):
        r = results.get(ref)
        if r is None or r.get("convergence_gain") is None:
            continue
        if r["convergence_gain"] >= CONVERGENCE_DB:
            notes.append(f"reference {ref} NOT converged (+{r['convergence_gain']:.2f} dB in the last 20 % of steps)")
    return notes


def evaluate_claims(plan: Plan, claims: list[Claim], res: Results, results: dict[str, dict]) -> list[dict]:
    out = []
    for c in claims:
        missing = [k for k in c.rows if k not in results]
        missing_tasks = [t for t in c.needed_tasks() if c.rows and t not in res.baselines]
        if missing or missing_tasks:
            v = Verdict("not run", f"missing rows: {', '.join(missing or missing_tasks)}")
        else:
            try:
                v = c.check(res)
            except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
                v = Verdict("not run", f"check failed: {type(e).__name__}: {e}")
        conv = _convergence_notes(c, plan, results) if v.status != "not run" else []
        configs = sorted({plan.rows[k].config for k in c.rows if k in plan.rows}) + list(c.configs)
        budget = _budget(results[c.rows[0]]["config"]) if c.rows and c.rows[0] in results else c.budget
        out.append({"key": c.key, "family": c.family, "claim": c.text, "source": c.source, "status": v.status,
                    "verdict": v.status + (f" {v.note}" if v.note else ""), "measured": v.measured,
                    "values": v.values, "convergence": conv, "configs": configs, "budget": budget or "-",
                    "rows": list(c.rows)})
    return out


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _claims_table(entries: list[dict]) -> list[str]:
    lines = ["| claim | source | measured (PSNR in dB: mean ± standard error over test items) | verdict | budget "
             "| config |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        verdict = f"**{e['verdict']}**" if e["status"] != "holds" else e["verdict"]
        if e["convergence"]:
            verdict += " — " + "; ".join(e["convergence"])
        cfgs = ", ".join(f"`{c}`" for c in e["configs"]) or "-"
        lines.append(f"| {_cell(e['claim'])} | {_cell(e['source'])} | {_cell(e['measured'])} | {_cell(verdict)} | "
                     f"{_cell(e['budget'])} | {cfgs} |")
    return lines


def _task_table(task_key: str, plan: Plan, results: dict[str, dict], baselines: dict) -> list[str]:
    rows = [r for r in plan.rows.values() if r.key in results and r.task == task_key]
    lines = ["| method | PSNR | SSIM | Δ vs supervised | val/loss pick: step, Δ vs final | last-20 % gain | ms/step | "
             "evals | config |", "|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for name, m in baselines.get(task_key, {}).items():
        p, se = mean_se(m["psnr"])
        s = statistics.fmean(m["ssim"]) if m.get("ssim") else float("nan")
        lines.append(f"| {name} (no training) | {p:.2f} ± {se:.2f} | {s:.3f} | | | | | | |")
    for row in rows:
        r = results[row.key]
        p, se = mean_se(r["psnr"])
        s = statistics.fmean(r["ssim"]) if r.get("ssim") else float("nan")
        ref = results.get(row.reference) if row.reference else None
        delta = ""
        if ref is not None and len(ref["psnr"]) == len(r["psnr"]):
            d, dse = mean_se([a - b for a, b in zip(r["psnr"], ref["psnr"], strict=True)])
            delta = f"{d:+.2f} ± {dse:.2f}"
        best = r.get("best") or {}
        pick = ""
        if best.get("psnr"):
            d, dse = mean_se([a - b for a, b in zip(best["psnr"], r["psnr"], strict=True)])
            pick = f"{best['step']}, {d:+.2f}"
        gain = r.get("convergence_gain")
        gain_s = "-" if gain is None else f"{gain:+.2f}" + (" ✗" if row.reference is None and gain >= CONVERGENCE_DB
                                                          else "")
        ms = r.get("ms_per_step")
        seeds = r.get("seed_psnr")
        spread = ""
        if seeds and len(seeds) > 1:
            spread = f" (seeds {' / '.join(f'{v:.2f}' for v in seeds)}; sd {statistics.stdev(seeds):.2f})"
        lines.append(f"| {row.label} | {p:.2f} ± {se:.2f}{spread} | {s:.3f} | {delta} | {pick} | {gain_s} | "
                     f"{'-' if ms is None else f'{ms:.1f}'} | {r.get('evaluations_per_step', '')} | "
                     f"`{row.config}` |")
    return lines


def figures(plan: Plan, results: dict[str, dict], images: dict[str, Tensor], grids: dict, baselines: dict,
            folder: Path) -> dict[str, list[str]]:
    """Per task: PSNR-vs-steps curves and a reconstruction grid. Returns task -> file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfinv.reproduce.runner import magnitude

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for task_key, task in plan.tasks.items():
        rows = [r for r in plan.rows.values() if r.key in results and r.task == task_key]
        if not rows:
            continue
        files = []
        fig, ax = plt.subplots(figsize=(7, 4.5))
        palette = plt.get_cmap("tab20" if len(rows) > 10 else "tab10")  # no two curves of one colour
        for i, row in enumerate(rows):
            c = results[row.key]["curve"]
            ax.plot([p["step"] for p in c], [p["test_psnr"] for p in c], label=row.label, color=palette(i % 20),
                    lw=2.5 if row.reference is None else 1.2, ls="-" if row.reference is None else "--")
        for name, m in baselines.get(task_key, {}).items():
            ax.axhline(statistics.fmean(m["psnr"]), color="grey", lw=0.8, ls=":")
            ax.annotate(name, (0, statistics.fmean(m["psnr"])), fontsize=7, color="grey")
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("test PSNR (dB)")
        ax.set_title(task.title, fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"{task_key}_curves.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        files.append(name)
        panels: list[tuple[str, Tensor]] = list(grids.get(task_key, {}).items())
        panels += [(row.label, images[row.key]) for row in rows if row.key in images]
        if panels:
            gt = magnitude(grids[task_key]["ground truth"][None].float())[0, 0]
            cols = min(5, len(panels))
            nrows = -(-len(panels) // cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 3.2 * nrows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, (label, img) in zip(axes.flat, panels, strict=False):
                im = magnitude(img[None].float())[0, 0]
                if im.shape != gt.shape:
                    ax.set_title(f"{_wrap(label)}\n(measurement grid)", fontsize=7)
                    ax.imshow(im.numpy(), cmap="gray", vmin=0, vmax=1)
                    continue
                p = 10 * torch.log10(1 / (im.clamp(0, 1) - gt).pow(2).mean().clamp_min(1e-10))
                title = _wrap(label) if label == "ground truth" else f"{_wrap(label)}\n{float(p):.2f} dB"
                ax.set_title(title, fontsize=7)
                ax.imshow(im.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            fig.suptitle(task.title, fontsize=9)
            fig.tight_layout()
            name = f"{task_key}_grid.png"
            fig.savefig(folder / name, dpi=110)
            plt.close(fig)
            files.append(name)
        made[task_key] = files
    return made


def write(plan: Plan, claims: list[Claim], results: dict[str, dict], images: dict[str, Tensor], preset: str,
          device: str, out: str, code: str, elapsed: float, log=print, seeds: int = 1) -> dict:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = NAMES[preset]
    baselines, grids = _baselines(plan, results, device)
    labels = {k: r.label for k, r in plan.rows.items()}
    res = Results(results, baselines, labels)
    entries = evaluate_claims(plan, claims, res, results)
    fig_dir = out_dir / name
    made = figures(plan, results, images, grids, baselines, fig_dir) if results else {}
    row_seconds = sum(r.get("wall_seconds", 0.0) for r in results.values())
    span = training_span(results)
    counts = {s: sum(e["status"] == s for e in entries) for s in ("holds", "misses", "contradicts", "not run")}
    md = [f"# Claims of the tutorial and papers, reproduced ({preset} preset)", "",
          f"`selfinv reproduce{' --quick' if preset == 'quick' else ''}"
          f"{' --device cuda' if device == 'cuda' else ''}{f' --seeds {seeds}' if seeds > 1 else ''}` — "
          f"{len(results)} trained rows{f' × {seeds} training seeds' if seeds > 1 else ''}, {len(entries)} claims: "
          f"{counts['holds']} hold, {counts['misses']} miss, {counts['contradicts']} contradict, "
          f"{counts['not run']} not run. Training + evaluation time of the rows: {row_seconds / 60:.1f} min "
          f"(summed over the rows, whenever they ran; this invocation: {elapsed / 60:.1f} min)"
          f"{span[2] if span else ''}. Code version {code}.", ""]
    if preset == "quick":
        md += ["**QUICK PRESET: a smoke test of the pipeline (40 steps per row, 8 test items). The verdicts below "
               "are NOT measurements of the claims.**", ""]
    md += ["Every row is trained by `selfinv.training.engine.fit` from its file in `configs/claims/` "
           "(`selfinv fit --config configs/claims/FILE.yaml` trains the same network; presets other than `cpu` "
           "change steps / sizes, see `selfinv/reproduce/runner.py`). Test sets are fixed crops of the "
           "bundled test images (natural-gray: camera, coins, flower; mri-slices: held-out slices, MRI "
           "k-space SIMULATED from magnitude images), measured once; reconstructions use the loss's test-time "
           "estimator. ± is the standard error over test items; differences between methods are paired "
           "(per-item differences). A supervised reference is *converged* when its last 20 % of steps gain "
           f"< {CONVERGENCE_DB} dB; claims resting on one that is not are marked.", ""]
    if seeds > 1:
        md += [f"**{seeds} training seeds per row** (the config's `trainer.seed` + 0 … {seeds - 1}: initialisation "
               "and the losses' random draws; data, noise and test set unchanged). Every number below is of the "
               "seed-averaged per-item metrics (item by item, the mean over the seeds), so the ± does not "
               "contain the spread over seeds: the rows' tables list each seed's PSNR and their standard "
               "deviation; the val/loss pick is averaged the same way (its step: the first seed's); the curve and "
               "ms/step are the first seed's.", ""]
    for family in dict.fromkeys(e["family"] for e in entries):
        md += [f"## {family}", ""] + _claims_table([e for e in entries if e["family"] == family]) + [""]
    md += ["## Rows by task", ""]
    for task_key, task in plan.tasks.items():
        if not any(r.task == task_key and r.key in results for r in plan.rows.values()):
            continue
        md += [f"### {task.title} (`{task_key}`)", ""] + _task_table(task_key, plan, results, baselines)
        md += [""] + [f"* {n}" for n in task.notes] + ([""] if task.notes else [])
        for f in made.get(task_key, []):
            md.append(f"![{f}]({name}/{f})")
        md.append("")
    md += ["Columns: *Δ vs supervised* is paired over the test items; *val/loss pick* is the step of the engine's "
           "`best-*.ckpt` (lowest self-supervised validation loss) and its test PSNR minus the final weights'; "
           "*last-20 % gain* is the test PSNR gained over the last 20 % of the steps (✗: a supervised reference "
           f"gaining ≥ {CONVERGENCE_DB} dB, not converged); *evals* = network evaluations with gradient per "
           "step.", ""]
    env = next((r.get("environment") for r in results.values() if r.get("environment")), None) \
        or environment(device)
    md += [f"Environment of the first row: {json.dumps(env)}", ""]
    text = "\n".join(md) + "\n"
    md_path = out_dir / f"{name}.md"
    md_path.write_text(text)
    data = {"preset": preset, "device": device, "code": code, "claims": entries, "baselines": baselines,
            "rows": {k: {kk: vv for kk, vv in r.items() if kk != "config"} | {"config_file": r.get("config_file")}
                     for k, r in results.items()},
            "row_seconds": row_seconds, "invocation_seconds": elapsed,
            "training_span": {"first_start": span[0], "last_finish": span[1]} if span else None, "figures": made,
            "markdown_path": str(md_path)}
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    log(f"[reproduce] wrote {md_path} and {out_dir / (name + '.json')} ({counts})")
    return data


def training_span(results: dict[str, dict]) -> tuple[str, str, str] | None:
    """``(first start, last finish, sentence)`` of the rows' training, from each row's finish time and wall
    seconds: the wall time of the table when its rows trained side by side (``--workers``) or over
    several invocations (then it includes the time between them)."""
    import datetime as dt

    spans = []  # (start, end, slack): rows cached before start/end times were kept have a 1 s resolution
    for r in results.values():
        for sr in r.get("seed_times") or [r]:
            if sr.get("start_time") is not None and sr.get("end_time") is not None:
                spans.append((dt.datetime.fromtimestamp(float(sr["start_time"])),
                              dt.datetime.fromtimestamp(float(sr["end_time"])), dt.timedelta(0)))
            elif sr.get("finished") and sr.get("wall_seconds") is not None:
                end = dt.datetime.strptime(sr["finished"], "%Y-%m-%d %H:%M:%S")
                spans.append((end - dt.timedelta(seconds=float(sr["wall_seconds"])), end, dt.timedelta(seconds=2)))
    if not spans:
        return None
    start, end = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    # the most rows training at one moment (their intervals overlap): 1 for a sequential run, whose rows
    # follow each other (within the 1 s resolution of the finish times of older rows: 2 s of slack)
    events = sorted([(min(s + slack, e), 1) for s, e, slack in spans] + [(e, -1) for _, e, _ in spans],
                    key=lambda t: (t[0], t[1]))
    at_once = running = 0
    for _, step in events:
        running += step
        at_once = max(at_once, running)
    hours = (end - start).total_seconds() / 3600
    sentence = (f"; the rows trained from {start:%Y-%m-%d %H:%M} to {end:%H:%M} ({hours:.2f} h of wall time, "
                f"at most {at_once} row(s) at a time)")
    return f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}", sentence


def _wrap(label: str, width: int = 32) -> str:
    """A panel title on lines of at most ``width`` characters (long labels overlapped their neighbours)."""
    return "\n".join(textwrap.wrap(label, width)) or label
