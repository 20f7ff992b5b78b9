"""Smoke test of benchmarks/validation_selection.py: a tiny supervised inpainting run through the engine.

Checks the bookkeeping the benchmark's conclusion rests on: the test PSNR recorded after
each validation for the checkpoint with the lowest val/loss equals the test PSNR of the
engine's own best checkpoint file reloaded from disk (same weights, same fixed test
measurements, so equal up to float32 summation order: 1e-4 dB), and the gaps are the
differences of the selected entries.
"""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    sys.path.insert(0, str(BENCH))
    import validation_selection as vs

    tmp = tmp_path_factory.mktemp("valsel")
    vs.main(["--quick", "--only", "inpainting-supervised", "--steps", "6", "--val-every-steps", "2",
             "--threads", "1", "--out", str(tmp), "--workdir", str(tmp / "runs")])
    assert (tmp / "validation_selection.md").exists()
    return json.loads((tmp / "validation_selection.json").read_text())["results"]["inpainting-supervised"]


def test_validates_every_epoch_and_evaluates_on_test(result):
    assert result["steps"] == 6
    assert [r["step"] for r in result["curve"]] == [2, 4, 6]
    assert result["n_test"] > 100  # crops of the three natural-gray test images


def test_selection_bookkeeping(result):
    curve = result["curve"]
    by_loss = min(curve, key=lambda r: r["val_loss"])
    by_psnr = max(curve, key=lambda r: r["val_psnr"])
    assert result["by_val_loss"] == by_loss and result["by_val_psnr"] == by_psnr
    assert result["gap_test_db"] == pytest.approx(by_psnr["test_psnr"] - by_loss["test_psnr"], abs=1e-9)
    # the engine's ModelCheckpoint (monitor val/loss) saved the same weights the callback evaluated
    assert result["engine_checkpoint"]["test_psnr"] == pytest.approx(by_loss["test_psnr"], abs=1e-4)
    # val-split gap from the metrics.csv agrees with the callback's val metrics (logged float32: 1e-4 dB)
    assert result["gap_val_db"] == pytest.approx(by_psnr["val_psnr"] - by_loss["val_psnr"], abs=1e-4)


def test_selection_analysis_on_a_known_curve():
    sys.path.insert(0, str(BENCH))
    import validation_selection as vs

    # step 3 has the lowest loss of the first 3 but the oracle (max val_psnr) is step 2
    curve = [{"step": s, "val_loss": l, "val_psnr": p, "test_psnr": t}
             for s, l, p, t in [(1, 5.0, 10.0, 10.0), (2, 3.0, 22.0, 21.0), (3, 2.9, 20.0, 20.5),
                                (4, 1.0, 30.0, 29.0)]]
    a = vs.selection_analysis(curve, min_validations=2)
    assert a["worst_prefix_k"] == 3 and a["worst_prefix_gap_db"] == pytest.approx(0.5)
    assert a["spearman_loss_psnr"] == pytest.approx(0.8)  # ranks (0,2,1,3) vs (0,1,2,3): 1 - 6*2/(4*15)
    assert vs.spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
