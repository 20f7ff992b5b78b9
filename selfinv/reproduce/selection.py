"""Checkpoint selection by the self-supervised validation loss, for every loss of the reproduction.

Every trained row validates on held-out measurements while it trains; the engine keeps the checkpoint with
the lowest ``val/loss`` (``best-*.ckpt``, the file a user is told to trust). The runner evaluates that file on
the test set beside the final weights. The claim, one per method (grouping the rows that train it): *the
checkpoint chosen by val/loss is as good as the final one* — at most ``TOLERANCE_DB`` below it on the test
set, for every row of the method. A loss whose value is not comparable across training fails it (the issue
this checks: UNSURE and Neighbor2Neighbor picked step 116 and lost 8 and 7 dB).
"""

from __future__ import annotations

from selfinv.reproduce.claims import Claim, Results, Row, Verdict, mean_se

TOLERANCE_DB = 0.3
SOURCE = "selfinv contract (Loss.validation_loss); tutorial 'Self-supervised validation'"


def selection_check(keys: tuple[str, ...]):
    def check(res: Results) -> Verdict:
        parts, worst, problems = [], None, []
        for key in keys:
            row = res.rows[key]
            best = row.get("best") or {}
            if not best.get("psnr"):
                problems.append(f"{key}: no best checkpoint")
                continue
            d, se = mean_se([b - f for b, f in zip(best["psnr"], row["psnr"], strict=True)])
            final_step = row["steps"]
            parts.append(f"{key.split('/')[0]}: step {best['step']}/{final_step}, {d:+.2f} ± {se:.2f} dB")
            worst = d if worst is None else min(worst, d)
        if worst is None:
            return Verdict("misses", "; ".join(problems), "no checkpoint selected")
        ok = worst >= -TOLERANCE_DB and not problems
        note = "" if ok else (f"by {-worst - TOLERANCE_DB:.2f} dB" if worst < -TOLERANCE_DB else "; ".join(problems))
        return Verdict("holds" if ok else "misses", "best − final: " + "; ".join(parts), note,
                       {"worst": worst})

    return check


def selection_claims(rows: list[Row]) -> list[Claim]:
    """One claim per method name (the part of the row key after the task), over all its rows."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(r.key.split("/", 1)[1], []).append(r.key)
    out = []
    for method, keys in groups.items():
        out.append(Claim(key=f"selection/{method}", family="selection",
                         text=f"{method}: the checkpoint selected by val/loss is within {TOLERANCE_DB} dB of the "
                              "final weights on the test set",
                         source=SOURCE, rows=tuple(keys), check=selection_check(tuple(keys))))
    return out
