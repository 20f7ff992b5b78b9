"""The ``selfinv`` command.

::

    selfinv fit --config run.yaml [--data.path YOUR_FILES] [--resume last|CKPT [--resume-weights-only]]
                [--trainer.max_steps 10 --losses.0.name sure ...]
    selfinv validate --config run.yaml --checkpoint CKPT
    selfinv predict --checkpoint CKPT --input FILE_OR_FOLDER --output DIR [--format tiff|png|npy|mrc|fits|dicom]
                    [--tile 512 --overlap 32] [--physics_args '{n_views: 90}'] [--complex]
    selfinv simulate --config run.yaml --output data.npz [--data.path CLEAN_IMAGES] [--split train|val|test]
    selfinv advise [--config run.yaml | --physics mri --noise unknown ...] [--data YOUR_FILES]
    selfinv identifiability --config run.yaml [--image_size 16] [--transform rotate]
    selfinv demo [--out runs/demo]
    selfinv finetune --checkpoint CKPT --measurement y.tif --loss sure|unsure|mc+ei|... --output x.tif
                     [--steps 200 --lr 1e-4 --patch_size 64 --sigma 0.15|auto --physics_args '{acceleration: 8}']
    selfinv reproduce [--quick] [--only 'denoising*'] [--device cuda] [--dry_run]

Run options (fit, validate, simulate, identifiability) come from the typed
``selfinv.config.RunConfig``; the other commands' options from the typed
signatures of their functions (``selfinv.options``). Configs are validated before
anything runs; every failure is one message (exit 2 for bad input or config, 3 for
a diverged training, 1 otherwise; ``--debug`` shows the traceback), every warning one
``selfinv COMMAND: warning: ...`` line. Help of one command: ``selfinv COMMAND --help``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Optional, Sequence

from selfinv import options
from selfinv.config import ConfigError, RunConfig, parse_run_config
from selfinv.options import parse_function_args

#: how each command chooses the array of a file holding several (NPZ, HDF5)
SEVERAL_ARRAYS = {
    **dict.fromkeys(("fit", "validate", "simulate", "identifiability"), "choose one with --data.key NAME"),
    "predict": "choose one with --key NAME",
    "advise": "choose one with data.key in a run config (--config)",
    "finetune": "finetune reads a file of one array: save the measurement to fine-tune on alone",
}
COMMANDS = ("fit", "validate", "predict", "simulate", "identifiability", "advise", "demo", "finetune", "reproduce")


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

def identifiability_cmd(cfg: RunConfig, image_size: int = 8, transform: Optional[str] = None,
                        n_operators: Optional[int] = None) -> str:
    """Print the identifiability report of the config's physics (and a registered transform).

    Args:
        image_size: side of the small images the rank conditions are computed on (4 to 32).
        transform: a registered transform (shift, rotate, reflect, scale); default: the config's EI transform.
        n_operators: random operators averaged (random physics); default 1 drawn operator.
    """
    text = str(config_identifiability(cfg, image_size, transform, n_operators))
    print(text)
    return text


def config_identifiability(cfg: RunConfig, image_size: int = 8, transform: Optional[str] = None,
                           n_operators: Optional[int] = None):
    """The identifiability report (``selfinv.theory.identifiability``) of the config's physics on
    ``image_size`` images, with ``transform`` or the config's EI transform; a random physics is one
    seeded draw unless ``n_operators`` says otherwise. ``cfg`` is resized in place."""
    import torch

    from selfinv import registry
    from selfinv.theory import identifiability
    from selfinv.training.engine import build_operator

    if not 4 <= image_size <= 32:
        raise ValueError(f"--image_size must be between 4 and 32 (the matrices are n x n with n = image_size^2), "
                         f"got {image_size}")
    if n_operators is not None and n_operators < 1:
        raise ValueError(f"--n_operators must be >= 1, got {n_operators}")
    # the rank conditions are computed on a small image: size the operator for it
    cfg.data.patch_size = image_size
    if "img_size" in cfg.physics.args:
        size = list(cfg.physics.args["img_size"])
        cfg.physics.args["img_size"] = tuple(size[:-2] + [image_size, image_size])
    physics = build_operator(cfg)
    if n_operators is None and physics.is_random:
        n_operators = 1  # a seeded draw: the same report every run
    t = registry.build("transform", transform, {}, where="--transform") if transform else None
    if t is None:  # use the transform of an EI-type loss if the config has one
        for i, l in enumerate(cfg.losses):
            spec = l.args.get("transform")
            if isinstance(spec, dict) and "name" in spec:
                t = registry.build("transform", spec["name"], spec.get("args") or {},
                                   where=f"losses.{i}.args.transform")
                break
    channels = cfg.model.backbone.args.get("in_channels", 1)
    return identifiability(physics, t, img_size=(channels, image_size, image_size), n_operators=n_operators,
                           generator=torch.Generator().manual_seed(cfg.trainer.seed))


def _command_function(command: str):
    if command == "advise":
        from selfinv.advise import advise_cmd

        return advise_cmd
    if command == "demo":
        from selfinv.demo import run_demo

        return run_demo
    if command == "finetune":
        from selfinv.finetune import finetune_cmd

        return finetune_cmd
    if command == "reproduce":
        from selfinv.reproduce import reproduce_cmd

        return reproduce_cmd
    from selfinv.predict import predict

    return predict


def _command_help(command: str) -> str:
    """Help of one command: generated from the typed signature (or ``RunConfig``) it is parsed from."""
    from selfinv import options

    if command in ("predict", "demo", "finetune", "advise", "reproduce"):
        return options.function_help(_command_function(command), f"selfinv {command}")
    from selfinv.config import help_text

    if command in ("simulate", "identifiability"):
        from selfinv.simulate import simulate

        fn = simulate if command == "simulate" else identifiability_cmd
        return options.function_help(fn, f"selfinv {command}", skip=("cfg",)) + "\n" + help_text(command)
    return help_text(command)


def _command_options(argv: list[str], fn) -> dict:
    """Remove from ``argv`` the options that are parameters of ``fn`` (besides ``cfg``) and return them
    typed by its signature; the rest of ``argv`` are run-config fields."""
    names = [n for n in options.parameter_types(fn, skip=("cfg",))]
    taken: list[str] = []
    for n in names:
        v = _pop(argv, f"--{n}")
        if v is not None:
            taken += [f"--{n}", v]
    return options.parse_function_args(fn, taken, skip=("cfg",))


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
               ImportError)


def _one_line(e: BaseException, limit: int = 600) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _report(command: str, e: BaseException) -> int:
    """Print ``e`` as the user should see it (no traceback) and return the exit code."""
    import errno

    from selfinv.training.divergence import TrainingDiverged

    if isinstance(e, TrainingDiverged):
        print(f"selfinv {command}: error: {_one_line(e)}", file=sys.stderr)
        return 3
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" writing {e.filename}" if e.filename else ""
        then = ("resume with --resume last (the previous checkpoint is intact)" if command == "fit"
                else "run the command again (nothing partial was kept)")
        print(f"selfinv {command}: error: the disk is full{where}; free some space and {then}", file=sys.stderr)
        return 1
    if isinstance(e, KeyboardInterrupt):
        print(f"selfinv {command}: interrupted; a run continues with --resume last", file=sys.stderr)
        return 130
    if isinstance(e, USER_ERRORS) or type(e).__name__ == "MisconfigurationException":
        print(f"selfinv {command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    print(f"selfinv {command}: internal error: {type(e).__name__}: {_one_line(e, 300)}\n"
          f"run again with --debug for the traceback, and please report it", file=sys.stderr)
    return 1


def _flag(argv: list[str], name: str) -> bool:
    """Remove a value-less ``name`` flag from ``argv``; whether it was there."""
    if name in argv:
        argv[:] = [a for a in argv if a != name]
        return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``selfinv`` command; returns the exit code (0 ok, 2 bad input or config,
    3 training diverged, 1 anything else). ``--debug`` shows the traceback of an error."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader of the output went away (``selfinv predict --help | head``): stop without a traceback, and
        # point stdout at /dev/null so that the interpreter's final flush does not raise again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (captured in tests)
            pass
        return 1


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _flag(argv, "--debug")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"selfinv: unknown command '{command}'{hint}; expected one of {list(COMMANDS)}", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(_command_help(command))
        return 0
    previous = None
    try:
        if command != "advise":  # Lightning installs its own formatwarning when imported: import it before ours
            import lightning.fabric.utilities.warnings  # noqa: F401
        previous = warnings.formatwarning
        warnings.formatwarning = _warning_line(command)
        from selfinv.data.readers import several_arrays_hint

        with several_arrays_hint(SEVERAL_ARRAYS.get(command, "choose one with key=NAME")):
            _run(command, rest)
    except BrokenPipeError:
        raise
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - every failure becomes one clear message
        if debug:
            raise
        return _report(command, e)
    finally:
        if previous is not None:
            warnings.formatwarning = previous
        close_process_group()
    return 0


def _warning_line(command: str):
    """A ``warnings.formatwarning`` for the command: ``selfinv COMMAND: warning: MESSAGE`` on one line, without the
    file, line number and source line of Python's default; a category other than ``UserWarning`` is named
    (``CorrelatedNoiseWarning: ...``). Installed by ``main`` only: selfinv used as a library warns as Python does."""

    def formatwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
        kind = "" if category is UserWarning else f"{category.__name__}: "
        return f"selfinv {command}: warning: {kind}{' '.join(str(message).split())}\n"

    return formatwarning


def close_process_group() -> None:
    """Destroy the ``torch.distributed`` process group a multi-process run created (torchrun or Lightning's DDP
    launcher), if any. Left to the interpreter's exit, its communication threads can abort a process that
    finished its work ("terminate called without an active exception", exit code -6: seen once in CI on a
    torchrun-launched ``fit``). torch is not imported for it."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        dist.destroy_process_group()
    except (RuntimeError, ValueError) as e:  # teardown must not turn a finished run into a failure
        print(f"selfinv: warning: could not close the distributed process group ({e})", file=sys.stderr)


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith("💡 Tip")


def _quiet_lightning_chatter() -> None:
    """Drop what Lightning prints that a user can do nothing about: its advertisement for a cloud logger,
    a deprecation warning that a newer torch raises inside Lightning's own code, and its model summary's
    note that it sizes a bf16-mixed model in 32 bits."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_an_advert not in rank_zero.filters:
        rank_zero.addFilter(_not_an_advert)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")


def _run(command: str, rest: list[str]) -> None:
    from selfinv.utils.allocator import keep_freed_memory
    from selfinv.utils.threads import use_available_cores

    _quiet_lightning_chatter()
    use_available_cores()
    keep_freed_memory()
    if command == "fit":
        resume = _pop(rest, "--resume")
        weights_only = _flag(rest, "--resume-weights-only")
        if weights_only and resume is None:
            raise ConfigError("--resume-weights-only needs --resume CKPT (the checkpoint to take the weights from)")
        cfg = _run_config(rest)
        from selfinv.training.engine import fit

        trainer, _ = fit(cfg, resume=resume, resume_weights_only=weights_only)
        cb = trainer.checkpoint_callback
        score = float(cb.best_model_score) if cb.best_model_score is not None else float("nan")
        print(f"best checkpoint ({cfg.select_by}): {cb.best_model_path or 'none'} score={score:.6g}")
        print(f"run folder: {cfg.trainer.output_dir}")
    elif command == "validate":
        ckpt = _pop(rest, "--checkpoint")
        if ckpt is None:
            raise ConfigError("validate needs --checkpoint CKPT: the self-supervised validation loss of an "
                              "untrained network means nothing")
        cfg = _run_config(rest)
        from selfinv.training.engine import validate

        print(validate(cfg, ckpt))
    elif command == "predict":
        from selfinv.predict import predict

        predict(**parse_function_args(predict, rest))
    elif command == "simulate":
        from selfinv.simulate import simulate

        extra = _command_options(rest, simulate)
        cfg = _run_config(rest)
        simulate(cfg, **extra)
    elif command == "identifiability":
        extra = _command_options(rest, identifiability_cmd)
        cfg = _run_config(rest)
        identifiability_cmd(cfg, **extra)
    elif command == "advise":
        from selfinv.advise import advise_cmd

        advise_cmd(**parse_function_args(advise_cmd, rest))
    elif command == "demo":
        from selfinv.demo import run_demo

        run_demo(**parse_function_args(run_demo, rest))
    elif command == "finetune":
        from selfinv.finetune import finetune_cmd

        finetune_cmd(**parse_function_args(finetune_cmd, rest))
    elif command == "reproduce":
        from selfinv.reproduce import reproduce_cmd

        reproduce_cmd(**parse_function_args(reproduce_cmd, rest))


def run_as_script() -> None:
    """``python -m selfinv[.cli]``: drop the working directory from the import path first, so a module
    lying there (``tifffile.py``, ``payload.py``...) can never be imported in place of a real one."""
    cwd = os.path.realpath(os.getcwd())
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != cwd]
    raise SystemExit(main())


if __name__ == "__main__":
    run_as_script()
