"""Smoke test of benchmarks/incomplete.py (a 2-step run of one row) and of its expectation checks."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "incomplete.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_incomplete", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_incomplete"] = mod  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_incomplete", None)


def _row(task, method, psnr, trained=True):
    return {"task": task, "method": method, "psnr": psnr, "trained": trained}


def test_expectation_checks_follow_the_numbers(bench):
    rows = [_row("inpainting", "A†y (masked)", 20.0, trained=False), _row("inpainting", "supervised", 30.0),
            _row("inpainting", "MC", 20.5), _row("inpainting", "MOI", 22.0), _row("inpainting", "SSDU", 27.0)]
    notes = {n.split(":")[0].split("measured ")[-1]: n for n in bench.expectation_notes(rows)}
    assert notes["inpainting / MC"].startswith("* as expected")       # 5 % of the gap: ≈ baseline
    assert "**DIFFERS**" in notes["inpainting / MOI"]                 # 20 % < half of the gap
    assert notes["inpainting / SSDU"].startswith("* as expected")     # 70 % of the gap
    # no gap to recover when supervised does not beat the baseline: no verdict
    rows[1]["psnr"] = 20.2
    assert all(n.startswith("* inconclusive") for n in bench.expectation_notes(rows))


def test_sei_and_shift_checks(bench):
    rows = [_row("sr", "A†y", 25.0, trained=False), _row("sr", "supervised", 29.0), _row("sr", "SURE", 27.0),
            _row("sr", "EI-shift (REI, SURE)", 27.2), _row("sr", "SEI (SURE)", 28.5)]
    notes = bench.expectation_notes(rows)
    shift = next(n for n in notes if "EI-shift" in n)
    assert shift.startswith("* as expected")  # +0.2 dB over SURE: no gain
    sei = [n for n in notes if "SEI" in n]
    assert len(sei) == 2 and all(n.startswith("* as expected") for n in sei)  # beats SURE, 88 % of the gap


def test_two_step_run_writes_markdown_and_json(bench, tmp_path):
    bench.main(["--quick", "--steps", "2", "--threads", "1", "--only", "inpainting/MC", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "incomplete.json").read_text())
    methods = [r["method"] for r in data["rows"]]
    assert methods == ["A†y (masked)", "supervised", "MC"]  # baseline, reference, selected row
    for r in data["rows"]:
        assert math.isfinite(r["psnr"]) and 0.0 < r["ssim"] <= 1.0
        if r["trained"]:
            assert r["steps"] == 2 and r["step_ms"] > 0
    md = (tmp_path / "incomplete.md").read_text()
    assert "SIMULATED from magnitude images" in md and "| inpainting" in md


def test_renoised_ei_accepts_negative_outputs_under_photon_noise():
    """Robust EI re-noises T f(y); with Poisson noise a negative network output must not crash (the
    benchmark's CT row): the virtual mean A T x̂ is clamped at 0 before the counts are drawn."""
    import torch

    from selfinv.losses.equivariant import EquivariantImaging
    from selfinv.physics import Denoising, PoissonGaussianNoise
    from selfinv.transforms import Shift

    physics = Denoising(PoissonGaussianNoise(gain=0.1, sigma=0.01))
    model = lambda y, phys: y - 0.5  # noqa: E731  (outputs below 0 wherever y < 0.5)
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    loss = EquivariantImaging(Shift(), renoise=True)(y, physics, model, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss)
