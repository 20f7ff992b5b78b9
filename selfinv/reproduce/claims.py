"""What a claim of the reproduction is made of: tasks, trained rows, claims and their verdicts.

* ``Task`` — one inverse problem and its fixed test set (images, crop size, seed) and the
  classical reconstructions measured beside the networks (noisy input, ``A†y``, FBP...).
* ``Row`` — one network trained through the engine from one YAML file of
  ``configs/claims/`` and evaluated on its task's test set; ``reference`` names the supervised
  row of the same network, data and budget it is compared with.
* ``Claim`` — one sentence of the tutorial or of a paper, its source, the rows it needs and a
  check turning the measured numbers into a ``Verdict``: ``holds``, ``misses`` (by how much)
  or ``contradicts`` (the measurement points the other way beyond two standard errors).

The check helpers (``within``, ``ahead``, ``equal``, ``above``, ``gap_fraction``) compare rows on
the *same* test items, so differences carry the paired standard error (the spread of the
per-item differences over ``sqrt(n)``), much smaller than the spread of PSNR across images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

Status = Literal["holds", "misses", "contradicts", "not run"]
#: a null-space error at or above this counts as "nothing recovered there" (``null_space_error``). Measured
#: (benchmarks/results/null_space_*_avx512bf16.md, claims_null_space_avx512bf16.md): the networks that recovered
#: part of the null space scored 0.57-0.92 (supervised, EI + MC on MRI, SEI), those that did not 1.01-1.64
#: (measurement consistency on MRI, EI with the rotations that commute with A, EI-shift on SR x4), A†y exactly 1
NULL_SPACE_THRESHOLD = 0.95


@dataclass
class TestSpec:
    """The test set of a task: the bundled data set's test split, non-overlapping ``crop`` crops (``None``:
    whole images), at most ``limit`` items, measured once with ``seed``."""

    dataset: str = "natural-gray"
    dataset_args: dict = field(default_factory=dict)
    crop: int | None = 128
    seed: int = 1234
    limit: int | None = None
    #: also measure each row's null-space error ``‖P_N(x̂ − x)‖ / ‖P_N x‖`` (``P_N = I − A†A``; operators whose
    #: ``A_dagger`` is the exact pseudo-inverse): what the network recovered where ``A`` sees nothing
    null_space: bool = False


@dataclass
class Task:
    """One inverse problem: its test set and the classical reconstructions reported beside the networks.

    ``baselines`` maps a display name to a kind: ``"measurement"`` (``y`` itself, for image-domain
    operators), ``"dagger"`` (``A†y``), ``"adjoint"`` (``Aᵀy``) or ``"bicubic"`` (bicubic upsampling of
    ``y``, super-resolution); ``input`` names the baseline that is the network's natural competitor
    (the noisy image, the zero-filled inverse FFT, FBP, the blurred image, bicubic interpolation).
    """

    key: str
    family: str
    title: str
    test: TestSpec
    baselines: dict[str, str]
    input: str
    notes: tuple[str, ...] = ()


@dataclass
class Row:
    """One trained network: ``config`` is a file of ``configs/claims/``; ``reference`` the key of the supervised
    row it is compared with (``None``: it is a reference)."""

    key: str
    label: str
    config: str
    reference: str | None = None

    @property
    def task(self) -> str:
        return self.key.split("/", 1)[0]


@dataclass
class Verdict:
    status: Status
    measured: str
    note: str = ""
    values: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.status


@dataclass
class Claim:
    """A claim: ``text`` (one line), its ``source``, the rows it needs and the check of the numbers."""

    key: str
    family: str
    text: str
    source: str
    rows: tuple[str, ...]
    check: Callable[[Results], Verdict]
    tasks: tuple[str, ...] = ()  # tasks whose baselines it reads (default: the tasks of its rows)
    budget: str = ""  # for claims without trained rows (theory)
    configs: tuple[str, ...] = ()  # for claims without trained rows: the config (and command) that computes it

    def needed_tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(list(self.tasks) + [r.split("/", 1)[0] for r in self.rows]))


# -- the numbers a check reads ------------------------------------------------------------------------

class Results:
    """Measured numbers: per-item PSNR (and MSE) of every finished row and of every task's baselines."""

    def __init__(self, rows: dict[str, dict], baselines: dict[str, dict[str, dict]], labels: dict[str, str]):
        self.rows, self.baselines, self.labels = rows, baselines, labels

    def has(self, key: str) -> bool:
        return key in self.rows

    def items(self, key: str, metric: str = "psnr") -> list[float]:
        """Per-item values of a row (``task/name``) or a baseline (``task/@name``)."""
        task, name = key.split("/", 1)
        if name.startswith("@"):
            return list(self.baselines[task][name[1:]][metric])
        return list(self.rows[key][metric])

    def has_metric(self, key: str, metric: str) -> bool:
        """Whether row ``key`` was measured with ``metric`` (rows cached before a metric existed were not)."""
        return self.rows.get(key, {}).get(metric) is not None

    def label(self, key: str) -> str:
        task, name = key.split("/", 1)
        return name[1:] if name.startswith("@") else self.labels.get(key, name)

    def mean(self, key: str, metric: str = "psnr") -> float:
        v = self.items(key, metric)
        return sum(v) / len(v)

    def mean_se(self, key: str) -> tuple[float, float]:
        return mean_se(self.items(key))

    def paired(self, a: str, b: str) -> tuple[float, float]:
        """Mean and standard error of the per-item PSNR difference ``a - b`` (same test items)."""
        va, vb = self.items(a), self.items(b)
        if len(va) != len(vb):
            raise ValueError(f"{a} and {b} were evaluated on different test sets ({len(va)} vs {len(vb)} items)")
        return mean_se([x - y for x, y in zip(va, vb, strict=True)])


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def _fmt(res: Results, key: str) -> str:
    m, se = res.mean_se(key)
    return f"{res.label(key)} {m:.2f} ± {se:.2f}"


# -- checks ---------------------------------------------------------------------------------------------

def within(row: str, ref: str, tol: float) -> Callable[[Results], Verdict]:
    """``row`` at most ``tol`` dB below ``ref``."""

    def check(res: Results) -> Verdict:
        d, se = res.paired(row, ref)
        gap = -d
        status: Status = "holds" if gap <= tol else "misses"
        note = "" if status == "holds" else f"by {gap - tol:.2f} dB"
        return Verdict(status, f"{_fmt(res, row)}; {_fmt(res, ref)}; gap {gap:+.2f} ± {se:.2f} dB (bound {tol})",
                       note, {"gap": gap, "se": se})

    return check


def ahead(a: str, b: str, margin: float = 0.0) -> Callable[[Results], Verdict]:
    """``a`` above ``b`` (by more than ``margin`` dB); ``contradicts`` if ``a`` is below ``b`` beyond 2 SE."""

    def check(res: Results) -> Verdict:
        d, se = res.paired(a, b)
        if d > margin:
            status: Status = "holds"
            note = ""
        elif d < -2 * se and d < 0:
            status, note = "contradicts", f"{res.label(b)} is ahead by {-d:.2f} dB"
        else:
            status, note = "misses", f"by {margin - d:.2f} dB"
        return Verdict(status, f"{_fmt(res, a)}; {_fmt(res, b)}; difference {d:+.2f} ± {se:.2f} dB", note,
                       {"difference": d, "se": se})

    return check


def equal(a: str, b: str, tol: float) -> Callable[[Results], Verdict]:
    """``|a - b| <= tol`` dB."""

    def check(res: Results) -> Verdict:
        d, se = res.paired(a, b)
        status: Status = "holds" if abs(d) <= tol else "misses"
        note = "" if status == "holds" else f"by {abs(d) - tol:.2f} dB"
        return Verdict(status, f"{_fmt(res, a)}; {_fmt(res, b)}; difference {d:+.2f} ± {se:.2f} dB (tolerance "
                       f"{tol})", note, {"difference": d, "se": se})

    return check


def above(row: str, base: str, margin: float, below: str | None = None) -> Callable[[Results], Verdict]:
    """``row`` at least ``margin`` dB above ``base`` (and, with ``below``, under that row)."""

    def check(res: Results) -> Verdict:
        d, se = res.paired(row, base)
        parts = [_fmt(res, row), _fmt(res, base), f"{d:+.2f} ± {se:.2f} dB above it (needed ≥ {margin})"]
        problems = []
        status: Status = "holds"
        if d < margin:
            status = "contradicts" if d < -2 * se and d < 0 else "misses"
            problems.append(f"{margin - d:.2f} dB short of the margin")
        if below is not None:
            db, seb = res.paired(row, below)
            parts.append(f"{db:+.2f} ± {seb:.2f} dB vs {res.label(below)}")
            if db >= 0:
                status = "misses" if status == "holds" else status
                problems.append(f"not below {res.label(below)}")
        return Verdict(status, "; ".join(parts), ", ".join(problems), {"difference": d, "se": se})

    return check


def null_space_error(row: str, recovers: bool, threshold: float = NULL_SPACE_THRESHOLD
                     ) -> Callable[[Results], Verdict]:
    """The mean null-space error ``‖P_N(x̂ − x)‖ / ‖P_N x‖`` of ``row`` (1: what ``A†y`` scores, 0 there):
    ``recovers=False``: ``≥ threshold`` (nothing recovered where ``A`` sees nothing); ``True``: ``< threshold``."""

    def check(res: Results) -> Verdict:
        if not res.has_metric(row, "null_error"):
            return Verdict("not run", f"{res.label(row)}: no null-space error in its result (measured before the "
                           f"metric existed; retrain the row)")
        m, se = mean_se(res.items(row, "null_error"))
        ok = m < threshold if recovers else m >= threshold
        status: Status = "holds" if ok else ("contradicts" if abs(m - threshold) > 2 * se else "misses")
        measured = (f"{res.label(row)}: null-space error ‖P_N(x̂−x)‖/‖P_N x‖ = {m:.3f} ± {se:.3f} (A†y: 1; "
                    f"needed {'<' if recovers else '≥'} {threshold})")
        return Verdict(status, measured, "" if ok else f"by {abs(m - threshold):.3f}",
                       {"null_error": m, "se": se})

    return check


def gap_fraction(row: str, base: str, ref: str, fraction: float) -> Callable[[Results], Verdict]:
    """``row`` recovers at least ``fraction`` of the ``base`` → ``ref`` gap (in dB)."""

    def check(res: Results) -> Verdict:
        m_row, m_base, m_ref = res.mean(row), res.mean(base), res.mean(ref)
        gap = m_ref - m_base
        frac = (m_row - m_base) / gap if gap > 0 else float("nan")
        d, se = res.paired(row, ref)
        measured = (f"{_fmt(res, row)}; {_fmt(res, base)}; {_fmt(res, ref)}; {100 * frac:.0f} % of the gap "
                    f"(needed {100 * fraction:.0f} %), {d:+.2f} ± {se:.2f} dB from {res.label(ref)}")
        if not gap > 0:
            return Verdict("misses", measured, f"{res.label(ref)} does not beat {res.label(base)}: no gap",
                           {"fraction": frac})
        status: Status = "holds" if frac >= fraction else ("contradicts" if frac < 0 else "misses")
        short = fraction - frac
        note = "" if status == "holds" else f"by {100 * short:.0f} % of the gap ({short * gap:.2f} dB)"
        return Verdict(status, measured, note, {"fraction": frac})

    return check
