"""`selfinv advise` on the tutorial's cases: verdicts, reasons, the rank conditions they rest on, configs."""

import re
from pathlib import Path

import pytest
import torch

from selfinv import registry
from selfinv.advise import CAVEATS, INVALID, VALID, Situation, advise, advise_cmd, parse_transforms
from selfinv.config import from_dict
from selfinv.options import parse_function_args
from selfinv.physics import GaussianNoise, Inpainting
from selfinv.theory import identifiability
from selfinv.transforms import Rotate, Shift

GAUSS = {"name": "gaussian", "args": {"sigma": 0.1}}
_CACHE: dict = {}


def _advice(key, **kwargs):
    """One advice per situation for the whole module (the rank conditions take seconds)."""
    if key not in _CACHE:
        _CACHE[key] = advise(Situation(**kwargs))
    return _CACHE[key]


def _check_common(advice):
    """Every registered loss has a verdict; lines fit 120 columns; the config is a valid RunConfig."""
    assert {r.loss for r in advice.rows} == set(registry.names("loss"))
    assert all(r.verdict in (VALID, CAVEATS, INVALID) and r.reason for r in advice.rows)
    text = advice.render()
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert advice.best is not None and advice.best.verdict != INVALID
    cfg = from_dict(advice.config)
    assert [l.name for l in cfg.losses] == [l["name"] for l in advice.best.losses]
    assert "losses:" in advice.yaml and advice.best.label in text


# -- denoising (tutorial Part 2) ----------------------------------------------------------------

def test_gaussian_known_sigma_many_images():
    a = _advice("gauss", physics="denoising", noise_model=GAUSS)
    _check_common(a)
    for loss in ("sure", "r2r"):
        row = a.get(loss, "gaussian")
        assert row.verdict == VALID and "MMSE" in row.reason
    mc = a.get("mc")
    assert mc.verdict == INVALID and "identity" in mc.reason
    n2n = a.get("noise2noise")
    assert n2n.verdict == INVALID and "pairs" in n2n.reason
    assert a.get("splitting").verdict == VALID and "below MMSE" in a.get("splitting").reason
    assert a.get("ei", "shift").verdict == INVALID and "no null space" in a.get("ei", "shift").reason
    assert a.get("supervised").verdict == INVALID and "ground-truth" in a.get("supervised").reason
    assert a.best.loss == "sure" and a.best.variant == "gaussian"
    assert a.config["physics"]["noise"] == GAUSS


def test_gaussian_with_pairs_noise2noise_valid():
    a = _advice("pairs", physics="denoising", noise_model=GAUSS, pairs=True)
    row = a.get("noise2noise")
    assert row.verdict == VALID and "MMSE" in row.reason and "no noise level" in row.reason


def test_gaussian_unknown_sigma():
    a = _advice("unknown", physics="denoising", noise="unknown", noise_model=GAUSS)
    _check_common(a)
    sure = a.get("sure", "gaussian")
    assert sure.verdict == INVALID and "needs the noise level (σ)" in sure.reason
    assert "sigma: auto" in sure.reason  # image-domain data: the level can be estimated
    assert a.get("r2r", "gaussian").verdict == INVALID
    assert a.get("noise2score", "gaussian").verdict == INVALID
    unsure = a.get("unsure", "gaussian")
    assert unsure.verdict == VALID and "σ not needed" in unsure.reason
    assert a.best.loss == "unsure" and a.best.variant == "gaussian"


def test_one_image_flags_methods_that_need_a_data_set():
    a = _advice("one", physics="denoising", noise_model=GAUSS, measurements="one", pairs=True)
    _check_common(a)
    n2s = a.get("noise2score", "gaussian")
    assert n2s.verdict == CAVEATS and "one image" in n2s.reason
    n2n = a.get("noise2noise")
    assert n2n.verdict == CAVEATS and "single pair" in n2n.reason
    assert a.get("sure", "gaussian").verdict == VALID and "one measurement" in a.get("sure", "gaussian").reason
    assert any("selfinv finetune" in n for n in a.notes)


def test_correlated_noise():
    a = _advice("colored", physics="denoising", noise="correlated")
    _check_common(a)
    for loss in ("splitting", "neighbor2neighbor", "blindspot"):
        row = a.get(loss)
        assert row.verdict == INVALID and "correlated" in row.reason and "independent across pixels" in row.reason
    assert a.get("sure", "gaussian").verdict == INVALID
    assert a.get("unsure", "gaussian").verdict == INVALID and "colored" in a.get("unsure", "gaussian").reason
    colored = a.get("unsure", "colored")
    assert colored.verdict == VALID and "covariance" in colored.reason
    ae = a.get("autoencoder")
    assert ae.verdict == VALID and "correlated noise too" in ae.reason
    assert a.best.loss == "unsure" and a.best.variant == "colored"


def test_poisson_known_gain():
    a = _advice("poisson", physics="denoising", noise_model={"name": "poisson", "args": {"gain": 0.05}})
    _check_common(a)
    assert a.get("sure", "poisson").verdict == VALID
    assert a.get("r2r", "poisson").verdict == VALID
    gauss = a.get("sure", "gaussian")
    assert gauss.verdict == INVALID and "Poisson" in gauss.reason
    assert a.get("unsure", "gaussian").verdict == INVALID and "signal-dependent" in a.get("unsure", "gaussian").reason
    assert a.get("unsure", "poisson_gaussian").verdict == VALID
    assert a.best.loss == "sure" and a.best.variant == "poisson"
    assert a.config["losses"][0]["args"]["noise"] == "poisson"


# -- incomplete measurements (tutorial Parts 3-4) ------------------------------------------------

def _fixed_mask_physics():
    mask = (torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    return Inpainting((1, 8, 8), mask=mask, noise=GaussianNoise(0.01))


def test_inpainting_fixed_mask():
    physics = _fixed_mask_physics()
    a = _advice("inp_fixed", physics=physics, transforms=("shift", "reflect"))
    _check_common(a)
    base = identifiability(physics, img_size=(1, 8, 8))
    assert base.level == "not learnable"
    mc = a.get("mc")
    assert mc.verdict == INVALID and f"{base.null_space_dim}-dim null space" in mc.reason
    moi = a.get("moi")
    assert moi.verdict == INVALID and "one fixed operator" in moi.reason
    assert a.get("ssdu").verdict == INVALID and "fixed mask" in a.get("ssdu").reason
    for name, group in (("shift", Shift()), ("reflect", None)):
        row = a.get("ei", name)
        if group is not None:
            rep = identifiability(physics, group, img_size=(1, 8, 8))
            assert (row.verdict == VALID) == (rep.level == "learnable")
            assert f"rank {rep.rank}/{rep.n}" in row.reason
    assert a.get("ei", "shift").verdict == VALID
    reflect = a.get("ei", "reflect")
    assert reflect.verdict == INVALID and "null-space dims stay unobserved" in reflect.reason
    assert a.best.loss == "robust_ei" and a.best.variant == "shift"  # σ known: SURE fidelity


def test_large_fixed_mask_is_cropped_for_the_theory():
    mask = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    a = advise(Situation(Inpainting((1, 32, 32), mask=mask, noise=GaussianNoise(0.01)), transforms=("shift",)))
    _check_common(a)
    assert any("central 8×8 crop" in n for n in a.notes) and a.reports["A"].n == 64
    assert a.get("moi").verdict == INVALID and a.get("ei", "shift").verdict == VALID
    assert a.config["data"]["patch_size"] == 32 and torch.equal(torch.tensor(a.config["physics"]["args"]["mask"]), mask)


def test_inpainting_random_masks():
    a = _advice("inp_random", physics="inpainting", physics_args={"keep_ratio": 0.5, "img_size": [1, 32, 32]},
                noise_model={"name": "gaussian", "args": {"sigma": 0.01}}, transforms=("shift",))
    _check_common(a)
    rep = a.reports["K=32"]
    assert rep.level == "learnable" and rep.n_operators == 32
    moi = a.get("moi")
    assert moi.verdict == VALID and f"rank(E_k A_kᵀA_k) = {rep.rank}/{rep.n}" in moi.reason
    assert a.get("ssdu").verdict == VALID
    assert a.get("mc").verdict == INVALID and "even with many operators" in a.get("mc").reason
    assert a.config["data"]["patch_size"] == 32 and "img_size" not in a.config["physics"]["args"]
    one = advise(Situation("inpainting", {"keep_ratio": 0.5, "img_size": [1, 8, 8]}, noise_model=GAUSS,
                           measurements="one", transforms=("shift",)))
    assert one.get("moi").verdict == INVALID and "many measurements" in one.get("moi").reason
    assert one.get("ssdu").verdict == INVALID


def test_blur_shifts_useless_scale_ei_valid():
    a = _advice("blur", physics="blur", physics_args={"kind": "gaussian", "sigma": 2.0},
                noise_model={"name": "gaussian", "args": {"sigma": 0.0196}}, transforms=("shift", "scale"))
    _check_common(a)
    shift = a.reports["shift"]
    assert shift.equivariant and shift.level == "not learnable"
    for loss in ("ei", "robust_ei"):
        row = a.get(loss, "shift")
        assert row.verdict == INVALID and "equivariant to shift" in row.reason
    sei = a.get("scale_ei")
    assert sei.verdict == VALID and "scalings" in sei.reason and "SEI paper" in sei.reason
    assert a.reports["scale"].rank > a.reports["A"].rank
    assert a.best.loss == "scale_ei"
    assert a.config["physics"]["name"] == "blur" and a.config["losses"][0]["args"]["sure"]["name"] == "sure"
    assert any("13×13" in n for n in a.notes)  # the 13x13 Gaussian kernel sets the analysis size


def test_mri_random_masks_moi_and_ssdu():
    a = _advice("mri", physics="mri", physics_args={"acceleration": 4, "img_size": [32, 32]},
                noise_model={"name": "gaussian", "args": {"sigma": 0.005}}, transforms=("shift",), n_operators=16)
    _check_common(a)
    assert a.reports["A"].level == "not learnable"
    assert a.get("moi").verdict == VALID and a.get("ssdu").verdict == VALID
    assert "rank(E_k A_kᵀA_k) = 128/128 over K=16" in a.get("ssdu").reason  # 2 x 8 x 8 unknowns
    shift = a.get("ei", "shift")  # Fourier sampling commutes with shifts
    assert shift.verdict == INVALID and "equivariant" in shift.reason
    assert a.best.loss in ("moi", "ssdu")
    assert a.config["model"]["backbone"]["args"]["in_channels"] == 2


def test_ct_sparse_view_rotations():
    a = _advice("ct", physics="tomography", physics_args={"n_views": 30, "img_size": 64},
                noise_model={"name": "poisson_gaussian", "args": {"gain": 0.001, "sigma": 0.01}},
                transforms=("rotate", "rotate90"))
    _check_common(a)
    assert any("30 views at 64×64 are analysed as 4 views at 8×8" in n for n in a.notes)
    from selfinv.physics.tomography import Tomography

    small = Tomography(8, n_views=4)
    rep = identifiability(small, Rotate(multiples_of_90=False), img_size=(1, 8, 8),
                          generator=torch.Generator().manual_seed(0))
    row = a.get("ei", "rotate")
    assert rep.level == "learnable" and row.verdict == VALID and f"rank {rep.rank}/{rep.n}" in row.reason
    # 4 views at 45° steps are closed under 90° rotations about the scanner's centre; with scikit-image's
    # centring (pixel N // 2) a grid rotation of an even-size image turns about (N - 1) / 2 instead, so the
    # equivariance holds up to half a pixel and the group fills at most a dimension or two
    r90 = a.get("ei", "rotate90")
    assert r90.verdict == INVALID
    assert "equivariant to rotate90" in r90.reason or re.search(r"fills [12] of the \d+ missing dims", r90.reason)
    assert a.best.loss == "robust_ei" and a.best.variant == "rotate"
    assert a.config["losses"][0]["args"]["fidelity"]["args"]["noise"] == "poisson_gaussian"


# -- configs and the command line ------------------------------------------------------------------

@pytest.mark.parametrize("noise, args, expected", [
    ("gaussian", {"sigma": 0.1}, "known"),
    ("gaussian", {"sigma": "auto"}, "unknown"),
    ("unknown", {}, "unknown"),
    ("poisson_gaussian", {"gain": "auto", "sigma": "auto"}, "poisson_gaussian"),
    ("colored_gaussian", {"sigma": 0.1, "kernel": [[1.0, 1.0], [1.0, 1.0]]}, "correlated"),
    ("none", {}, "none"),
])
def test_noise_knowledge_from_config(noise, args, expected):
    cfg = from_dict({"data": {"path": "measurements.npz", "patch_size": 32}, "losses": [{"name": "autoencoder"}],
                     "physics": {"name": "denoising", "noise": {"name": noise, "args": args}}})
    s = Situation.from_config(cfg)
    assert s.noise == expected and s.physics == "denoising" and s.original_size == 32


def test_cli_with_config(tmp_path):
    out = tmp_path / "advice.yaml"
    config = Path(__file__).resolve().parent.parent / "configs" / "inpainting_ei.yaml"
    argv = ["--config", str(config), "--transform", "shift", "--measurements", "one",
            "--output", str(out)]
    text = advise_cmd(**parse_function_args(advise_cmd, argv))
    assert "ei[shift]" in text and "Best choice: robust_ei[shift]" in text
    assert max(len(line) for line in text.splitlines()) <= 120
    from selfinv.config import load_yaml

    written = load_yaml(str(out))
    cfg = from_dict(written)
    assert cfg.losses[0].name == "robust_ei" and cfg.physics.name == "inpainting"
    assert written["trainer"]["output_dir"] == "runs/inpainting_ei"  # the user's config is kept, losses aside


def test_cli_without_config():
    argv = ["--physics", "denoising", "--noise", "unknown", "--noise_model", "{name: poisson}"]
    text = advise_cmd(**parse_function_args(advise_cmd, argv))
    assert "Best choice: unsure[poisson_gaussian]" in text
    assert max(len(line) for line in text.splitlines()) <= 120
    a = advise(Situation("denoising", noise="unknown", noise_model={"name": "poisson"}))
    _check_common(a)  # gain unknown: the config declares the noise unknown and reads measured data
    assert a.config["physics"]["noise"] == {"name": "unknown"} and a.config["data"]["path"] == "measurements.npz"


def test_bad_inputs():
    with pytest.raises(ValueError, match="noise model"):
        advise(Situation("denoising", noise="known"))
    with pytest.raises(ValueError, match="parameters of the noise model"):
        advise(Situation("denoising", noise="known", noise_model={"name": "gaussian", "args": {"sigma": "auto"}}))
    with pytest.raises(ValueError, match="unknown group"):
        parse_transforms("shift,twirl")
    assert parse_transforms("shift, rotate") == ("shift", "rotate")


def test_advise_measures_the_noise_correlation_of_the_users_data(tmp_path, capsys):
    """--data: the noise of the user's micrograph is measured; correlated noise switches the advice to
    correlated noise (SURE invalid, UNSURE colored valid); white noise leaves 'unknown level'."""
    import numpy as np
    import tifffile
    from scipy.ndimage import convolve
    from skimage.data import camera

    from selfinv.advise import advise_cmd

    rng = np.random.default_rng(0)
    a = 1 - 1 / np.sqrt(2)
    k = np.outer([a, 1, a], [a, 1, a])
    white = rng.standard_normal((256, 256))
    img = camera()[::2, ::2] / 255
    tifffile.imwrite(tmp_path / "corr.tif", (img + 0.1 * convolve(white, k / np.linalg.norm(k), mode="wrap"))
                     .astype(np.float32))
    tifffile.imwrite(tmp_path / "white.tif", (img + 0.1 * white).astype(np.float32))
    text = advise_cmd(data=str(tmp_path / "corr.tif"))
    assert "noise CORRELATED" in text and "spatially correlated, covariance unknown" in text
    assert re.search(r"\nsure +\| invalid", text) and re.search(r"\nunsure\[colored\] +\| valid", text)
    text = advise_cmd(data=str(tmp_path / "white.tif"))
    assert "noise white" in text and "spatially correlated" not in text
    with pytest.raises(ValueError, match="physics mri trains on k-space.*holds images"):
        advise_cmd(data=str(tmp_path / "white.tif"), physics="mri")
    with pytest.raises(ValueError, match="image-domain"):
        advise_cmd(data=str(tmp_path / "white.tif"), physics="tomography")
