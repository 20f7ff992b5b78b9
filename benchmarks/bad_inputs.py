"""Bad-input benchmark: run the corpus of ``tests/bad_inputs`` and count the outcome classes.

    PYTHONPATH=<checkout> python benchmarks/bad_inputs.py [--only ID_PREFIX ...] [--out benchmarks/results]
                                                          [--name bad_inputs] [--workdir DIR]

The corpus (this file's repository) runs against the ``selfinv`` found on ``PYTHONPATH`` -- any
checkout, older ones included: a case whose API does not exist there counts as ``traceback``. For
each group (api, cli, files, checkpoints, faults) it prints and writes
(``<out>/<name>.md`` and ``.json``) how many outcomes were ``clear`` / ``traceback`` / ``silent`` /
``handled``, and lists every case whose outcome differs from the one it deserves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The corpus lives in this repository's tests/ (package ``bad_inputs``, the name of this script: the
# script's own folder leaves the path). Appended, not prepended, so that the selfinv under test still
# comes from PYTHONPATH.
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != HERE]
sys.path.append(str(REPO / "tests"))


def _git_describe(path: Path | None) -> str:
    if path is None:
        return "?"
    try:
        out = subprocess.run(["git", "-C", str(path), "log", "-1", "--format=%h %s"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip()[:90] or "?") + (" (+ uncommitted changes)" if dirty else "")
    except Exception:  # noqa: BLE001
        return "?"


def totals(rows: list[dict], groups: tuple[str, ...], classes: tuple[str, ...]) -> dict:
    table = {g: {c: 0 for c in classes} for g in groups}
    table["all"] = {c: 0 for c in classes}
    for r in rows:
        for key in (r["group"], "all"):
            table[key][r["actual"]] += 1
    for key in table:
        table[key]["cases"] = sum(table[key][c] for c in classes)
        table[key]["as expected"] = sum(1 for r in rows if (key == "all" or r["group"] == key)
                                        and r["actual"] == r["expected"])
    return table


def markdown(meta: dict, table: dict, rows: list[dict], groups, classes) -> str:
    lines = ["# Bad-input corpus", "",
             f"selfinv under test: `{meta['selfinv']}` ({meta['checkout']}); corpus: {meta['corpus']}; "
             f"{meta['n_cases']} cases in {meta['seconds']:.0f} s on {meta['machine']}.", "",
             "Outcome classes: **clear** (short error naming what was expected and what came; exit 2, no "
             "traceback), **traceback** (uncaught exception, low-level error type/message, or an unclear "
             "message), **silent** (no error where one was due, or a wrong result without a word), "
             "**handled** (valid after all, or handled sensibly as the case's check says).", "",
             "| group | cases | " + " | ".join(classes) + " | as expected |",
             "|---|---:|" + "---:|" * len(classes) + "---:|"]
    for g in list(groups) + ["all"]:
        t = table[g]
        name = f"**{g}**" if g == "all" else g
        lines.append(f"| {name} | {t['cases']} | " + " | ".join(str(t[c]) for c in classes)
                     + f" | {t['as expected']} |")
    bad = [r for r in rows if r["actual"] != r["expected"]]
    lines += ["", f"## Cases whose outcome differs from the one deserved ({len(bad)})", ""]
    if bad:
        lines += ["| case | group | expected | actual | what happened |", "|---|---|---|---|---|"]
        for r in bad:
            reason = r["reason"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r['id']}` | {r['group']} | {r['expected']} | {r['actual']} | {reason} |")
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="run only cases whose id starts with one of these")
    p.add_argument("--out", default=str(HERE / "results"), help="folder of the .md/.json results")
    p.add_argument("--name", default="bad_inputs", help="base name of the result files")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from bad_inputs import CASES, CLASSES, GROUPS, Context
    from bad_inputs.harness import checkout_root, run_corpus

    cases = [c for c in CASES if not args.only or any(c.id.startswith(o) for o in args.only)]
    root = checkout_root()
    meta = {"selfinv": str(root / "selfinv") if root else "not importable",
            "checkout": _git_describe(root), "corpus": _git_describe(REPO),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}",
            "n_cases": len(cases)}
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="selfinv_bad_inputs_") as tmp:
        ctx = Context(args.workdir or tmp)
        rows = run_corpus(cases, ctx, progress)
    meta["seconds"] = time.time() - t0
    table = totals(rows, GROUPS, CLASSES)
    md = markdown(meta, table, rows, GROUPS, CLASSES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text(md)
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "totals": table, "cases": rows}, indent=1))
    print()
    print(md)
    print(f"wrote {out / (args.name + '.md')} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
