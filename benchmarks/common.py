"""Helpers shared by the selfinv benchmarks: threads and seeds, timing, machine
facts, and Markdown / JSON output.

Every benchmark times with ``median_time`` (warm-up, then repeats until both a
minimum count and a minimum duration are reached; the median is robust to the
occasional pre-emption on a shared machine) and writes ``NAME.md`` (a Markdown
table plus notes) and ``NAME.json`` (all numbers and the environment) to its
output folder.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

#: CPU threads used by every benchmark (the reference machine has 2 cores)
THREADS = 2
#: default output folder, next to this file
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: the checkout's parent folder, where the reference workloads and the deepinv environment live by default
_AROUND = Path(__file__).resolve().parents[2]


def anchor_script(name: str) -> str:
    """A reference workload script: ``$SELFINV_ANCHOR_DIR/name``, else ``../shared/anchor/name`` beside the
    checkout."""
    return str(Path(os.environ.get("SELFINV_ANCHOR_DIR", _AROUND / "shared" / "anchor")) / name)


def deepinv_python() -> str:
    """The python of the separate deepinv environment: ``$SELFINV_DEEPINV_PYTHON``, else
    ``../.venv-deepinv/bin/python`` beside the checkout."""
    return os.environ.get("SELFINV_DEEPINV_PYTHON", str(_AROUND / ".venv-deepinv" / "bin" / "python"))


def setup(seed: int = 0, threads: int = THREADS) -> None:
    """Fix the number of torch threads and the global seeds."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional here
        pass


def median_time(fn: Callable[[], object], warmup: int = 2, repeats: int = 10,
                min_seconds: float = 0.5, max_repeats: int = 200) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``repeats`` timed calls
    and at least ``min_seconds`` in total (at most ``max_repeats`` calls).

    Returns ``{"median_ms", "q1_ms", "q3_ms", "min_ms", "repeats"}`` (the minimum is the
    cost without interference; the median is what a user waits on a busy machine). CUDA work is
    synchronised before each clock read.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    begin = time.perf_counter()
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= repeats and time.perf_counter() - begin >= min_seconds:
            break
    if len(times) > 1:
        q1, _, q3 = statistics.quantiles(times, n=4)
    else:
        q1 = q3 = times[0]
    return {"median_ms": 1e3 * statistics.median(times), "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3,
            "min_ms": 1e3 * min(times), "repeats": len(times)}


def environment() -> dict:
    """Python / torch versions, threads, CPU model and load (for the record)."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        env["cpu"] = platform.processor() or None
    try:
        env["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return env


def fmt_ms(value: float | None, digits: int = 3) -> str:
    """Milliseconds as text; ``-`` when absent."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    """``num / den`` as ``12.3x``; ``-`` when either is absent."""
    if num is None or den is None or den <= 0:
        return "-"
    return f"{num / den:.1f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; numeric-looking columns are right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(header[i])] + [len(r[i]) for r in cells]) for i in range(len(header))]

    def numeric(i: int) -> bool:
        return i > 0 and all(r[i].replace(".", "").replace("x", "").replace("-", "").isdigit() or r[i] == "-"
                             for r in cells)

    def line(r):
        return "| " + " | ".join(c.rjust(w) if numeric(i) else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if numeric(i) else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(list(header)), sep] + [line(r) for r in cells])


def write_results(out_dir: str | Path | None, name: str, data: dict, markdown: str) -> Path:
    """Write ``NAME.json`` and ``NAME.md`` into ``out_dir`` (default ``benchmarks/results``)."""
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n")
    return out
