"""Claims of the identifiability theory (tutorial Parts 3–4; SEI paper), computed by ``selfinv.theory`` on
16×16 images (``n = 256`` unknowns, 512 for complex MRI) with exact operator matrices.

Each claim is the report of ``selfinv identifiability --config configs/claims/theory_X.yaml --image_size 16
[--n_operators G] [--transform T]`` (the same construction: operator sized to the image, operators and
sampled group elements drawn from a generator seeded with ``trainer.seed``); its ``level`` is
``learnable`` / ``numerically unstable`` / ``not learnable``.
"""

from __future__ import annotations

import functools
import math

from selfinv.reproduce.claims import Claim, Results, Row, Task, Verdict

SIZE = 16
T3, T4 = "tutorial, Part 3 'Necessary Condition'", "tutorial, Part 4 '(Non)-Equivariant Operators'"
BUDGET = f"exact matrices, {SIZE}×{SIZE} images"


def tasks() -> list[Task]:
    return []


def rows() -> list[Row]:
    return []


@functools.lru_cache(maxsize=None)
def report(config: str, transform: str | None = None, n_operators: int | None = None):
    """The identifiability report ``selfinv identifiability`` prints for this config and options."""
    from selfinv.cli import config_identifiability
    from selfinv.config import from_dict, load_yaml
    from selfinv.reproduce.runner import configs_dir

    cfg = from_dict(load_yaml(str(configs_dir() / config)))
    return config_identifiability(cfg, SIZE, transform, n_operators)


def _describe(r) -> str:
    eq = "n/a" if r.equivariant is None else ("yes" if r.equivariant else "no")
    return (f"rank {r.rank}/{r.n} (without the group {r.rank_without_transform}), level '{r.level}', "
            f"A equivariant to G: {eq}, condition number {r.condition_number:.1e}")


def _command(config: str, transform: str | None, n_operators: int | None) -> str:
    extra = f" --transform {transform}" if transform else ""
    extra += f" --n_operators {n_operators}" if n_operators else ""
    return f"{config} --image_size {SIZE}{extra}"


def inpainting_rank(g: int):
    def check(res: Results) -> Verdict:
        r = report("theory_inpainting.yaml", None, g)
        p = 0.5**g
        expected = r.n * (1 - p)
        sd = math.sqrt(r.n * p * (1 - p))
        ok = abs(r.rank - expected) <= 3 * sd
        return Verdict("holds" if ok else "misses", f"{_describe(r)}; n(1−0.5^G) = {expected:.1f} (binomial sd "
                       f"{sd:.1f})", "" if ok else f"by {abs(r.rank - expected) - 3 * sd:.1f} ranks beyond 3 sd",
                       {"rank": r.rank, "expected": expected, "level": r.level})

    return check


def stays_deficient(config: str, transform: str | None):
    def check(res: Results) -> Verdict:
        r = report(config, transform)
        ok = r.rank == r.rank_without_transform < r.n and bool(r.equivariant)
        problems = [] if ok else [p for p, bad in (("rank changed", r.rank != r.rank_without_transform),
                                                    ("full rank", r.rank >= r.n),
                                                    ("not flagged equivariant", not r.equivariant)) if bad]
        status = "holds" if ok else ("contradicts" if r.rank >= r.n else "misses")
        return Verdict(status, _describe(r), ", ".join(problems), {"rank": r.rank, "level": r.level})

    return check


def lifts(config: str, transform: str | None, need_level: str | None = None):
    def check(res: Results) -> Verdict:
        r = report(config, transform)
        base = report(config, None)
        lifted = r.rank > base.rank
        ok = lifted and (need_level is None or r.level == need_level)
        note = "" if ok else ("the group does not raise the rank" if not lifted else f"level is '{r.level}'")
        return Verdict("holds" if ok else ("contradicts" if not lifted else "misses"),
                       f"{_describe(r)}; without the group: level '{base.level}'", note,
                       {"rank": r.rank, "level": r.level})

    return check


def learnable(config: str, transform: str | None = None, also: tuple[str, str | None] | None = None):
    def check(res: Results) -> Verdict:
        r = report(config, transform)
        text = _describe(r)
        if also is not None:
            o = report(*also)
            text += f"; with {also[1] or 'the config’s group'}: rank {o.rank}/{o.n}, level '{o.level}'"
        ok = r.level == "learnable"
        return Verdict("holds" if ok else "misses", text, "" if ok else f"level is '{r.level}'",
                       {"rank": r.rank, "level": r.level})

    return check


def claims() -> list[Claim]:
    c: list[Claim] = []

    def add(name: str, text: str, source: str, check, config: str, transform: str | None = None,
            n_operators: int | None = None) -> None:
        c.append(Claim(f"theory/{name}", "theory", text, source, (), check, budget=BUDGET,
                       configs=(_command(config, transform, n_operators),)))

    for g in (1, 2, 3, 4, 8):
        add(f"inpainting-G{g}", f"Inpainting 50 %, G = {g} random masks: rank(E_g A_gᵀA_g) ≈ n(1 − 0.5^G)",
            f"{T3}: learning needs rank(E_g A_gᵀ A_g) = n", inpainting_rank(g), "theory_inpainting.yaml",
            n_operators=g)
    for tr, label in (("shift", "shifts"), ("rotate", "90° rotations")):
        add(f"blur-{tr}", f"Gaussian blur σ = 2 under {label}: stays rank-deficient, A flagged equivariant",
            f"{T4}: equivariant A ⇒ rank(E_g T_gᵀAᵀAT_g) = rank(AᵀA)", stays_deficient("theory_blur.yaml", tr),
            "theory_blur.yaml", tr)
    add("blur-scale", "Gaussian blur σ = 2 under scalings: the rank is lifted",
        "SEI paper, Theorem 1: scale invariance identifies the frequencies removed by a band-limited A",
        lifts("theory_blur.yaml", "scale"), "theory_blur.yaml", "scale")
    add("sr-rotate", "Super-resolution ×2 under 90° rotations: stays rank-deficient, A flagged equivariant",
        f"{T4}; SEI paper", stays_deficient("theory_sr.yaml", "rotate"), "theory_sr.yaml", "rotate")
    add("sr-scale", "Super-resolution ×2 under scalings: learnable", "SEI paper, Theorem 1",
        lifts("theory_sr.yaml", "scale", need_level="learnable"), "theory_sr.yaml", "scale")
    add("mri-rotate", "MRI ×4 with one mask under rotations: learnable (equivariant imaging)",
        f"{T4} 'MRI'; EI paper (Chen et al. ICCV 2021)",
        learnable("theory_mri.yaml", also=("theory_mri.yaml", "rotate")), "theory_mri.yaml")
    add("ct-rotate", "Sparse-view CT under rotations: learnable (equivariant imaging)",
        f"{T4} 'Computed Tomography'; EI paper", learnable("theory_ct.yaml"), "theory_ct.yaml")
    return c
