"""The ``selfinv`` command.

::

    selfinv fit --config run.yaml [--resume last|CKPT] [--trainer.max_steps 10 --losses.0.name sure ...]
    selfinv validate --config run.yaml --checkpoint CKPT
    selfinv predict --checkpoint CKPT --input FILE_OR_FOLDER --output DIR [--format tiff|png|npy]
                    [--tile 256 --overlap 32]
    selfinv simulate --config run.yaml --output data.npz [--split train|val|test]
    selfinv identifiability --config run.yaml [--image_size 16]
    selfinv demo [--minutes 4] [--out runs/demo]
    selfinv finetune --checkpoint CKPT --measurement y.tif --loss sure|unsure|mc+ei|... --output x.tif
                     [--steps 200 --lr 1e-4 --patch_size 64 --sigma 0.15|auto --physics_args '{acceleration: 8}']

Run options (fit, validate, simulate, identifiability) come from the typed
``selfinv.config.RunConfig``; the other commands' options from the typed
signatures of the functions below (jsonargparse). Configs are validated before
anything runs; errors name the field and the allowed values.
"""

from __future__ import annotations

import dataclasses

import os
import sys
from pathlib import Path
from typing import Literal, Optional, Sequence

from selfinv.config import ConfigError, RunConfig, from_dict, parse_run_config

COMMANDS = ("fit", "validate", "predict", "simulate", "identifiability", "demo", "finetune")


def _pop(argv: list[str], flag: str) -> str | None:
    """Remove ``flag VALUE`` (or ``flag=VALUE``) from argv and return VALUE."""
    for i, a in enumerate(argv):
        if a == flag:
            if i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a value")
            value = argv[i + 1]
            del argv[i:i + 2]
            return value
        if a.startswith(flag + "="):
            del argv[i]
            return a.split("=", 1)[1]
    return None


def _run_config(argv: list[str]) -> RunConfig:
    config = _pop(argv, "--config")
    if config is not None and not os.path.exists(config):
        raise ConfigError(f"--config: file not found: {config}")
    return parse_run_config(argv, config)


# -- commands with typed signatures -------------------------------------------------------

def predict(checkpoint: str, input: str, output: str, format: Literal["tiff", "png", "npy"] = "tiff",
            tile: Optional[int] = None, overlap: int = 32, batch_size: int = 4) -> list[str]:
    """Reconstruct measurements (a file or a folder) with a trained checkpoint.

    Args:
        checkpoint: a ``.ckpt`` written by ``selfinv fit``.
        input: measurement file or folder (PNG/TIFF/NPY/NPZ/HDF5/MRC/DICOM, or a ``selfinv simulate`` file).
        output: output folder.
        format: file format of the reconstructions.
        tile: tile size for tiled prediction of large images (denoising only); None = whole image.
        overlap: overlap between tiles (blended).
        batch_size: tiles per network call.
    """
    import torch

    from selfinv.data.writers import write_image
    from selfinv.physics.base import Denoising
    from selfinv.training.checkpoint import load_checkpoint
    from selfinv.training.engine import build_module

    ckpt = load_checkpoint(checkpoint)
    cfg = from_dict(ckpt["hyper_parameters"]["config"])
    module = build_module(cfg)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    estimator = module.loss.estimator(module.model)
    physics = module.physics

    src = Path(input)
    params: dict = {}
    if src.is_file() and src.suffix in (".npz", ".h5", ".hdf5") and _is_measurement_file(src):
        from selfinv.data.measurements import MeasurementDataset, collate_measurements

        ds = MeasurementDataset.load(src)
        batch = collate_measurements([ds[i] for i in range(len(ds))])
        y, params = batch["y"], batch["params"]
    else:
        from selfinv.data.readers import read_measurements

        y = read_measurements(src).data
    os.makedirs(output, exist_ok=True)
    written = []
    with torch.no_grad():
        for i in range(y.shape[0]):
            yi = y[i:i + 1]
            op = physics.with_params(**{k: v[i:i + 1] for k, v in params.items()}) if params else physics
            if hasattr(op, "for_sinogram"):  # CT: the trained geometry rebuilt for this sinogram's size
                op = op.for_sinogram(yi)
            if tile is not None:
                if not isinstance(physics, Denoising):
                    raise ValueError(f"--tile: tiled prediction needs a pixel-wise (denoising) physics; this "
                                     f"checkpoint uses {type(physics).__name__}, whose measurements are not local")
                from selfinv.data.tiling import tiled_apply

                x_hat = tiled_apply(lambda t: estimator(t, op), yi, tile=tile, overlap=overlap,
                                    batch_size=batch_size)
            else:
                x_hat = estimator(yi, op)
            ext = {"tiff": "tif", "png": "png", "npy": "npy"}[format]
            path = Path(output) / f"{src.stem}_{i:04d}.{ext}"
            arr = x_hat[0].clamp(0, 1) if format == "png" else x_hat[0]
            written.append(str(write_image(path, arr)))
    print(f"wrote {len(written)} reconstruction(s) to {output}")
    return written


def _is_measurement_file(path: Path) -> bool:
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            return "y" in z.files
    try:
        import h5py
    except ImportError:
        return False
    with h5py.File(path, "r") as f:
        return "y" in f


def simulate(cfg: RunConfig, output: str, split: str = "train") -> str:
    """Simulate a measurement data set (bundled clean images through the config's physics) to .npz/.h5."""
    import torch

    from selfinv.data.bundled import load_dataset
    from selfinv.data.measurements import MeasurementDataset
    from selfinv.data.patches import fixed_crops, random_patches
    from selfinv.training.engine import build_physics

    if cfg.data.dataset is None:
        raise ConfigError("simulate needs data.dataset (a bundled clean-image data set)")
    physics = build_physics(cfg)
    images = load_dataset(cfg.data.dataset, split=split).images
    if split == "train":
        x = random_patches(images, cfg.data.patch_size, cfg.data.num_patches,
                           generator=torch.Generator().manual_seed(cfg.data.seed))
    else:
        x = fixed_crops(images, cfg.data.patch_size)
    ds = MeasurementDataset(x, physics, seed=cfg.data.seed + 1, keep_ground_truth=True,
                            metadata={"dataset": cfg.data.dataset, "split": split})
    path = ds.save(output)
    print(f"wrote {len(ds)} measurements {tuple(ds[0]['y'].shape)} to {path}")
    return str(path)


def identifiability_cmd(cfg: RunConfig, image_size: int = 8, transform: Optional[str] = None,
                        n_operators: Optional[int] = None) -> str:
    """Print the identifiability report of the config's physics (and a registered transform)."""
    import torch

    from selfinv import registry
    from selfinv.theory import identifiability
    from selfinv.training.engine import build_physics

    # the rank conditions are computed on a small image: size the operator for it
    cfg.data.patch_size = image_size
    if "img_size" in cfg.physics.args:
        size = list(cfg.physics.args["img_size"])
        cfg.physics.args["img_size"] = tuple(size[:-2] + [image_size, image_size])
    physics = build_physics(cfg)
    t = registry.build("transform", transform, {}, where="--transform") if transform else None
    if t is None:  # use the transform of an EI-type loss if the config has one
        for i, l in enumerate(cfg.losses):
            spec = l.args.get("transform")
            if isinstance(spec, dict) and "name" in spec:
                t = registry.build("transform", spec["name"], spec.get("args") or {},
                                   where=f"losses.{i}.args.transform")
                break
    channels = cfg.model.backbone.args.get("in_channels", 1)
    report = identifiability(physics, t, img_size=(channels, image_size, image_size), n_operators=n_operators,
                             generator=torch.Generator().manual_seed(cfg.trainer.seed))
    text = str(report)
    print(text)
    return text


def _function_parser(fn, prog: str):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=prog, description=(fn.__doc__ or "").split("\n")[0], exit_on_error=False)
    parser.add_function_arguments(fn, as_group=False, skip={"cfg"})
    return parser


def _command_help(command: str) -> str:
    """Help of one command: generated from the typed signature it is parsed from."""
    if command in ("predict", "demo", "finetune"):
        if command == "demo":
            from selfinv.demo import run_demo as fn
        elif command == "finetune":
            from selfinv.finetune import finetune_cmd as fn
        else:
            fn = predict
        return _function_parser(fn, f"selfinv {command}").format_help()
    from selfinv.config import RunConfig

    sections = ", ".join(f.name for f in dataclasses.fields(RunConfig))
    return (f"selfinv {command} --config run.yaml [--SECTION.FIELD VALUE ...]\n\n"
            f"Run options come from the typed selfinv.config.RunConfig (sections: {sections}); any field\n"
            f"can be overridden, e.g. --trainer.max_steps 100 --losses.0.name r2r. See configs/ for examples.\n")


def _parse_function(fn, argv: Sequence[str], prog: str) -> dict:
    parser = _function_parser(fn, prog)
    try:
        ns = parser.parse_args(list(argv))
    except Exception as e:  # noqa: BLE001
        from selfinv.config import explain

        raise ConfigError(explain(str(e))) from None
    return ns.as_dict()


def _split_known(argv: list[str], names: Sequence[str]) -> dict[str, str]:
    out = {}
    for n in names:
        v = _pop(argv, f"--{n}")
        if v is not None:
            out[n] = v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``selfinv`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"selfinv: unknown command '{command}'; expected one of {list(COMMANDS)}", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(_command_help(command))
        return 0
    try:
        if command == "fit":
            resume = _pop(rest, "--resume")
            cfg = _run_config(rest)
            from selfinv.training.engine import fit

            trainer, _ = fit(cfg, resume=resume)
            cb = trainer.checkpoint_callback
            print(f"best checkpoint ({cfg.select_by}): {cb.best_model_path} "
                  f"score={float(cb.best_model_score) if cb.best_model_score is not None else float('nan'):.6g}")
            print(f"run folder: {cfg.trainer.output_dir}")
        elif command == "validate":
            ckpt = _pop(rest, "--checkpoint")
            cfg = _run_config(rest)
            from selfinv.training.engine import validate

            print(validate(cfg, ckpt))
        elif command == "predict":
            predict(**_parse_function(predict, rest, "selfinv predict"))
        elif command == "simulate":
            extra = _split_known(rest, ("output", "split"))
            if "output" not in extra:
                raise ConfigError("simulate needs --output FILE (.npz or .h5)")
            cfg = _run_config(rest)
            simulate(cfg, **extra)
        elif command == "identifiability":
            extra = _split_known(rest, ("image_size", "transform", "n_operators"))
            cfg = _run_config(rest)
            kw = {k: (int(v) if k in ("image_size", "n_operators") else v) for k, v in extra.items()}
            identifiability_cmd(cfg, **kw)
        elif command == "demo":
            from selfinv.demo import run_demo

            run_demo(**_parse_function(run_demo, rest, "selfinv demo"))
        elif command == "finetune":
            from selfinv.finetune import finetune_cmd

            finetune_cmd(**_parse_function(finetune_cmd, rest, "selfinv finetune"))
    except (ConfigError, FileNotFoundError) as e:
        print(f"selfinv {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
