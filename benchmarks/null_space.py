"""What each method recovers in the null space of ``A``: the statements "measurement consistency learns nothing
there" and "a group that commutes with ``A`` does not help", measured as they are meant.

With ``P_R = A†A`` (orthogonal projection on the row space of ``A``) every image splits into
``x = P_R x + P_N x``; the measurements see only ``P_R x``. For the networks of the rows of a linear
inverse-problem task of ``selfinv reproduce`` (``sei-sr2``, ``sei-sr4``, ``mri``, ``inpainting`` ...) this
prints, on the rows' fixed test set:

* the **null-space error** ``||P_N(x̂ - x)|| / ||P_N x||`` (mean over test items): 1 is what ``A†y`` scores
  (it puts 0 there), below 1 means the method recovered something of the null space, above 1 that what it
  put there is further from the truth than nothing;
* the null-space energy it put there, ``||P_N x̂|| / ||P_N x||``;
* the row-space error ``||P_R(x̂ - x)|| / ||P_R x||`` (noise and what ``A`` sees).

Measurement consistency alone constrains only ``P_R x̂`` (tutorial, Part 3), and a group that commutes
with ``A`` (the 90° rotations for the block-centred bicubic downsampling) gives the equivariant-imaging loss
no information on the null space (Chen, Tachella & Davies; Scanvic et al. 2024): their networks should not do
better than 1 there, whatever their PSNR.

Usage:
    python benchmarks/null_space.py RUNS [--tasks sei-sr2 sei-sr4 mri] [--threads 2] [--out DIR] [--name NAME]

``RUNS`` is the ``runs/<device>`` folder of a ``selfinv reproduce`` invocation (``<task>__<row>/checkpoints/
last.ckpt``, every row of the task found there); the row configs are read from ``configs/claims``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfinv.reproduce.runner import (  # noqa: E402
    baseline_fn,
    build_test_set,
    full_plan,
    null_space_errors,
    reconstruct,
)
from selfinv.training.loading import load_trained  # noqa: E402

from common import environment, markdown_table, setup, write_results  # noqa: E402

NAME = "null_space"
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "claims"


def decomposition_errors(x_hat: torch.Tensor, test) -> dict[str, float]:
    """Mean over items of the null-space error (``selfinv reproduce``'s per-item metric,
    ``runner.null_space_errors``), the null-space energy and the row-space error (module docstring)."""
    op = test.operator(slice(None))  # per-item operators where the physics draws them
    x_hat, x = x_hat.to(test.y.dtype), test.x.to(test.y.dtype)

    def norm(v: torch.Tensor) -> torch.Tensor:
        return v.double().flatten(1).norm(dim=1)

    xr, hr = op.A_dagger(op.A(x)), op.A_dagger(op.A(x_hat))
    return {"null_error": statistics.fmean(null_space_errors(x_hat, test)),
            "null_energy": float((norm(x_hat - hr) / norm(x - xr)).mean()),
            "row_error": float((norm(hr - xr) / norm(xr)).mean())}


def run_task(task: str, runs: Path) -> list[dict]:
    plan = full_plan()
    rows = [r for k, r in plan.rows.items() if k.split("/", 1)[0] == task
            and (runs / f"{task}__{k.split('/', 1)[1]}" / "checkpoints" / "last.ckpt").exists()]
    if not rows:
        raise SystemExit(f"no trained row of task {task!r} in {runs}")
    spec = plan.tasks[task].test
    cfg = yaml.safe_load((CONFIGS / rows[0].config).read_text())
    test = build_test_set(cfg, spec)
    out = []
    for label, kind in plan.tasks[task].baselines.items():
        if kind in ("dagger", "bicubic"):
            out.append({"task": task, "method": label, **decomposition_errors(
                reconstruct(baseline_fn(kind), test), test)})
    for row in rows:
        ckpt = runs / f"{task}__{row.key.split('/', 1)[1]}" / "checkpoints" / "last.ckpt"
        module = load_trained(str(ckpt)).module.eval()
        x_hat = reconstruct(lambda y, p, g: module(y, p, g), test)
        out.append({"task": task, "method": row.label, **decomposition_errors(x_hat, test)})
        print(f"[{NAME}] {task} {row.label}: {out[-1]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", help="runs/<device> folder of a selfinv reproduce invocation")
    ap.add_argument("--tasks", nargs="+", default=["sei-sr2", "sei-sr4"])
    ap.add_argument("--name", default=NAME, help="results file name (default null_space)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    setup(threads=args.threads)
    rows = [r for t in args.tasks for r in run_task(t, Path(args.runs))]
    table = markdown_table(["task", "method", "null-space error ‖P_N(x̂−x)‖/‖P_N x‖", "null-space energy ‖P_N x̂‖/‖P_N x‖",
                            "row-space error ‖P_R(x̂−x)‖/‖P_R x‖"],
                           [[r["task"], r["method"], f"{r['null_error']:.3f}", f"{r['null_energy']:.2f}",
                             f"{r['row_error']:.4f}"] for r in rows])
    md = "\n".join([
        "# What the methods recover in the null space of A", "",
        f"`python benchmarks/null_space.py {args.runs} --tasks {' '.join(args.tasks)}` on the networks of `selfinv reproduce --only "
        f"'{','.join(args.tasks)}'`; test set and configs of those rows. Null-space error 1 = A†y (nothing "
        "recovered there); < 1: something of the null space recovered; > 1: worse than nothing. Magnitude "
        "images (MRI) are decomposed as the 2-channel complex images the operator acts on.", "",
        table, "", f"Environment: {environment()}", ""])
    print(md)
    write_results(args.out, args.name, {"rows": rows, "environment": environment()}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
