"""Claims of the tutorial, Part 3–4 (incomplete measurements): measurement consistency, multi-operator
imaging, equivariant imaging, robust EI and SSDU, on inpainting, accelerated MRI and sparse-view CT.

* ``inpainting`` — natural photographs, 50 % of the pixels kept (a new mask per measurement), σ = 0.01.
* ``mri`` / ``mri-noisy`` — MRI ×4 (random Cartesian lines, 8 % centre), ONE fixed mask for every
  measurement (the classic EI setting), σ = 0.005 / 0.1, whole 64×64 slices of the MNI152 template; the
  k-space is SIMULATED from magnitude images. EI uses rotations by any angle: with 90° rotations the rank
  condition fails (``selfinv.reproduce.theory``).
* ``mri-unrolled`` — MRI ×4 with a new mask per measurement, an unrolled proximal-gradient network
  (4 iterations, a U-Net prior each), SSDU (Yaman et al.: held-out loss) against supervised.
* ``ct`` / ``ct-noisy`` — sparse-view parallel-beam CT, 30 views, 64×64 slices; noise-free (as in the EI
  paper) / Poisson–Gaussian (gain 10⁻³, σ = 0.01).
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
    gap_fraction,
    null_space_error,
    within,
)

MRI_TEST = TestSpec(dataset="mri-slices", dataset_args={"size": 64}, crop=None)
#: MRI with its exact pseudo-inverse (zero-filled inverse FFT): the null-space error is measured too
MRI_NULL = TestSpec(dataset="mri-slices", dataset_args={"size": 64}, crop=None, null_space=True)
T3 = "tutorial, Part 3"
T4 = "tutorial, Part 4"

TASKS = {
    "inpainting": ("Inpainting, 50 % of pixels, σ = 0.01, natural photographs", TestSpec(null_space=True),
                   {"A†y (masked image)": "dagger"}, "A†y (masked image)"),
    "mri": ("MRI ×4, one fixed Cartesian mask, σ = 0.005, 64×64 slices (simulated k-space)", MRI_NULL,
            {"zero-filled A†y": "dagger"}, "zero-filled A†y"),
    "mri-noisy": ("MRI ×4, one fixed Cartesian mask, σ = 0.1, 64×64 slices (simulated k-space)", MRI_TEST,
                  {"zero-filled A†y": "dagger"}, "zero-filled A†y"),
    "mri-unrolled": ("MRI ×4, a new mask per measurement, σ = 0.005, unrolled network (simulated k-space)",
                     MRI_TEST, {"zero-filled A†y": "dagger"}, "zero-filled A†y"),
    "ct": ("Sparse-view CT, 30 views, noise-free, 64×64 slices", MRI_TEST, {"FBP": "dagger"}, "FBP"),
    "ct-noisy": ("Sparse-view CT, 30 views, Poisson–Gaussian noise (gain 1e-3, σ = 0.01), 64×64 slices",
                 MRI_TEST, {"FBP": "dagger"}, "FBP"),
}

#: task -> [(method, label, reference method)]
ROWS = {
    "inpainting": [("supervised", "supervised", None), ("mc", "measurement consistency", "supervised"),
                   ("moi", "MOI (multi-operator)", "supervised"), ("ei", "EI (shifts) + MC", "supervised"),
                   ("ssdu", "SSDU (splitting)", "supervised")],
    "mri": [("supervised", "supervised", None), ("mc", "measurement consistency", "supervised"),
            ("ei", "EI (rotations) + MC", "supervised")],
    "mri-noisy": [("supervised", "supervised", None), ("ei", "EI (rotations) + MC", "supervised"),
                  ("rei", "REI (SURE + re-noised EI, rotations)", "supervised")],
    "mri-unrolled": [("supervised", "supervised (unrolled)", None), ("ssdu", "SSDU (unrolled, held-out loss)",
                                                                     "supervised")],
    "ct": [("supervised", "supervised", None), ("ei", "EI (rotations, stop-gradient) + MC", "supervised")],
    "ct-noisy": [("supervised", "supervised", None), ("ei", "EI (rotations) + MC", "supervised"),
                 ("rei", "REI (Poisson–Gaussian SURE + re-noised EI, stop-gradient)", "supervised")],
}

NOTES = {
    "mri": ("MRI k-space is SIMULATED from magnitude images (real image, no phase, single coil); PSNR on the "
            "magnitude.",),
    "mri-unrolled": ("Each training measurement has its own random mask (so that E[AᵀA] has full rank, the "
                     "condition of the SSDU theorem); test masks are drawn once per test slice.",),
}


def tasks() -> list[Task]:
    return [Task(k, "incomplete", title, spec, base, inp, NOTES.get(k, ()))
            for k, (title, spec, base, inp) in TASKS.items()]


def rows() -> list[Row]:
    return [Row(f"{t}/{m}", label, f"{t.replace('-', '_')}_{m}.yaml", None if ref is None else f"{t}/{ref}")
            for t, ms in ROWS.items() for m, label, ref in ms]


def claims() -> list[Claim]:
    c: list[Claim] = []

    def add(task: str, name: str, text: str, source: str, rows: tuple[str, ...], check) -> None:
        c.append(Claim(f"{task}/{name}", "incomplete", text, source, rows, check))

    add("inpainting", "mc", "Inpainting: measurement consistency recovers nothing in the null space (= A†y, "
        "within 0.5 dB)", f"{T3}, 'Naïve measurement consistency': trivial solution f(y, A) = A†y",
        ("inpainting/mc",), equal("inpainting/mc", "inpainting/@A†y (masked image)", 0.5))
    add("mri", "mc", "MRI ×4: measurement consistency recovers nothing in the null space (= zero-filled A†y, "
        "within 0.5 dB)", f"{T3}, 'Naïve measurement consistency'", ("mri/mc",),
        equal("mri/mc", "mri/@zero-filled A†y", 0.5))
    for task, a_dagger in (("inpainting", "A†y"), ("mri", "zero-filled A†y")):
        name = "Inpainting" if task == "inpainting" else "MRI ×4"
        add(task, "mc-null-space", f"{name}: measurement consistency recovers nothing in the null space, measured "
            f"there: null-space error ‖P_N(x̂−x)‖/‖P_N x‖ ≥ {NULL_SPACE_THRESHOLD} ({a_dagger}: 1)",
            f"{T3}, 'Naïve measurement consistency'", (f"{task}/mc",), null_space_error(f"{task}/mc", False))
    add("mri", "ei-null-space", f"MRI ×4: EI + MC recovers part of the null space: null-space error < "
        f"{NULL_SPACE_THRESHOLD}", f"{T4}, 'Equivariant Imaging': rotations do not commute with the mask",
        ("mri/ei",), null_space_error("mri/ei", True))
    for m, label, src in (("moi", "MOI", f"{T3}, 'Multi Operator Imaging' (Tachella et al., NeurIPS 2022)"),
                          ("ei", "EI + MC", f"{T4}, 'Equivariant Imaging' (Chen, Davies & Tachella, ICCV 2021)"),
                          ("ssdu", "SSDU", f"{T3}, 'Measurement Splitting Revisited' (Yaman et al. 2020; "
                                           "Daras et al. 2024)")):
        add("inpainting", m, f"Inpainting: {label} within 1 dB of supervised", src,
            (f"inpainting/{m}", "inpainting/supervised"), within(f"inpainting/{m}", "inpainting/supervised", 1.0))
    add("mri", "ei", "MRI ×4: EI + MC recovers ≥ 80 % of the zero-filled → supervised gap",
        f"{T4}, 'MRI' (EI paper, Chen et al. ICCV 2021)", ("mri/ei", "mri/supervised"),
        gap_fraction("mri/ei", "mri/@zero-filled A†y", "mri/supervised", 0.8))
    add("mri-noisy", "rei", "MRI ×4, σ = 0.1: REI ahead of EI + MC",
        "REI paper (Chen, Tachella & Davies, CVPR 2022): MRI ×4 σ = 0.1: EI 24.56, REI 28.09, supervised 29.49 dB",
        ("mri-noisy/rei", "mri-noisy/ei"), ahead("mri-noisy/rei", "mri-noisy/ei"))
    add("mri-unrolled", "ssdu", "MRI ×4: SSDU with an unrolled network within 1.5 dB of supervised",
        "Yaman et al., MRM 2020 (SSDU); tutorial Part 3 'Measurement Splitting Revisited'",
        ("mri-unrolled/ssdu", "mri-unrolled/supervised"),
        within("mri-unrolled/ssdu", "mri-unrolled/supervised", 1.5))
    add("ct", "ei", "Sparse-view CT: EI within 1.5 dB of supervised",
        "EI paper (Chen et al. ICCV 2021), CT: EI 35.64 vs supervised 36.92 dB, FBP 28.83",
        ("ct/ei", "ct/supervised"), within("ct/ei", "ct/supervised", 1.5))
    add("ct", "ei-fbp", "Sparse-view CT: EI ≥ 3 dB over FBP", "EI paper (Chen et al. ICCV 2021), CT",
        ("ct/ei",), above("ct/ei", "ct/@FBP", 3.0))
    add("ct-noisy", "rei", "Sparse-view CT, Poisson–Gaussian noise: REI ≥ EI + MC",
        "REI paper (Chen, Tachella & Davies, CVPR 2022), CT with Poisson–Gaussian noise; tutorial Part 4",
        ("ct-noisy/rei", "ct-noisy/ei"), ahead("ct-noisy/rei", "ct-noisy/ei"))
    return c
