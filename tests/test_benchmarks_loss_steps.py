"""benchmarks/loss_steps.py's engine overhead alternates the bare step and the engine run.

A smoke run (two timed steps) of the SURE row with two rounds: each round has its own bare and engine
medians and ratio, the reported overhead is the median of the rounds' ratios, and the table lists every
round beside it, and the paired run (bare steps inside the engine run) beside them.
"""

import json
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_engine_overhead_is_the_median_of_alternated_rounds(tmp_path):
    sys.path.insert(0, str(BENCH))
    import loss_steps

    loss_steps.main(["--quick", "--no-deepinv", "--only", "SURE Gaussian", "--engine-rounds", "2",
                     "--out", str(tmp_path)])
    rows = {r["loss"]: r for r in json.loads((tmp_path / "loss_steps.json").read_text())["results"]}
    for name in ("supervised (UNet)", "SURE Gaussian (MC div.)"):
        r = rows[name]
        assert len(r["engine_ratios"]) == len(r["engine_bare_ms"]) == len(r["engine_ms"]) == 2
        assert r["engine_bare_ms"][0] == r["median_ms"]  # the first round's bare step is the row's own
        assert r["engine_ratios"] == [e / b for e, b in zip(r["engine_ms"], r["engine_bare_ms"], strict=True)]
        assert r["engine_overhead"] == statistics.median(r["engine_ratios"])
        # the paired run: engine and bare steps alternating one by one in one engine run
        assert r["paired_ratio"] == r["paired_engine_ms"] / r["paired_bare_ms"] and r["paired_ratio_of_pairs"] > 0
    table = (tmp_path / "loss_steps.md").read_text()
    assert " / ".join(f"{v:.3f}" for v in rows["SURE Gaussian (MC div.)"]["engine_ratios"]) in table
    assert f"= {rows['SURE Gaussian (MC div.)']['paired_ratio']:.3f} (" in table
