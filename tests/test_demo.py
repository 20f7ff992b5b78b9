"""``selfinv demo`` at a tiny budget: it prints its table and runs again into the same folder (its own runs of
an earlier demo are replaced, not refused as another run's checkpoints)."""

from selfinv.demo import run_demo


def test_demo_runs_twice_into_one_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    for _ in range(2):
        res = run_demo(out=str(out), steps=2, patch_size=16, num_patches=32, test_size=32, progress=False)
        assert res["sure_steps"] == res["supervised_steps"] == 2
        assert {"noisy y", "self-supervised (SURE)", "supervised (ceiling)"} <= set(res["table"])
    assert "selfinv demo: Gaussian denoising" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "sure" / "checkpoints").iterdir() if p.suffix == ".ckpt") == ["last.ckpt"]
