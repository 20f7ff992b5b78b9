"""Configs and checkpoints are data: no value in them can import a module or build an arbitrary class.

The payloads are the ones a general-purpose argument parser would resolve (``class_path`` /
``init_args``): a ``logging.FileHandler`` that truncates a file when built, and a module in the
working directory that writes a marker file when imported.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfinv.cli import main
from selfinv.config import ConfigError, from_dict, parse_run_config

BASE = """
data: {patch_size: 16, num_patches: 8, batch_size: 2}
model: {backbone: {name: unet, args: {scales: 2, base_channels: 4}}}
trainer: {max_steps: 1, progress_bar: false, figures: false}
"""


def _payload(victim: Path) -> str:
    return "{class_path: logging.FileHandler, init_args: {filename: %s, mode: w}}" % victim


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim.txt"
    v.write_text("precious")
    return v


def _untouched(victim: Path) -> bool:
    return victim.read_text() == "precious"


@pytest.mark.parametrize("where", [
    "physics: {noise: {name: gaussian, args: {sigma: %s}}}",
    "physics: {name: denoising, args: {extra: %s}}",
    "losses: [{name: sure, args: {tau: %s}}]",
    "model: {backbone: {name: unet, args: {scales: %s}}}",
    "trainer: {devices: %s}",
    "physics: {name: denoising, noise: %s}",
])
def test_class_path_in_a_yaml_config_is_refused(tmp_path, victim, where, capsys):
    p = tmp_path / "run.yaml"
    p.write_text(BASE + where % _payload(victim) + "\n")
    with pytest.raises(ConfigError):
        parse_run_config([], str(p))
    assert main(["fit", "--config", str(p), "--trainer.output_dir", str(tmp_path / "run")]) == 2
    assert _untouched(victim)
    assert "Traceback" not in capsys.readouterr().err


def test_class_path_on_the_command_line_is_refused(tmp_path, victim, capsys):
    p = tmp_path / "run.yaml"
    p.write_text(BASE)
    argv = ["fit", "--config", str(p), "--physics.noise.name", "gaussian",
            "--physics.noise.args", "{sigma: %s}" % _payload(victim)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "physics.noise.args.sigma" in err and "expected" in err
    assert _untouched(victim)


def test_class_path_in_a_checkpoint_config_is_refused(tmp_path, victim):
    cfg = {"physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": 0.1}}}}
    cfg["physics"]["noise"]["args"]["sigma"] = {"class_path": "logging.FileHandler",
                                                "init_args": {"filename": str(victim), "mode": "w"}}
    with pytest.raises(ConfigError, match="physics.noise.args.sigma"):
        from_dict(cfg)
    assert _untouched(victim)


@pytest.mark.slow
def test_python_m_with_a_payload_module_in_the_working_directory(tmp_path, victim):
    """A checkpoint (loadable with weights_only=True) whose stored config names a module lying in the
    working directory: neither ``selfinv`` nor ``python -m selfinv.cli`` imports it."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "payload.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n"
                                         f"class Evil:\n    def __init__(self, *a, **k):\n"
                                         f"        open({str(victim)!r}, 'w').write('')\n")
    config = {"physics": {"name": "denoising", "noise": {"name": "gaussian",
                                                         "args": {"sigma": {"class_path": "payload.Evil"}}}}}
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"config": config}, "state_dict": {}}, ckpt)
    img = tmp_path / "y.npy"
    import numpy as np

    np.save(img, np.zeros((8, 8), np.float32))
    for cmd in ([sys.executable, "-m", "selfinv.cli"], [sys.executable, "-m", "selfinv"]):
        r = subprocess.run(cmd + ["predict", "--checkpoint", str(ckpt), "--input", str(img), "--output",
                                  str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert not marker.exists()
        assert _untouched(victim)


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    p = tmp_path / "bomb.yaml"
    p.write_text("physics:\n  args:\n" + "\n".join("    " + line for line in lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias"):
        parse_run_config([], str(p))
    assert time.perf_counter() - t0 < 5.0


def test_aliases_that_expand_beyond_the_node_budget_are_refused(tmp_path):
    # 6 levels of 10 aliases each (60 aliases, under the alias limit) expand to 10^6 values
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 6):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    p = tmp_path / "wide.yaml"
    p.write_text("physics:\n  args:\n" + "\n".join("    " + line for line in lines) + "\n")
    with pytest.raises(ConfigError, match="values after expanding aliases"):
        parse_run_config([], str(p))


def test_python_tags_and_duplicated_sections_are_refused(tmp_path):
    p = tmp_path / "tag.yaml"
    p.write_text("physics: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_run_config([], str(p))
    p.write_text(BASE + "trainer: {max_steps: 2}\n")
    with pytest.raises(ConfigError, match="'trainer' appears twice"):
        parse_run_config([], str(p))


def test_oversized_config_is_refused(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        parse_run_config([], str(p))


def test_no_general_purpose_parser_is_imported():
    """The CLI and config modules never load jsonargparse (whose class_path resolution was the hole)."""
    code = ("import sys; from selfinv.cli import main; "
            "main(['fit', '--help']); assert 'jsonargparse' not in sys.modules, 'jsonargparse imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
