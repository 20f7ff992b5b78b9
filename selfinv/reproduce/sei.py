"""Claims of the scale-equivariant imaging paper (Scanvic, Davies, Abry & Tachella 2024): deblurring
(Gaussian blur σ = 1, 2, 3, circular) and super-resolution (×2, ×4, bicubic anti-aliasing), noise σ = 5/255,
on natural photographs.

Rows per task: supervised; SURE alone; robust EI (SURE + re-noised EI) with shifts and with 90° rotations;
SEI (SURE + re-noised EI with random downscalings and stop-gradient). The stop-gradient ablation (SEI
without it) runs on deblurring σ = 2 and SR ×2. SR also trains robust EI with the identity transform (no
group: SURE + the self-consistency ``f(A x̂ + n) ≈ x̂``), the reference a group that commutes with ``A``
cannot improve on: the bicubic downsampling commutes with the 90° rotations, so they add no information.
The network sees ``Aᵀy`` (deblurring) or ``A†y`` (SR); the classical reference is the blurred
measurement ``y`` or bicubic interpolation, which the supervised network must clearly beat for the setting to
test anything.
"""

from __future__ import annotations

from selfinv.reproduce.claims import (
    NULL_SPACE_THRESHOLD,
    Claim,
    Row,
    Task,
    TestSpec,
    above,
    ahead,
    equal,
    null_space_error,
    within,
)

SEI = "SEI paper (Scanvic et al. 2024)"
#: task -> (short name, kind, paper's supervised / SEI PSNR)
TASKS = {
    "sei-deblur1": ("Deblurring σ = 1", "deblur", "30.9 / 30.3"),
    "sei-deblur2": ("Deblurring σ = 2", "deblur", "25.9 / 25.8"),
    "sei-deblur3": ("Deblurring σ = 3", "deblur", "23.6 / 23.5"),
    "sei-sr2": ("Super-resolution ×2", "sr", "29.2 / 29.1"),
    "sei-sr4": ("Super-resolution ×4", "sr", "22.7 / 22.9"),
}
DETAILS = {"deblur": "Gaussian blur (circular), noise σ = 5/255", "sr": "bicubic anti-aliasing filter, noise σ = 5/255"}
BASELINES = {"deblur": ({"blurred y": "measurement", "Aᵀy (network input)": "adjoint"}, "blurred y"),
             "sr": ({"bicubic interpolation": "bicubic", "A†y (network input)": "dagger"}, "bicubic interpolation")}
METHODS = [("supervised", "supervised", None), ("sure", "SURE alone", "supervised"),
           ("ei_shift", "EI-shift (REI: SURE + EI, shifts)", "supervised"),
           ("ei_rot", "EI-rotate (REI: SURE + EI, 90° rotations)", "supervised"),
           ("sei", "SEI (SURE + scale EI, stop-gradient)", "supervised")]
ABLATION = ("sei-deblur2", "sei-sr2")
#: SR only: robust EI with the identity transform (``shift`` with ``max_shift: 0``)
IDENTITY = ("ei_id", "EI-identity (REI: SURE + EI, no transform)", "supervised")


def tasks() -> list[Task]:
    out = []
    for k, (name, kind, _) in TASKS.items():
        base, inp = BASELINES[kind]
        out.append(Task(k, "sei", f"{name}, {DETAILS[kind]}, natural photographs",
                        TestSpec(null_space=kind == "sr"), dict(base), inp))
    return out


def rows() -> list[Row]:
    out = []
    for t in TASKS:
        methods = METHODS + ([IDENTITY] if TASKS[t][1] == "sr" else []) \
            + ([("sei_nostop", "SEI without stop-gradient", "supervised")] if t in ABLATION else [])
        out += [Row(f"{t}/{m}", label, f"{t.replace('-', '_')}_{m}.yaml", None if ref is None else f"{t}/{ref}")
                for m, label, ref in methods]
    return out


def claims() -> list[Claim]:
    c: list[Claim] = []
    for t, (name, kind, paper) in TASKS.items():
        inp = f"{t}/@{BASELINES[kind][1]}"
        sup, sei = f"{t}/supervised", f"{t}/sei"

        def add(key: str, text: str, source: str, rows: tuple[str, ...], check, t=t) -> None:
            c.append(Claim(f"{t}/{key}", "sei", text, source, rows, check))

        add("setting", f"{name}: the setting is informative — supervised ≥ 1 dB above "
            f"{BASELINES[kind][1]}", f"{SEI}: learning must beat the classical reconstruction", (sup,),
            above(sup, inp, 1.0))
        add("sei", f"{name}: SEI within 1 dB of supervised", f"{SEI}, supervised / SEI: {paper} dB", (sei, sup),
            within(sei, sup, 1.0))
        for other, label in (("ei_shift", "EI-shift"), ("ei_rot", "EI-rotate"), ("sure", "SURE alone")):
            add(f"sei-vs-{other}", f"{name}: SEI ahead of {label}",
                f"{SEI}: roto-translations cannot recover frequencies a band-limited A removes",
                (sei, f"{t}/{other}"), ahead(sei, f"{t}/{other}"))
        if kind == "sr":
            add("rot-is-sure", f"{name}: EI with 90° rotations = SURE alone (A commutes with them; within 0.3 dB)",
                f"{SEI}, Theorem; tutorial Part 4 '(Non)-Equivariant Operators'", (f"{t}/ei_rot", f"{t}/sure"),
                equal(f"{t}/ei_rot", f"{t}/sure", 0.3))
            add("rot-is-identity", f"{name}: EI with 90° rotations = EI with no transform (A commutes with the "
                f"rotations: they add no information to SURE + self-consistency; within 0.3 dB)",
                f"{SEI}, Theorem; tutorial Part 4 '(Non)-Equivariant Operators'", (f"{t}/ei_rot", f"{t}/ei_id"),
                equal(f"{t}/ei_rot", f"{t}/ei_id", 0.3))
            add("rot-null-space", f"{name}: EI with 90° rotations recovers nothing in the null space of A, measured "
                f"there: null-space error ‖P_N(x̂−x)‖/‖P_N x‖ ≥ {NULL_SPACE_THRESHOLD} (A†y: 1)",
                f"{SEI}, Theorem; tutorial Part 4 '(Non)-Equivariant Operators'", (f"{t}/ei_rot",),
                null_space_error(f"{t}/ei_rot", False))
            add("sei-null-space", f"{name}: SEI recovers part of the null space: null-space error < "
                f"{NULL_SPACE_THRESHOLD}", f"{SEI}: scale invariance recovers high frequencies A removes", (sei,),
                null_space_error(sei, True))
        if t in ABLATION:
            add("stop-gradient", f"{name}: without the stop-gradient SEI is worse",
                f"{SEI}: 'One of our key contributions is stopping the gradient'", (sei, f"{t}/sei_nostop"),
                ahead(sei, f"{t}/sei_nostop"))
    return c
