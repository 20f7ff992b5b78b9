"""Fine-tune a pretrained network on as little as one measurement (N = 1).

A reconstructor trained elsewhere (a local checkpoint written by ``selfinv fit``;
nothing is downloaded) may meet data it was not trained for: a higher noise level,
a stronger acceleration. The tutorial's last part adapts it with a
self-supervised loss computed on the test measurement itself,

    theta* = argmin_theta  L_ss(y, A, f_theta),    started from the pretrained theta_0,

for a few hundred Adam steps. The "data set" is the single measurement ``y``: for
pixel-wise operators (denoising) a batch holds random crops of ``y``; for other
operators (MRI, inpainting, ...) it holds ``y`` itself, repeated, and the
randomness comes from the loss (transforms of EI, recorruptions of R2R, ...).

Training runs through the Lightning engine (``SelfSupervisedModule`` +
``build_trainer``), so the fine-tuned checkpoint (with its physics) is usable by
``selfinv predict``. ``sigma: auto`` in the noise override estimates the noise level
from ``y`` itself (``selfinv.training.auto_noise``).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset


class SingleMeasurementDataset(Dataset):
    """``length`` training items from one measurement ``y`` (C, H, W).

    With ``patch_size`` each item is a random ``patch_size``-square crop of ``y`` (crop ``i`` is drawn
    from a generator seeded with ``(seed, i)``: reproducible and independent of the loading order);
    without, each item is ``y`` itself. ``params`` (no batch dimension) go with every item.
    """

    def __init__(self, y: Tensor, params: Mapping[str, Tensor] | None = None, patch_size: int | None = None,
                 length: int = 1, seed: int = 0):
        if y.ndim != 3:
            raise ValueError(f"SingleMeasurementDataset expects one (C, H, W) measurement, got {tuple(y.shape)}")
        if patch_size is not None:
            if params:
                raise ValueError(f"random crops need an operator without per-sample parameters; this one has "
                                 f"{sorted(params)} (use patch_size=None)")
            if patch_size > min(y.shape[-2:]):
                raise ValueError(f"patch_size {patch_size} exceeds the measurement size {tuple(y.shape[-2:])}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.y, self.params = y, dict(params or {})
        self.patch_size, self.length, self.seed = patch_size, int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        y = self.y
        if self.patch_size is not None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
            p = self.patch_size
            top = int(torch.randint(0, y.shape[-2] - p + 1, (1,), generator=g))
            left = int(torch.randint(0, y.shape[-1] - p + 1, (1,), generator=g))
            y = y[..., top:top + p, left:left + p]
        return {"y": y, "params": dict(self.params)}


@dataclass
class FinetuneResult:
    """Reconstructions before / after fine-tuning, the wall-clock seconds of the fine-tuning and the run."""

    x_before: Tensor
    x_after: Tensor
    seconds: float
    steps: int
    config: Any
    module: Any
    checkpoint: str | None = None
    noise_estimate: dict | None = None
    extra: dict = field(default_factory=dict)


def load_measurement(path: str | os.PathLike, index: int = 0) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """``(y, params, x_or_None)`` of measurement ``index`` of a file or folder (any format of
    ``selfinv.data.sources``, in its own units; a ``selfinv simulate`` file keeps its operator parameters)."""
    return _measurement(path, index)[:3]  # type: ignore[return-value]


def _measurement(path: str | os.PathLike, index: int, keep_coils: bool = False):
    from selfinv.data.readers import keeping_coils
    from selfinv.data.sources import read_source

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--measurement: file not found: {p}")
    with keeping_coils(keep_coils):
        ms = read_source(p)
    if not 0 <= index < len(ms):
        raise ValueError(f"--index {index}: {p} holds {len(ms)} measurement(s)")
    m = ms[index]
    return m.y, dict(m.params), m.x, m


def _sure_tau_auto(specs: list[dict], losses: str | Sequence[Mapping] | None) -> None:
    """``tau: auto`` (σ/10 of the estimated σ) for the SURE losses of ``specs`` whose noise level is estimated:
    their step (default 0.01, or the pretrained run's) was not chosen for that σ. A tau the user gave in
    ``losses`` (a list of ``{name, args}``) is kept, as is SURE without Gaussian noise or ``divergence: mc`` (no
    ``tau: auto`` there)."""
    given = [] if losses is None or isinstance(losses, str) else [dict(d.get("args") or {}) for d in losses]
    for i, spec in enumerate(specs):
        args = spec["args"]
        if spec["name"] != "sure" or (i < len(given) and "tau" in given[i]):
            continue
        if args.get("noise", "gaussian") == "gaussian" and args.get("divergence", "mc") == "mc":
            args["tau"] = "auto"


def _loss_specs(losses: str | Sequence[Mapping] | None, pretrained: Sequence[Any]) -> list[dict]:
    """Loss specs ``[{name, args, weight}]`` from ``'sure'`` / ``'mc+ei'`` (args reused from the pretrained
    config's loss of the same name, else defaults) or from a list of mappings."""
    if losses is None:
        return [{"name": l.name, "args": dict(l.args), "weight": l.weight} for l in pretrained]
    if isinstance(losses, str):
        by_name = {l.name: l for l in pretrained}
        out = []
        for name in [n.strip() for n in losses.split("+") if n.strip()]:
            old = by_name.get(name)
            out.append({"name": name, "args": dict(old.args) if old else {}, "weight": old.weight if old else 1.0})
        if not out:
            raise ValueError(f"--loss: no loss name in {losses!r}")
        return out
    return [{"name": d["name"], "args": dict(d.get("args") or {}), "weight": float(d.get("weight", 1.0))}
            for d in losses]


def finetune_config(pretrained: dict, y: Tensor, losses: str | Sequence[Mapping] | None = None,
                    steps: int = 200, lr: float = 1e-4, batch_size: int = 4, patch_size: int | None = None,
                    physics_args: Mapping[str, Any] | None = None, noise: Mapping[str, Any] | None = None,
                    seed: int = 0, output_dir: str | None = None, scale: float = 1.0,
                    noise_samples: list[Tensor] | None = None):
    """The ``RunConfig`` of the fine-tuning: the pretrained run's physics and model with the overrides,
    the fine-tuning losses, Adam at ``lr`` for ``steps`` steps, one epoch over crops of ``y`` (in the
    pretrained run's normalised units; ``scale`` is that normalisation's, so an estimated noise level is
    recorded in the data's own units). ``noise_samples``: what an ``auto`` noise level is estimated from
    (default ``y``; the blank-free areas of an image with blank pixels)."""
    from selfinv.config import from_dict

    base = from_dict(copy.deepcopy(pretrained))
    d = copy.deepcopy(pretrained)
    d["losses"] = _loss_specs(losses, base.losses)
    if physics_args:
        d["physics"]["args"] = {**d["physics"].get("args", {}), **dict(physics_args)}
    if noise:
        d["physics"]["noise"] = {"name": noise.get("name", d["physics"]["noise"]["name"]),
                                 "args": dict(noise.get("args") or {})}
    size = patch_size if patch_size is not None else int(y.shape[-1])
    d["data"].update({"patch_size": size, "batch_size": batch_size, "num_patches": max(2, steps * batch_size),
                      "val_fraction": 0.5, "num_workers": 0})
    d["optim"] = {"lr": lr, "weight_decay": 0.0, "scheduler": "none", "step_size": 1000, "gamma": 0.5}
    out = output_dir or tempfile.mkdtemp(prefix="selfinv_finetune_")
    d["trainer"].update({"max_steps": steps, "max_epochs": None, "max_time_minutes": None, "seed": seed,
                         "output_dir": out, "progress_bar": False, "figures": False, "early_stopping_patience": 0,
                         "checkpoint_every": 1, "val_every": 1, "log_every_n_steps": max(1, min(50, steps))})
    d["select_by"] = "val/loss"
    auto_noise = any(isinstance(v, str) and v.lower() == "auto" for v in d["physics"]["noise"]["args"].values())
    if auto_noise:  # estimated from y below; validate with a placeholder, data.path is not used
        _sure_tau_auto(d["losses"], losses)
        from selfinv.training.auto_noise import resolve_auto_noise

        probe = from_dict({**d, "physics": {**d["physics"], "noise": {**d["physics"]["noise"], "args": {
            k: (1.0 if isinstance(v, str) and v.lower() == "auto" else v)
            for k, v in d["physics"]["noise"]["args"].items()}}}})
        probe.physics.noise.args = dict(d["physics"]["noise"]["args"])
        cfg, record = resolve_auto_noise(probe, noise_samples if noise_samples else y[None], scale)
        return cfg, record
    return from_dict(d), None


#: ``patch_size`` default for image-domain measurements larger than twice this a side: crops of this size. Measured on
#: a 660 x 550 micrograph in photon counts (100 steps of Poisson SURE, 2 threads): 7.9 s and 36.39 dB with these
#: crops against 178 s and 36.34 dB on the whole measurement (36.31 before fine-tuning)
LARGE_MEASUREMENT_PATCH = 128


def finetune(checkpoint: str | os.PathLike, y: Tensor, params: Mapping[str, Tensor] | None = None,
             losses: str | Sequence[Mapping] | None = None, steps: int = 200, lr: float = 1e-4,
             batch_size: int = 4, patch_size: int | None = None,
             physics_args: Mapping[str, Any] | None = None, noise: Mapping[str, Any] | None = None,
             seed: int = 0, output_dir: str | None = None, blank_pixels: bool = False) -> FinetuneResult:
    """Adapt the checkpoint's network to the single measurement ``y`` (C, H, W) with a self-supervised loss.

    Args:
        checkpoint: ``.ckpt`` written by ``selfinv fit`` (its config gives physics and model).
        y: the measurement; ``params``: its operator parameters (e.g. the MRI mask), no batch dimension.
        losses: ``'sure'``, ``'unsure'``, ``'mc+ei'``... (args of the same-named pretrained loss reused) or
            a list of ``{name, args, weight}``; None = the pretrained losses.
        steps, lr, batch_size: Adam steps, learning rate and items per step.
        patch_size: crop size of the items (image-domain operators only); None = the whole measurement, or crops
            of ``LARGE_MEASUREMENT_PATCH`` (128) for an image-domain measurement more than twice that a side
            without per-measurement operator parameters (as fast per step as a small image, and no worse).
        physics_args, noise: overrides of the operator (``{'acceleration': 8}``) and noise model
            (``{'name': 'gaussian', 'args': {'sigma': 0.15}}``; ``{'args': {'sigma': 'auto'}}`` = estimated
            from ``y``).
        seed: seed of the crops and of the loss draws.
        output_dir: run folder (logs, fine-tuned checkpoint); default a temporary folder, removed at the end
            (also on error; the result then has no ``checkpoint``).
        blank_pixels: NaN values of ``y`` are blank pixels (no data: a FITS image's undefined values, a
            mosaic's edges) of an image-domain measurement: the crops avoid them (``patch_size`` default: the
            largest of 64, 48, 32, 16 that a blank-free crop has), the network sees them filled with the median
            and the reconstructions keep them NaN. Otherwise a NaN is an error.
    """
    from selfinv.data.user_data import blank_free_areas
    from selfinv.physics.support import check_measurement
    from selfinv.training.loading import load_trained

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not isinstance(y, Tensor) or y.ndim != 3:
        raise ValueError(f"finetune expects one measurement (C, H, W), got shape {tuple(getattr(y, 'shape', ()))}")
    run = load_trained(checkpoint)
    norm = run.normalization
    blank = torch.isnan(y) if blank_pixels and y.is_floating_point() else None
    if blank is not None and not bool(blank.any()):
        blank = None
    if blank is not None:
        if bool(blank.all()):
            raise ValueError("the measurement to fine-tune on: every pixel is blank (NaN)")
        if patch_size is None:  # the largest usual crop size some blank-free crop has
            sizes = sorted({min(size, *y.shape[-2:]) for size in (64, 48, 32, 16)}, reverse=True)
            patch_size = next((size for size in sizes if blank_free_areas(y, size)), sizes[-1])
        warnings.warn(f"{int(blank.sum())} blank (NaN) pixel(s) of {y.numel()}: the {patch_size}-pixel crops avoid "
                      f"them and the reconstruction keeps them blank", UserWarning, stacklevel=2)
    if patch_size is None and blank is None and not params and run.module.physics.image_domain \
            and min(y.shape[-2:]) > 2 * LARGE_MEASUREMENT_PATCH:
        patch_size = LARGE_MEASUREMENT_PATCH
    filled = y if blank is None else y.masked_fill(blank, float(y[~blank].median()))
    check_measurement(filled[None], run.module.physics.noise, "the measurement to fine-tune on")
    y = norm.apply(y.float())
    areas = blank_free_areas(y, patch_size) if blank is not None else None
    if areas == []:
        raise ValueError(f"no {patch_size}-pixel crop of the measurement is free of blank (NaN) pixels; lower "
                         f"--patch_size")
    temporary = None if output_dir else tempfile.mkdtemp(prefix="selfinv_finetune_")
    try:
        return _finetune(run, y, blank, filled, areas, params, losses, steps, lr, batch_size, patch_size,
                         physics_args, noise, seed, output_dir or temporary, temporary is not None)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _finetune(run, y: Tensor, blank: Tensor | None, filled: Tensor, areas: list | None,
              params: Mapping[str, Tensor] | None, losses: str | Sequence[Mapping] | None, steps: int, lr: float,
              batch_size: int, patch_size: int | None, physics_args: Mapping[str, Any] | None,
              noise: Mapping[str, Any] | None, seed: int, output_dir: str, temporary: bool) -> FinetuneResult:
    """``finetune`` from the loaded run and the normalised measurement ``y`` on: configure, train, reconstruct.
    ``temporary``: ``output_dir`` is removed afterwards (no checkpoint in the result)."""
    import lightning.pytorch as pl

    from selfinv.data.measurements import collate_measurements
    from selfinv.data.user_data import FixedItems, RandomPatches
    from selfinv.training.datamodule import MeasurementDataModule
    from selfinv.training.engine import build_module, build_physics, build_trainer

    norm = run.normalization
    cfg, record = finetune_config(run.checkpoint["hyper_parameters"]["config"], y, losses, steps, lr, batch_size,
                                  patch_size, physics_args, noise, seed, output_dir, norm.scale, areas)
    pl.seed_everything(seed, workers=True, verbose=False)
    physics = build_physics(cfg, norm)
    if patch_size is not None and not physics.image_domain:
        raise ValueError(f"patch_size: random crops of the measurement need an image-domain physics (denoising, "
                         f"blur, downsampling), got {type(physics).__name__}; leave patch_size unset"
                         + ("; blank (NaN) pixels are only skipped in image-domain measurements" if blank is not None
                            else ""))
    physics = physics.for_measurement(tuple(y.shape))
    module = build_module(cfg, physics, norm)
    module.model.load_state_dict(run.module.model.state_dict())
    if record is not None:
        module.hparams["noise_estimate"] = record
    params = {k: v for k, v in dict(params or {}).items()}
    batch = collate_measurements([{"y": norm.apply(filled.float()), "params": params}])
    op = physics.with_params(**batch["params"]) if batch["params"] else physics

    def reconstruct() -> Tensor:
        module.eval()
        with torch.no_grad():
            x = module.loss.estimator(module.model)(batch["y"], op, torch.Generator().manual_seed(seed))
            x = norm.undo(x.detach().clone())
        if blank is not None:
            mask = blank[None] if blank.shape[-2:] == x.shape[-2:] else torch.nn.functional.interpolate(
                blank[None].float(), size=tuple(x.shape[-2:]), mode="nearest") > 0.5
            x = x.masked_fill(mask.expand_as(x), float("nan"))
        return x

    x_before = reconstruct()
    if blank is None:
        train = SingleMeasurementDataset(y, params, patch_size, length=steps * batch_size, seed=seed)
        val = SingleMeasurementDataset(y, params, None, length=1)
    else:  # crops free of blank pixels; validation on (up to 4 of) the blank-free crops
        train = RandomPatches([y], patch_size, steps * batch_size, seed)
        val = FixedItems([{"y": a, "params": {}} for a in areas[::max(1, len(areas) // 4)][:4]])
    dm = MeasurementDataModule(train, val, batch_size=batch_size, num_workers=0, seed=seed)
    trainer = build_trainer(cfg, has_truth=False)
    module.train()
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - t0
    x_after = reconstruct()
    last = os.path.join(cfg.trainer.output_dir, "checkpoints", "last.ckpt")
    return FinetuneResult(x_before, x_after, seconds, int(trainer.global_step), cfg, module,
                          last if os.path.exists(last) and not temporary else None, record)


def finetune_cmd(checkpoint: str, measurement: str, output: str, loss: Optional[str] = None, steps: int = 200,
                 lr: float = 1e-4, batch_size: int = 4, patch_size: Optional[int] = None,
                 sigma: Optional[str] = None, noise: Optional[dict] = None, physics_args: Optional[dict] = None,
                 index: int = 0, seed: int = 0, run_dir: Optional[str] = None) -> str:
    """Fine-tune a checkpoint on one measurement with a self-supervised loss and write the reconstruction.

    Args:
        checkpoint: ``.ckpt`` written by ``selfinv fit`` (a network pretrained elsewhere).
        measurement: a file of any supported format (TIFF/PNG/NPY/MRC/DICOM/FITS/fastMRI) or a ``selfinv simulate``
            file (keeps its operator parameters).
        output: reconstruction file (.tif/.npy/.mrc, .png for 8/16-bit images, .fits (a FITS measurement's
            header kept), .dcm for a DICOM measurement: its header, a new instance), in the measurement's units.
        loss: ``sure``, ``unsure``, ``r2r``, ``mc+ei``... (names joined by ``+``; args of the same-named
            pretrained loss are reused) or a YAML list of ``{name, args, weight}``; default: pretrained losses.
        steps: Adam steps. lr: learning rate. batch_size: items per step.
        patch_size: random crops of this size (image-domain operators); default the whole measurement, or
            128-pixel crops of an image-domain measurement more than 256 pixels a side.
        sigma: the noise level of ``measurement`` (a number or ``auto`` = estimated from it).
        noise: noise model override as YAML ``{name: ..., args: {...}}``.
        physics_args: operator overrides as YAML, e.g. ``{acceleration: 8}``.
        index: which item of a multi-image file.
        seed: seed of the crops and loss draws.
        run_dir: run folder for logs and the fine-tuned checkpoint (default: a temporary folder, removed at the
            end).
    """
    from selfinv import registry, safe_yaml
    from selfinv.data.normalization import cast_to
    from selfinv.data.readers import FITS_EXTENSIONS
    from selfinv.data.sources import blank_pixels_allowed
    from selfinv.data.writers import pixel_size_for, png_unfit, write_stack
    from selfinv.predict import check_physics_fits

    _check_output_extension(output)
    spec: Any = loss
    if isinstance(loss, str) and loss.lstrip().startswith("["):
        spec = safe_yaml.load_text(loss, "--loss")
    pretrained = load_checkpoint_config(checkpoint)
    physics_name = pretrained["physics"]["name"]
    physics_cls = registry.resolve("physics", physics_name, "physics")
    y, params, _, m = _measurement(measurement, index, keep_coils=physics_cls.keeps_coils)
    check_physics_fits([m], physics_cls, physics_name)
    image_domain = physics_cls.image_domain  # else the measurement is a sinogram or k-space
    to_dicom = Path(output).suffix.lower() in DICOM_EXTENSIONS
    if to_dicom:
        _check_dicom_template(output, m)
    _check_output_holds(output, m)
    noise_over = dict(noise) if noise else None
    if sigma is not None:
        try:
            value: Any = sigma if str(sigma).strip().lower() == "auto" else float(sigma)
        except ValueError:
            raise ValueError(f"--sigma must be a number (in the measurement's units) or 'auto', got {sigma!r}") \
                from None
        if noise_over is None:
            noise_over = copy.deepcopy(pretrained["physics"]["noise"])
            if noise_over.get("name") in ("unknown", "none"):  # a noise level given: Gaussian noise of that level
                noise_over = {"name": "gaussian", "args": {}}
        noise_over.setdefault("args", {})
        name = noise_over.get("name")
        if name is not None and "sigma" not in registry.accepted_args(registry.resolve("noise", name, "--noise")):
            raise ValueError(f"--sigma: the noise model '{name}' has no level σ; give its parameters with "
                             f"--noise '{{name: {name}, args: {{...}}}}' (or another model there)")
        noise_over["args"]["sigma"] = value
    r = finetune(checkpoint, y, params, spec, steps, lr, batch_size, patch_size, physics_args, noise_over, seed,
                 run_dir, blank_pixels_allowed(m, image_domain))
    out_dtype = m.dtype if m.kind == "image" and r.x_after.shape[1:] == m.y.shape else "float32"
    pixel = pixel_size_for(m.pixel_size, tuple(m.y.shape[-2:]), tuple(r.x_after.shape[-2:])) \
        if image_domain else None
    if to_dicom:
        path = _write_dicom(output, r.x_after, m, pixel if r.x_after.shape[-2:] != m.y.shape[-2:] else None)
    else:  # a FITS output of a single-image FITS measurement keeps its header (WCS, units)
        fits_in = Path(m.source).suffix.lower() in FITS_EXTENSIONS and m.count == 1 and image_domain
        x = cast_to(r.x_after, out_dtype)
        why = png_unfit(x.dtype, x.shape) if Path(output).suffix.lower() == ".png" else None
        if why is not None:  # a reconstruction of another size than the measurement's: float32
            output = str(Path(output).with_suffix(".tif"))
            print(f"note: PNG cannot hold {why}: wrote TIFF instead")
        path = write_stack(output, x, pixel, m.source if fits_in else None,
                           f"selfinv finetune of {Path(m.source).name}")
    est = f", estimated noise {r.noise_estimate['estimated']}" if r.noise_estimate else ""
    kept = f"; fine-tuned checkpoint {r.checkpoint}" if r.checkpoint else " (--run_dir DIR keeps the fine-tuned run)"
    print(f"fine-tuned {r.steps} steps in {r.seconds:.1f} s{est}; wrote {path}{kept}")
    return str(path)


#: the output extensions ``finetune_cmd`` writes besides ``writers.STACK_EXTENSIONS`` (DICOM measurements only)
DICOM_EXTENSIONS = (".dcm", ".dicom")


def _check_output_extension(output: str) -> None:
    """Refuse, before any training, an ``--output`` whose extension is no format finetune writes."""
    from selfinv.data.writers import STACK_EXTENSIONS

    ext = Path(output).suffix.lower()
    if ext not in STACK_EXTENSIONS + DICOM_EXTENSIONS:
        raise ValueError(f"--output {output}: '{ext or '(no extension)'}' is none of the formats finetune writes: "
                         f"{' '.join(STACK_EXTENSIONS)}, or {' '.join(DICOM_EXTENSIONS)} for a DICOM measurement")


def _check_output_holds(output: str, m) -> None:
    """Refuse, before any training, a ``.png`` output of a measurement whose reconstruction PNG cannot hold (not an
    8/16-bit image: float data, k-space, a sinogram) and an MRC output of several channels (RGB, complex MRI)."""
    from selfinv.data.writers import FORMAT_EXTENSIONS, png_unfit

    ext, name = Path(output).suffix.lower(), Path(m.source).name
    why = png_unfit(m.dtype if m.kind == "image" else "float32", (1, *m.y.shape)) if ext == ".png" else None
    if why is not None:
        raise ValueError(f"--output {output}: PNG cannot hold the reconstruction of {name}, {why}; give a .tif "
                         f"output")
    if ext in FORMAT_EXTENSIONS["mrc"] and m.y.shape[0] != 1:
        raise ValueError(f"--output {output}: MRC holds single-channel images, and {name} has {m.y.shape[0]} "
                         f"channels; give a .tif output")


def _check_dicom_template(output: str, m) -> None:
    """Refuse a ``.dcm`` output, before any training, unless the measurement is a single-frame DICOM image read
    with its own channels (grayscale or RGB)."""
    from selfinv.data.readers import dcmread
    from selfinv.data.writers import dicom_channels

    if m.origin is None:
        raise ValueError(f"--output {output}: DICOM output takes the header of a DICOM measurement, and "
                         f"{m.source} is not one; give a .tif output")
    ds = dcmread(m.origin[0], stop_before_pixels=True)
    channels = dicom_channels(ds)
    if m.y.shape[0] != channels:  # (C, H, W): a grayscale or an RGB image
        raise ValueError(f"--output {output}: {m.source} was read with {m.y.shape[0]} channel(s), and its DICOM "
                         f"header describes {'RGB' if channels == 3 else 'grayscale'} pixels; give a .tif output")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"--output {output}: {m.origin[0]} holds several frames and one is fine-tuned; give a "
                         f".tif output")


def _write_dicom(output: str, x, m, pixel: dict | None) -> Path:
    """The fine-tuned image as a DICOM file with the header of the single-frame DICOM it came from."""
    from pydicom.uid import generate_uid

    from selfinv.data.writers import write_dicom

    return write_dicom(output, x.detach().cpu().double().numpy(), m.origin[0], generate_uid(), pixel,
                       "selfinv finetune")


def load_checkpoint_config(checkpoint: str | os.PathLike) -> dict:
    """The plain-dict run config stored in a checkpoint's hyper-parameters."""
    from selfinv.training.checkpoint import read_checkpoint

    return read_checkpoint(checkpoint)["hyper_parameters"]["config"]


__all__ = ["finetune_cmd", "load_checkpoint_config", "SingleMeasurementDataset", "FinetuneResult", "load_measurement",
           "finetune_config", "finetune"]
