"""Operator benchmark: time A, Aᵀ (and FBP for CT) of every selfinv operator on
256x256 images, batch 1 and 8, median of repeats, side by side with DeepInverse.

The deepinv side is the reference workload ../shared/anchor/bench_ops.py, run
in its own virtual environment in a subprocess right after ours (same machine,
same thread count); the ratio columns are deepinv ms / selfinv ms (> 1: selfinv
is faster). CT accuracy is measured for both against the analytic Radon
transform of a phantom made of discs.

Usage:
    python benchmarks/operators.py [--out DIR] [--batches 1 8] [--repeats 10] [--rounds 1]
        [--deepinv-python ../.venv-deepinv/bin/python | --no-deepinv]

``--rounds K`` alternates the two sides K times (selfinv, deepinv, selfinv, ...): on a 2-core
machine a sub-millisecond operator's time drifts from one minute to the next, and one pair of runs
can put a slow minute on one side only. The tables then hold each side's median over the rounds,
and a per-round table gives every round's ratio and their median.

Writes DIR/operators.md and DIR/operators.json (DIR defaults to benchmarks/results).
This file imports selfinv lazily: ``--deepinv-ct-accuracy`` runs in the deepinv
environment (torch + deepinv only) and prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch

from common import (
    anchor_script,
    deepinv_python,
    environment,
    fmt_ms,
    fmt_ratio,
    markdown_table,
    median_time,
    setup,
    write_results,
)

N = 256
DEFAULT_DEEPINV_PYTHON = deepinv_python()
DEFAULT_ANCHOR = anchor_script("bench_ops.py")

# --- the CT accuracy phantom: discs (x0, y0, radius, value) in pixel units from the centre
DISCS = ((0.0, 0.0, 0.42, 1.0), (0.15, 0.1, 0.12, -0.5), (-0.2, -0.15, 0.08, 0.7), (0.05, -0.25, 0.05, 0.4))
ACC_SIZE = 255  # odd: every convention puts the rotation centre on the central pixel
ACC_VIEWS = 60


def disc_phantom(n: int, sub: int = 4) -> torch.Tensor:
    """Pixel averages (sub x sub supersampling) of the disc phantom, (1, 1, n, n) float64.

    Disc centres and radii are fractions of the image width; pixel size 1.
    """
    off = (torch.arange(sub, dtype=torch.float64) + 0.5) / sub - 0.5
    c = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    X = (c[None, :, None, None] + off[None, None, None, :])
    Y = (-c[:, None, None, None] - off[None, None, :, None])
    img = torch.zeros(n, n, dtype=torch.float64)
    for x0, y0, r, v in DISCS:
        img += v * (((X - x0 * n) ** 2 + (Y - y0 * n) ** 2) <= (r * n) ** 2).double().mean((-1, -2))
    return img[None, None]


def disc_sinogram(n: int, n_det: int, angles_deg: torch.Tensor) -> torch.Tensor:
    """Analytic Radon transform ``sum_d v_d 2 sqrt(r_d^2 - (t - c_d.e)^2)`` averaged over
    unit detector bins centred at ``k - (n_det-1)/2``; shape (views, n_det)."""
    th = torch.deg2rad(angles_deg.double()).reshape(-1, 1)
    t = torch.arange(n_det, dtype=torch.float64) - (n_det - 1) / 2
    out = torch.zeros(th.shape[0], n_det, dtype=torch.float64)
    for x0, y0, r, v in DISCS:
        r = r * n
        shift = x0 * n * torch.cos(th) + y0 * n * torch.sin(th)

        def primitive(u):
            u = u.clamp(-r, r)
            return u * torch.sqrt(r * r - u * u) + r * r * torch.asin(u / r)

        out += v * (primitive(t + 0.5 - shift) - primitive(t - 0.5 - shift))
    return out


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).norm() / ref.norm())


def deepinv_ct_accuracy() -> dict:
    """(Run in the deepinv environment.) Relative errors of deepinv's Tomography
    against the analytic sinogram, and of its FBP against the phantom."""
    import deepinv as dinv

    x = disc_phantom(ACC_SIZE).float()
    phys = dinv.physics.Tomography(angles=ACC_VIEWS, img_width=ACC_SIZE, normalize=False)
    with torch.no_grad():
        y = phys.A(x)[0, 0].double()  # (n_det, views)
        fbp = phys.A_dagger(phys.A(x), fbp=True).double()
    sino = y.t()
    angles = torch.arange(ACC_VIEWS, dtype=torch.float64) * (180.0 / ACC_VIEWS)
    # deepinv's angle direction is not documented: try both and keep the better
    errs = {sign: relative_error(sino, disc_sinogram(ACC_SIZE, sino.shape[1], sign * angles)) for sign in (1, -1)}
    sign = min(errs, key=errs.get)
    ref = disc_sinogram(ACC_SIZE, sino.shape[1], sign * angles)
    scale = float((sino * ref).sum() / (sino * sino).sum())
    return {"sinogram_rel_err": errs[sign], "angle_sign": sign,
            "sinogram_rel_err_best_scale": relative_error(scale * sino, ref), "best_scale": scale,
            "fbp_rel_err": relative_error(fbp, x.double()), "n_detectors": int(sino.shape[1])}


def selfinv_ct_accuracy() -> dict:
    from selfinv.physics import Tomography

    x = disc_phantom(ACC_SIZE)
    phys = Tomography(ACC_SIZE, n_views=ACC_VIEWS, pixel_size=1.0)
    sino = phys.A(x)[0, 0]
    ref = disc_sinogram(ACC_SIZE, phys.n_detectors, phys.angles[0])
    fbp = phys.fbp(phys.A(x))
    return {"sinogram_rel_err": relative_error(sino, ref), "fbp_rel_err": relative_error(fbp, x),
            "n_detectors": phys.n_detectors}


def selfinv_operators():
    """(name, deepinv counterparts, channels, factory or None, note)."""
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    specs = []

    def add(name, counterparts, channels, build):
        try:
            phys = build()
            specs.append((name, counterparts, channels, phys, ""))
        except Exception as e:  # an operator not (yet) available: skip with a note
            specs.append((name, counterparts, channels, None, f"{type(e).__name__}: {e}"))

    def physics():
        import selfinv.physics as p
        return p

    add("Denoising", ["Denoising"], 1, lambda: physics().Denoising(physics().GaussianNoise(0.1)))
    add("Inpainting(50%)", ["Inpainting(50%)"], 1,
        lambda: physics().Inpainting((1, N, N), keep_ratio=0.5, generator=g(0)))
    add("MRI(4x, centre 8%, 2ch)", ["MRI(4x, 2ch)"], 2,
        lambda: physics().MRI((N, N), acceleration=4, center_fraction=0.08, generator=g(0)))
    add("Tomography(60 views)", ["Tomography(60, adj=backprop)", "Tomography(60, adj=interp)"], 1,
        lambda: physics().Tomography(N, n_views=60))
    add("Blur(gauss 9x9 s=1, circular)", ["BlurFFT(gauss 9x9)", "Blur(gauss 9x9, circular)"], 1,
        lambda: physics().Blur(kernel=physics().gaussian_kernel(1.0, 9), boundary="circular"))
    add("Blur(gauss 9x9 s=1, valid)", ["Blur(gauss 9x9, valid)"], 1,
        lambda: physics().Blur(kernel=physics().gaussian_kernel(1.0, 9), boundary="valid"))
    add("Downsampling(x2, bicubic)", ["Downsampling(x2, bicubic)"], 1,
        lambda: physics().Downsampling((1, N, N), factor=2, filter="bicubic"))
    add("Downsampling(x2, gaussian)", ["Downsampling(x2, gaussian)"], 1,
        lambda: physics().Downsampling((1, N, N), factor=2, filter="gaussian"))
    return specs


def time_selfinv(batches, repeats):
    import time

    results, notes = [], []
    for name, counterparts, ch, phys, note in selfinv_operators():
        if phys is None:
            notes.append(f"{name}: skipped ({note})")
            continue
        for b in batches:
            x = torch.rand(b, ch, N, N, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                t0 = time.perf_counter()
                y = phys.A(x)  # first call: includes any setup (e.g. the CT matrix build)
                first_ms = 1e3 * (time.perf_counter() - t0)
                r = {"op": name, "counterparts": counterparts, "batch": b, "x_shape": list(x.shape),
                     "y_shape": list(y.shape), "first_call_ms": first_ms,
                     "A": median_time(lambda: phys.A(x), repeats=repeats),
                     "A_adjoint": median_time(lambda: phys.A_adjoint(y), repeats=repeats)}
                if hasattr(phys, "fbp"):
                    r["A_dagger_fbp"] = median_time(lambda: phys.fbp(y), repeats=repeats)
            results.append(r)
            print(f"selfinv {name:32s} b={b}  A {r['A']['median_ms']:8.3f} ms  "
                  f"AT {r['A_adjoint']['median_ms']:8.3f} ms", flush=True)
    return results, notes


def run_deepinv(python: str, anchor: str, batches, same_allocator: bool = False) -> tuple[list, dict | None, str]:
    """Run the anchor bench_ops.py and the CT accuracy in the deepinv environment; with
    ``same_allocator`` under the glibc thresholds ``keep_freed_memory()`` sets (as environment variables)."""
    env = dict(os.environ)
    if same_allocator:
        from selfinv.utils.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

        env.update(MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(TRIM_THRESHOLD))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [python, anchor, "--out", tmp, "--batches", *map(str, batches)]
        proc = subprocess.run(cmd, cwd=str(Path(anchor).parent), capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return [], None, f"deepinv timing failed: {proc.stderr.strip()[-500:]}"
        data = json.loads((Path(tmp) / "ops.json").read_text())
    acc = subprocess.run([python, str(Path(__file__).resolve()), "--deepinv-ct-accuracy"],
                         cwd=str(Path(__file__).resolve().parent), capture_output=True, text=True)
    accuracy = json.loads(acc.stdout.strip().splitlines()[-1]) if acc.returncode == 0 else None
    note = "" if accuracy is not None else f"deepinv CT accuracy failed: {acc.stderr.strip()[-300:]}"
    return data["results"], {"env": data.get("env"), "ct_accuracy": accuracy}, note


TIMED = ("A", "A_adjoint", "A_dagger_fbp")


def _key(r: dict) -> tuple:
    return (r["op"], r["batch"])


def combine_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One side's results over rounds: each entry's median, lower quartile and minimum over the rounds'
    values (the rounds' own medians are kept under ``rounds_ms``)."""
    if len(rounds) == 1:
        return rounds[0]
    out = []
    for first in rounds[0]:
        same = [next((r for r in rs if _key(r) == _key(first)), None) for rs in rounds]
        same = [r for r in same if r is not None]
        merged = dict(first)
        for k in TIMED:
            if k in first:
                vals = [r[k] for r in same if k in r]
                merged[k] = {"median_ms": statistics.median(v["median_ms"] for v in vals),
                             "q1_ms": statistics.median(v.get("q1_ms", v.get("p25_ms", v["median_ms"]))
                                                        for v in vals),
                             "min_ms": min(v.get("min_ms", v["median_ms"]) for v in vals),
                             "rounds_ms": [v["median_ms"] for v in vals]}
        out.append(merged)
    return out


def round_ratios(ours_rounds: list[list[dict]], theirs_rounds: list[list[dict]]) -> list[dict]:
    """Per (operator, counterpart, batch, A/Aᵀ/FBP): each round's deepinv ms / selfinv ms and their median."""
    rows = []
    for r in ours_rounds[0]:
        for cp in r["counterparts"]:
            for k in TIMED:
                ratios = []
                for ours, theirs in zip(ours_rounds, theirs_rounds, strict=True):
                    o = next((x for x in ours if _key(x) == _key(r)), None)
                    d = next((x for x in theirs if (x["op"], x["batch"]) == (cp, r["batch"])), None)
                    if o is not None and d is not None and k in o and k in d and o[k]["median_ms"] > 0:
                        ratios.append(d[k]["median_ms"] / o[k]["median_ms"])
                if ratios:
                    rows.append({"op": r["op"], "counterpart": cp, "batch": r["batch"], "which": k,
                                 "ratios": ratios, "median_ratio": statistics.median(ratios)})
    return rows


def busy_machine_note(env: dict) -> str | None:
    """A warning when the 1-minute load average exceeded 1 at the start or the end of the run."""
    loads = [v[0] for v in (env.get("load_average"), env.get("load_average_end")) if v]
    if not loads or max(loads) <= 1.0:
        return None
    return (f"The machine was busy (1-minute load average up to {max(loads):.2f} on 2 cores): a median of a "
            "multi-threaded operator of a few milliseconds can then be a scheduler time slice of another "
            "process (multiples of ~4-8 ms), on either side; read the lower-quartile table, and rerun on a "
            "quiet machine before quoting a ratio.")


def _load(values) -> str:
    return "-" if not values else "/".join(f"{v:.2f}" for v in values)


def build_report(ours, theirs, notes, accuracy, env, deepinv_env, per_round: list[dict] | None = None) -> str:
    ref = {(r["op"], r["batch"]): r for r in theirs}
    ms = lambda r, k: r[k]["median_ms"] if r is not None and k in r else None  # noqa: E731
    rows = []
    for r in ours:
        for cp in (r["counterparts"] if theirs else [None]):
            d = ref.get((cp, r["batch"]))
            rows.append([r["op"], cp or "-", r["batch"],
                         fmt_ms(ms(r, "A")), fmt_ms(ms(d, "A")), fmt_ratio(ms(d, "A"), ms(r, "A")),
                         fmt_ms(ms(r, "A_adjoint")), fmt_ms(ms(d, "A_adjoint")),
                         fmt_ratio(ms(d, "A_adjoint"), ms(r, "A_adjoint")),
                         fmt_ms(ms(r, "A_dagger_fbp")), fmt_ms(ms(d, "A_dagger_fbp")),
                         fmt_ratio(ms(d, "A_dagger_fbp"), ms(r, "A_dagger_fbp"))])
    header = ["selfinv operator (256x256)", "deepinv counterpart", "batch", "A ms", "deepinv A ms", "A ratio",
              "Aᵀ ms", "deepinv Aᵀ ms", "Aᵀ ratio", "FBP ms", "deepinv FBP ms", "FBP ratio"]
    lines = ["# Operator timings: selfinv vs DeepInverse", "",
             f"CPU: {env.get('cpu')}, torch {env['torch']}, {env['torch_threads']} threads, "
             f"load average (1, 5, 15 min) at start {_load(env.get('load_average'))}, at the end "
             f"{_load(env.get('load_average_end'))}. Median of repeats (>= 0.5 s per entry); "
             "ratio = deepinv ms / selfinv ms (> 1: selfinv faster).", ""]
    if deepinv_env:
        lines += [f"deepinv side: torch {deepinv_env.get('torch')}, deepinv {deepinv_env.get('deepinv')}.", ""]
    lines += [markdown_table(header, rows), ""]
    if theirs:
        # first quartiles: on a shared machine the median of a sub-millisecond operator can be
        # a time slice of another process; the lower quartile is closer to the operator's cost
        q = lambda r, k: r[k].get("q1_ms", r[k].get("p25_ms")) if r is not None and k in r else None  # noqa: E731
        qrows = []
        for r in ours:
            for cp in r["counterparts"]:
                d = ref.get((cp, r["batch"]))
                qrows.append([r["op"], cp, r["batch"]] + [
                    "-" if q(r, k) is None or q(d, k) is None
                    else f"{fmt_ms(q(r, k))} / {fmt_ms(q(d, k))} = {fmt_ratio(q(d, k), q(r, k))}"
                    for k in ("A", "A_adjoint", "A_dagger_fbp")])
        lines += ["Lower quartiles, selfinv ms / deepinv ms = ratio (same runs):", "",
                  markdown_table(["selfinv operator", "deepinv counterpart", "batch", "A", "Aᵀ", "FBP"], qrows), ""]
    ct = [r for r in ours if r["op"].startswith("Tomography")]
    if ct:
        lines += ["First call of Tomography (builds and caches the sparse matrix): "
                  + ", ".join(f"batch {r['batch']} {r['first_call_ms']:.0f} ms" for r in ct) + ".", ""]
    if accuracy:
        lines += [f"## CT accuracy ({ACC_SIZE}x{ACC_SIZE}, {ACC_VIEWS} views, pixel size 1)", "",
                  "Relative l2 error of A x against the analytic Radon transform of a phantom of 4 discs "
                  "(pixel-averaged image; bin-averaged analytic sinogram), and of FBP(A x) against x.", ""]
        arows = []
        s = accuracy.get("selfinv")
        if s:
            arows.append(["selfinv Tomography", f"{s['sinogram_rel_err']:.4f}", "-", f"{s['fbp_rel_err']:.4f}"])
        d = accuracy.get("deepinv")
        if d:
            arows.append(["deepinv Tomography", f"{d['sinogram_rel_err']:.4f}",
                          f"{d['sinogram_rel_err_best_scale']:.4f} (scale {d['best_scale']:.4f})",
                          f"{d['fbp_rel_err']:.4f}"])
        lines += [markdown_table(["operator", "sinogram rel. err", "after best scale", "FBP rel. err"], arows), ""]
    if per_round:
        names = {"A": "A", "A_adjoint": "Aᵀ", "A_dagger_fbp": "FBP"}
        lines += [f"## Alternated rounds ({len(per_round[0]['ratios'])})", "",
                  "deepinv ms / selfinv ms of each round (the two sides timed one after the other, round after "
                  "round) and the median of those ratios:", "",
                  markdown_table(["selfinv operator", "deepinv counterpart", "batch", "", "rounds", "median ratio"],
                                 [[r["op"], r["counterpart"], r["batch"], names[r["which"]],
                                   " / ".join(f"{v:.2f}" for v in r["ratios"]), f"{r['median_ratio']:.2f}x"]
                                  for r in per_round]), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=10, help="minimum timed calls per entry")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the selfinv and deepinv runs this many times")
    ap.add_argument("--deepinv-python", default=None,
                    help=f"python of a deepinv environment (default {DEFAULT_DEEPINV_PYTHON} if it exists)")
    ap.add_argument("--no-deepinv", action="store_true", help="time selfinv only")
    ap.add_argument("--anchor", default=DEFAULT_ANCHOR, help="the deepinv reference script bench_ops.py")
    ap.add_argument("--system-allocator", action="store_true",
                    help="leave glibc's malloc thresholds as they are (default: keep_freed_memory(), as the "
                         "selfinv commands do)")
    ap.add_argument("--deepinv-ct-accuracy", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    setup(0)
    if args.deepinv_ct_accuracy:
        print(json.dumps(deepinv_ct_accuracy()))
        return

    env = environment()
    if not args.system_allocator:
        from selfinv.utils.allocator import keep_freed_memory

        env["keep_freed_memory"] = keep_freed_memory()
    ours, notes = time_selfinv(args.batches, args.repeats)
    accuracy = {"selfinv": selfinv_ct_accuracy()}
    python = args.deepinv_python or (DEFAULT_DEEPINV_PYTHON if os.path.exists(DEFAULT_DEEPINV_PYTHON) else None)
    theirs, deepinv_info = [], None
    ours_rounds, theirs_rounds = [ours], []
    if args.no_deepinv or python is None:
        notes.append("deepinv not run (no --deepinv-python environment)")
    elif not os.path.exists(args.anchor):
        notes.append(f"deepinv not run: {args.anchor} not found")
    else:
        for i in range(max(1, args.rounds)):
            if i > 0:
                print(f"round {i + 1} of {args.rounds}: selfinv ...", flush=True)
                ours_rounds.append(time_selfinv(args.batches, args.repeats)[0])
            print(f"running deepinv reference with {python} ...", flush=True)
            theirs, deepinv_info, note = run_deepinv(python, args.anchor, args.batches,
                                                     same_allocator=bool(env.get("keep_freed_memory")))
            if note:
                notes.append(note)
                break
            theirs_rounds.append(theirs)
        if deepinv_info and deepinv_info.get("ct_accuracy"):
            accuracy["deepinv"] = deepinv_info["ct_accuracy"]
    per_round = None
    if len(theirs_rounds) > 1:
        ours_rounds = ours_rounds[:len(theirs_rounds)]
        per_round = round_ratios(ours_rounds, theirs_rounds)
        ours, theirs = combine_rounds(ours_rounds), combine_rounds(theirs_rounds)
        notes.append(f"{len(theirs_rounds)} alternated rounds: the first two tables hold each side's median over "
                     "the rounds (lower quartile: the median of the rounds' lower quartiles).")
    env["load_average_end"] = list(os.getloadavg())
    note = busy_machine_note(env)
    if note:
        notes.append(note)
    notes.append("Denoising: selfinv's A and Aᵀ return their input (no copy), so its ratio only "
                 "measures deepinv's call overhead.")
    notes.append("MRI k-space is simulated from magnitude images (real 2-channel tensors).")
    if env.get("keep_freed_memory"):
        notes.append("selfinv side timed with `selfinv.utils.allocator.keep_freed_memory()` applied, as the "
                     "`selfinv` commands do (glibc keeps freed blocks instead of unmapping them; without it the "
                     "batch-8 FFT operators sometimes run 2-4x slower after the batch-1 calls, from page faults); "
                     "the deepinv subprocess under the same thresholds (MALLOC_MMAP_THRESHOLD_, "
                     "MALLOC_TRIM_THRESHOLD_). `--system-allocator` times both without.")
    elif not args.system_allocator:
        notes.append("keep_freed_memory() not in effect (not glibc, or MALLOC_* variables set)")
    notes.append("Timings are medians on a shared 2-core machine; multi-threaded sparse products "
                 "slow down several-fold when other processes compete for the cores "
                 "(see the load average above).")
    report = build_report(ours, theirs, notes, accuracy, env, (deepinv_info or {}).get("env"), per_round)
    out = write_results(args.out, "operators", {"env": env, "selfinv": ours, "deepinv": theirs,
                                                "rounds": per_round,
                                                "deepinv_env": (deepinv_info or {}).get("env"),
                                                "ct_accuracy": accuracy, "notes": notes}, report)
    print("\n" + report)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
