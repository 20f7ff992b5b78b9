"""Smoke test of benchmarks/denoising.py: a few engine steps per row, files written, evaluations counted.

The quality numbers of 3 steps mean nothing; what is checked is the plumbing the
full table relies on: rows trained through the engine, the test-time estimator
evaluated on the fixed test crops, the forward-hook count of network evaluations
per step (supervised: 1 with gradient; Neighbor2Neighbor: 1 with gradient + 1
without; Gaussian SURE with the MC divergence: 2 with gradient, y and y + τω),
and the Noise2Noise row reading the second copy ``y2`` from the batch.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "denoising.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_denoising", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_denoising_benchmark_smoke(tmp_path):
    bench = _load()
    bench.main(["--quick", "--steps", "3", "--threads", "1", "--noises", "gaussian", "--out", str(tmp_path),
                "--patch", "16", "--batch", "4", "--only", "supervised", "noise2noise", "neighbor2neighbor",
                "sure"])
    data = json.loads((tmp_path / "denoising.json").read_text())
    md = (tmp_path / "denoising.md").read_text()
    assert "3 optimisation steps per row" in md
    rows = data["noises"]["gaussian"]["rows"]
    assert {"supervised", "noise2noise", "neighbor2neighbor", "sure"} <= set(rows)
    assert (rows["supervised"]["evals_grad"], rows["supervised"]["evals_nograd"]) == (1, 0)
    assert (rows["neighbor2neighbor"]["evals_grad"], rows["neighbor2neighbor"]["evals_nograd"]) == (1, 1)
    assert rows["sure"]["evals_grad"] == 2
    noisy = data["noises"]["gaussian"]["noisy"]["psnr"]
    # σ = 0.1 on images in [0, 1]: PSNR of the noisy input = -20 log10(0.1) = 20 dB up to the draw
    # (3 crops of 96x96 in quick mode: relative std of the MSE ~ sqrt(2 / 27648) -> ~0.04 dB; 0.1 dB ~ 2.5 sd)
    assert abs(noisy - 20.0) < 0.1
    for r in rows.values():
        assert math.isfinite(r["psnr"]) and r["median_ms"] > 0
