"""Runner and classifier of the bad-input corpus, plus the setup helpers its cases are built from.

A **case** (``Case``) is data: an id, a group (``api``, ``cli``, ``files``, ``checkpoints``,
``faults``), a description, a ``setup`` (writes the bad file, the corrupt checkpoint... into the
case's own folder and returns named values), an ``action`` (a ``selfinv`` command line run
in-process through ``selfinv.cli.main`` or in a real ``python -m selfinv.cli`` process, or a
library call) and the ``expected`` class of outcome the user deserves.

``run_case`` runs a case and records an ``Outcome``; ``classify(outcome)`` sorts it into one of

* ``clear`` -- the command exits with code 2 (bad input or config; any non-zero code where the case
  allows it with ``any_nonzero``: runtime faults such as a divergence or a full disk, and non-finite
  pixels), prints no ``Traceback``, and its ``selfinv ...: error: ...`` message is at most two lines,
  names what the case says it must name (``Case.mentions``: the offending option, value, file...) and
  advises no option the command does not offer (its function's parameters, or the run-config
  options, plus the flags ``selfinv/cli.py`` handles for it or globally); for a library call, a
  ``ValueError`` / ``TypeError`` raised by selfinv's own code, a ``FileNotFoundError`` or any
  exception class defined in selfinv, with such a message;
* ``traceback`` -- an exception escaped the command; or the library raised a low-level exception
  (``IndexError``, ``KeyError``, ``AttributeError``, ``RuntimeError``... or a ``ValueError`` /
  ``TypeError`` raised inside torch / numpy / a file-format library); or the error message is not
  clear (does not name what was expected, is long, advises an option the command does not offer),
  or the exit code is not 2; also any API missing from the checkout under test (``ImportError``,
  ``AttributeError``) and a setup that could not be prepared;
* ``silent`` -- exit code 0 / no exception where an error or a warning was due, or a wrong result
  produced without a word (a NaN-ridden reconstruction written, a diverged run exiting 0, a config
  field ignored, the first part of a log lost); also a clear error that leaves a wrong state behind
  (``Case.invariants``: e.g. a checkpoint with non-finite weights after a divergence);
* ``handled`` -- the input is valid after all or the library copes with it sensibly: no error and
  ``Case.check`` (which states what "sensible" means for that case) passes. Where a case says so
  (``error_ok``) a clear error counts as handled too (e.g. "cast float16 or refuse it clearly").

Nothing here imports selfinv at import time: the corpus runs against any checkout
(``PYTHONPATH=<checkout>``).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

CLASSES = ("clear", "traceback", "silent", "handled")
GROUPS = ("api", "cli", "files", "checkpoints", "faults")

#: the tiny run every training case starts from: 16x16 patches, one epoch = 2 steps of batch 4
BASE_CONFIG = """\
data: {dataset: natural-gray, patch_size: 16, num_patches: 8, batch_size: 4, val_fraction: 0.25, seed: 0}
physics: {name: denoising, noise: {name: gaussian, args: {sigma: 0.1}}}
model:
  backbone: {name: unet, args: {scales: 2, base_channels: 4, batch_norm: false}}
  reconstructor: {name: back_projection, args: {init: dagger}}
losses:
  - {name: sure, args: {divergence: mc}}
optim: {lr: 0.001}
trainer: {max_steps: 2, max_epochs: 1, accelerator: cpu, progress_bar: false, figures: false, log_every_n_steps: 1}
"""

#: command-line overrides keeping a run tiny whatever config file a case gives (an invalid file that a
#: checkout fails to reject must not start a default-sized training): appended by ``safe_run``
SAFE_RUN = (("--data.patch_size", "16"), ("--data.num_patches", "8"), ("--data.batch_size", "4"),
            ("--data.val_fraction", "0.25"), ("--trainer.max_steps", "2"), ("--trainer.max_epochs", "1"),
            ("--trainer.accelerator", "cpu"), ("--trainer.progress_bar", "false"), ("--trainer.figures", "false"),
            ("--model.backbone.args", "{scales: 2, base_channels: 4, batch_norm: false}"))


def safe_run(argv: Sequence[str]) -> tuple[str, ...]:
    """``argv`` plus the ``SAFE_RUN`` overrides it does not set itself."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return tuple(argv) + tuple(x for flag, value in SAFE_RUN if flag not in given for x in (flag, value))


#: a tiny accelerated-MRI run (k-space simulated from the bundled photographs), for MRI checkpoints
MRI_CONFIG = """\
data: {dataset: natural-gray, patch_size: 16, num_patches: 8, batch_size: 4, val_fraction: 0.25, seed: 0}
physics:
  name: mri
  args: {acceleration: 4, center_fraction: 0.125}
  noise: {name: gaussian, args: {sigma: 0.01}}
model:
  backbone: {name: unet, args: {in_channels: 2, out_channels: 2, scales: 2, base_channels: 4, batch_norm: false}}
  reconstructor: {name: back_projection, args: {init: dagger}}
losses:
  - {name: mc}
optim: {lr: 0.001}
trainer: {max_steps: 2, max_epochs: 1, accelerator: cpu, progress_bar: false, figures: false, log_every_n_steps: 1}
"""

#: keyword arguments of the readers: advice to use them is only fair where the command offers them
READER_KWARGS = ("key", "normalize", "as_gray", "percentile")

#: options the run-config commands take besides ``--section.field``
RUN_COMMAND_OPTIONS = {
    "fit": {"config", "resume"},
    "validate": {"config", "checkpoint"},
    "simulate": {"config", "output", "split"},
    "identifiability": {"config", "image_size", "transform", "n_operators"},
}
RUN_SECTIONS = {"data", "physics", "model", "losses", "optim", "trainer", "select_by"}
#: ``--name`` in "options are written --name VALUE" shows the syntax; it advises nothing
PLACEHOLDER_OPTIONS = {"name", "option", "flag", "section.field"}

MAX_MESSAGE_LINES = 2
MAX_MESSAGE_CHARS = 600


class SetupError(Exception):
    """A case's setup (or a shared resource such as the trained checkpoint) could not be prepared."""


# -- the data ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One bad input and the outcome it deserves (see the module docstring for the classes).

    ``setup(ctx, v)`` prepares files in ``v["dir"]`` and returns extra named values; ``action(ctx,
    v)`` returns an ``Outcome``; ``mentions`` (``clear``) are the things the error must name, each a
    string or a tuple of alternatives (case-insensitive); ``check(outcome, v) -> (ok, note)``
    (``handled``) says whether an error-free outcome is sensible; ``invariants`` are
    ``(outcome, v) -> violation or None`` checked whatever the outcome.
    """

    id: str
    group: str
    description: str
    setup: Callable[["Context", "Vars"], Mapping[str, Any] | None] | None
    action: Callable[["Context", "Vars"], "Outcome"]
    expected: str
    mentions: tuple = ()
    check: Callable[["Outcome", "Vars"], tuple[bool, str]] | None = None
    sensible: str = ""
    invariants: tuple = ()
    error_ok: bool = False
    any_nonzero: bool = False

    def __post_init__(self):
        if self.expected not in CLASSES:
            raise ValueError(f"case {self.id}: expected must be one of {CLASSES}, got {self.expected!r}")
        if self.group not in GROUPS:
            raise ValueError(f"case {self.id}: group must be one of {GROUPS}, got {self.group!r}")
        if self.expected == "handled" and self.check is None:
            raise ValueError(f"case {self.id}: a 'handled' case needs a check saying what sensible means")

    @property
    def action_text(self) -> str:
        return getattr(self.action, "text", "")


@dataclass
class Outcome:
    """What happened when a case ran."""

    case: Case | None = None
    kind: str = "api"  # "api", "cli" (in-process main) or "process" (python -m selfinv.cli)
    argv: list[str] = field(default_factory=list)
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    exc_type: str | None = None
    exc_msg: str | None = None
    exc_tb: str | None = None
    exc_in_selfinv: bool = False  # innermost frame in selfinv's code
    exc_class_in_selfinv: bool = False  # the exception class is defined in selfinv
    exc_friendly_type: bool = False  # ValueError / TypeError (or subclasses)
    exc_file_not_found: bool = False  # FileNotFoundError: Python's own message names the path
    exc_where: str = ""  # innermost Python frame, "path:line"
    warnings: list[str] = field(default_factory=list)
    value: Any = None
    seconds: float = 0.0
    setup_error: str | None = None
    check_result: tuple[bool, str] | None = None
    violations: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)

    @property
    def command(self) -> str | None:
        return self.argv[0] if self.kind in ("cli", "process") and self.argv else None

    @property
    def error_message(self) -> str | None:
        if self.kind == "api":
            return self.exc_msg
        return cli_error_message(self.stderr)

    def report(self) -> str:
        cls, reason = explain(self)
        case = self.case
        lines = [f"[{case.id if case else '?'}] expected {case.expected if case else '?'}, got {cls}: {reason}"]
        if case is not None:
            lines.append(f"  action: {case.action_text}")
        if self.kind != "api":
            lines.append(f"  exit code: {self.exit_code}")
            tail = "\n".join(self.stderr.rstrip().splitlines()[-6:])
            if tail:
                lines.append("  stderr (end):\n    " + tail.replace("\n", "\n    "))
        if self.exc_type:
            lines.append(f"  exception: {self.exc_type}: {_short(self.exc_msg or '', 400)}")
        return "\n".join(lines)


# -- the shared context -----------------------------------------------------------------------

class Context:
    """Folders and the shared (lazily built, cached) resources of one corpus run: the base config
    and one tiny trained denoising checkpoint and one MRI checkpoint shared by all cases."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shared: dict[str, Any] = {}

    def case_dir(self, case_id: str) -> Path:
        d = self.root / "cases" / case_id
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def shared(self, name: str, build: Callable[[], Any]) -> Any:
        """``build()`` once; a failure is remembered and re-raised as ``SetupError`` every time."""
        if name not in self._shared:
            try:
                self._shared[name] = ("ok", build())
            except Exception as e:  # noqa: BLE001 - recorded, reported per case
                self._shared[name] = ("error", f"{name}: {type(e).__name__}: {_short(str(e), 600)}")
        status, value = self._shared[name]
        if status == "error":
            raise SetupError(value)
        return value

    # the shared resources
    def config(self) -> Path:
        return self.shared("base config", lambda: _write(self.root / "shared" / "base.yaml", BASE_CONFIG))

    def mri_config(self) -> Path:
        return self.shared("MRI config", lambda: _write(self.root / "shared" / "mri.yaml", MRI_CONFIG))

    def denoise_run(self) -> Path:
        """A 2-step SURE denoising run (``checkpoints/last.ckpt``, ``best-*.ckpt``, ``logs/metrics.csv``)."""
        return self.shared("trained denoising checkpoint",
                           lambda: _train(self.config(), self.root / "shared" / "denoise"))

    def mri_run(self) -> Path:
        return self.shared("trained MRI checkpoint", lambda: _train(self.mri_config(), self.root / "shared" / "mri"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _train(config: Path, out: Path) -> Path:
    o = run_cli_inprocess(["fit", "--config", str(config), "--trainer.output_dir", str(out)])
    ckpt = out / "checkpoints" / "last.ckpt"
    if o.exit_code != 0 or not ckpt.exists():
        raise SetupError(f"training the shared run failed (exit {o.exit_code}, {o.exc_type}: "
                         f"{_short(o.exc_msg or '', 300)}; stderr: {_short(o.stderr, 300)})")
    return out


class Vars(dict):
    """A case's named values: its own (``dir``, ``out``, what its setup returned) and, on first use,
    the shared ones: ``cfg``, ``mri_cfg`` (config files), ``run``, ``ckpt``, ``best`` (the trained
    denoising run, its ``last.ckpt`` and ``best-*.ckpt``), ``mri_run``, ``mri_ckpt``."""

    def __init__(self, ctx: Context, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ctx = ctx

    def __missing__(self, key: str) -> Any:
        ctx = self.ctx
        providers = {
            "cfg": lambda: str(ctx.config()),
            "mri_cfg": lambda: str(ctx.mri_config()),
            "run": lambda: str(ctx.denoise_run()),
            "ckpt": lambda: str(ctx.denoise_run() / "checkpoints" / "last.ckpt"),
            "best": lambda: str(sorted((ctx.denoise_run() / "checkpoints").glob("best-*.ckpt"))[0]),
            "mri_run": lambda: str(ctx.mri_run()),
            "mri_ckpt": lambda: str(ctx.mri_run() / "checkpoints" / "last.ckpt"),
        }
        if key not in providers:
            raise KeyError(f"unknown case variable <{key}>")
        value = providers[key]()
        self[key] = value
        return value


_PLACEHOLDER = re.compile(r"<(\w+)>")


def subst(text: str, v: Vars) -> str:
    """Replace ``<name>`` by the case variable ``name`` (``<cfg>``, ``<ckpt>``, ``<out>``, ``<dir>``...)."""
    return _PLACEHOLDER.sub(lambda m: str(v[m.group(1)]), text)


# -- running ----------------------------------------------------------------------------------------

def _selfinv_dir() -> Path | None:
    mod = sys.modules.get("selfinv")
    if mod is None:
        try:
            mod = importlib.import_module("selfinv")
        except Exception:  # noqa: BLE001
            return None
    return Path(mod.__file__).resolve().parent


def checkout_root() -> Path | None:
    d = _selfinv_dir()
    return d.parent if d is not None else None


def _record_exception(o: Outcome, e: BaseException) -> None:
    o.exc_type = type(e).__name__
    o.exc_msg = str(e)
    o.exc_tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    o.exc_class_in_selfinv = type(e).__module__.split(".")[0] == "selfinv"
    o.exc_friendly_type = isinstance(e, (ValueError, TypeError))
    o.exc_file_not_found = isinstance(e, FileNotFoundError)
    pkg = _selfinv_dir()
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is not None:
        fname = Path(last.tb_frame.f_code.co_filename).resolve()
        o.exc_in_selfinv = pkg is not None and pkg in fname.parents
        shown = fname.relative_to(pkg.parent) if o.exc_in_selfinv else fname
        o.exc_where = f"{shown}:{last.tb_lineno}"


@contextlib.contextmanager
def patched(patches: Sequence[tuple[str, Callable[[], Any]]]):
    """Temporarily replace ``module.attribute`` (``"torch.save"``) by ``factory()``."""
    saved = []
    try:
        for target, factory in patches:
            module_name, attr = target.rsplit(".", 1)
            module = importlib.import_module(module_name)
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, factory())
        yield
    finally:
        for module, attr, old in reversed(saved):
            setattr(module, attr, old)


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning")


@contextlib.contextmanager
def captured_logging(stream: io.StringIO):
    """Route the stream handlers of Lightning's loggers (bound to the real stderr when Lightning was
    imported) to ``stream`` for a while."""
    try:  # bind the handlers to the real streams before anything is redirected
        importlib.import_module("lightning.pytorch")
    except Exception:  # noqa: BLE001 - no Lightning: nothing to route
        pass
    swapped = []
    for name in _LOGGERS:
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                # assigned, not setStream(): that flushes the old stream, which an earlier test's capture
                # (Lightning imported under capsys) may have closed
                swapped.append((h, h.stream))
                h.stream = stream
    try:
        yield
    finally:
        for h, old in swapped:
            h.stream = old


def run_cli_inprocess(argv: Sequence[str], patches: Sequence = ()) -> Outcome:
    """``selfinv.cli.main(argv)`` in this process, stdout/stderr/warnings/Lightning logs captured; an
    exception escaping ``main`` is recorded (it would be a traceback for the user)."""
    o = Outcome(kind="cli", argv=list(argv))
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, captured_logging(err):
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), patched(patches):
                from selfinv.cli import main

                o.exit_code = _exit_code(main(list(argv)))
        except SystemExit as e:
            o.exit_code = _exit_code(e.code)
        except Exception as e:  # noqa: BLE001 - the user would see this as a traceback
            _record_exception(o, e)
    o.seconds = time.perf_counter() - t0
    o.stdout, o.stderr = out.getvalue(), err.getvalue()
    o.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    return o


def run_cli_process(argv: Sequence[str], cwd: str | os.PathLike, timeout: float = 300) -> Outcome:
    """``python -m selfinv.cli argv`` in a fresh process with ``PYTHONPATH`` = the checkout under test."""
    o = Outcome(kind="process", argv=list(argv))
    env = dict(os.environ)
    root = checkout_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "selfinv.cli", *argv], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=timeout)
        o.exit_code, o.stdout, o.stderr = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        o.exit_code = -9
        o.stderr = f"(killed after {timeout} s)\n{e.stderr or ''}"
    o.seconds = time.perf_counter() - t0
    return o


def run_api(fn: Callable[[], Any], patches: Sequence = ()) -> Outcome:
    """A library call; its exception, return value and warnings are recorded."""
    o = Outcome(kind="api")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with patched(patches):
                o.value = fn()
        except Exception as e:  # noqa: BLE001
            _record_exception(o, e)
    o.seconds = time.perf_counter() - t0
    o.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    return o


# -- actions -------------------------------------------------------------------------------------

def cli(*argv: str, patches: Sequence = (), process: bool = False, timeout: float = 300):
    """Action: ``selfinv ARGV`` (``<name>`` placeholders filled from the case variables); in-process
    through ``main`` unless ``process`` (a real ``python -m selfinv.cli``)."""

    def action(ctx: Context, v: Vars) -> Outcome:
        args = [subst(a, v) for a in argv]
        if process:
            return run_cli_process(args, v["dir"], timeout)
        return run_cli_inprocess(args, patches)

    action.text = ("python -m selfinv.cli " if process else "selfinv ") + " ".join(
        a if " " not in a else repr(a) for a in argv)
    return action


def api(fn: Callable[["Vars"], Any], text: str = "", patches: Sequence = ()):
    """Action: a library call ``fn(v)`` (imports inside ``fn``, so a missing API is an outcome)."""

    def action(ctx: Context, v: Vars) -> Outcome:
        return run_api(lambda: fn(v), patches)

    action.text = text or (inspect.getsource(fn).strip().split("\n")[0][:120] if callable(fn) else "")
    return action


def run_case(case: Case, ctx: Context) -> Outcome:
    """Set up and run ``case`` in its own folder (the working directory during the action), then run
    its check and invariants."""
    d = ctx.case_dir(case.id)
    v = Vars(ctx, {"dir": str(d), "out": str(d / "out")})
    try:
        if case.setup is not None:
            v.update(case.setup(ctx, v) or {})
    except Exception as e:  # noqa: BLE001
        o = Outcome(case=case, kind="api", setup_error=f"{type(e).__name__}: {_short(str(e), 600)}")
        o.values = dict(v)
        return o
    cwd = os.getcwd()
    os.chdir(d)
    try:
        try:
            o = case.action(ctx, v)
        except SetupError as e:  # a shared resource needed by the action's arguments
            o = Outcome(kind="api", setup_error=str(e))
    finally:
        os.chdir(cwd)
    o.case = case
    o.values = dict(v)
    if o.setup_error is None and case.check is not None and _no_error(o):
        try:
            o.check_result = case.check(o, v)
        except Exception as e:  # noqa: BLE001
            o.check_result = (False, f"check could not run: {type(e).__name__}: {_short(str(e), 300)}")
    for inv in case.invariants:
        try:
            violation = inv(o, v)
        except Exception as e:  # noqa: BLE001
            violation = f"invariant could not be checked: {type(e).__name__}: {_short(str(e), 200)}"
        if violation:
            o.violations.append(violation)
    return o


def _no_error(o: Outcome) -> bool:
    if o.kind == "api":
        return o.exc_type is None
    return o.exc_type is None and o.exit_code == 0


# -- classification --------------------------------------------------------------------------------

_ERROR_LINE = re.compile(r"^(usage: )?selfinv\b.*?(error|unknown command)", re.IGNORECASE)


def cli_error_message(stderr: str) -> str | None:
    """The ``selfinv ...: error: ...`` message at the end of stderr (with its continuation lines)."""
    lines = stderr.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if _ERROR_LINE.match(line)]
    if not starts:
        return None
    return "\n".join(line for line in lines[starts[-1]:] if line.strip())


def _missing_mentions(text: str, mentions: Iterable) -> list[str]:
    low = text.lower()
    missing = []
    for m in mentions:
        alts = (m,) if isinstance(m, str) else tuple(m)
        if not any(a.lower() in low for a in alts):
            missing.append(" or ".join(repr(a) for a in alts))
    return missing


_OPTION_LITERAL = re.compile(r"""["']--([A-Za-z][\w-]*)["']""")
_CLI_OPTIONS_CACHE: dict[str, tuple[set[str], dict[str, set[str]]]] = {}


def cli_source_options() -> tuple[set[str], dict[str, set[str]]]:
    """Options the checkout's ``selfinv/cli.py`` handles itself: ``(global flags, {command: options})``.

    Per command: the ``"--name"`` literals of its ``if command == "NAME":`` branch (``--resume`` of
    ``fit``...). Global: the literals that ``main`` consumes before the command (probed: ``selfinv
    --NAME __probe__`` must complain about the command ``__probe__``, not about ``--NAME``).
    """
    root = str(checkout_root())
    if root in _CLI_OPTIONS_CACHE:
        return _CLI_OPTIONS_CACHE[root]
    per_command: dict[str, set[str]] = {}
    global_flags: set[str] = set()
    try:
        import selfinv.cli as cli_module

        src = inspect.getsource(cli_module)
        parts = re.split(r"""command\s*==\s*["'](\w+)["']""", src)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            per_command.setdefault(name, set()).update(_OPTION_LITERAL.findall(body))
        for name in sorted(set(_OPTION_LITERAL.findall(src)) - {"help"}):
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                try:
                    cli_module.main([f"--{name}", "__probe__"])
                except BaseException:  # noqa: BLE001 - a probe, never fatal
                    pass
            if "__probe__" in err.getvalue():
                global_flags.add(name)
    except Exception:  # noqa: BLE001
        pass
    _CLI_OPTIONS_CACHE[root] = (global_flags, per_command)
    return global_flags, per_command


def offered_options(command: str | None) -> set[str] | None:
    """The options ``selfinv COMMAND`` takes in the checkout under test (None: unknown): the parameters
    of the command's function (or the run-config options), plus what ``selfinv/cli.py`` handles itself
    for that command and globally."""
    try:
        if command == "predict":
            try:
                from selfinv.predict import predict as fn
            except ImportError:  # older checkouts kept it in the CLI module
                from selfinv.cli import predict as fn
        elif command == "advise":
            from selfinv.advise import advise_cmd as fn
        elif command == "finetune":
            from selfinv.finetune import finetune_cmd as fn
        elif command == "demo":
            from selfinv.demo import run_demo as fn
        elif command in RUN_COMMAND_OPTIONS:
            fn = None
        else:
            return None
        names = set(RUN_COMMAND_OPTIONS[command]) if fn is None else set(inspect.signature(fn).parameters) - {"cfg"}
    except Exception:  # noqa: BLE001
        return None
    global_flags, per_command = cli_source_options()
    return names | global_flags | per_command.get(command, set())


def unoffered_advice(message: str, command: str | None) -> list[str]:
    """Options the message advises (``--name``, or a reader keyword ``key=...``) that the command
    does not offer."""
    offered = offered_options(command)
    if offered is None:
        return []
    bad = []
    for m in re.finditer(r"(?<![\w-])--([A-Za-z][\w-]*(?:\.[\w-]+)*)", message):
        name = m.group(1)
        first = name.split(".")[0].replace("-", "_")
        if name.lower() in PLACEHOLDER_OPTIONS or name.isupper():
            ok = True  # syntax, not advice: "options are written --name VALUE"
        elif "." in name:
            ok = first in offered or (command in RUN_COMMAND_OPTIONS and first in RUN_SECTIONS)
        else:
            ok = first in offered or name in offered
        if not ok:
            bad.append(f"--{name}")
    for m in re.finditer(r"\b(" + "|".join(READER_KWARGS) + r")\s*=", message):
        if m.group(1) not in offered:
            bad.append(f"{m.group(1)}=")
    return sorted(set(bad))


def _clear_problems(o: Outcome, msg: str | None) -> list[str]:
    case = o.case
    problems = []
    if not msg:
        return ["no error message (expected a 'selfinv COMMAND: error: ...' line on stderr)"
                if o.kind != "api" else "an exception with an empty message"]
    lines = msg.strip().splitlines()
    if len(lines) > MAX_MESSAGE_LINES:
        problems.append(f"message of {len(lines)} lines (at most {MAX_MESSAGE_LINES})")
    if len(msg) > MAX_MESSAGE_CHARS:
        problems.append(f"message of {len(msg)} characters (at most {MAX_MESSAGE_CHARS})")
    missing = _missing_mentions(msg, case.mentions if case else ())
    if missing:
        problems.append("message does not name " + ", ".join(missing))
    if o.kind != "api":
        advice = unoffered_advice(msg, o.command)
        if advice:
            problems.append(f"message advises {', '.join(advice)}, which 'selfinv {o.command}' does not offer")
    return problems


def explain(o: Outcome) -> tuple[str, str]:
    """``(class, reason)`` of an outcome (see the module docstring for the rules)."""
    cls, reason = _explain(o)
    if cls == "traceback" and o.violations:
        reason += "; also: " + "; ".join(o.violations)
    return cls, reason


def _explain(o: Outcome) -> tuple[str, str]:
    case = o.case
    if o.setup_error is not None:
        return "traceback", f"setup failed: {o.setup_error}"
    if o.kind in ("cli", "process"):
        if o.exc_type is not None:
            return "traceback", f"uncaught {o.exc_type}: {_short(o.exc_msg or '', 240)}"
        if "Traceback (most recent call last)" in o.stderr:
            return "traceback", f"Traceback on stderr (exit {o.exit_code}): {_short(_last_line(o.stderr), 240)}"
        if o.exit_code == 0:
            return _handled_or_silent(o)
        msg = o.error_message
        problems = _clear_problems(o, msg)
        if o.exit_code != 2 and not (case is not None and case.any_nonzero):
            problems.insert(0, f"exit code {o.exit_code} (expected 2)")
        if problems:
            shown = msg if msg else _last_line(o.stderr)
            return "traceback", "; ".join(problems) + f" -- {_short(shown or '', 240)!r}"
        return _clear_or_worse(o, msg)
    # library call
    if o.exc_type is None:
        return _handled_or_silent(o)
    if not (o.exc_class_in_selfinv or (o.exc_friendly_type and o.exc_in_selfinv) or o.exc_file_not_found):
        return "traceback", f"low-level {o.exc_type} (raised at {o.exc_where}): {_short(o.exc_msg or '', 240)}"
    problems = _clear_problems(o, o.exc_msg)
    if problems:
        return "traceback", "; ".join(problems) + f" -- {o.exc_type}: {_short(o.exc_msg or '', 240)!r}"
    return _clear_or_worse(o, f"{o.exc_type}: {o.exc_msg}")


def _clear_or_worse(o: Outcome, msg: str) -> tuple[str, str]:
    if o.violations:
        return "silent", "clear error, but " + "; ".join(o.violations)
    if o.case is not None and o.case.error_ok:
        return "handled", f"refused clearly (accepted for this case): {_short(msg, 240)}"
    return "clear", _short(msg, 240)


def _handled_or_silent(o: Outcome) -> tuple[str, str]:
    case = o.case
    what = "exit 0" if o.kind != "api" else "no exception"
    if o.violations:
        return "silent", f"{what}, and " + "; ".join(o.violations)
    if case is None or case.check is None:
        warned = f" ({len(o.warnings)} warning(s): {_short(o.warnings[0], 120)})" if o.warnings else ""
        return "silent", f"{what} where an error was due{warned}"
    ok, note = o.check_result if o.check_result is not None else (False, "check not run")
    return ("handled", note) if ok else ("silent", f"{what}, but {note}")


def classify(outcome: Outcome) -> str:
    """The class of an outcome: ``clear``, ``traceback``, ``silent`` or ``handled``."""
    return explain(outcome)[0]


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _last_line(text: str) -> str:
    lines = [line for line in text.rstrip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- setup helpers (each returns a setup function ``(ctx, v) -> {name: value}``) -----------------------

def setups(*fns: Callable) -> Callable:
    """Several setups in order; later ones see the values of earlier ones."""

    def setup(ctx: Context, v: Vars) -> dict:
        out: dict = {}
        for fn in fns:
            res = fn(ctx, v) or {}
            v.update(res)
            out.update(res)
        return out

    return setup


def _path(v: Vars, name: str) -> Path:
    p = Path(v["dir"]) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def text_file(name: str, text: str, key: str = "file", encoding: str = "utf-8") -> Callable:
    def setup(ctx, v):
        p = _path(v, name)
        p.write_bytes(text.encode(encoding))
        return {key: str(p)}

    return setup


def bytes_file(name: str, data: bytes, key: str = "file") -> Callable:
    def setup(ctx, v):
        p = _path(v, name)
        p.write_bytes(data)
        return {key: str(p)}

    return setup


def random_bytes(n: int, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def image(shape=(16, 16), dtype: str = "float32", seed: int = 0, scale: float = 1.0):
    """A smooth-ish test image in [0, scale) of ``shape`` and ``dtype``."""
    import numpy as np

    a = np.random.default_rng(seed).random(shape) * scale
    if np.issubdtype(np.dtype(dtype), np.integer):
        a = np.floor(a)
    return a.astype(dtype)


def npy_file(name: str, array_fn: Callable[[], Any], key: str = "file", allow_pickle: bool = False) -> Callable:
    def setup(ctx, v):
        import numpy as np

        p = _path(v, name)
        np.save(p, array_fn(), allow_pickle=allow_pickle)
        return {key: str(p)}

    return setup


def npz_file(name: str, arrays_fn: Callable[[], Mapping[str, Any]], key: str = "file") -> Callable:
    def setup(ctx, v):
        import numpy as np

        p = _path(v, name)
        np.savez(p, **arrays_fn())
        return {key: str(p)}

    return setup


def tiff_file(name: str, array_fn: Callable[[], Any], key: str = "file", **kwargs) -> Callable:
    def setup(ctx, v):
        import tifffile

        p = _path(v, name)
        tifffile.imwrite(p, array_fn(), **kwargs)
        return {key: str(p)}

    return setup


def png_file(name: str, array_fn: Callable[[], Any], key: str = "file", format: str | None = None) -> Callable:
    """An image written by Pillow (format from the extension unless ``format`` is given, e.g. "PNG")."""

    def setup(ctx, v):
        from PIL import Image

        p = _path(v, name)
        Image.fromarray(array_fn()).save(p, format=format)
        return {key: str(p)}

    return setup


def h5_file(name: str, datasets_fn: Callable[[], Mapping[str, Any]], key: str = "file") -> Callable:
    def setup(ctx, v):
        import h5py

        p = _path(v, name)
        with h5py.File(p, "w") as f:
            for k, a in datasets_fn().items():
                f.create_dataset(k, data=a)
        return {key: str(p)}

    return setup


def mrc_file(name: str, array_fn: Callable[[], Any], key: str = "file") -> Callable:
    def setup(ctx, v):
        import mrcfile

        p = _path(v, name)
        with mrcfile.new(p, overwrite=True) as m:
            m.set_data(array_fn())
        return {key: str(p)}

    return setup


def fits_file(name: str, array_fn: Callable[[], Any] | None, key: str = "file") -> Callable:
    """A FITS file whose primary HDU holds ``array_fn()``; ``None``: an empty primary and a binary table."""

    def setup(ctx, v):
        from astropy.io import fits

        p = _path(v, name)
        if array_fn is None:
            table = fits.BinTableHDU.from_columns([fits.Column("flux", "E", array=[1.0, 2.0])])
            fits.HDUList([fits.PrimaryHDU(), table]).writeto(p, overwrite=True)
        else:
            fits.PrimaryHDU(array_fn()).writeto(p, overwrite=True)
        return {key: str(p)}

    return setup


def dicom_file(name: str, array_fn: Callable[[], Any] | None, key: str = "file") -> Callable:
    """A minimal single-frame MR DICOM file (16-bit); ``array_fn=None`` writes no pixel data."""

    def setup(ctx, v):
        import numpy as np
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

        p = _path(v, name)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.InstanceNumber = "MR", "Bad^Input", 1
        if array_fn is not None:
            a = np.asarray(array_fn(), dtype=np.uint16)
            ds.Rows, ds.Columns = a.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = a.tobytes()
        ds.save_as(str(p), enforce_file_format=True)
        return {key: str(p)}

    return setup


def truncated(src_key: str, fraction: float = 0.5, name: str | None = None, key: str = "file") -> Callable:
    """A copy of the file ``v[src_key]`` cut to ``fraction`` of its bytes."""

    def setup(ctx, v):
        src = Path(v[src_key])
        data = src.read_bytes()
        p = _path(v, name or f"truncated_{src.name}")
        p.write_bytes(data[: int(len(data) * fraction)])
        return {key: str(p)}

    return setup


def folder(name: str, *file_setups: Callable, key: str = "folder") -> Callable:
    """A folder ``name`` inside the case folder holding what ``file_setups`` write (their names are
    relative to the case folder: give them as ``name/file``)."""

    def setup(ctx, v):
        p = _path(v, name)
        p.mkdir(exist_ok=True)
        for fs in file_setups:
            fs(ctx, v)
        return {key: str(p)}

    return setup


def copy_run(src_key: str = "run", name: str = "run", key: str = "myrun") -> Callable:
    """A private copy of a shared run folder (so a case may resume it or damage it)."""

    def setup(ctx, v):
        dst = _path(v, name)
        shutil.copytree(v[src_key], dst)
        return {key: str(dst)}

    return setup


def ckpt_variant(name: str, modify: Callable[[dict], Any], src_key: str = "ckpt", key: str = "bad_ckpt") -> Callable:
    """The shared checkpoint loaded as plain data, changed by ``modify(ckpt)`` (which may return a
    replacement object) and saved as ``name``."""

    def setup(ctx, v):
        import torch

        ck = torch.load(v[src_key], map_location="cpu", weights_only=True)
        res = modify(ck)
        p = _path(v, name)
        torch.save(ck if res is None else res, p)
        return {key: str(p)}

    return setup


def enospc(what: str) -> Callable[[], Callable]:
    """A patch factory: a function that fails like a full disk."""

    def factory():
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (simulated in {what})")

        return full

    return factory


# -- check helpers: what "sensible" means (``(outcome, v) -> (ok, note)``) ---------------------------

def read_array(path: str | os.PathLike):
    import numpy as np

    p = Path(path)
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if p.suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(p)
    if p.suffix in (".mrc", ".mrcs"):
        import mrcfile

        with mrcfile.open(p, permissive=True) as m:
            return np.array(m.data)
    if p.suffix == ".fits":
        from astropy.io import fits

        return fits.getdata(p)
    if p.suffix == ".dcm":
        import pydicom

        return pydicom.dcmread(p).pixel_array
    if p.suffix in (".h5", ".hdf5"):  # predict's output of an HDF5 input: the input file, reconstruction in place
        import h5py

        with h5py.File(p, "r") as f:
            names: list[str] = []
            f.visititems(lambda k, o: names.append(k) if isinstance(o, h5py.Dataset) else None)
            return f["reconstruction_selfinv" if "reconstruction_selfinv" in f else names[0]][()]
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return z[z.files[0]]
    from PIL import Image

    with Image.open(p) as im:
        return np.asarray(im)


def outputs_finite(n: int | None = None, shape: tuple | None = None, folder_key: str = "out",
                   pattern: str = "*") -> Callable:
    """Reconstructions were written to ``v[folder_key]`` (``n`` of them), every value finite, each of
    ``shape`` after squeezing."""

    def check(o: Outcome, v: Vars) -> tuple[bool, str]:
        import numpy as np

        root = Path(v[folder_key])
        files = sorted(p for p in root.glob(pattern) if p.is_file()) if root.exists() else []
        if not files:
            return False, f"no output written to {v[folder_key]}"
        if n is not None and len(files) != n:
            return False, f"{len(files)} outputs written, expected {n}"
        for f in files:
            a = read_array(f)
            if not np.all(np.isfinite(a)):
                return False, f"{f.name} holds {int(np.size(a) - np.isfinite(a).sum())} non-finite value(s)"
            if shape is not None and tuple(np.squeeze(a).shape) != tuple(shape):
                return False, f"{f.name} has shape {np.squeeze(a).shape}, expected {shape}"
        return True, f"{len(files)} finite output(s)" + (f" of shape {shape}" if shape else "")

    return check


def outputs_keep_blank(input_key: str = "file", folder_key: str = "out") -> Callable:
    """One reconstruction was written to ``v[folder_key]``, NaN exactly where the input ``v[input_key]`` is
    NaN (its blank pixels) and finite everywhere else."""

    def check(o: Outcome, v: Vars) -> tuple[bool, str]:
        import numpy as np

        root = Path(v[folder_key])
        files = sorted(p for p in root.glob("*") if p.is_file()) if root.exists() else []
        if len(files) != 1:
            return False, f"{len(files)} outputs written to {v[folder_key]}, expected 1"
        a, x = np.squeeze(read_array(files[0])), np.squeeze(read_array(v[input_key]))
        if a.shape != x.shape:
            return False, f"{files[0].name} has shape {a.shape}, the input {x.shape}"
        blank = np.isnan(x)
        bad = int((~np.isfinite(a[~blank])).sum())
        if not np.array_equal(np.isnan(a), blank) or bad:
            return False, (f"{files[0].name}: NaN at {int(np.isnan(a).sum())} pixels, the input's blank pixels: "
                           f"{int(blank.sum())}; non-finite elsewhere: {bad}")
        return True, f"{int(np.isnan(x).sum())} blank pixel(s) kept blank, finite elsewhere"

    return check


def warned(*tokens) -> Callable:
    """A warning (or a log line on stderr) naming every token -- a string or a tuple of alternatives,
    case-insensitive -- was emitted."""

    def check(o: Outcome, v: Vars) -> tuple[bool, str]:
        for w in o.warnings + o.stderr.splitlines():
            if not _missing_mentions(w, tokens):
                return True, f"warned: {_short(w, 160)}"
        return False, (f"no warning naming {' and '.join(_missing_mentions('', tokens))} "
                       f"(warnings: {[_short(w, 80) for w in o.warnings[:3]]})")

    return check


def returns(pred: Callable[[Any], bool], what: str) -> Callable:
    def check(o: Outcome, v: Vars) -> tuple[bool, str]:
        try:
            ok = bool(pred(o.value))
        except Exception as e:  # noqa: BLE001
            return False, f"{what}: could not check ({type(e).__name__}: {_short(str(e), 120)})"
        return ok, (what if ok else f"not {what}")

    return check


def all_of(*checks: Callable) -> Callable:
    def check(o: Outcome, v: Vars) -> tuple[bool, str]:
        notes = []
        for c in checks:
            ok, note = c(o, v)
            if not ok:
                return False, note
            notes.append(note)
        return True, "; ".join(notes)

    return check


# -- invariants (``(outcome, v) -> violation or None``) -------------------------------------------------

def no_tmp_files(folder_key: str) -> Callable:
    def inv(o: Outcome, v: Vars) -> str | None:
        root = Path(v[folder_key])
        left = sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp")) if root.exists() else []
        return f"temporary file(s) left behind: {left}" if left else None

    return inv


def no_nonfinite_checkpoints(folder_key: str, pattern: str = "best-*.ckpt") -> Callable:
    """No checkpoint matching ``pattern`` under ``v[folder_key]`` holds a non-finite weight."""

    def inv(o: Outcome, v: Vars) -> str | None:
        import torch

        root = Path(v[folder_key])
        bad = []
        for p in sorted(root.rglob(pattern)) if root.exists() else []:
            ck = torch.load(p, map_location="cpu", weights_only=True)
            sd = ck.get("state_dict", {}) if isinstance(ck, dict) else {}
            if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in sd.values()):
                bad.append(p.name)
        return f"checkpoint(s) with non-finite weights written: {bad}" if bad else None

    return inv


def no_nonfinite_outputs(folder_key: str = "out") -> Callable:
    def inv(o: Outcome, v: Vars) -> str | None:
        import numpy as np

        root = Path(v[folder_key])
        bad = [p.name for p in sorted(root.glob("*")) if p.is_file() and not np.all(np.isfinite(read_array(p)))] \
            if root.exists() else []
        return f"reconstruction(s) with non-finite values written: {bad}" if bad else None

    return inv


# -- running the whole corpus ----------------------------------------------------------------------

def run_corpus(cases: Sequence[Case], ctx: Context, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run every case (never raising); one row per case: id, group, expected, actual, reason, seconds."""
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        try:
            o = run_case(case, ctx)
            actual, reason = explain(o)
        except Exception as e:  # noqa: BLE001 - a harness failure is recorded, never fatal
            actual, reason = "traceback", f"harness error: {type(e).__name__}: {_short(str(e), 300)}"
        row = {"id": case.id, "group": case.group, "description": case.description, "action": case.action_text,
               "expected": case.expected, "actual": actual, "reason": reason,
               "seconds": round(time.perf_counter() - t0, 2)}
        rows.append(row)
        if progress is not None:
            mark = "ok " if actual == case.expected else "BAD"
            progress(f"{mark} {case.id:<40} expected {case.expected:<9} got {actual:<9} {row['seconds']:6.2f}s")
    return rows
