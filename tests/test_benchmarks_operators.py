"""benchmarks/operators.py's alternated rounds: each side's median over rounds, and every round's ratio.

Synthetic per-round results (no timing): the combined tables hold the median over the rounds of each
side, and the per-round ratios are the rounds' deepinv / selfinv medians with their median.
"""

import re
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _ours(a_ms, at_ms):
    return [{"op": "MRI", "counterparts": ["MRI(di)"], "batch": 1,
             "A": {"median_ms": a_ms, "q1_ms": a_ms * 0.9, "min_ms": a_ms * 0.8},
             "A_adjoint": {"median_ms": at_ms, "q1_ms": at_ms * 0.9, "min_ms": at_ms * 0.8}}]


def _theirs(a_ms, at_ms):
    return [{"op": "MRI(di)", "batch": 1, "A": {"median_ms": a_ms, "p25_ms": a_ms * 0.9},
             "A_adjoint": {"median_ms": at_ms, "p25_ms": at_ms * 0.9}}]


def test_rounds_combine_by_median_and_report_each_rounds_ratio():
    sys.path.insert(0, str(BENCH))
    import operators

    ours = [_ours(0.5, 0.4), _ours(1.5, 0.5), _ours(0.6, 0.45)]
    theirs = [_theirs(1.0, 1.0), _theirs(1.2, 0.9), _theirs(3.0, 0.8)]
    combined = operators.combine_rounds(ours)[0]
    assert combined["A"]["median_ms"] == 0.6 and combined["A"]["rounds_ms"] == [0.5, 1.5, 0.6]
    assert combined["A"]["min_ms"] == 0.5 * 0.8
    assert operators.combine_rounds(theirs)[0]["A_adjoint"]["q1_ms"] == statistics.median([0.9, 0.81, 0.72])
    rows = {r["which"]: r for r in operators.round_ratios(ours, theirs)}
    assert set(rows) == {"A", "A_adjoint"}  # no FBP on either side
    assert rows["A"]["ratios"] == [1.0 / 0.5, 1.2 / 1.5, 3.0 / 0.6]
    assert rows["A"]["median_ratio"] == 2.0
    report = operators.build_report(operators.combine_rounds(ours), operators.combine_rounds(theirs), [], None,
                                    {"cpu": "x", "torch": "t", "torch_threads": 2}, None,
                                    operators.round_ratios(ours, theirs))
    assert re.search(r"\| A +\| 2\.00 / 0\.80 / 5\.00 \| +2\.00x \|", report)
