"""``selfinv reproduce``: the claim configs, the plan, presets, cache keys, verdicts, and one quick row end to end."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from selfinv import registry
from selfinv.config import from_dict
from selfinv.options import parse_function_args
from selfinv.reproduce import claims as C
from selfinv.reproduce import runner

FOLDER = Path(__file__).resolve().parents[1] / "configs" / "claims"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plan():
    return runner.full_plan()


def test_every_row_has_a_valid_config_aligned_with_its_validations(plan):
    for row in plan.rows.values():
        cfg = runner.load_row_config(row, FOLDER)
        from_dict(cfg)  # validates names, arguments and ranges
        between = runner.steps_per_validation(cfg)
        assert cfg["trainer"]["max_steps"] % between == 0, row.key
        assert cfg["trainer"]["max_steps"] // between >= 10, f"{row.key}: too few points on its curve"
        assert cfg["trainer"].get("val_every", 1) == 1 and cfg["data"]["val_fraction"] > 0


def test_rows_share_data_physics_and_budget_with_their_reference(plan):
    runner.check_plan(plan, FOLDER)  # raises naming the row otherwise
    for row in plan.rows.values():
        if row.reference is not None:
            assert plan.rows[row.reference].reference is None, f"{row.key}: a reference must be supervised"
            assert "supervised" in row.reference


def test_every_registered_loss_is_trained_by_some_row(plan):
    """So the checkpoint-selection claims cover every loss."""
    used = set()
    for row in plan.rows.values():
        for loss in runner.load_row_config(row, FOLDER)["losses"]:
            used.add(loss["name"])
            for v in loss.get("args", {}).values():
                if isinstance(v, dict) and "name" in v:
                    used.add(v["name"])
    assert set(registry.names("loss")) <= used, sorted(set(registry.names("loss")) - used)


def test_claims_name_existing_rows_and_configs(plan):
    keys = [c.key for c in plan.claims]
    assert len(keys) == len(set(keys))
    for c in plan.claims:
        assert set(c.rows) <= set(plan.rows), c.key
        for cfg in c.configs:
            assert (FOLDER / cfg.split()[0]).exists()
    families = {c.family for c in plan.claims}
    assert families == {"denoising", "incomplete", "sei", "theory", "selection"}


def test_presets_keep_the_validation_cadence(plan):
    row = plan.rows["denoising-gaussian/sure"]
    cfg = runner.load_row_config(row, FOLDER)
    cpu = runner.apply_preset(cfg, "cpu", "cpu", "/tmp/x")
    assert {k: v for k, v in cpu["data"].items()} == cfg["data"]
    assert cpu["trainer"]["max_steps"] == cfg["trainer"]["max_steps"]
    n_val = cfg["trainer"]["max_steps"] // runner.steps_per_validation(cfg)
    gpu = runner.apply_preset(cfg, "gpu", "cuda", "/tmp/x")
    assert gpu["trainer"]["max_steps"] == 4 * cfg["trainer"]["max_steps"]
    assert gpu["trainer"]["max_steps"] // runner.steps_per_validation(gpu) == n_val
    assert gpu["model"]["backbone"]["args"]["base_channels"] == 32 and gpu["trainer"]["accelerator"] == "cuda"
    quick = runner.apply_preset(cfg, "quick", "cpu", "/tmp/x")
    assert quick["trainer"]["max_steps"] % runner.steps_per_validation(quick) == 0
    n2s = runner.apply_preset(runner.load_row_config(plan.rows["denoising-gaussian/noise2score"], FOLDER), "quick",
                              "cpu", "/tmp/x")
    assert n2s["losses"][0]["args"]["anneal_steps"] == n2s["trainer"]["max_steps"]


def test_patch_counts_match_the_engine_split():
    from selfinv.training.datamodule import split_measurements

    for n_train, f in ((2400, 0.1), (1200, 0.1), (80, 0.1), (37, 0.05)):
        n = runner.patches_for(n_train, f)
        train, _ = split_measurements(list(range(n)), f, 0)
        assert len(train) == n_train == runner.train_size(n, f)


def test_cache_key_follows_config_test_set_and_code(tmp_path, plan):
    row = plan.rows["denoising-gaussian/sure"]
    cfg = runner.load_row_config(row, FOLDER)
    spec = C.TestSpec()
    k = runner.row_key(row, cfg, spec, "code")
    assert k == runner.row_key(row, json.loads(json.dumps(cfg)), spec, "code")
    moved = dict(cfg, trainer=dict(cfg["trainer"], output_dir="elsewhere"))
    assert runner.row_key(row, moved, spec, "code") == k  # the run folder is not part of the problem
    assert runner.row_key(row, dict(cfg, optim={"lr": 1e-3}), spec, "code") != k
    assert runner.row_key(row, cfg, C.TestSpec(seed=1), "code") != k
    assert runner.row_key(row, cfg, spec, "other") != k
    store = runner.Cache(tmp_path)
    assert store.load(row, k) is None
    store.save(row, k, {"psnr": [1.0]}, torch.zeros(1, 4, 4))
    assert store.load(row, k) == {"psnr": [1.0]} and store.image(row, k).shape == (1, 4, 4)
    assert len(runner.code_version()) == 16


def test_select_adds_references_and_claims(plan):
    rows, claims = runner.select(plan, "denoising-gaussian/sure")
    keys = {r.key for r in rows}
    assert keys == {"denoising-gaussian/sure", "denoising-gaussian/supervised"}
    assert any(c.key == "denoising-gaussian/sure" for c in claims)
    rows, claims = runner.select(plan, "theory")
    assert not rows and all(c.family == "theory" for c in claims)
    rows, _ = runner.select(plan, "sei-sr*")
    assert {r.task for r in rows} == {"sei-sr2", "sei-sr4"}


def _results(values: dict[str, list[float]]) -> C.Results:
    rows = {k: {"psnr": v} for k, v in values.items() if "@" not in k}
    base: dict = {}
    for k, v in values.items():
        if "@" in k:
            task, name = k.split("/@")
            base.setdefault(task, {})[name] = {"psnr": v}
    return C.Results(rows, base, {})


def test_verdicts():
    res = _results({"t/sup": [30.0, 31.0, 32.0], "t/a": [29.8, 30.7, 31.9], "t/b": [28.0, 29.0, 30.2],
                    "t/@noisy": [20.0, 20.0, 20.0]})
    assert C.within("t/a", "t/sup", 0.3)(res).status == "holds"
    v = C.within("t/b", "t/sup", 0.3)(res)
    assert v.status == "misses" and "by 1.63 dB" in v.note
    assert C.ahead("t/a", "t/b")(res).status == "holds"
    assert C.ahead("t/b", "t/a")(res).status == "contradicts"
    assert C.equal("t/a", "t/sup", 0.3)(res).status == "holds"
    assert C.above("t/b", "t/@noisy", 3.0, below="t/sup")(res).status == "holds"
    assert C.above("t/sup", "t/@noisy", 3.0, below="t/a")(res).status == "misses"  # not below
    assert C.gap_fraction("t/a", "t/@noisy", "t/sup", 0.8)(res).status == "holds"
    assert C.gap_fraction("t/@noisy", "t/@noisy", "t/sup", 0.8)(res).status == "misses"


def test_unsure_prediction_reports_error_and_multiplier_against_the_theory():
    # MMSE 1e-3 at σ² = 1e-2: predicted MSE σ²(1/(1 − 0.1) − 1) = 1.111e-3, multiplier η = σ²/0.9 = 1.111e-2
    from selfinv.reproduce.denoising import key, unsure_prediction

    rows = {key("gaussian", "supervised"): {"mse": [1e-3, 1e-3]},
            key("gaussian", "unsure"): {"mse": [1.111e-3, 1.111e-3], "extras": {"final_losses.0.eta": [0.0112]}}}
    v = unsure_prediction("gaussian")(C.Results(rows, {}, {}))
    assert v.status == "holds" and "measured/predicted -0.00 dB" in v.measured
    assert "η learned 1.120e-02, predicted σ²/(1 − MMSE/σ²) = 1.111e-02" in v.measured
    rows[key("gaussian", "unsure")]["mse"] = [1.5e-3, 1.5e-3]  # 1.30 dB above the prediction
    assert unsure_prediction("gaussian")(C.Results(rows, {}, {})).note == "by 1.00 dB"


def test_unsure_gap_claim_states_the_gap_the_theory_predicts_item_by_item():
    # items of MSE 1e-4 and 1e-3 at σ² = 1e-2: MMSE 5.5e-4, k = 1/(1 − 0.055); extra error (k−1)²(σ² − MMSE_i)
    import math

    from selfinv.reproduce.denoising import key, unsure_within

    mse = [1e-4, 1e-3]
    k = 1 / (1 - 5.5e-4 / 1e-2)
    extra = [(k - 1) ** 2 * (1e-2 - m) for m in mse]
    sup = {"mse": mse, "psnr": [-10 * math.log10(m) for m in mse]}
    uns = {"psnr": [-10 * math.log10(m + e) for m, e in zip(mse, extra, strict=True)]}
    res = C.Results({key("gaussian", "supervised"): sup, key("gaussian", "unsure"): uns}, {}, {})
    v = unsure_within("gaussian", 0.7)(res)
    predicted = sum(10 * math.log10(1 + e / m) for m, e in zip(mse, extra, strict=True)) / 2
    assert v.values["predicted_gap"] == pytest.approx(predicted) == pytest.approx(v.values["gap"])
    assert f"predicts a gap of {predicted:.2f} dB" in v.measured and v.status == "holds"  # 0.69 dB <= 0.7


def test_code_version_follows_training_code_not_the_claims(tmp_path):
    """The cache key's code version changes with what trains and evaluates a row (runner, losses), not with the
    claims' wording or checks (rewording a claim must not retrain 83 rows)."""
    import shutil

    import selfinv

    root = tmp_path / "selfinv"
    shutil.copytree(Path(selfinv.__file__).resolve().parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    base = runner.code_version(root)
    assert base == runner.code_version()
    for part in ("reproduce/denoising.py", "reproduce/claims.py", "reproduce/report.py", "reproduce/sei.py"):
        with open(root / part, "a") as f:
            f.write("\n# reworded\n")
        assert runner.code_version(root) == base, part
    for part in ("reproduce/runner.py", "losses/sure.py", "training/engine.py"):
        with open(root / part, "a") as f:
            f.write("\n# changed\n")
        assert runner.code_version(root) != base, part
        base = runner.code_version(root)


def test_convergence_gain():
    curve = [{"step": s, "test_psnr": p} for s, p in ((0, 20), (100, 28), (800, 30.0), (900, 30.05), (1000, 30.08))]
    assert runner.convergence_gain(curve) == pytest.approx(0.08)


def test_the_theory_claims_hold():
    from selfinv.reproduce import theory

    for c in theory.claims():
        v = c.check(C.Results({}, {}, {}))
        assert v.status == "holds", (c.key, v.measured)


def test_reproduce_cmd_is_typed_for_the_cli():
    from selfinv.reproduce import reproduce_cmd

    args = parse_function_args(reproduce_cmd, ["--quick", "--only", "sei-sr2", "--device", "cpu", "--seeds", "3"])
    assert args == {"quick": True, "only": "sei-sr2", "device": "cpu", "seeds": 3}


@pytest.mark.slow
def test_quick_rows_end_to_end(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    data = runner.reproduce(quick=True, only="inpainting/mc", out=str(out), cache=str(cache), configs=str(FOLDER),
                            workers=1, log=lambda *a: None)
    assert (out / "claims_quick.md").exists() and (out / "claims_quick.json").exists()
    assert (out / "claims_quick" / "inpainting_curves.png").exists()
    entry = next(e for e in data["claims"] if e["key"] == "inpainting/mc")
    assert entry["status"] in ("holds", "misses", "contradicts") and "inpainting_mc.yaml" in entry["configs"]
    files = sorted(p.name for p in cache.glob("*.json"))
    assert len(files) == 2  # the row and its supervised reference
    row = json.loads((cache / files[0]).read_text())
    assert row["steps"] == 40 and row["curve"][0]["step"] == 0 and row["best"]["psnr"]
    assert "at most 1 row(s) at a time" in (out / "claims_quick.md").read_text()  # one after the other
    # each row trained in a folder named by its cache key: another config of the row (an invocation sharing this
    # cache) gets another folder, so side-by-side runs never wipe each other's checkpoints
    assert sorted(p.name for p in (tmp_path / "runs" / "quick").iterdir()) == [Path(f).stem for f in files]
    stamp = {p: p.stat().st_mtime for p in cache.glob("*.json")}
    runner.reproduce(quick=True, only="inpainting/mc", out=str(out), cache=str(cache), configs=str(FOLDER),
                     log=lambda *a: None)
    assert {p: p.stat().st_mtime for p in cache.glob("*.json")} == stamp  # cached: nothing retrained
    # a second training seed: only the seed +1 rows train (seed 0 is the cached row), claims use the seed mean
    logs: list[str] = []
    data = runner.reproduce(quick=True, only="inpainting/mc", out=str(out), cache=str(cache), configs=str(FOLDER),
                            seeds=2, log=lambda *a: logs.append(" ".join(map(str, a))))
    assert {p: p.stat().st_mtime for p in stamp} == stamp and len(list(cache.glob("*.json"))) == 4
    assert any("2 to train" in line for line in logs)
    seed_rows = [json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))]
    mc = [r for r in seed_rows if r["row"] == "inpainting/mc"]
    assert sorted(r["config"]["trainer"]["seed"] for r in mc) == [0, 1]
    merged = data["rows"]["inpainting/mc"]
    by_seed = sorted(mc, key=lambda r: r["config"]["trainer"]["seed"])
    assert merged["seed_psnr"] == [statistics.fmean(r["psnr"]) for r in by_seed]
    assert merged["psnr"] == pytest.approx([(a + b) / 2 for a, b in zip(by_seed[0]["psnr"], by_seed[1]["psnr"],
                                                                         strict=True)])
    assert merged["best"]["psnr"] == pytest.approx([(a + b) / 2 for a, b in zip(
        by_seed[0]["best"]["psnr"], by_seed[1]["best"]["psnr"], strict=True)])
    assert merged["best"]["seed_steps"] == [r["best"]["step"] for r in by_seed]
    text = (out / "claims_quick.md").read_text()
    assert "--seeds 2" in text and "2 training seeds per row" in text and "(seeds " in text
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        runner.reproduce(quick=True, only="inpainting/mc", out=str(out), cache=str(cache), seeds=0)


def test_plan_workers_never_more_threads_than_cores(monkeypatch):
    from selfinv.utils import threads as T

    monkeypatch.setattr(T, "available_cores", lambda: 2)
    assert runner.plan_workers(None, None, "cpu", 80) == (2, 1)  # one row per core, one thread each
    assert runner.plan_workers(None, None, "cpu", 1) == (1, 2)  # one row to train: all cores on it
    assert runner.plan_workers(None, 2, "cpu", 80) == (1, 2)
    assert runner.plan_workers(1, None, "cpu", 80) == (1, 2)
    assert runner.plan_workers(None, None, "cpu", 0) == (1, 2)
    monkeypatch.setattr(T, "available_cores", lambda: 64)
    assert runner.plan_workers(None, None, "cpu", 80) == (runner.MAX_AUTO_WORKERS, 64 // runner.MAX_AUTO_WORKERS)
    assert runner.plan_workers(None, 4, "cpu", 80) == (runner.MAX_AUTO_WORKERS, 4)
    monkeypatch.setattr(T, "available_cores", lambda: 2)
    with pytest.raises(ValueError, match="--workers 2 × --threads 2 = 4 compute threads, more than the 2 cores"):
        runner.plan_workers(2, 2, "cpu", 80)
    with pytest.raises(ValueError, match="--workers must be >= 1, got 0"):
        runner.plan_workers(0, None, "cpu", 80)
    with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
        runner.plan_workers(None, 0, "cpu", 80)


@pytest.mark.slow
def test_rows_trained_in_worker_processes(tmp_path):
    """Two rows, two worker processes of one thread each: both rows cached by their workers (their
    environment says so), the report as from one process, and its wall-time span covers the rows."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    logs: list[str] = []
    data = runner.reproduce(quick=True, only="inpainting/mc", out=str(out), cache=str(cache), configs=str(FOLDER),
                            workers=2, threads=1, log=lambda *a: logs.append(" ".join(map(str, a))))
    assert any("2 worker(s) × 1 thread(s)" in line for line in logs)
    progress = [line for line in logs if "[reproduce] " in line and "/2 inpainting/" in line]
    assert [line.split()[1] for line in progress] == ["1/2", "2/2"]  # one line per row, as each finishes
    rows = [json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))]
    assert sorted(r["row"] for r in rows) == ["inpainting/mc", "inpainting/supervised"]
    assert all(r["environment"]["workers"] == 2 and r["environment"]["threads"] == 1 for r in rows)
    assert all(r["steps"] == 40 and r["curve"][0]["step"] == 0 for r in rows)
    assert sorted(data["rows"]) == ["inpainting/mc", "inpainting/supervised"]
    assert data["training_span"]["first_start"] <= data["training_span"]["last_finish"]
    assert "at most 2 row(s) at a time" in (out / "claims_quick.md").read_text()  # they trained side by side
    stamp = {p: p.stat().st_mtime for p in cache.glob("*.json")}
    runner.reproduce(quick=True, only="inpainting/mc", out=str(out), cache=str(cache), configs=str(FOLDER),
                     workers=2, threads=1, log=lambda *a: None)
    assert {p: p.stat().st_mtime for p in cache.glob("*.json")} == stamp  # cached: no worker started


def test_null_space_errors_of_the_pseudo_inverse_the_truth_and_junk():
    """``‖P_N(x̂ − x)‖ / ‖P_N x‖``: 1 for A†y (0 in the null space), 0 for the truth, ``‖P_N z‖ / ‖P_N x‖`` for the
    truth plus any ``z`` — against the explicit projection ``P_N = (1 − m) ⊙ ·`` of a pixel mask."""
    from selfinv.physics import Inpainting

    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 8, 8, generator=g) < 0.5).double()
    op = Inpainting((1, 8, 8), mask=mask, per_sample=False)
    x = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    test = runner.TestSet(x, op.A(x), {}, op, 0, True)
    assert runner.null_space_errors(op.A_dagger(op.A(x)), test) == pytest.approx([1.0] * 3)
    assert runner.null_space_errors(x, test) == pytest.approx([0.0] * 3)
    z = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    xn, zn = (1 - mask) * x, (1 - mask) * z
    expected = (zn.flatten(1).norm(dim=1) / xn.flatten(1).norm(dim=1)).tolist()
    assert runner.null_space_errors(x + z, test) == pytest.approx(expected)


def test_null_space_claims():
    res = C.Results({"t/mc": {"null_error": [1.3, 1.2, 1.25]}, "t/ei": {"null_error": [0.6, 0.62, 0.58]},
                     "t/old": {"psnr": [30.0]}}, {}, {})
    assert C.null_space_error("t/mc", recovers=False)(res).status == "holds"
    assert C.null_space_error("t/ei", recovers=True)(res).status == "holds"
    assert C.null_space_error("t/ei", recovers=False)(res).status == "contradicts"
    assert C.null_space_error("t/mc", recovers=True)(res).status == "contradicts"
    assert C.null_space_error("t/old", recovers=False)(res).status == "not run"  # cached before the metric
