"""Which self-supervised loss can I use?  Method advice from the theory, for one situation.

Given what a user holds — an operator ``A`` (registered physics), what is known
about the noise, one or many measurements, independent noisy pairs or not, a
symmetry they are willing to assume — ``advise`` gives, for **every loss
registered** in ``selfinv.registry``, a verdict (``valid`` / ``valid with
caveats`` / ``invalid``) with a one-line reason, picks the best choice and writes
a ready ``RunConfig`` for it.

The verdicts follow the tutorial (Tachella, "Self-supervised learning methods
for imaging", Parts 2-4) and its summary table:

| method | MMSE | noise level | one y | unknown coloured noise |
|---|---|---|---|---|
| SURE, R2R, Noise2Score | ≈ MMSE | needed | yes (Noise2Score: a data set) | no |
| Noise2Noise | ≈ MMSE | not needed | needs pairs | yes |
| UNSURE | near MMSE | not needed | yes | ``variant: colored`` |
| Noise2Void/Self, Neighbor2Neighbor, blind-spot | below | not needed | yes | no |
| autoencoder | below | not needed | yes | yes |

For **incomplete** operators (inpainting, MRI, CT, blur, downsampling,
compressed sensing) the rank conditions are computed with
``selfinv.theory.identifiability`` on the actual operator rebuilt at a small image
size (sampling ratios kept: CT views and compressed-sensing measurements are
scaled with the image): ``A`` alone, ``rank(E_k A_kᵀ A_k) = n`` over random
operators (multi-operator imaging, SSDU — Tachella et al. NeurIPS 2022, Daras et
al. 2024) and ``rank(E_g T_gᵀ Aᵀ A T_g) = n`` for each symmetry group
(equivariant imaging — Tachella et al. JMLR 2023), including whether ``A`` is
equivariant to the group (then the group is useless). Losses that only see the
measurement domain (MC, SURE, R2R, ...) never learn the null space on their own.
For band-limited operators (blur, downsampling) roto-translations do not help and
scalings do (Scanvic et al., "Scale-Equivariant Imaging", 2024); rotations by
arbitrary angles are interpolated on the pixel grid, and their discrete rank gain
on such operators is an interpolation artefact, so it is not counted.

Example:
    >>> from selfinv.advise import Situation, advise
    >>> advice = advise(Situation("denoising", noise_model={"name": "gaussian", "args": {"sigma": 0.1}}))
    >>> advice.get("sure", "gaussian").verdict, advice.best.loss
    ('valid', 'sure')
"""

from __future__ import annotations

import copy
import math
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import torch

from selfinv import registry
from selfinv.physics.base import Denoising, Physics

Verdict = Literal["valid", "valid with caveats", "invalid"]
NoiseKnowledge = Literal["known", "unknown", "poisson_gaussian", "correlated", "none"]

VALID: Verdict = "valid"
CAVEATS: Verdict = "valid with caveats"
INVALID: Verdict = "invalid"
_ORDER = {VALID: 0, CAVEATS: 1, INVALID: 2}

#: symmetry groups a user may assume, as transform specs of the registry
GROUPS: dict[str, dict[str, Any]] = {
    "shift": {"name": "shift"},
    "rotate90": {"name": "rotate", "args": {"multiples_of_90": True}},
    "rotate": {"name": "rotate", "args": {"multiples_of_90": False}},
    "reflect": {"name": "reflect"},
    "scale": {"name": "scale"},
}
#: groups acting by permutations of the pixel grid (exact); the others interpolate
EXACT_GROUPS = ("shift", "rotate90", "reflect")
#: roto-translation groups of equivariant imaging (scalings belong to scale_ei)
EI_GROUPS = ("shift", "rotate90", "rotate", "reflect")

#: loss variants (the noise family or the group) evaluated row by row
NOISE_VARIANTS: dict[str, tuple[str, ...]] = {
    "sure": ("gaussian", "poisson", "poisson_gaussian"),
    "r2r": ("gaussian", "poisson", "gamma"),
    "unsure": ("gaussian", "colored", "poisson_gaussian"),
    "noise2score": ("gaussian", "poisson", "gamma"),
}
_FAMILY_NAME = {"gaussian": "Gaussian", "poisson": "Poisson", "poisson_gaussian": "Poisson-Gaussian",
                "gamma": "Gamma", "colored": "correlated (coloured)", "none": "no"}
_PARAM = {"gaussian": "σ", "poisson": "the gain γ", "poisson_gaussian": "the gain γ and σ", "gamma": "the shape ℓ"}
#: the noise families a loss can be exact for; ``kind`` of selfinv.physics.noise
_FAMILIES = ("gaussian", "poisson", "poisson_gaussian", "gamma")

#: order of the table: the tutorial's (reference, naive, denoising, incomplete measurements)
DISPLAY_ORDER = ("supervised", "mc", "noise2noise", "sure", "r2r", "unsure", "noise2score", "splitting",
                 "neighbor2neighbor", "blindspot", "autoencoder", "ssdu", "moi", "ei", "robust_ei", "scale_ei")

#: largest number of unknowns ``n = C H W`` the rank conditions are computed for
MAX_UNKNOWNS = 1024


# -- the situation ---------------------------------------------------------------------------------

@dataclass
class Situation:
    """What the user holds.

    Args:
        physics: a built ``selfinv.physics.Physics`` or a registered physics name.
        physics_args: its arguments when ``physics`` is a name (as in a config's ``physics.args``).
        noise: what is known about the noise: ``"known"`` (family and level, e.g. σ given),
            ``"unknown"`` (level of a known family unknown), ``"poisson_gaussian"`` (gain and σ
            unknown), ``"correlated"`` (spatially correlated, unknown covariance) or ``"none"``.
        noise_model: ``{name, args}`` of the noise (registry names); gives the family, and the level
            when ``noise="known"``. ``None``: the built physics' own noise model.
        measurements: ``"one"`` measurement or ``"many"``.
        pairs: whether two independent noisy measurements of each image exist.
        transforms: symmetry groups the user is willing to assume (names of ``GROUPS``);
            ``None`` evaluates all of them.
        image_size: side of the small image on which the rank conditions are computed.
        original_size: side of the user's images (e.g. the config's patch size), used to keep the
            sampling ratio of CT views and compressed-sensing measurements at ``image_size``.
        template: a ``RunConfig`` dict (the user's config) kept in the advised config except for the
            losses; ``None`` uses the shipped ``configs/*.yaml`` that fits best.
        n_operators: operators drawn for the multi-operator rank condition of a random physics.
        data_path: the user's measurements (a file or folder), written as ``data.path`` of the advised
            config (``None``: a placeholder where the data must be measured, not simulated).
        data_offset: the detector offset measured on those data (where the variance of photon-counting
            noise vanishes), written as ``data.offset`` when the user's config sets none.
    """

    physics: Union[Physics, str] = "denoising"
    physics_args: dict[str, Any] = field(default_factory=dict)
    noise: NoiseKnowledge = "known"
    noise_model: Optional[dict[str, Any]] = None
    measurements: Literal["one", "many"] = "many"
    pairs: bool = False
    transforms: Optional[tuple[str, ...]] = None
    image_size: int = 8
    original_size: Optional[int] = None
    template: Optional[dict[str, Any]] = None
    n_operators: int = 32
    data_path: Optional[str] = None
    data_offset: Optional[float] = None

    def __post_init__(self):
        if self.noise not in ("known", "unknown", "poisson_gaussian", "correlated", "none"):
            raise ValueError(f"noise must be 'known', 'unknown', 'poisson_gaussian', 'correlated' or 'none', "
                             f"got {self.noise!r}")
        if self.measurements not in ("one", "many"):
            raise ValueError(f"measurements must be 'one' or 'many', got {self.measurements!r}")
        if self.transforms is not None:
            self.transforms = parse_transforms(self.transforms)
        if not 4 <= int(self.image_size) <= 32:
            raise ValueError(f"image_size must be in [4, 32] (the rank conditions use dense n x n matrices), "
                             f"got {self.image_size}")
        if self.noise_model is not None and not (isinstance(self.noise_model, dict) and "name" in self.noise_model):
            raise ValueError(f"noise_model must be {{name: ..., args: {{...}}}}, got {self.noise_model!r}")
        if not isinstance(self.physics, (Physics, str)):
            raise TypeError(f"physics must be a selfinv Physics or a registered name, got "
                            f"{type(self.physics).__name__}")

    @classmethod
    def from_config(cls, cfg: Any, **kwargs: Any) -> Situation:
        """The situation of a ``RunConfig`` (or its dict): physics and noise knowledge from it.

        ``sigma``/``gain`` given -> ``known``; ``auto`` -> ``unknown`` (``poisson_gaussian`` if both
        parameters of Poisson-Gaussian noise are ``auto``); noise ``unknown`` -> ``unknown``;
        ``colored_gaussian`` -> ``correlated``; ``none`` -> ``none``. ``kwargs`` set the other fields.
        """
        from selfinv import config as config_mod

        run = cfg if isinstance(cfg, config_mod.RunConfig) else config_mod.from_dict(cfg)
        data = config_mod.to_dict(run)
        noise_name, noise_args = run.physics.noise.name, dict(run.physics.noise.args)
        auto = [k for k, v in noise_args.items() if isinstance(v, str) and v.strip().lower() == "auto"]
        if noise_name == "colored_gaussian":
            knowledge = "correlated"
        elif noise_name == "none":
            knowledge = "none"
        elif noise_name == "unknown":
            knowledge = "unknown"
        elif noise_name == "poisson_gaussian" and len(auto) == 2:
            knowledge = "poisson_gaussian"
        elif auto:
            knowledge = "unknown"
        else:
            knowledge = "known"
        args = config_mod.physics_args(run)  # img_size filled in from the data's patch size
        settings = dict(physics=run.physics.name, physics_args=args, noise=knowledge,
                        noise_model={"name": noise_name, "args": noise_args},
                        original_size=_image_side(args) or run.data.patch_size, template=data)
        if kwargs.get("transforms") is None:
            kwargs.pop("transforms", None)
        settings.update(kwargs)
        return cls(**settings)


def parse_transforms(value: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """``"shift,rotate"`` or ``["shift", "rotate"]`` -> ``("shift", "rotate")`` (names of ``GROUPS``)."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise ValueError(f"transform: unknown group(s) {unknown or names}; choose among {list(GROUPS)} "
                         f"(comma-separated; rotate = any angle, rotate90 = multiples of 90°)")
    return tuple(dict.fromkeys(names))


# -- the advice ------------------------------------------------------------------------------------

@dataclass
class Assessment:
    """The verdict on one loss (and one variant: noise family or symmetry group)."""

    loss: str
    variant: Optional[str]
    verdict: Verdict
    reason: str
    losses: Optional[list[dict[str, Any]]] = None  # the config's ``losses`` entries (not for invalid)
    backbone: Optional[dict[str, Any]] = None  # a backbone the loss needs (blind-spot, autoencoder)

    @property
    def label(self) -> str:
        return self.loss if self.variant is None else f"{self.loss}[{self.variant}]"


@dataclass
class Advice:
    """Result of ``advise``: one ``Assessment`` per loss and variant, the best choice and its config."""

    situation: list[str]
    theory: list[str]
    rows: list[Assessment]
    best: Optional[Assessment]
    config: Optional[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict, repr=False)

    def get(self, loss: str, variant: Optional[str] = None) -> Assessment:
        """The assessment of ``loss`` (and ``variant``; the only row of the loss if omitted)."""
        rows = [r for r in self.rows if r.loss == loss and (variant is None or r.variant == variant)]
        if not rows:
            known = sorted({r.label for r in self.rows})
            raise KeyError(f"no assessment for {loss}[{variant}]; rows: {known}")
        if len(rows) > 1:
            raise KeyError(f"{loss} has several variants {[r.variant for r in rows]}: name one")
        return rows[0]

    @property
    def yaml(self) -> str:
        """The advised config as YAML (empty if no loss is valid)."""
        if self.config is None:
            return ""
        import yaml

        # PyYAML breaks a flow collection only after ``width`` is passed: 80 keeps lines well below 120
        return yaml.safe_dump(self.config, sort_keys=False, default_flow_style=None, width=80, allow_unicode=True)

    def table_rows(self) -> list[tuple[str, str, str]]:
        """``(loss, verdict, reason)``; a loss whose variants all agree is one row."""
        out: list[tuple[str, str, str]] = []
        seen: list[str] = []
        for r in self.rows:
            if r.loss not in seen:
                seen.append(r.loss)
        for name in seen:
            rows = [r for r in self.rows if r.loss == name]
            if len({(r.verdict, r.reason) for r in rows}) == 1:
                out.append((name, rows[0].verdict, rows[0].reason))
            else:
                out.extend((r.label, r.verdict, r.reason) for r in rows)
        return out

    def render(self, width: int = 120) -> str:
        """The situation, the theory, a table loss | verdict | reason, the best choice and its YAML."""
        lines = ["selfinv advise: which self-supervised loss fits these measurements?", "", "Situation"]
        for s in self.situation:
            lines += textwrap.wrap(s, width, initial_indent="  ", subsequent_indent=" " * 17)
        if self.theory:
            lines += ["", "Identifiability (selfinv.theory.identifiability)"] + [f"  {t}" for t in self.theory]
        rows = self.table_rows()
        w1 = max(len("loss"), *(len(r[0]) for r in rows))
        w2 = len(CAVEATS)
        w3 = max(20, width - w1 - w2 - 6)
        lines += ["", f"{'loss':<{w1}} | {'verdict':<{w2}} | reason", f"{'-' * w1}-+-{'-' * w2}-+-{'-' * w3}"]
        for name, verdict, reason in rows:
            wrapped = textwrap.wrap(reason, w3) or [""]
            lines.append(f"{name:<{w1}} | {verdict:<{w2}} | {wrapped[0]}")
            lines += [f"{'':<{w1}} | {'':<{w2}} | {more}" for more in wrapped[1:]]
        lines.append("")
        if self.best is None:
            lines.append("Best choice: none - no registered loss is valid here (see the reasons above).")
        else:
            lines += textwrap.wrap(f"Best choice: {self.best.label} ({self.best.verdict}) - {self.best.reason}",
                                   width, subsequent_indent="  ")
            others = [r.label for r in self.rows if r.verdict == VALID and r is not self.best]
            if others:
                lines += textwrap.wrap("Also valid: " + ", ".join(others), width, subsequent_indent="  ")
            lines += ["", "Config (save as advice.yaml, then: selfinv fit --config advice.yaml):", ""]
            lines += self.yaml.rstrip().splitlines()
        if self.notes:
            lines += ["", "Notes:"]
            for note in self.notes:
                lines += textwrap.wrap(note, width, initial_indent="  - ", subsequent_indent="    ")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.render()


# -- small operators for the rank conditions --------------------------------------------------------

def _accepts(name: str, arg: str) -> bool:
    try:
        return arg in registry.accepted_args(registry.resolve("physics", name))
    except registry.RegistryError:
        return False


def _sized(name: str, channels: int, size: int) -> Any:
    """The ``img_size`` argument of physics ``name`` for square images of side ``size``."""
    if name == "tomography":
        return int(size)
    if name == "mri":
        return (int(size), int(size))
    return (int(channels), int(size), int(size))


def _registered_name(physics: Physics) -> Optional[str]:
    for name in registry.names("physics"):
        try:
            if registry.resolve("physics", name) is type(physics):
                return name
        except registry.RegistryError:
            continue
    return None


def _plain(value: Any) -> Any:
    """Tensors and tuples as lists, for configs."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _recovered_args(physics: Physics, name: str) -> dict[str, Any]:
    """Constructor arguments of a built physics, read back from its attributes (best effort)."""
    cls = registry.resolve("physics", name)
    aliases = {"filter": "filter_name"}
    out: dict[str, Any] = {}
    for arg in registry.accepted_args(cls):
        if arg in ("noise", "generator"):
            continue
        attr = aliases.get(arg, arg)
        if not hasattr(physics, attr):
            continue
        value = getattr(physics, attr)
        if isinstance(value, torch.Tensor):
            fixed = getattr(physics, "_fixed_user_mask", False) if arg == "mask" else arg == "kernel" and getattr(
                physics, "kind", None) == "user"
            if fixed:
                out[arg] = value.detach().cpu()
            continue
        if value is None or isinstance(value, (bool, int, float, str, tuple, list)):
            out[arg] = value
    if name == "tomography":  # derived from img_size; an explicit angle set that is not evenly spaced is kept
        out.pop("n_detectors", None)
        out.pop("pixel_size", None)
        angles = physics.angles
        V = int(angles.shape[-1])
        even = torch.arange(V, dtype=torch.float64) * (180.0 / V)
        if angles.shape[0] == 1 and torch.allclose(angles[0].double().cpu(), even):
            out.pop("angles", None)
            out["n_views"] = V
        else:
            out["angles"] = angles[0].detach().cpu()
    if name == "blur" and out.get("kind") == "user":
        out.pop("kind")
    if name == "beer_lambert_ct":
        out["tomography"] = {"name": "tomography", "args": _recovered_args(physics.tomography, "tomography")}
        if physics.I0.ndim == 0:
            out["I0"] = float(physics.I0)
    return out


def _image_side(args: dict[str, Any]) -> Optional[int]:
    size = args.get("img_size")
    if size is None:
        return None
    if isinstance(size, int):
        return size
    return int(list(size)[-1])


def _channels(name: str, args: dict[str, Any], template: Optional[dict]) -> int:
    if name == "mri":
        return 2
    size = args.get("img_size")
    if isinstance(size, (tuple, list)) and len(size) == 3:
        return int(size[0])
    if template:
        c = template.get("model", {}).get("backbone", {}).get("args", {}).get("in_channels")
        if c:
            return int(c)
    return 1


def _small_args(name: str, args: dict[str, Any], side: int, original: Optional[int],
                channels: int) -> tuple[dict[str, Any], list[str]]:
    """``args`` of physics ``name`` resized to ``side`` (sampling ratios kept), and notes."""
    out = dict(args)
    notes: list[str] = []
    ratio = None if original is None else side / float(original)
    if _accepts(name, "img_size"):
        out["img_size"] = _sized(name, channels, side)
    if name == "inpainting" and out.get("mask") is not None:
        mask = torch.as_tensor(out["mask"], dtype=torch.float32)
        H, W = mask.shape[-2:]
        top, left = max(0, (H - side) // 2), max(0, (W - side) // 2)
        out["mask"] = mask[..., top:top + side, left:left + side]
        if H > side or W > side:
            notes.append(f"the fixed inpainting mask is analysed on its central {side}×{side} crop")
    if name == "mri" and out.get("mask") is not None:
        from selfinv.physics.mri import mri_mask

        out["mask"] = mri_mask(side, int(out.get("acceleration", 4)), float(out.get("center_fraction", 0.08)),
                               str(out.get("pattern", "random")), 1, torch.Generator().manual_seed(0))
        notes.append(f"the fixed MRI mask is analysed as one fixed mask of the same acceleration at {side}×{side}")
    if name == "tomography":
        out.pop("n_detectors", None)
        out.pop("pixel_size", None)
        if out.get("angles") is None:
            views = int(out.get("n_views", 60))
            if ratio is not None:
                small = max(1, math.ceil(views * ratio))
                out["n_views"] = small
                notes.append(f"CT: {views} views at {original}×{original} are analysed as {small} views at "
                             f"{side}×{side} (the same angular undersampling)")
            else:
                notes.append(f"CT: the image size is unknown, so {views} views are analysed at {side}×{side} as "
                             f"they are; give img_size (or --config) to keep the undersampling ratio")
    if name == "compressed_sensing" and "m" in out:
        m = int(out["m"])
        if ratio is not None:
            small = max(1, round(m * ratio * ratio))
            out["m"] = small
            notes.append(f"compressed sensing: m = {m} at {original}×{original} is analysed as m = {small} at "
                         f"{side}×{side} (the same ratio m/n)")
    return _plain(out), notes  # a config's plain values (tensors as nested lists), checked by the registry


def _fits(physics: Physics, shape: tuple[int, int, int]) -> bool:
    try:
        with torch.no_grad():
            physics.A(torch.zeros((1,) + shape))
        return True
    except (ValueError, RuntimeError):
        return False


@dataclass
class _Operator:
    """The operator analysed by the rank conditions."""

    physics: Physics  # at the analysis size
    shape: tuple[int, int, int]
    name: Optional[str]
    args: dict[str, Any]  # the user's arguments (original size), for the config
    notes: list[str]


def _operator(s: Situation, noise) -> _Operator:
    """The situation's physics at a small size (``n = C H W <= MAX_UNKNOWNS``), with the situation's noise."""
    template = s.template
    if noise is None and isinstance(s.physics, Physics):
        noise = s.physics.noise
    if isinstance(s.physics, Physics):
        name = _registered_name(s.physics)
        args = _recovered_args(s.physics, name) if name else {}
        own = getattr(s.physics, "img_size", None)
        physics = s.physics if noise is None else s.physics.with_noise(noise)
        if own is not None:
            side = int(own if isinstance(own, int) else list(own)[-1])
            C = 2 if name == "mri" else (int(own[0]) if isinstance(own, (tuple, list)) and len(own) == 3 else 1)
            if side <= s.image_size and C * side * side <= MAX_UNKNOWNS:  # small already: the operator itself
                return _Operator(physics, (C, side, side), name, args, [])
        elif name != "beer_lambert_ct":  # size-agnostic operators (denoising, blur): analysed as they are
            C = _channels(name or "", args, template)
            for side in range(int(s.image_size), 33):
                if _fits(physics, (C, side, side)):
                    notes = [] if side == s.image_size else [
                        f"analysed at {side}×{side}, the smallest size the operator fits (its kernel)"]
                    return _Operator(physics, (C, side, side), name, args, notes)
        if name is None:
            raise ValueError(f"cannot analyse {type(s.physics).__name__}: it is not a registered physics and its "
                             f"image size is larger than {MAX_UNKNOWNS} unknowns")
        original = _image_side(args) or s.original_size
    else:
        name, args = s.physics, dict(s.physics_args)
        original = _image_side(args) or s.original_size
    registry.resolve("physics", name, "physics")
    inner_note: list[str] = []
    build_name, build_args = name, args
    if name == "beer_lambert_ct":  # non-linear: its rank conditions are those of the Radon transform inside
        spec = args.get("tomography")
        if isinstance(s.physics, Physics):
            build_name, build_args = "tomography", _recovered_args(s.physics.tomography, "tomography")
        elif isinstance(spec, dict) and "name" in spec:
            build_name, build_args = spec["name"], dict(spec.get("args") or {})
        original = _image_side(build_args) or original
        inner_note = ["Beer-Lambert CT is analysed through its (linear) Radon transform"]
    C = _channels(build_name, build_args, template)
    last_error: Optional[Exception] = None
    for side in range(int(s.image_size), 33):
        if C * side * side > MAX_UNKNOWNS:
            break
        small, notes = _small_args(build_name, build_args, side, original, C)
        try:
            physics = registry.build("physics", build_name, small, where="physics", noise=noise)
        except (registry.RegistryError, ValueError, TypeError) as e:
            last_error = e
            continue
        if not _fits(physics, (C, side, side)):
            continue
        if side != s.image_size:
            notes.append(f"analysed at {side}×{side}, the smallest size the operator can be built at")
        return _Operator(physics, (C, side, side), name, args, inner_note + notes)
    raise ValueError(f"cannot build physics '{name}' at a small size for the rank conditions "
                     f"(tried {s.image_size}..32): {last_error}")


# -- the theory, computed lazily ----------------------------------------------------------------------

class _Theory:
    """Identifiability reports of the analysed operator: alone, with random operators, with groups."""

    def __init__(self, op: _Operator, n_operators: int, transform_args: dict[str, dict]):
        self.op = op
        self.n_operators = int(n_operators)
        self.transform_args = transform_args
        self.reports: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def _compute(self, key: str, transform: Optional[str] = None, n_operators: Optional[int] = None):
        if key in self.reports or key in self.errors:
            return self.reports.get(key)
        from selfinv.theory import identifiability

        try:
            t = None
            if transform is not None:
                spec = self.transform_args.get(transform, GROUPS[transform])
                t = registry.build("transform", spec["name"], spec.get("args") or {}, where=f"transform {transform}")
            report = identifiability(self.op.physics, t, img_size=self.op.shape, n_operators=n_operators,
                                     generator=torch.Generator().manual_seed(0))
        except (ValueError, RuntimeError, TypeError, registry.RegistryError) as e:
            self.errors[key] = f"{type(e).__name__}: {e}"
            return None
        self.reports[key] = report
        return report

    def base(self):
        return self._compute("A")

    def operators(self):
        if not self.op.physics.is_random:
            return None
        return self._compute(f"K={self.n_operators}", n_operators=self.n_operators)

    def group(self, g: str):
        return self._compute(g, transform=g)


def _fmt_report(label: str, r) -> str:
    cond = "" if r.condition_number == math.inf else f", κ {r.condition_number:.1e}"
    eq = " (A equivariant to the group)" if r.equivariant else ""
    return f"{label:<24}: {r.level}, rank {r.rank}/{r.n}{cond}{eq}"


# -- the rules ----------------------------------------------------------------------------------------

@dataclass
class _Facts:
    """Everything the rules read."""

    s: Situation
    op: _Operator
    theory: _Theory
    family: str  # gaussian | poisson | poisson_gaussian | gamma | colored | none
    level_known: bool
    denoising: bool
    image_domain: bool
    random_ops: bool
    groups: tuple[str, ...]

    @property
    def single(self) -> bool:
        return self.s.measurements == "one"

    @property
    def complete(self) -> bool:
        """``A`` is identity or invertible at the analysis size (no null space to learn)."""
        if self.denoising:
            return True
        r = self.theory.base()
        return r is not None and r.level == "learnable"

    @property
    def noiseless(self) -> bool:
        return self.family == "none"

    def where(self) -> str:
        C, H, W = self.op.shape
        return f"{H}×{W}"

    def range_only(self) -> str:
        """Why a measurement-domain loss alone cannot learn the null space."""
        r = self.theory.base()
        if r is None:
            return "alone it only fits the range of A (identifiability not computed); combine with EI/MOI"
        if r.level == "numerically unstable":
            return (f"alone it only fits y through A, which is ill-conditioned (κ {r.condition_number:.1e} at "
                    f"{self.where()}): faint directions are never learned; use EI/MOI")
        return (f"alone it only fits the range of A: the {r.null_space_dim}-dim null space (rank {r.rank}/{r.n} at "
                f"{self.where()}) is never learned; use it as the fidelity of EI/MOI")

    def complete_note(self) -> str:
        if self.denoising:
            return ""
        r = self.theory.base()
        return f" (A invertible at {self.where()}, κ {r.condition_number:.1e}: risk measured through A)"


def _noise_mismatch(f: _Facts, loss: str, variant: str) -> Optional[str]:
    """Why the noise rules out ``loss(noise=variant)`` (None if they do not)."""
    fam = f.family
    if fam == "none":
        return "noiseless measurements: nothing to denoise (the loss reduces to measurement consistency)"
    if fam == "colored":
        return ("assumes noise independent across pixels; correlated noise of unknown covariance needs UNSURE "
                "(variant: colored) or an autoencoder")
    if loss == "sure" and fam == "gamma":
        return "no SURE for Gamma noise in selfinv; use R2R (noise: gamma)"
    if loss == "r2r" and fam == "poisson_gaussian":
        return "no Poisson-Gaussian recorruption; use SURE (noise: poisson_gaussian) or UNSURE"
    if loss == "noise2score" and fam == "poisson_gaussian":
        return "no Tweedie formula for Poisson-Gaussian noise; use SURE (noise: poisson_gaussian)"
    if fam != variant:
        return f"the noise is {_FAMILY_NAME[fam]}: this variant is exact only for {_FAMILY_NAME[variant]} noise; " \
               f"use {loss} (noise: {fam})"
    if not f.level_known:
        auto = (" - or estimate it with sigma: auto (image-domain data)"
                if f.image_domain and fam in ("gaussian", "poisson", "poisson_gaussian") else "")
        return f"needs the noise level ({_PARAM[fam]}), unknown here{auto}; UNSURE needs none"
    return None


def _assess_supervised(f: _Facts, variant):
    return INVALID, "needs clean ground-truth images x; here there are only measurements (the reference ceiling)"


def _assess_mc(f: _Facts, variant):
    if f.denoising:
        return INVALID, "its minimiser is the identity f(y) = y: the network returns the noisy input"
    if f.complete:
        if f.noiseless:
            return CAVEATS, "noiseless and A invertible: f(y) = A⁻¹y is exact, nothing to learn"
        return INVALID, "A is invertible, so the minimiser is f(y) = A⁻¹y, which fits the noise"
    r = f.theory.base()
    null = f"the {r.null_space_dim}-dim null space" if r is not None and r.rank < r.n else "the faint directions of A"
    return INVALID, (f"trivial minimiser f(y, A) = A†y: {null} is never penalised, even with many operators; "
                     f"it is the fidelity term of EI/MOI")


def _assess_sure(f: _Facts, variant):
    if not f.complete:
        return INVALID, f.range_only()
    why = _noise_mismatch(f, "sure", variant)
    if why:
        return INVALID, why
    return VALID, (f"unbiased risk estimate, ≈ MMSE; uses the known {_PARAM[variant]}; works from one "
                   f"measurement{f.complete_note()}")


def _assess_r2r(f: _Facts, variant):
    if not f.complete:
        return INVALID, f.range_only()
    why = _noise_mismatch(f, "r2r", variant)
    if why:
        return INVALID, why
    return VALID, (f"independent recorrupted pair from one y, ≈ MMSE; needs {_PARAM[variant]}; test time averages "
                   f"recorruptions{f.complete_note()}")


def _assess_unsure(f: _Facts, variant):
    if not f.complete:
        return INVALID, f.range_only()
    fam = f.family
    if fam == "none":
        return INVALID, "noiseless measurements: nothing to denoise"
    near = "near MMSE (≈ MMSE + MMSE²/σ²)"
    if variant == "gaussian":
        if fam == "gaussian":
            extra = "; SURE is exact when σ is known" if f.level_known else ""
            return VALID, f"σ not needed (a learnt multiplier), {near}; works from one measurement{extra}"
        if fam == "colored":
            return INVALID, "assumes white noise; correlated noise needs variant: colored"
        return INVALID, f"{_FAMILY_NAME[fam]} noise has a signal-dependent variance: use variant: poisson_gaussian"
    if variant == "colored":
        if fam == "colored":
            return VALID, ("unknown stationary noise covariance (one multiplier per offset <= radius), " + near
                           + "; works from one measurement")
        if fam == "gaussian":
            return CAVEATS, "handles white noise too, with more multipliers than needed; variant gaussian suffices"
        return INVALID, f"{_FAMILY_NAME[fam]} noise has a signal-dependent variance: use variant: poisson_gaussian"
    if fam in ("poisson", "poisson_gaussian"):
        return VALID, f"gain γ and σ not needed (two learnt multipliers), {near}; works from one measurement"
    if fam == "gaussian":
        return CAVEATS, "handles white Gaussian noise (γ → 0) with an extra multiplier; variant gaussian suffices"
    if fam == "gamma":
        return INVALID, "Gamma noise has variance x²/ℓ, not γx + σ²: no UNSURE variant; use R2R (gamma) or splitting"
    return INVALID, "assumes noise independent across pixels; correlated noise needs variant: colored"


def _assess_noise2noise(f: _Facts, variant):
    if not f.complete:
        return INVALID, f.range_only() + " (both copies share the operator)"
    if not f.s.pairs:
        return INVALID, "needs two independent noisy measurements of each image (pairs), which are not available"
    if f.noiseless:
        return INVALID, "noiseless measurements: nothing to denoise"
    reason = ("≈ MMSE for any zero-mean noise independent between the two copies (correlated within an image is "
              "fine); no noise level needed" + f.complete_note())
    if f.single:
        return CAVEATS, "a single pair only: trains on its patches; " + reason
    return VALID, reason


def _assess_noise2score(f: _Facts, variant):
    if not f.denoising:
        return INVALID, "denoising only: it learns the score of p_y and needs A = I"
    why = _noise_mismatch(f, "noise2score", variant)
    if why:
        return INVALID, why.replace("needs the noise level", "Tweedie's formula needs the noise level")
    what = {"gaussian": "Tweedie's formula, ≈ MMSE", "poisson": "approximate Poisson Tweedie formula",
            "gamma": "Gamma Tweedie formula (1/E[1/x|y], not the MMSE)"}[variant]
    reason = f"{what}; needs {_PARAM[variant]}; learns the score ∇log p_y"
    if f.single:
        return CAVEATS, reason + "; from one image the score is poorly estimated (needs a data set)"
    return VALID, reason + " from many measurements"


def _pixelwise(f: _Facts, name: str) -> Optional[str]:
    if f.family == "colored":
        return "noise correlated across pixels leaks through the neighbours: needs noise independent across pixels"
    if f.noiseless:
        return "noiseless measurements: nothing to denoise"
    return None


def _assess_splitting(f: _Facts, variant):
    if not f.complete:
        return INVALID, f.range_only()
    why = _pixelwise(f, "splitting")
    if why:
        return INVALID, why
    return VALID, ("Noise2Void/Noise2Self: no noise level needed; below MMSE (f_i cannot use y_i); works from one "
                   "measurement" + f.complete_note())


def _assess_neighbor2neighbor(f: _Facts, variant):
    if not f.denoising:
        return INVALID, "denoising only: it sub-samples the measured image (A = I)"
    why = _pixelwise(f, "neighbor2neighbor")
    if why:
        return INVALID, why
    return CAVEATS, "no noise level needed; below MMSE; assumes neighbouring pixels nearly equal (biased on texture)"


def _assess_blindspot(f: _Facts, variant):
    if not f.denoising:
        return INVALID, "denoising only: pixel i of y must measure pixel i of x (A = I)"
    why = _pixelwise(f, "blindspot")
    if why:
        return INVALID, why
    return VALID, "no noise level needed; below MMSE; needs a blind-spot network (backbone: blindspot_net)"


def _assess_autoencoder(f: _Facts, variant):
    if not f.complete:
        return INVALID, f.range_only()
    if f.noiseless:
        return INVALID, "noiseless measurements: nothing to denoise"
    return VALID, ("no noise model at all (correlated noise too); below MMSE; needs a bottleneck autoencoder "
                   "(backbone: autoencoder)" + f.complete_note())


def _group_verdict(f: _Facts, g: str) -> tuple[Verdict, str]:
    """Does group ``g`` make the single operator identifiable?"""
    if f.denoising:
        return INVALID, "A = I has no null space: equivariance adds nothing (MC keeps the identity minimiser)"
    if f.complete:
        r = f.theory.base()
        return INVALID, (f"A is invertible at {f.where()} (rank {r.rank}/{r.n}): no null space to learn; use a "
                         f"denoising loss")
    r0, r = f.theory.base(), f.theory.group(g)
    if r is None:
        return CAVEATS, f"the rank condition with {g} could not be computed ({f.theory.errors.get(g, '?')[:80]})"
    if g == "rotate" and f.image_domain:
        r90 = f.theory.group("rotate90")
        if r90 is not None and r90.equivariant:
            return INVALID, (f"A is a low-pass operator equivariant to rotations: rotating keeps the lost band "
                             f"unseen (SEI paper); the discrete rank {r.rank}/{r.n} is an interpolation artefact")
    if r.equivariant:
        return INVALID, (f"A is equivariant to {g} (A T_g = T̃_g A): the group adds no information "
                         f"(rank {r.rank}/{r.n} at {f.where()})")
    if r.level == "not learnable":
        gained = f"it fills {r.rank - r0.rank} of the {r0.n - r0.rank} missing dims, " if r.rank > r0.rank else ""
        return INVALID, (f"rank {r.rank}/{r.n} with {g} at {f.where()} (A alone {r0.rank}): {gained}"
                         f"{r.null_space_dim} null-space dims stay unobserved")
    interp = "" if g in EXACT_GROUPS else ", interpolated"
    if r.level == "numerically unstable":
        return CAVEATS, (f"full rank with {g} but κ {r.condition_number:.1e} at {f.where()}: the null space is "
                         f"filled only faintly{interp}")
    return VALID, (f"{g} makes A identifiable: rank {r.rank}/{r.n} at {f.where()} (A alone {r0.rank}), κ "
                   f"{r.condition_number:.1e}{interp}")


def _fidelity(f: _Facts) -> Optional[tuple[str, dict[str, Any]]]:
    """A noise-robust fidelity term valid here (``(label, loss spec)``), if any."""
    if f.level_known and f.family in ("gaussian", "poisson", "poisson_gaussian"):
        return f"SURE({f.family})", {"name": "sure", "args": {"noise": f.family}}
    if f.level_known and f.family == "gamma":
        return "R2R(gamma)", {"name": "r2r", "args": {"noise": "gamma"}}
    return None


def _assess_ei(f: _Facts, g):
    if g is None:
        return INVALID, "no roto-translation group assumed (--transform): EI needs one (shift, rotate, reflect)"
    verdict, reason = _group_verdict(f, g)
    if verdict != INVALID and not f.noiseless:
        reason += "; MC fits the noise" + ("" if _fidelity(f) is None else ": robust_ei adds SURE")
    return verdict, reason


def _assess_robust_ei(f: _Facts, g):
    if g is None:
        return INVALID, "no roto-translation group assumed (--transform): EI needs one (shift, rotate, reflect)"
    verdict, reason = _group_verdict(f, g)
    if verdict == INVALID:
        return verdict, reason
    if f.noiseless:
        return CAVEATS, "noiseless: nothing to be robust to, plain ei suffices; " + reason
    fid = _fidelity(f)
    if fid is None:
        why = "correlated noise" if f.family == "colored" else f"the {_FAMILY_NAME[f.family]} noise level is unknown"
        return INVALID, f"needs a SURE/R2R fidelity and to re-noise T_g x̂, impossible here ({why}); use ei"
    return verdict, f"{fid[0]} fidelity + re-noised EI; " + reason


def _assess_scale_ei(f: _Facts, variant):
    if "scale" not in f.groups:
        return INVALID, "assumes scale-invariant images, not assumed here (add scale to --transform)"
    if f.denoising or f.complete:
        return INVALID, "no null space to learn here: SURE alone suffices"
    if not (f.level_known and f.family in ("gaussian", "poisson", "poisson_gaussian")):
        why = _noise_mismatch(f, "sure", f.family if f.family in _FAMILIES else "gaussian") or "SURE does not apply"
        return INVALID, f"uses SURE, which is impossible here: {why}"
    r0, r = f.theory.base(), f.theory.group("scale")
    if r is None:
        return CAVEATS, f"the rank condition with scalings could not be computed ({f.theory.errors.get('scale', '?')})"
    if f.image_domain:  # band-limited: blur, downsampling (Scanvic et al. 2024)
        if r.rank > r0.rank or r.level != "not learnable":
            return VALID, (f"scalings reach the band A removes (rank {r0.rank}→{r.rank} of {r.n} at {f.where()}, "
                           f"sampled); roto-translations cannot for band-limited A (SEI paper, Thm 1)")
        return INVALID, f"scalings do not enlarge what A sees (rank {r.rank}/{r.n} at {f.where()})"
    if r.level == "not learnable":
        return INVALID, f"rank {r.rank}/{r.n} with scalings at {f.where()}: {r.null_space_dim} null-space dims remain"
    return CAVEATS, (f"rank {r.rank}/{r.n} with scalings at {f.where()} ({r.level}), but SEI targets band-limited A "
                     f"(blur, super-resolution); EI with a roto-translation is the usual choice here")


def _assess_moi(f: _Facts, variant):
    if f.denoising:
        return INVALID, "A = I: there is no null space for other operators to reveal"
    if not f.random_ops:
        return INVALID, ("one fixed operator (physics.is_random is False): MOI needs a different A per measurement "
                         "(e.g. random masks)")
    if f.single:
        return INVALID, "needs many measurements, each with its own operator; there is one"
    if f.complete:
        return CAVEATS, "A is already invertible: a denoising loss suffices"
    r0, r = f.theory.base(), f.theory.operators()
    if r is None:
        return CAVEATS, f"the multi-operator rank could not be computed ({f.theory.errors})"
    K = r.n_operators
    if r.level == "not learnable":
        return INVALID, f"the operators share a {r.null_space_dim}-dim null space: rank(E_k A_kᵀA_k) = {r.rank}/{r.n}"
    fid = _fidelity(f)
    noise = "" if f.noiseless else (f"; fidelity {fid[0]}" if fid else "; MC fidelity fits the noise")
    verdict = VALID if r.level == "learnable" else CAVEATS
    return verdict, (f"random operators cover the space: rank(E_k A_kᵀA_k) = {r.rank}/{r.n} over K={K} draws "
                     f"(one A: {r0.rank}), {r.level}{noise}")


def _assess_ssdu(f: _Facts, variant):
    if "mask" not in getattr(f.op.physics, "param_names", ()):
        return INVALID, "needs a mask-type operator (inpainting, MRI) to split the measured entries"
    if not f.random_ops or f.single:
        what = "one fixed mask" if not f.random_ops else "one measurement"
        return INVALID, (f"{what}: the split never scores the unobserved entries, so the null space is not learned "
                         f"(needs E[AᵀA | SA] full rank over random masks)")
    if f.complete:
        return CAVEATS, "A is already invertible: a denoising loss suffices"
    r = f.theory.operators()
    if r is None:
        return CAVEATS, f"the multi-operator rank could not be computed ({f.theory.errors})"
    if r.level == "not learnable":
        return INVALID, f"the masks share a {r.null_space_dim}-dim null space: rank(E_k A_kᵀA_k) = {r.rank}/{r.n}"
    reason = (f"random masks: rank(E_k A_kᵀA_k) = {r.rank}/{r.n} over K={r.n_operators} draws, so splitting learns "
              f"E[x | Sy, SA]")
    if f.family == "colored":
        return CAVEATS, reason + "; correlated noise links held-out and kept entries"
    return (VALID if r.level == "learnable" else CAVEATS), reason


_RULES = {
    "supervised": _assess_supervised, "mc": _assess_mc, "sure": _assess_sure, "r2r": _assess_r2r,
    "unsure": _assess_unsure, "noise2noise": _assess_noise2noise, "noise2score": _assess_noise2score,
    "splitting": _assess_splitting, "neighbor2neighbor": _assess_neighbor2neighbor, "blindspot": _assess_blindspot,
    "autoencoder": _assess_autoencoder, "ei": _assess_ei, "robust_ei": _assess_robust_ei,
    "scale_ei": _assess_scale_ei, "moi": _assess_moi, "ssdu": _assess_ssdu,
}


# -- loss specs for the config ------------------------------------------------------------------------

def _group_spec(f: _Facts, g: str) -> dict[str, Any]:
    return copy.deepcopy(f.theory.transform_args.get(g, GROUPS[g]))


def _loss_specs(f: _Facts, loss: str, variant: Optional[str]) -> tuple[list[dict], Optional[dict]]:
    """The config's ``losses`` entries (and a backbone, if the loss needs its own) for one row."""
    fid = _fidelity(f)
    if loss in NOISE_VARIANTS:
        key = "variant" if loss == "unsure" else "noise"
        return [{"name": loss, "args": {key: variant}}], None
    if loss == "ei":
        return [{"name": "mc"}, {"name": "ei", "args": {"transform": _group_spec(f, variant)}}], None
    if loss == "robust_ei":
        spec = fid[1] if fid else {"name": "sure", "args": {"noise": "gaussian"}}
        return [{"name": "robust_ei", "args": {"fidelity": spec, "transform": _group_spec(f, variant)}}], None
    if loss == "scale_ei":
        spec = fid[1] if fid and fid[1]["name"] == "sure" else {"name": "sure", "args": {"noise": "gaussian"}}
        return [{"name": "scale_ei", "args": {"sure": spec, "transform": _group_spec(f, "scale")}}], None
    if loss == "moi":
        return [{"name": "moi", "args": ({"fidelity": fid[1]} if fid else {})}], None
    if loss == "ssdu":
        return [{"name": "ssdu", "args": {"split_ratio": 0.6}}], None
    if loss == "splitting":
        return [{"name": "splitting", "args": {"replace": "neighbour", "mode": "full"}}], None
    if loss == "blindspot":
        return [{"name": "blindspot"}], {"name": "blindspot_net", "args": {"channels": 16, "depth": 5}}
    if loss == "autoencoder":
        return [{"name": "autoencoder"}], {"name": "autoencoder",
                                           "args": {"channels": 32, "levels": 3, "latent_channels": 4}}
    return [{"name": loss}], None


def _check_with_code(f: _Facts, specs: list[dict]) -> Optional[str]:
    """Build the losses and run their ``check(physics)``: the message of a refusal, else None."""
    from selfinv.losses.base import LossConfigError

    for spec in specs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss = registry.build("loss", spec["name"], spec.get("args") or {}, where="loss")
                loss.check(f.op.physics)
        except (LossConfigError, registry.RegistryError, ValueError, TypeError) as e:
            return f"selfinv refuses it: {e}"
    return None


# -- best choice and config -------------------------------------------------------------------------

_DENOISING_ORDER = ("sure", "noise2noise", "r2r", "unsure", "noise2score", "splitting", "blindspot",
                    "neighbor2neighbor", "autoencoder")
_INCOMPLETE_ORDER = ("robust_ei", "ei", "moi", "ssdu", "scale_ei")
_BANDLIMITED_ORDER = ("scale_ei", "robust_ei", "ei", "moi", "ssdu")
#: symmetry the images of a domain are known to have (tutorial: MRI and CT slices ~ rotation invariant)
_GROUP_PREFERENCE = {"mri": ("rotate", "rotate90", "shift", "reflect"),
                     "tomography": ("rotate", "rotate90", "shift", "reflect"),
                     "beer_lambert_ct": ("rotate", "rotate90", "shift", "reflect")}
_DEFAULT_GROUP_PREFERENCE = ("shift", "rotate90", "rotate", "reflect", "scale")


def _best(f: _Facts, rows: list[Assessment]) -> Optional[Assessment]:
    if f.complete:
        order = _DENOISING_ORDER
    else:
        order = _BANDLIMITED_ORDER if f.image_domain else _INCOMPLETE_ORDER
    groups = _GROUP_PREFERENCE.get(f.op.name or "", _DEFAULT_GROUP_PREFERENCE)
    variants = {"unsure": ("gaussian", "poisson_gaussian", "colored")}
    for verdict in (VALID, CAVEATS):
        for name in order:
            candidates = [r for r in rows if r.loss == name and r.verdict == verdict and r.losses]
            if not candidates:
                continue
            rank = variants.get(name, groups + tuple(NOISE_VARIANTS.get(name, ())))
            candidates.sort(key=lambda r: rank.index(r.variant) if r.variant in rank else len(rank))
            return candidates[0]
    return None


def _configs_dir() -> Optional[Path]:
    here = Path(__file__).resolve().parent.parent / "configs"
    return here if here.is_dir() else None


def _template(f: _Facts, best: Assessment) -> dict[str, Any]:
    """The shipped config that fits best: same physics, same loss, same noise."""
    from selfinv import config as config_mod

    folder = _configs_dir()
    noise_name = (f.s.noise_model or {}).get("name")
    best_score, best_data = -1, None
    for path in sorted(folder.glob("*.yaml")) if folder else []:
        try:
            data = config_mod.load_yaml(str(path))
        except config_mod.ConfigError:
            continue
        physics = data.get("physics", {})
        losses = [l.get("name") for l in data.get("losses", []) if isinstance(l, dict)]
        score = (4 * (physics.get("name") == (f.op.name or "denoising"))
                 + 2 * (best.losses[-1]["name"] in losses) + (physics.get("noise", {}).get("name") == noise_name))
        if "supervised" in losses:
            score -= 8
        if score > best_score:
            best_score, best_data = score, data
    if best_data is None:
        return config_mod.to_dict(config_mod.RunConfig())
    return best_data


def _noise_spec(f: _Facts) -> dict[str, Any]:
    """``physics.noise`` of the config: the user's model if it can be built (or estimated: ``auto`` on
    image-domain data), else ``unknown`` (measured data, noise not modelled)."""
    if f.s.noise_model is not None:
        name, args = f.s.noise_model["name"], _plain(dict(f.s.noise_model.get("args") or {}))
        auto = any(isinstance(v, str) and v.strip().lower() == "auto" for v in args.values())
        if name in ("none", "unknown") or (args and not auto) or (auto and f.image_domain):
            try:
                registry.validate("noise", name, {k: (1.0 if v == "auto" else v) for k, v in args.items()},
                                  "physics.noise")
                return {"name": name, "args": args} if args else {"name": name}
            except registry.RegistryError:
                pass
        return {"name": "unknown"}
    noise = f.op.physics.noise
    kind = noise.kind
    if kind in ("none", "unknown"):
        return {"name": kind}
    args = {n: float(getattr(noise, n)) for n in ("gain", "sigma", "shape")
            if getattr(noise, n, None) is not None and getattr(noise, n).ndim == 0}
    if kind == "colored_gaussian":
        args["kernel"] = _plain(noise.kernel)
    return {"name": kind, "args": args}


def _merged_losses(chosen: list[dict], template: list[dict]) -> list[dict]:
    """``chosen`` with the arguments of the template's same-named losses underneath (e.g. SURE's tau)."""
    previous = {l.get("name"): l for l in template if isinstance(l, dict)}
    out = []
    for spec in copy.deepcopy(chosen):
        old = previous.get(spec["name"])
        if old is not None:
            args = {**copy.deepcopy(old.get("args") or {}), **(spec.get("args") or {})}
            spec = {**spec, "args": args} if args else spec
            if "weight" in old:
                spec["weight"] = old["weight"]
        out.append(spec)
    return out


def _config(f: _Facts, best: Assessment) -> tuple[dict[str, Any], list[str]]:
    """A ``RunConfig`` dict for the best choice and notes on it."""
    notes: list[str] = []
    if f.s.template is not None:
        cfg = copy.deepcopy(f.s.template)
        if f.s.data_path is not None:
            cfg["data"] = {**(cfg.get("data") or {}), "dataset": None, "path": f.s.data_path}
    else:
        cfg = copy.deepcopy(_template(f, best))
        args = {k: _plain(v) for k, v in f.op.args.items()}
        side = _image_side(args)
        if side is not None and "img_size" in args:  # the data's patch size sets img_size
            args.pop("img_size")
            cfg.setdefault("data", {})["patch_size"] = int(side)
        inner = args.get("tomography")
        if f.op.name == "beer_lambert_ct" and isinstance(inner, dict) and "img_size" in (inner.get("args") or {}):
            # a nested operator keeps its img_size (the config fills in only the top level): match the data
            cfg.setdefault("data", {})["patch_size"] = int(_image_side(inner["args"]))
        cfg["physics"] = {"name": f.op.name or "denoising", "args": args, "noise": _noise_spec(f)}
        if cfg["physics"]["noise"]["name"] == "unknown" or any(
                isinstance(v, str) and v.strip().lower() == "auto" for v in cfg["physics"]["noise"].get("args",
                                                                                                        {}).values()):
            cfg["data"] = {**cfg.get("data", {}), "dataset": None, "path": f.s.data_path or "measurements.npz"}
            if f.s.data_path is None:
                notes.append("data.path: replace measurements.npz with your measurement file (selfinv simulate "
                             "writes one); measured data cannot be simulated from an unknown noise model")
        elif f.s.data_path is not None:
            cfg["data"] = {**cfg.get("data", {}), "dataset": None, "path": f.s.data_path}
        cfg.setdefault("trainer", {})["output_dir"] = f"runs/advise_{best.loss}"
    if f.s.data_offset is not None and (cfg.get("data") or {}).get("offset") is None:
        cfg["data"] = {**(cfg.get("data") or {}), "offset": float(f"{f.s.data_offset:.4g}")}
        notes.append(f"data.offset: {f.s.data_offset:.4g} is where the noise variance of your data vanishes "
                     f"(measured above); your detector's documented offset is better if you know it")
    cfg["losses"] = _merged_losses(best.losses, cfg.get("losses") or [])
    if best.backbone is not None:
        cfg.setdefault("model", {})["backbone"] = copy.deepcopy(best.backbone)
    elif f.s.template is None and f.op.name == "mri":
        cfg.setdefault("model", {}).setdefault("backbone", {}).setdefault("args", {}).update(
            {"in_channels": 2, "out_channels": 2})
    if f.s.noise == "unknown" and best.loss == "unsure" and cfg["physics"]["noise"].get("args"):
        notes.append("UNSURE does not read the noise level in physics.noise: it is only used to simulate data")
    if f.single:
        names = "+".join(l["name"] for l in best.losses)
        notes.append(f"one measurement: there is nothing to hold out for validation; fine-tune a pretrained network "
                     f"instead: selfinv finetune --checkpoint CKPT --measurement y.tif --loss {names} --output x.tif")
    return cfg, notes


# -- the entry points ---------------------------------------------------------------------------------

def _facts(s: Situation) -> tuple[_Facts, list[str]]:
    from selfinv.physics.noise import NoNoise, UnknownNoise

    notes: list[str] = []
    model = s.noise_model
    noise_obj = None
    if model is not None:
        name, args = model["name"], dict(model.get("args") or {})
        auto = any(isinstance(v, str) and v.strip().lower() == "auto" for v in args.values())
        buildable = name in ("none", "unknown") or (args and not auto)
        if s.noise == "known" and not buildable:
            raise ValueError(f"noise='known' needs the parameters of the noise model, e.g. {{name: {name}, args: "
                             f"{{...}}}} with numbers; got {model!r} (use noise='unknown' when the level is unknown)")
        if buildable:
            try:
                noise_obj = registry.build("noise", name, _tensor_args(args), where="noise_model")
            except registry.RegistryError:
                if s.noise == "known":
                    raise
                noise_obj = None
        if noise_obj is None:
            noise_obj = NoNoise() if s.noise == "none" else UnknownNoise()
        kind = name
    else:
        kind = s.physics.noise.kind if isinstance(s.physics, Physics) else "unknown"
        if not isinstance(s.physics, Physics):
            noise_obj = NoNoise() if s.noise == "none" else UnknownNoise()
    family, level_known = _family(s, kind, notes)
    op = _operator(s, noise_obj)
    transform_args: dict[str, dict] = {}
    for loss in (s.template or {}).get("losses", []):  # the config's own transform args for its group
        spec = (loss.get("args") or {}).get("transform") if isinstance(loss, dict) else None
        if isinstance(spec, dict) and spec.get("name") in ("shift", "reflect", "scale", "rotate"):
            g = spec["name"]
            if g == "rotate":
                g = "rotate90" if (spec.get("args") or {}).get("multiples_of_90", True) else "rotate"
            transform_args[g] = {"name": spec["name"], "args": dict(spec.get("args") or {})}
    physics = op.physics
    groups = s.transforms if s.transforms is not None else tuple(GROUPS)
    f = _Facts(s=s, op=op, theory=_Theory(op, s.n_operators, transform_args), family=family,
               level_known=level_known, denoising=isinstance(physics, Denoising),
               image_domain=bool(getattr(type(physics), "image_domain", False)),
               random_ops=bool(physics.is_random), groups=groups)
    if op.name == "mri":
        notes.append("MRI images are analysed as complex (2 channels); if yours are real-valued (k-space simulated "
                     "from magnitude images), conjugate symmetry halves the unknowns and the verdicts are pessimistic")
    return f, notes + op.notes


def _tensor_args(args: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, torch.Tensor) else v.tolist()) for k, v in args.items()}


def _family(s: Situation, kind: str, notes: list[str]) -> tuple[str, bool]:
    """(noise family, level known) from the knowledge and the noise model's kind."""
    if s.noise == "none":
        return "none", True
    if s.noise == "correlated":
        return "colored", False
    if s.noise == "poisson_gaussian":
        return "poisson_gaussian", False
    if kind == "colored_gaussian":
        if s.noise == "known":
            notes.append("a known noise covariance is treated as correlated noise: selfinv has no SURE/R2R "
                         "for coloured noise")
        return "colored", False
    if kind in _FAMILIES:
        if s.noise == "known":
            return kind, True
        return kind, False
    if kind == "none" and s.noise == "known":
        return "none", True
    if s.noise == "known":
        raise ValueError(f"noise='known' needs a noise model with its parameters (e.g. noise_model "
                         f"{{name: gaussian, args: {{sigma: 0.1}}}}); the noise model here is '{kind}'")
    notes.append("the noise family is not declared: assumed Gaussian-like (independent across pixels, constant "
                 "variance); declare it (poisson, gamma...) if it is not")
    return "gaussian", False


def advise(situation: Situation) -> Advice:
    """A verdict on every registered loss for ``situation``, the best choice and a config for it."""
    f, notes = _facts(situation)
    rows: list[Assessment] = []
    names = registry.names("loss")
    ordered = [n for n in DISPLAY_ORDER if n in names] + [n for n in names if n not in DISPLAY_ORDER]
    for name in ordered:
        rule = _RULES.get(name)
        if name in NOISE_VARIANTS:
            variants: Sequence[Optional[str]] = NOISE_VARIANTS[name]
        elif name in ("ei", "robust_ei"):
            variants = [g for g in f.groups if g in EI_GROUPS] or [None]
        else:
            variants = [None]
        for variant in variants:
            if rule is None:  # a loss registered after this module was written
                specs, backbone = [{"name": name}], None
                refusal = _check_with_code(f, specs)
                verdict, reason = (INVALID, refusal) if refusal else (
                    CAVEATS, "no advice rule for this loss; its check(physics) accepts this operator and noise")
            else:
                verdict, reason = rule(f, variant)
                specs, backbone = _loss_specs(f, name, variant)
                if verdict != INVALID:
                    refusal = _check_with_code(f, specs)
                    if refusal:
                        verdict, reason = INVALID, refusal
            rows.append(Assessment(name, variant, verdict, reason, None if verdict == INVALID else specs,
                                   None if verdict == INVALID else backbone))
    best = _best(f, rows)
    config = None
    if best is not None:
        config, more = _config(f, best)
        notes += more
    if f.single:
        notes.append("one measurement: Noise2Noise, Noise2Score and MOI/SSDU rely on a data set (pairs, a score "
                     "density, many operators)")
    if f.denoising and f.noiseless:
        notes.append("noiseless denoising: the measurement is the image, there is nothing to learn")
    return Advice(situation=_describe(f), theory=_theory_lines(f), rows=rows, best=best, config=config,
                  notes=notes, reports=dict(f.theory.reports))


def _describe(f: _Facts) -> list[str]:
    s, op = f.s, f.op
    name = op.name or type(op.physics).__name__
    args = ", ".join(f"{k}={_short(v)}" for k, v in op.args.items())
    kind = ("A = I" if f.denoising else ("random: a new operator per measurement" if f.random_ops
                                         else "one fixed operator"))
    noise = {"known": f"{_FAMILY_NAME[f.family]}, level known", "unknown": f"{_FAMILY_NAME[f.family]}, level unknown",
             "poisson_gaussian": "Poisson-Gaussian, gain and σ unknown",
             "correlated": "spatially correlated, covariance unknown", "none": "none (noiseless)"}[s.noise]
    if f.family == "colored" and s.noise != "correlated":
        noise = "correlated (coloured), covariance not usable by SURE/R2R"
    groups = ", ".join(f.groups) + ("" if s.transforms is not None else " (all candidates; --transform restricts)")
    return [f"physics      : {name}" + (f" ({args})" if args else "") + f" - {kind}",
            f"noise        : {noise}",
            f"measurements : {s.measurements}; independent noisy pairs: {'yes' if s.pairs else 'no'}",
            f"symmetries   : {groups}"]


def _short(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}"
    text = str(v)
    return text if len(text) <= 30 else text[:27] + "..."


def _theory_lines(f: _Facts) -> list[str]:
    if f.denoising:
        return []
    C, H, W = f.op.shape
    lines = [f"computed at {H}×{W} (C = {C}, n = {C * H * W} unknowns)"]
    for key, r in f.theory.reports.items():
        label = {"A": "A alone"}.get(key, f"{key} random operators" if key.startswith("K=") else f"A + {key}")
        lines.append(_fmt_report(label, r))
    for key, err in f.theory.errors.items():
        lines.append(f"{key:<24}: not computed ({err[:80]})")
    return lines


def advise_cmd(config: Optional[str] = None, physics: Optional[str] = None, physics_args: Optional[dict] = None,
               noise: Optional[Literal["known", "unknown", "poisson_gaussian", "correlated", "none"]] = None,
               noise_model: Optional[dict] = None, measurements: Literal["one", "many"] = "many",
               pairs: bool = False, transform: Optional[str] = None, image_size: int = 8,
               output: Optional[str] = None, data: Optional[str] = None) -> str:
    """Which self-supervised loss can I use? A verdict on every registered loss, the best one and its config.

    Args:
        config: a run config (YAML) to read the physics and the noise from (and to keep, losses aside).
        physics: a registered physics name (when there is no config), e.g. inpainting, mri, tomography, blur.
        physics_args: its arguments as YAML, e.g. '{keep_ratio: 0.5, img_size: [1, 64, 64]}'.
        noise: what is known about the noise: known, unknown (level), poisson_gaussian (gain and σ unknown),
            correlated (unknown covariance) or none; default: read from the config / noise_model.
        noise_model: the noise as YAML '{name: gaussian, args: {sigma: 0.1}}' (the family; its level if known).
        measurements: one measurement or many.
        pairs: two independent noisy measurements of each image exist.
        transform: symmetry groups you are willing to assume, comma-separated, among shift, rotate (any angle),
            rotate90, reflect, scale; default: all are evaluated.
        image_size: side of the small image on which the rank conditions are computed (larger is slower: the
            shift group has image_size² elements; at most 32).
        output: also write the advised config to this YAML file.
        data: your measurements (a file or folder, as ``data.path`` of fit) of an image-domain physics: the
            spatial correlation of their noise is measured and, when it is not white, the advice is for
            correlated noise (unless --noise says otherwise).
    """
    transforms = parse_transforms(transform) if transform else None
    measured, data_offset = "", None
    if data is not None:
        noise, detected, measured, data_offset = _measure_data_noise(data, noise, config, physics, noise_model)
        physics = physics or (detected if config is None else None)
    if config is not None:
        from selfinv.config import load_yaml, parse_run_config

        if not Path(config).is_file():
            raise FileNotFoundError(f"--config: file not found: {config}")
        if physics is not None or physics_args is not None:
            raise ValueError("--physics/--physics_args and --config are exclusive (the config names the physics)")
        run = parse_run_config(["--data.path", data] if data is not None else [], config)
        extra: dict[str, Any] = {"template": load_yaml(config),  # the user's file as written, losses replaced
                                 "data_path": data, "data_offset": data_offset}
        if noise is not None:
            extra["noise"] = noise
        if noise_model is not None:
            extra["noise_model"] = noise_model
        situation = Situation.from_config(run, measurements=measurements, pairs=pairs, transforms=transforms,
                                          image_size=image_size, **extra)
    else:
        if noise is None:
            noise = "known" if noise_model and noise_model.get("args") else "unknown"
        situation = Situation(physics=physics or "denoising", physics_args=dict(physics_args or {}), noise=noise,
                              noise_model=noise_model, measurements=measurements, pairs=pairs,
                              transforms=transforms, image_size=image_size, data_path=data,
                              data_offset=data_offset)
    advice = advise(situation)
    text = measured + advice.render()
    if output is not None and advice.config is not None:
        Path(output).write_text(advice.yaml)
        text += f"\nwrote the config to {output}\n"
    print(text, end="")
    return text


#: crop side of the blank-free areas of a FITS image the noise correlation is measured on
ADVISE_CROP = 32
#: the smallest image side on which ``advise --data`` measures the noise
ADVISE_MIN_SIDE = 8


def _measure_data_noise(data: str, noise: Optional[str], config: Optional[str], physics: Optional[str],
                        noise_model: Optional[dict] = None
                        ) -> tuple[Optional[str], Optional[str], str, Optional[float]]:
    """Read the user's measurements and measure the spatial correlation of their noise; returns the noise
    knowledge to advise for, the physics the data call for when they say (``"mri"`` for a fastMRI k-space
    file), a paragraph saying what was measured and the detector offset the data show when photon-counting
    noise is declared without one (``None`` otherwise)."""
    from selfinv import registry
    from selfinv.data.sources import blank_pixels_allowed, read_source
    from selfinv.data.user_data import blank_free_areas
    from selfinv.physics.noise_estimation import estimate_noise_correlation

    name, noise_name, offset, key = physics or "denoising", None, None, None
    if config is not None:
        from selfinv.config import parse_run_config

        cfg = parse_run_config(["--data.path", data], config)
        name, noise_name, offset, key = cfg.physics.name, cfg.physics.noise.name, cfg.data.offset, cfg.data.key
    elif noise_model:
        noise_name = noise_model.get("name")
    if name != "mri" and not registry.resolve("physics", name, "physics").image_domain:
        raise ValueError(f"--data: the noise can be measured on image-domain measurements (denoising, blur, "
                         f"downsampling), not on '{name}' measurements; say what you know with --noise")
    ms = read_source(data, key)
    kspace = [m for m in ms if m.kind == "kspace"]
    if kspace:
        if name != "mri" and (physics is not None or config is not None):
            raise ValueError(f"--data: {kspace[0].source} holds MRI k-space (its 'kspace' dataset), not '{name}' "
                             f"measurements; use --physics mri (or a config with physics mri)")
        m = kspace[0]
        mask = m.params.get("mask")
        kept = f"; the file's mask keeps {int((mask != 0).sum())} of {m.y.shape[-1]} columns" if mask is not None \
            else ""
        return noise, "mri", (f"{data} holds MRI k-space ({len(ms)} slice(s) of {m.y.shape[-2]} x {m.y.shape[-1]}"
                              f"{kept}): the advice is for physics mri, trained with each file's mask. The noise "
                              f"is not measured in k-space here: say what you know with --noise.\n\n"), None
    if name == "mri":
        raise ValueError(f"--data: physics mri trains on k-space (the 'kspace' dataset of a fastMRI HDF5 file); "
                         f"{data} holds images")
    if any(m.y.is_complex() for m in ms):
        raise ValueError(f"--data: {data} holds complex measurements; the noise correlation is measured on "
                         f"real images")
    tiny = [m for m in ms if min(m.y.shape[-2:]) < ADVISE_MIN_SIDE]
    if tiny:
        raise ValueError(f"--data: {tiny[0].name} ({tiny[0].source}) is {tuple(tiny[0].y.shape[-2:])} pixels; the "
                         f"noise is measured on images of at least {ADVISE_MIN_SIDE} x {ADVISE_MIN_SIDE} pixels")
    ys = []
    for m in ms:
        y = m.y.float()
        blank = bool(torch.isnan(y).any()) and blank_pixels_allowed(m, image_domain=True)
        if blank and not bool(torch.isinf(y).any()):
            ys += blank_free_areas(y, ADVISE_CROP)  # blank (NaN) pixels: measured around them
        elif not bool(torch.isfinite(y).all()):
            raise ValueError(f"--data: {m.name} ({m.source}) holds {int((~torch.isfinite(y)).sum())} non-finite "
                             f"value(s) (NaN/inf); remove or inpaint them first")
        else:
            ys.append(y)
    if not ys:
        raise ValueError(f"--data: no {ADVISE_CROP}-pixel area of {data} is free of blank (NaN) pixels")
    if all(float(y.std()) == 0 for y in ys):
        raise ValueError(f"--data: {data} holds constant images (one value each): there is no noise to measure "
                         f"and nothing to denoise")
    corr = estimate_noise_correlation(ys, warn=False)
    rho = corr.neighbours()
    around = f" (around blank pixels: {len(ys)} areas)" if len(ys) != len(ms) else ""
    text = (f"Measured on {len(ms)} measurement(s) of {data}{around}: noise {'white' if corr.white else 'CORRELATED'} "
            f"(ρ(x±1) = {rho['x1']:+.2f}, ρ(y±1) = {rho['y1']:+.2f}; white up to |ρ| {corr.threshold:.2f}), "
            f"σ ≈ {corr.sigma:.4g} in the data's units.\n")
    if not corr.white:
        text += corr.advice + "\n"
        if noise is None:
            noise = "correlated"
    if corr.white or corr.correlation_length <= 0:  # noise correlated beyond a pixel: the advice above applies
        from selfinv.training.auto_noise import neighbour_detail_warning

        note = neighbour_detail_warning([y for y in ys if y.ndim == 3], "Splitting (Noise2Void), blindspot and "
                                        "neighbor2neighbor")
        if note is not None:
            text += note + ".\n"
    if noise_name not in ("poisson", "poisson_gaussian"):
        from selfinv.training.auto_noise import count_lattice

        q = count_lattice(ys)
        if q is not None:
            text += (f"Every value is an integer multiple of {q:g}: photon counts × {q:g}? Their noise variance then "
                     f"grows with the signal (Poisson), which a Gaussian model with one σ does not describe: if they "
                     f"are counts, declare the noise {{name: poisson, args: {{gain: {q:g}}}}} (gain: auto finds "
                     f"{q:g}) — Poisson SURE and R2R are exact for it.\n")
    level = None
    if noise_name is not None:
        from selfinv.training.auto_noise import detector_offset_level, detector_offset_message

        level = detector_offset_level([y - (offset or 0.0) for y in ys], noise_name, offset or 0.0)
        if level is not None:
            note = detector_offset_message(level, noise_name, offset or 0.0, what="these measurements")
            text += note[0].upper() + note[1:] + ".\n"
            if offset is not None:  # the user set one: the note says it does not fit; the config keeps theirs
                level = None
    return noise, None, text + "\n", level


__all__ = ["Situation", "Advice", "Assessment", "advise", "advise_cmd", "parse_transforms", "GROUPS"]
