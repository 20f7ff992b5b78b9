"""The cases: ``CASES``, a list of ``harness.Case`` in five groups.

* ``api`` -- library calls with bad tensors and arguments;
* ``cli`` -- ``selfinv fit|validate|predict|simulate|identifiability|finetune|demo`` with bad flags and values;
* ``files`` -- corrupt / empty / truncated / wrong-format images, arrays and YAML configs;
* ``checkpoints`` -- truncated, corrupt, wrong-type, non-finite, mismatched checkpoints and resumes;
* ``faults`` -- divergence, non-finite pixels, a full disk, a kill during a checkpoint write.

Every case names the class of outcome the user *deserves* (``expected``), whatever the code does
today. Command lines use placeholders filled per case (``harness.Vars``): ``<cfg>`` the tiny base
config (``harness.BASE_CONFIG``), ``<ckpt>`` / ``<run>`` the shared 2-step denoising checkpoint and
its run folder, ``<mri_ckpt>`` an MRI one, ``<dir>`` the case's folder, ``<out>`` an output folder in
it, and whatever the case's setup returned (``<file>``, ``<bad_ckpt>``, ...).
"""

from __future__ import annotations

from pathlib import Path

from bad_inputs.harness import (
    Case,
    all_of,
    api,
    bytes_file,
    ckpt_variant,
    cli,
    copy_run,
    dicom_file,
    enospc,
    fits_file,
    folder,
    h5_file,
    image,
    mrc_file,
    no_nonfinite_checkpoints,
    no_nonfinite_outputs,
    no_tmp_files,
    npy_file,
    npz_file,
    outputs_finite,
    outputs_keep_blank,
    png_file,
    random_bytes,
    returns,
    run_cli_inprocess,
    safe_run,
    setups,
    text_file,
    tiff_file,
    truncated,
    warned,
)

FIT = ("fit", "--config", "<cfg>", "--trainer.output_dir", "<out>")
VALIDATE = ("validate", "--config", "<cfg>", "--trainer.output_dir", "<out>")
PREDICT = ("predict", "--checkpoint", "<ckpt>", "--output", "<out>")
SIMULATE = ("simulate", "--config", "<cfg>")
IDENT = ("identifiability", "--config", "<cfg>")

CASES: list[Case] = []


def case(id, group, description, setup, action, expected, **kw) -> None:
    CASES.append(Case(id, group, description, setup, action, expected, **kw))


# =====================================================================================================
# api: library calls with bad tensors / arguments
# =====================================================================================================

def _net(channels: int = 1):
    from selfinv.models import BackProjection, UNet

    return BackProjection(UNet(channels, channels, scales=2, base_channels=4, batch_norm=False))


def _g():
    import torch

    return torch.Generator().manual_seed(0)


def _y(shape=(2, 1, 16, 16), fill=None, where=(0, 0, 3, 5), offset=0.0):
    import torch

    y = torch.rand(shape, generator=_g()) + offset
    if fill is not None:
        y[where] = fill
    return y


def _sure_poisson_negative(v):
    from selfinv.losses import SURE
    from selfinv.physics import Denoising, PoissonNoise

    y = _y(offset=-0.5)  # half the entries below zero: not photon counts
    return SURE(noise="poisson")(y, Denoising(noise=PoissonNoise(0.1)), _net(), generator=_g())


case("api_sure_poisson_negative_y", "api", "Poisson SURE on measurements with negative entries",
     None, api(_sure_poisson_negative, "SURE(noise='poisson')(y - 0.5, Denoising(PoissonNoise(0.1)), model)"),
     "clear", mentions=(("negative", "non-negative", "nonnegative", ">= 0", "< 0"),))


def _sure_nonfinite(fill):
    def fn(v):
        from selfinv.losses import SURE
        from selfinv.physics import Denoising, GaussianNoise

        return SURE()(_y(fill=fill), Denoising(noise=GaussianNoise(0.1)), _net(), generator=_g())

    return fn


case("api_sure_nan_y", "api", "Gaussian SURE on a measurement with one NaN entry", None,
     api(_sure_nonfinite(float("nan")), "SURE()(y with y[0,0,3,5] = nan, Denoising(GaussianNoise(0.1)), model)"),
     "clear", mentions=(("nan", "non-finite", "not finite"),))
case("api_sure_inf_y", "api", "Gaussian SURE on a measurement with one +inf entry", None,
     api(_sure_nonfinite(float("inf")), "SURE()(y with y[0,0,3,5] = inf, ...)"),
     "clear", mentions=(("inf", "non-finite", "not finite"),))


def _unsure_nan(v):
    from selfinv.losses import UNSURE
    from selfinv.physics import Denoising, GaussianNoise

    return UNSURE()(_y(fill=float("nan")), Denoising(noise=GaussianNoise(0.1)), _net(), generator=_g())


case("api_unsure_nan_y", "api", "UNSURE on a measurement with one NaN entry", None,
     api(_unsure_nan, "UNSURE()(y with a NaN, Denoising(GaussianNoise(0.1)), model)"),
     "clear", mentions=(("nan", "non-finite", "not finite"),))


def _empty_batch(v):
    import torch

    from selfinv.losses import SURE
    from selfinv.physics import Denoising, GaussianNoise

    return SURE()(torch.zeros(0, 1, 16, 16), Denoising(noise=GaussianNoise(0.1)), _net(), generator=_g())


case("api_empty_batch", "api", "SURE on an empty batch (0, 1, 16, 16)", None,
     api(_empty_batch, "SURE()(torch.zeros(0, 1, 16, 16), ...)"),
     "clear", mentions=(("empty", "(0, 1, 16, 16)", "batch size 0", "batch of 0", "0 samples"),))


def _mc_ei_denoising(v):
    from selfinv.losses import EquivariantImaging, MeasurementConsistency, WeightedSum
    from selfinv.physics import Denoising, GaussianNoise
    from selfinv.transforms import Shift

    phys = Denoising(noise=GaussianNoise(0.1))
    loss = WeightedSum([MeasurementConsistency(), EquivariantImaging(Shift())])
    loss.check(phys)
    return loss(_y(), phys, _net(), generator=_g())


case("api_mc_ei_on_denoising", "api",
     "MC + EI on denoising (A = I): the loss is minimised by the identity, nothing is learned", None,
     api(_mc_ei_denoising, "WeightedSum([MeasurementConsistency(), EquivariantImaging(Shift())]) on Denoising"),
     "handled", check=warned(("denois", "identity", "a = i", "invertible", "full rank", "null space", "nullspace")),
     sensible="a warning that MC + EI cannot learn anything when A = I (the identity network minimises it)")


def _blur_zero_kernel(v):
    import torch

    from selfinv.physics import Blur

    op = Blur(kernel=torch.zeros(5, 5))
    return op.A_dagger(op.A(torch.rand(1, 1, 16, 16)))


case("api_blur_all_zero_kernel", "api", "Blur with an all-zero kernel", None,
     api(_blur_zero_kernel, "Blur(kernel=torch.zeros(5, 5))"),
     "clear", mentions=("kernel", ("zero", "sum")))


def _cast_result_ok(shape):
    def pred(value):
        import torch

        return (isinstance(value, torch.Tensor) and tuple(value.shape) == shape
                and bool(torch.isfinite(value.float()).all()))

    return pred


def _unet_dtype(dtype_name):
    def fn(v):
        import torch

        from selfinv.models import UNet

        net = UNet(1, 1, scales=2, base_channels=4, batch_norm=False)
        return net(torch.rand(1, 1, 16, 16).to(getattr(torch, dtype_name)))

    return fn


for _dt in ("float16", "float64"):
    case(f"api_unet_{_dt}_input", "api", f"a {_dt} image into a float32 UNet", None,
         api(_unet_dtype(_dt), f"UNet(1, 1)(torch.rand(1, 1, 16, 16, dtype=torch.{_dt}))"),
         "handled", error_ok=True, mentions=(("dtype", _dt, "half" if _dt == "float16" else "double"),),
         check=returns(_cast_result_ok((1, 1, 16, 16)), "finite (1, 1, 16, 16) output (input cast)"),
         sensible="the input is cast to the network's dtype (finite output of the right shape), or a clear "
                  "dtype error naming it -- not torch's 'Input type and bias type should be the same'")


def _tomo_dtype(dtype_name):
    def fn(v):
        import torch

        from selfinv.physics.tomography import Tomography

        op = Tomography(16, n_views=8)
        return op.A(torch.rand(1, 1, 16, 16).to(getattr(torch, dtype_name)))

    return fn


def _sinogram_ok(value):
    import torch

    return isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[2] == 8 and bool(
        torch.isfinite(value.float()).all())


for _dt in ("float16", "float64"):
    case(f"api_tomography_{_dt}_input", "api", f"a {_dt} image into Tomography.A", None,
         api(_tomo_dtype(_dt), f"Tomography(16, n_views=8).A(torch.rand(1, 1, 16, 16, dtype=torch.{_dt}))"),
         "handled", error_ok=True, mentions=(("dtype", _dt, "half" if _dt == "float16" else "double"),),
         check=returns(_sinogram_ok, "finite (1, 1, 8, D) sinogram"),
         sensible="a finite sinogram (computed in the input's dtype or cast), or a clear dtype error")


def _unet_channels(v):
    import torch

    from selfinv.models import UNet

    return UNet(1, 1, scales=2, base_channels=4)(torch.rand(1, 3, 16, 16))


case("api_unet_wrong_channels", "api", "an RGB batch into a 1-channel UNet", None,
     api(_unet_channels, "UNet(1, 1)(torch.rand(1, 3, 16, 16))"),
     "clear", mentions=(("(1, 3, 16, 16)", "3 channel"),))


def _model_channels(v):
    import torch

    from selfinv.physics import Denoising

    return _net(1)(torch.rand(1, 3, 16, 16), Denoising())


case("api_backprojection_wrong_channels", "api", "an RGB batch into BackProjection(UNet(1, 1))", None,
     api(_model_channels, "BackProjection(UNet(1, 1))(torch.rand(1, 3, 16, 16), Denoising())"),
     "clear", mentions=(("3 channel", "(1, 3, 16, 16)"), ("in_channels=1", "1 channel")))


def _inpainting_mask_shape(v):
    import torch

    from selfinv.physics import Inpainting

    return Inpainting((1, 16, 16), mask=torch.ones(1, 1, 8, 8)).A(torch.rand(1, 1, 16, 16))


case("api_inpainting_mask_wrong_shape", "api", "an 8x8 mask for a 16x16 Inpainting operator", None,
     api(_inpainting_mask_shape, "Inpainting((1, 16, 16), mask=torch.ones(1, 1, 8, 8))"),
     "clear", mentions=("mask", ("(1, 1, 8, 8)", "8, 8")))


def _inpainting_with_params_shape(v):
    import torch

    from selfinv.physics import Inpainting

    op = Inpainting((1, 16, 16), keep_ratio=0.5, generator=_g())
    return op.with_params(mask=torch.ones(1, 1, 16, 8)).A(torch.rand(1, 1, 16, 16))


case("api_inpainting_with_params_mask_wrong_shape", "api", "with_params(mask=(1, 1, 16, 8)) on a 16x16 Inpainting",
     None, api(_inpainting_with_params_shape, "Inpainting((1,16,16)).with_params(mask=torch.ones(1, 1, 16, 8)).A(x)"),
     "clear", mentions=("mask", ("(1, 1, 16, 8)", "16, 8")))


def _mri_mask_shape(v):
    import torch

    from selfinv.physics import MRI

    return MRI((16, 16), mask=torch.ones(1, 1, 1, 8))


case("api_mri_mask_wrong_shape", "api", "an 8-column mask for a 16x16 MRI operator", None,
     api(_mri_mask_shape, "MRI((16, 16), mask=torch.ones(1, 1, 1, 8))"),
     "clear", mentions=("mask", ("(1, 1, 1, 8)", "8")))


def _mri_with_params_shape(v):
    import torch

    from selfinv.physics import MRI

    op = MRI((16, 16), acceleration=4, generator=_g())
    return op.with_params(mask=torch.ones(3, 1, 1, 16)).A(torch.rand(2, 2, 16, 16))


case("api_mri_mask_batch_mismatch", "api", "3 per-sample MRI masks for a batch of 2", None,
     api(_mri_with_params_shape, "MRI((16,16)).with_params(mask=torch.ones(3, 1, 1, 16)).A(torch.rand(2, 2, 16, 16))"),
     "clear", mentions=("mask", "3", "2"))


def _with_params_unknown(v):
    import torch

    from selfinv.physics import Denoising

    return Denoising().with_params(mask=torch.ones(1, 1, 16, 16))


case("api_with_params_unknown_name", "api", "with_params with a parameter the operator does not have", None,
     api(_with_params_unknown, "Denoising().with_params(mask=...)"), "clear", mentions=("mask",))


def _noise(cls_name, **kw):
    def fn(v):
        import selfinv.physics as P

        return getattr(P, cls_name)(**kw)

    return fn


case("api_gaussian_sigma_negative", "api", "GaussianNoise(sigma=-0.1)", None,
     api(_noise("GaussianNoise", sigma=-0.1), "GaussianNoise(-0.1)"), "clear", mentions=("sigma", "-0.1"))
case("api_gaussian_sigma_string", "api", "GaussianNoise(sigma='0.1x')", None,
     api(_noise("GaussianNoise", sigma="0.1x"), "GaussianNoise('0.1x')"), "clear", mentions=("sigma", "0.1x"))
case("api_gaussian_sigma_nan", "api", "GaussianNoise(sigma=nan)", None,
     api(_noise("GaussianNoise", sigma=float("nan")), "GaussianNoise(float('nan'))"), "clear",
     mentions=("sigma", ("nan", "finite")))
case("api_poisson_gain_zero", "api", "PoissonNoise(gain=0)", None,
     api(_noise("PoissonNoise", gain=0.0), "PoissonNoise(0)"), "clear", mentions=("gain", "0"))


def _int_image(v):
    import torch

    from selfinv.physics import Denoising, GaussianNoise

    return Denoising(noise=GaussianNoise(0.1))(torch.ones(1, 1, 8, 8, dtype=torch.int64), generator=_g())


case("api_integer_image_into_physics", "api", "an int64 image into Denoising(GaussianNoise)", None,
     api(_int_image, "Denoising(GaussianNoise(0.1))(torch.ones(1, 1, 8, 8, dtype=torch.int64))"),
     "clear", mentions=(("int64", "integer", "floating"),))


def _missing_batch_dim(v):
    import torch

    from selfinv.physics import Inpainting

    return Inpainting((1, 16, 16), generator=_g()).A(torch.rand(1, 16, 16))


case("api_image_without_batch_dim", "api", "a (C, H, W) image where (B, C, H, W) is expected", None,
     api(_missing_batch_dim, "Inpainting((1, 16, 16)).A(torch.rand(1, 16, 16))"),
     "clear", mentions=(("(1, 16, 16)",), ("(B, C, H, W)", "4-D", "batch")))


def _numpy_into_model(v):
    import numpy as np

    from selfinv.physics import Denoising

    return _net()(np.zeros((1, 1, 16, 16), dtype=np.float32), Denoising())


case("api_numpy_array_into_model", "api", "a numpy array instead of a tensor into a model", None,
     api(_numpy_into_model, "BackProjection(UNet(1, 1))(np.zeros((1, 1, 16, 16)), Denoising())"),
     "clear", mentions=(("tensor",), ("ndarray", "numpy")))


def _keep_ratio_zero(v):
    from selfinv.physics import Inpainting

    return Inpainting((1, 16, 16), keep_ratio=0.0)


case("api_inpainting_keep_ratio_zero", "api", "Inpainting(keep_ratio=0)", None,
     api(_keep_ratio_zero, "Inpainting((1, 16, 16), keep_ratio=0)"), "clear", mentions=("keep_ratio",))


def _mri_accel(v):
    from selfinv.physics import MRI

    return MRI((16, 16), acceleration=3)


case("api_mri_acceleration_3", "api", "MRI(acceleration=3) (not a supported factor)", None,
     api(_mri_accel, "MRI((16, 16), acceleration=3)"), "clear", mentions=("acceleration", "3"))


def _tomo_nonsquare(v):
    from selfinv.physics.tomography import Tomography

    return Tomography((1, 16, 12), n_views=8)


case("api_tomography_nonsquare", "api", "Tomography of a 16x12 image", None,
     api(_tomo_nonsquare, "Tomography((1, 16, 12))"), "clear", mentions=("square",))


def _weighted_sum(losses, weights=None):
    def fn(v):
        from selfinv.losses import SURE, WeightedSum

        return WeightedSum([SURE() for _ in range(losses)], weights)

    return fn


case("api_weightedsum_empty", "api", "WeightedSum([])", None, api(_weighted_sum(0), "WeightedSum([])"),
     "clear", mentions=(("at least one", "empty", "no loss"),))
case("api_weightedsum_weight_count", "api", "WeightedSum of 2 losses with 3 weights", None,
     api(_weighted_sum(2, [1.0, 1.0, 1.0]), "WeightedSum([SURE(), SURE()], [1, 1, 1])"),
     "clear", mentions=("weights", "3"))


def _sure_on_poisson(v):
    from selfinv.losses import SURE
    from selfinv.physics import Denoising, PoissonNoise

    return SURE()(_y(), Denoising(noise=PoissonNoise(0.1)), _net(), generator=_g())


case("api_gaussian_sure_on_poisson", "api", "Gaussian SURE on Poisson measurements", None,
     api(_sure_on_poisson, "SURE()(y, Denoising(PoissonNoise(0.1)), model)"), "clear",
     mentions=("poisson",))


def _sure_tau(v):
    from selfinv.losses import SURE

    return SURE(tau=-0.01)


case("api_sure_negative_tau", "api", "SURE(tau=-0.01)", None, api(_sure_tau, "SURE(tau=-0.01)"), "clear",
     mentions=("tau",))


def _supervised_no_x(v):
    from selfinv.losses import SupervisedLoss
    from selfinv.physics import Denoising

    return SupervisedLoss()(_y(), Denoising(), _net())


case("api_supervised_without_ground_truth", "api", "the supervised loss without x", None,
     api(_supervised_no_x, "SupervisedLoss()(y, Denoising(), model)"), "clear",
     mentions=(("ground truth", "x=None"),))


def _n2n_no_y2(v):
    from selfinv.losses import Noise2Noise
    from selfinv.physics import Denoising

    return Noise2Noise()(_y(), Denoising(), _net())


case("api_noise2noise_without_y2", "api", "Noise2Noise without the second noisy copy", None,
     api(_n2n_no_y2, "Noise2Noise()(y, Denoising(), model)"), "clear", mentions=("y2",))


def _blur_big_kernel(v):
    import torch

    from selfinv.physics import Blur

    return Blur(kernel=torch.ones(21, 21) / 441).A(torch.rand(1, 1, 16, 16))


case("api_blur_kernel_larger_than_image", "api", "a 21x21 blur kernel on a 16x16 image", None,
     api(_blur_big_kernel, "Blur(kernel=torch.ones(21, 21) / 441).A(torch.rand(1, 1, 16, 16))"), "clear",
     mentions=("kernel", ("21", "larger")))


def _shift_3d(v):
    import torch

    from selfinv.transforms import Shift

    t = Shift()
    x = torch.rand(1, 16, 16)
    apply = t.transform if hasattr(type(t), "transform") else t.apply  # renamed from apply to transform
    return apply(x, t.sample(1, _g()))


case("api_transform_on_3d_tensor", "api", "a transform applied to a (C, H, W) tensor", None,
     api(_shift_3d, "Shift().apply(torch.rand(1, 16, 16), params)"), "clear",
     mentions=(("(1, 16, 16)", "(B, C, H, W)", "4-D"),))


def _unet_scales(v):
    from selfinv.models import UNet

    return UNet(1, 1, scales=0)


case("api_unet_scales_zero", "api", "UNet(scales=0)", None, api(_unet_scales, "UNet(1, 1, scales=0)"), "clear",
     mentions=("scales",))


def _read_npz_key(v):
    from selfinv.data.readers import read_measurements

    return read_measurements(v["file"], key="nope")


case("api_read_npz_missing_key", "api", "read_measurements of an .npz with a key it does not hold",
     npz_file("two.npz", lambda: {"a": image(), "b": image()}),
     api(_read_npz_key, "read_measurements('two.npz', key='nope')"), "clear", mentions=("nope", "two.npz"))


def _load_dataset(v):
    from selfinv.data.bundled import load_dataset

    return load_dataset("nope")


case("api_load_unknown_dataset", "api", "load_dataset('nope')", None, api(_load_dataset, "load_dataset('nope')"),
     "clear", mentions=("nope", "natural-gray"))


def _tiled(tile, overlap, shape=(1, 1, 16, 16)):
    def fn(v):
        import torch

        from selfinv.data.tiling import tiled_apply

        return tiled_apply(lambda t: t, torch.rand(*shape), tile=tile, overlap=overlap)

    return fn


case("api_tiled_apply_3d", "api", "tiled_apply on a (C, H, W) tensor", None,
     api(_tiled(8, 2, (1, 16, 16)), "tiled_apply(f, torch.rand(1, 16, 16), tile=8)"), "clear",
     mentions=(("(1, 16, 16)", "(B, C, H, W)"),))
case("api_tiled_apply_overlap_ge_tile", "api", "tiled_apply with overlap >= tile", None,
     api(_tiled(8, 8), "tiled_apply(f, y, tile=8, overlap=8)"), "clear", mentions=("overlap", "tile"))


def _write_jpg(v):
    import numpy as np

    from selfinv.data.writers import write_image

    return write_image(Path(v["dir"]) / "x.jpg", np.zeros((8, 8), dtype=np.float32))


case("api_write_image_jpg", "api", "write_image to a .jpg", None, api(_write_jpg, "write_image('x.jpg', a)"),
     "clear", mentions=("jpg",))


def _psnr_shapes(v):
    import torch

    from selfinv.training.metrics import psnr

    return psnr(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 15))


case("api_psnr_shape_mismatch", "api", "psnr of images of different sizes", None,
     api(_psnr_shapes, "psnr(rand(1,1,16,16), rand(1,1,16,15))"), "clear", mentions=(("16, 15",),))


def _mri_one_channel(v):
    import torch

    from selfinv.physics import MRI

    return MRI((16, 16), generator=_g()).A(torch.rand(1, 1, 16, 16))


case("api_mri_real_one_channel_image", "api", "a 1-channel real image into MRI.A (expects 2 channels real/imag)",
     None, api(_mri_one_channel, "MRI((16, 16)).A(torch.rand(1, 1, 16, 16))"), "clear",
     mentions=(("2 channel",), ("(1, 1, 16, 16)",)))


def _dataset_load_missing(v):
    from selfinv.data.measurements import MeasurementDataset

    return MeasurementDataset.load(Path(v["dir"]) / "nope.npz")


case("api_measurement_file_missing", "api", "MeasurementDataset.load of a missing file", None,
     api(_dataset_load_missing, "MeasurementDataset.load('nope.npz')"), "clear", mentions=("nope.npz",))


def _sure_batch_mismatch(v):
    import torch

    from selfinv.losses import SURE
    from selfinv.physics import Denoising, GaussianNoise

    return SURE()(_y((3, 1, 16, 16)), Denoising(noise=GaussianNoise(torch.tensor([0.1, 0.2]))), _net(),
                  generator=_g())


case("api_per_sample_sigma_batch_mismatch", "api", "2 per-sample sigmas for a batch of 3", None,
     api(_sure_batch_mismatch, "SURE()(y of batch 3, Denoising(GaussianNoise(tensor([0.1, 0.2]))), model)"),
     "clear", mentions=("sigma", "2", "3"))


# =====================================================================================================
# cli: bad flags and values
# =====================================================================================================

def _cli_clear(id, description, argv, mentions, setup=None, patches=(), process=False, **kw):
    case(id, "cli", description, setup, cli(*argv, patches=patches, process=process), "clear", mentions=mentions, **kw)


_cli_clear("cli_data_given_a_file_name", "fit --data my.tif (the file belongs to --data.path)",
           FIT + ("--data", "my.tif"), ("expected a mapping", "--data.path my.tif"))
_cli_clear("cli_sigma_auto_typo", "noise sigma 'auto_typo' (a typo of auto)",
           FIT + ("--physics.noise.args", "{sigma: auto_typo}"), ("sigma", "auto_typo"))
_cli_clear("cli_sigma_string", "noise sigma given as the string '0.1x'",
           FIT + ("--physics.noise.args", '{sigma: "0.1x"}'), ("sigma", "0.1x"))
_cli_clear("cli_sigma_negative", "negative noise sigma", FIT + ("--physics.noise.args", "{sigma: -0.1}"),
           ("sigma", "-0.1"))
_cli_clear("cli_sigma_nan", "noise sigma .nan", FIT + ("--physics.noise.args", "{sigma: .nan}"),
           ("sigma", "nan"))
_cli_clear("cli_gain_zero", "Poisson gain 0", FIT + ("--physics.noise.name", "poisson", "--physics.noise.args",
                                                     "{gain: 0}", "--losses.0.args", "{noise: poisson}"),
           ("gain", "0"))
_cli_clear("cli_sigma_auto_without_measurement_file", "sigma: auto on simulated data (needs data.path)",
           FIT + ("--physics.noise.args", "{sigma: auto}"), ("sigma", "auto", "data.path"))
_cli_clear("cli_noise_args_not_a_mapping", "physics.noise.args given as a bare number",
           FIT + ("--physics.noise.args", "0.1"), ("physics.noise.args",))
_cli_clear("cli_unknown_dataset", "a data set name that does not exist",
           FIT + ("--data.dataset", "nope"), ("nope", "natural-gray"))
_cli_clear("cli_no_data", "neither a data set nor a data file", FIT + ("--data.dataset", "null"),
           ("data.dataset", "data.path"))
_cli_clear("cli_unknown_physics", "an unregistered physics name", FIT + ("--physics.name", "deblur"),
           ("deblur", "blur"))
_cli_clear("cli_unknown_noise", "an unregistered noise name", FIT + ("--physics.noise.name", "gauss"),
           ("gauss", "gaussian"))
_cli_clear("cli_unknown_loss", "an unregistered loss name", FIT + ("--losses.0.name", "suree"),
           ("suree", "sure"))
_cli_clear("cli_unknown_backbone", "an unregistered backbone name", FIT + ("--model.backbone.name", "resnet"),
           ("resnet", "unet"))
_cli_clear("cli_unknown_reconstructor", "an unregistered reconstructor name",
           FIT + ("--model.reconstructor.name", "backprojection"), ("backprojection", "back_projection"))
_cli_clear("cli_backbone_arg_typo", "a backbone argument that does not exist",
           FIT + ("--model.backbone.args", "{scale: 2, base_channels: 4}"), ("scale", "scales"))
_cli_clear("cli_loss_arg_typo", "a loss argument that does not exist", FIT + ("--losses.0.args", "{tauu: 0.1}"),
           ("tauu", "tau"))
_cli_clear("cli_ssdu_on_denoising", "SSDU (needs a mask operator) on denoising",
           FIT + ("--losses.0.name", "ssdu"), ("ssdu", ("mask", "denoising")))
_cli_clear("cli_sure_gaussian_on_poisson", "SURE (default Gaussian) with Poisson noise, no 'noise: poisson'",
           FIT + ("--physics.noise.name", "poisson", "--physics.noise.args", "{gain: 0.1}"), ("sure", "poisson"))
_cli_clear("cli_moi_on_denoising", "multi-operator imaging on a deterministic operator (denoising)",
           FIT + ("--losses.0.name", "moi"), (("moi", "multioperator", "multi-operator"),
                                              ("random", "deterministic", "denoising")))
_cli_clear("cli_max_steps_zero", "trainer.max_steps 0", FIT + ("--trainer.max_steps", "0"), ("max_steps", "0"))
_cli_clear("cli_max_epochs_zero", "trainer.max_epochs 0 with no step budget",
           FIT + ("--trainer.max_steps", "-1", "--trainer.max_epochs", "0"), ("max_epochs",))
case("cli_val_fraction_zero", "cli", "data.val_fraction 0 (no validation set)", None,
     cli(*FIT, "--data.val_fraction", "0"), "handled",
     check=lambda o, v: _stored("data.val_fraction", 0.0, same_type=False)(o, v),
     sensible="a valid request since measurements are scarce (one image): trains on everything, keeps last.ckpt")
_cli_clear("cli_val_fraction_one", "data.val_fraction 1 (no training set)", FIT + ("--data.val_fraction", "1"),
           ("val_fraction", "1"))
_cli_clear("cli_batch_size_negative", "data.batch_size -1", FIT + ("--data.batch_size", "-1"),
           ("batch_size", "-1"))
_cli_clear("cli_batch_size_word", "data.batch_size four", FIT + ("--data.batch_size", "four"),
           ("batch_size", "four"))
_cli_clear("cli_patch_size_larger_than_images", "data.patch_size 4096 (larger than every image)",
           FIT + ("--data.patch_size", "4096"), ("patch_size", "4096"))
_cli_clear("cli_offset_word", "data.offset given as the word 'bias'", FIT + ("--data.offset", "bias"),
           ("offset", "bias"))
_cli_clear("cli_offset_on_bundled_dataset", "data.offset with a bundled data set (no detector)",
           FIT + ("--data.offset", "100"), ("data.offset", "data.path"))
_cli_clear("cli_num_workers_negative", "data.num_workers -2", FIT + ("--data.num_workers", "-2"),
           ("num_workers", "-2"))
_cli_clear("cli_lr_negative", "optim.lr -0.001", FIT + ("--optim.lr", "-0.001"), ("lr", "-0.001"))
_cli_clear("cli_scheduler_typo", "optim.scheduler cosin", FIT + ("--optim.scheduler", "cosin"),
           ("scheduler", "cosin", "cosine"))
_cli_clear("cli_loss_weight_negative", "a loss with weight -1 (training would maximise it)",
           FIT + ("--losses.0.weight", "-1"), ("weight", "-1"))
_cli_clear("cli_loss_weight_nan", "a loss with weight .nan", FIT + ("--losses.0.weight", ".nan"),
           ("weight", "nan"))
_cli_clear("cli_precision_bf16", "trainer.precision bf16 (not a Lightning precision string)",
           FIT + ("--trainer.precision", "bf16"), ("precision", "bf16", "bf16-mixed"))
_cli_clear("cli_accelerator_gpu_without_gpu", "trainer.accelerator gpu on a machine without a GPU",
           FIT + ("--trainer.accelerator", "gpu"), (("gpu", "cuda"),))
_cli_clear("cli_devices_zero", "trainer.devices 0", FIT + ("--trainer.devices", "0"), ("devices", "0"))
_cli_clear("cli_checkpoint_every_zero", "trainer.checkpoint_every 0", FIT + ("--trainer.checkpoint_every", "0"),
           ("checkpoint_every",))
_cli_clear("cli_max_time_negative", "trainer.max_time_minutes -1", FIT + ("--trainer.max_time_minutes", "-1"),
           ("max_time_minutes", "-1"))
_cli_clear("cli_unknown_option", "a misspelled option", FIT + ("--trainer.max_stepz", "3"),
           ("max_stepz", "max_steps"))
_cli_clear("cli_option_given_twice", "the same option twice with different values",
           FIT + ("--trainer.max_steps", "2", "--trainer.max_steps", "3"), ("max_steps", "twice"))
_cli_clear("cli_option_without_value", "an option with its value missing", FIT + ("--trainer.max_steps",),
           ("max_steps",))
_cli_clear("cli_positional_config", "the config given without --config",
           safe_run(("fit", "<cfg>", "--trainer.output_dir", "<out>")), ("base.yaml",))
_cli_clear("cli_losses_not_a_list", "--losses given a mapping instead of a list",
           FIT + ("--losses", "{name: sure}"), ("losses", "list"))
_cli_clear("cli_loss_index_out_of_range", "--losses.3.name with a single loss", FIT + ("--losses.3.name", "sure"),
           ("losses", "3"))
_cli_clear("cli_config_missing", "--config of a file that does not exist",
           ("fit", "--config", "nope.yaml", "--trainer.output_dir", "<out>"), ("nope.yaml",))
_cli_clear("cli_config_missing_process", "--config of a missing file, in a real process",
           ("fit", "--config", "nope.yaml", "--trainer.output_dir", "out"), ("nope.yaml",), process=True)
_cli_clear("cli_unknown_command", "a command that does not exist", ("train", "--config", "<cfg>"),
           ("train", "fit"))
_cli_clear("cli_data_path_missing", "data.path of a file that does not exist",
           FIT + ("--data.path", "nope.npz"), ("nope.npz",))
_cli_clear("cli_data_path_device", "data.path of a device (/dev/null): neither a file nor a folder",
           FIT + ("--data.path", "/dev/null"), ("/dev/null", "neither a file nor a folder"))
_cli_clear("cli_advise_data_device", "advise --data of a device (/dev/null)",
           ("advise", "--data", "/dev/null"), ("/dev/null", "neither a file nor a folder"))
_cli_clear("cli_validate_without_checkpoint", "validate with no --checkpoint (would score a random network)",
           VALIDATE, ("--checkpoint",))
_cli_clear("cli_validate_missing_checkpoint", "validate with a checkpoint that does not exist",
           VALIDATE + ("--checkpoint", "nope.ckpt"), ("nope.ckpt",))
_cli_clear("cli_predict_format_jpg", "predict --format jpg", PREDICT + ("--input", "<file>", "--format", "jpg"),
           ("format", "jpg", "tiff"), setup=npy_file("y.npy", image))
_cli_clear("cli_predict_format_dicom_of_npy", "predict --format dicom of a non-DICOM input (no header to keep)",
           PREDICT + ("--input", "<file>", "--format", "dicom"), ("DICOM", "y.npy", "--format tiff"),
           setup=npy_file("y.npy", image))
_cli_clear("cli_predict_tile_zero", "predict --tile 0", PREDICT + ("--input", "<file>", "--tile", "0"),
           ("tile", "0"), setup=npy_file("y.npy", image))
_cli_clear("cli_predict_negative_overlap", "predict --tile 8 --overlap -1",
           PREDICT + ("--input", "<file>", "--tile", "8", "--overlap", "-1"), ("overlap", "-1"),
           setup=npy_file("y.npy", image))
_cli_clear("cli_predict_overlap_ge_tile", "predict --tile 8 --overlap 8",
           PREDICT + ("--input", "<file>", "--tile", "8", "--overlap", "8"), ("overlap", "tile"),
           setup=npy_file("y.npy", image))
_cli_clear("cli_predict_tile_on_mri", "predict --tile with an MRI checkpoint (k-space is not local)",
           ("predict", "--checkpoint", "<mri_ckpt>", "--output", "<out>", "--input", "<file>", "--tile", "8"),
           ("tile", ("mri", "denoising")), setup=npy_file("k.npy", lambda: image((1, 2, 16, 16))))
_cli_clear("cli_predict_output_is_a_file", "predict --output naming its own input file",
           ("predict", "--checkpoint", "<ckpt>", "--output", "<file>", "--input", "<file>"),
           ("y.npy", "is the input file itself"), setup=npy_file("y.npy", image))
_cli_clear("cli_predict_output_is_a_text_file", "predict --output naming an existing file that is no image",
           ("predict", "--checkpoint", "<ckpt>", "--output", "<notes>", "--input", "<file>"),
           ("notes.txt", "is a file; expected a folder"),
           setup=setups(npy_file("y.npy", image), text_file("notes.txt", "my notes", key="notes")))
_cli_clear("cli_predict_missing_required", "predict without --input", ("predict", "--checkpoint", "<ckpt>",
                                                                       "--output", "<out>"), ("--input",))
_cli_clear("cli_simulate_without_output", "simulate without --output", SIMULATE, ("--output",))
_cli_clear("cli_simulate_bad_split", "simulate --split tset", SIMULATE + ("--output", "m.npz", "--split", "tset"),
           ("split", "tset"))
_cli_clear("cli_simulate_bad_extension", "simulate --output data.txt",
           SIMULATE + ("--output", "data.txt", "--data.num_patches", "2"), ("data.txt", ".npz"))
_cli_clear("cli_identifiability_image_size_word", "identifiability --image_size big",
           IDENT + ("--image_size", "big"), ("image_size", "big"))
_cli_clear("cli_identifiability_image_size_zero", "identifiability --image_size 0",
           IDENT + ("--image_size", "0"), ("image_size", "0"))
_cli_clear("cli_identifiability_unknown_transform", "identifiability --transform rotat",
           IDENT + ("--transform", "rotat"), ("rotat", "rotate"))


def _measurement_png(name="y.png"):
    return png_file(name, lambda: image((16, 16), "uint8", scale=255), key="meas")


FINETUNE = ("finetune", "--checkpoint", "<ckpt>", "--measurement", "<meas>", "--output", "<dir>/x.tif",
            "--run_dir", "<out>", "--steps", "1", "--batch_size", "1")
_cli_clear("cli_finetune_unknown_loss", "finetune --loss nope", FINETUNE + ("--loss", "nope"), ("nope", "sure"),
           setup=_measurement_png())
_cli_clear("cli_finetune_steps_zero", "finetune --steps 0",
           ("finetune", "--checkpoint", "<ckpt>", "--measurement", "<meas>", "--output", "<dir>/x.tif",
            "--run_dir", "<out>", "--steps", "0", "--batch_size", "1"), ("steps", "0"), setup=_measurement_png())
_cli_clear("cli_finetune_sigma_word", "finetune --sigma abc", FINETUNE + ("--sigma", "abc"), ("sigma", "abc"),
           setup=_measurement_png())
_cli_clear("cli_finetune_missing_measurement", "finetune --measurement of a missing file",
           FINETUNE, ("nope.png",), setup=lambda ctx, v: {"meas": "nope.png"})
_cli_clear("cli_finetune_output_jpg", "finetune --output x.jpg (checked only after training?)",
           tuple(a if a != "<dir>/x.tif" else "<dir>/x.jpg" for a in FINETUNE), ("jpg",),
           setup=_measurement_png())
_cli_clear("cli_demo_steps_word", "demo --steps soon", ("demo", "--steps", "soon", "--out", "<out>"),
           ("steps", "soon"))
_cli_clear("cli_demo_unknown_option", "demo --outdir (the option is --out)", ("demo", "--outdir", "<out>"),
           ("outdir", ("--out", "'out'")))
_cli_clear("cli_max_steps_fraction", "trainer.max_steps 2.5", FIT + ("--trainer.max_steps", "2.5"),
           ("max_steps", "2.5"))


def _stored(path: str, value, same_type: bool = True):
    """Check: the run finished (``last.ckpt`` written) and its stored config has ``value`` at the dotted
    ``path`` (of the same type unless ``same_type`` is False: then ``"0.1"`` counts as 0.1, as it does
    when the operator is rebuilt from the stored config)."""

    def check(o, v):
        import torch

        ck = Path(v["out"]) / "checkpoints" / "last.ckpt"
        if not ck.exists():
            return False, "no last.ckpt written"
        node = torch.load(ck, map_location="cpu", weights_only=True)["hyper_parameters"]["config"]
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        try:
            ok = node == value and type(node) is type(value) if same_type else float(node) == float(value)
        except (TypeError, ValueError):
            ok = False
        return ok, f"stored {path} = {node!r}" + ("" if ok else f", expected {value!r}")

    return check


def _cli_handled(id, description, argv, check, sensible):
    case(id, "cli", description, None, cli(*argv), "handled", check=check, sensible=sensible)


_cli_handled("cli_sigma_quoted_number", "noise sigma written as the string \"0.1\"",
             FIT + ("--physics.noise.args", '{sigma: "0.1"}'),
             _stored("physics.noise.args.sigma", 0.1, same_type=False),
             "read as the number 0.1: the run trains and stores sigma = 0.1")
_cli_handled("cli_lr_scientific_notation", "optim.lr 1e-3 (YAML 1.1 reads it as a string)",
             FIT + ("--optim.lr", "1e-3"), _stored("optim.lr", 0.001), "read as 0.001")
_cli_handled("cli_equals_syntax", "--trainer.max_steps=3 (equals syntax)", FIT + ("--trainer.max_steps=3",),
             _stored("trainer.max_steps", 3), "the run trains 3 steps and stores max_steps = 3")
_cli_handled("cli_max_steps_integer_float", "trainer.max_steps 3.0", FIT + ("--trainer.max_steps", "3.0"),
             _stored("trainer.max_steps", 3), "read as the integer 3")
_cli_handled("cli_bool_flag_without_value", "--trainer.deterministic with no value",
             FIT + ("--trainer.deterministic",), _stored("trainer.deterministic", True), "a bare flag means true")


# =====================================================================================================
# files: corrupt / empty / truncated / wrong-format inputs and configs
# =====================================================================================================

def _predict_case(id, description, setup, expected, input_key="file", ckpt="<ckpt>", extra=(), **kw):
    argv = ("predict", "--checkpoint", ckpt, "--output", "<out>", "--input", f"<{input_key}>") + tuple(extra)
    case(id, kw.pop("group", "files"), description, setup, cli(*argv, patches=kw.pop("patches", ())), expected, **kw)


def _complex(shape):
    return (image(shape) + 1j * image(shape, seed=1)).astype("complex64")


def _valid_tiff():
    return tiff_file("ok.tif", lambda: image((16, 16)), key="ok")


_predict_case("files_npy_valid_control", "a valid float32 16x16 .npy (control)", npy_file("y.npy", image), "handled",
              check=outputs_finite(1, (16, 16)), sensible="one finite 16x16 reconstruction")
_predict_case("files_npy_float64", "a float64 .npy", npy_file("y.npy", lambda: image(dtype="float64")), "handled",
              check=outputs_finite(1, (16, 16)), sensible="cast to float32: one finite 16x16 reconstruction")
_predict_case("files_npy_bool", "a boolean .npy", npy_file("y.npy", lambda: image() > 0.5), "handled",
              check=outputs_finite(1, (16, 16)), sensible="read as 0/1: one finite reconstruction")
_predict_case("files_npy_stack", "a (3, H, W) stack in one .npy", npy_file("y.npy", lambda: image((3, 16, 16))),
              "handled", check=outputs_finite(1, (3, 16, 16)),
              sensible="one output per input file, named after it: the stack of three reconstructions")
_predict_case("files_npy_odd_size", "a 17x23 image (not a multiple of the U-Net's pooling)",
              npy_file("y.npy", lambda: image((17, 23))), "handled", check=outputs_finite(1, (17, 23)),
              sensible="padded internally: one finite 17x23 reconstruction")
_predict_case("files_npy_all_zero", "an all-zero image", npy_file("y.npy", lambda: image() * 0), "handled",
              check=outputs_finite(1, (16, 16)), sensible="one finite reconstruction")
_predict_case("files_tiff_uint16", "a uint16 TIFF", tiff_file("y.tif", lambda: image(dtype="uint16", scale=65535)),
              "handled", check=outputs_finite(1, (16, 16)), sensible="normalised by 65535: one finite reconstruction")
_predict_case("files_tiff_uppercase_extension", "a .TIF (upper-case extension)",
              tiff_file("Y.TIF", lambda: image((16, 16))), "handled", check=outputs_finite(1, (16, 16)),
              sensible="recognised as TIFF")
_predict_case("files_png_16bit", "a 16-bit grayscale PNG",
              png_file("y.png", lambda: image(dtype="uint16", scale=65535)),
              "handled", check=outputs_finite(1, (16, 16)), sensible="one finite reconstruction")
_predict_case("files_jpeg_gray", "an 8-bit grayscale JPEG", png_file("y.jpg", lambda: image(dtype="uint8", scale=255)),
              "handled", check=outputs_finite(1, (16, 16)), sensible="one finite reconstruction")
_predict_case("files_mrc_valid", "a float32 MRC micrograph", mrc_file("y.mrc", image), "handled",
              check=outputs_finite(1, (16, 16)), sensible="one finite reconstruction")
_predict_case("files_dicom_valid", "a 16-bit MR DICOM slice",
              dicom_file("y.dcm", lambda: image(dtype="uint16", scale=4000)),
              "handled", check=outputs_finite(1, (16, 16)), sensible="one finite reconstruction")

_predict_case("files_tiff_corrupt", "a .tif of random bytes", bytes_file("y.tif", random_bytes(4096)), "clear",
              mentions=("y.tif",))
case("files_tiff_corrupt_process", "files", "a .tif of random bytes, predicted in a real python -m selfinv.cli process",
     bytes_file("y.tif", random_bytes(4096)),
     cli("predict", "--checkpoint", "<ckpt>", "--output", "out", "--input", "<file>", process=True), "clear",
     mentions=("y.tif",))
_predict_case("files_tiff_truncated", "a TIFF cut in half", setups(_valid_tiff(), truncated("ok", 0.5, "y.tif")),
              "clear", mentions=("y.tif",))
_predict_case("files_tiff_empty", "an empty .tif", bytes_file("y.tif", b""), "clear", mentions=("y.tif",))
_predict_case("files_tiff_no_xy", "a TIFF holding a 1-D series", tiff_file("y.tif", lambda: image((5,))), "clear",
              mentions=("y.tif",))
_predict_case("files_png_truncated", "a PNG cut in half",
              setups(png_file("ok.png", lambda: image((64, 64), "uint8", scale=255), key="ok"),
                     truncated("ok", 0.5, "y.png")), "clear", mentions=("y.png",))
_predict_case("files_png_is_text", "a .png holding text", text_file("y.png", "not an image\n"), "clear",
              mentions=("y.png",))
_predict_case("files_rgb_png_into_gray_model", "an RGB PNG into a 1-channel model",
              png_file("rgb.png", lambda: image((16, 16, 3), "uint8", scale=255)), "clear",
              mentions=(("3 channel", "rgb"), ("1 channel", "in_channels=1", "1-channel", "grayscale")))
_predict_case("files_npy_corrupt", "a .npy with a broken header", bytes_file("y.npy", b"\x93NUMPY\x01\x00garbage"),
              "clear", mentions=("y.npy",))
_predict_case("files_npy_truncated", "a .npy cut in half",
              setups(npy_file("ok.npy", lambda: image((64, 64)), key="ok"), truncated("ok", 0.5, "y.npy")),
              "clear", mentions=("y.npy",))
_predict_case("files_npy_object_array", "a pickled object array in a .npy",
              npy_file("y.npy", lambda: __import__("numpy").array([{"a": 1}, None], dtype=object), allow_pickle=True),
              "clear", mentions=("y.npy", "object"))
_predict_case("files_npy_1d", "a 1-D .npy", npy_file("y.npy", lambda: image((16,))), "clear",
              mentions=("y.npy", "(16,)"))
_predict_case("files_npy_5d", "a 5-D .npy", npy_file("y.npy", lambda: image((1, 1, 1, 16, 16))), "clear",
              mentions=("y.npy", "(1, 1, 1, 16, 16)"))
_predict_case("files_npy_complex_coils_into_mri", "a 4-D complex array (slices, coils, H, W) into an MRI model",
              npy_file("k.npy", lambda: _complex((2, 4, 16, 16))),
              "clear", ckpt="<mri_ckpt>", mentions=("coil",))
_predict_case("files_npz_several_arrays", "an .npz holding two arrays (predict has no way to choose)",
              npz_file("y.npz", lambda: {"noisy": image(), "dark": image()}), "clear",
              mentions=("y.npz", "noisy", "dark"))
_predict_case("files_npz_empty", "an .npz holding no array", npz_file("y.npz", lambda: {}), "clear",
              mentions=("y.npz",))
_predict_case("files_npz_corrupt", "an .npz of random bytes", bytes_file("y.npz", random_bytes(2048)), "clear",
              mentions=("y.npz",))
_predict_case("files_h5_corrupt", "an .h5 of random bytes", bytes_file("y.h5", random_bytes(2048)), "clear",
              mentions=("y.h5",))
_predict_case("files_h5_multicoil_kspace", "an fastMRI-like HDF5 with multi-coil k-space",
              h5_file("y.h5", lambda: {"kspace": _complex((2, 4, 16, 16))}),
              "handled", ckpt="<mri_ckpt>", check=outputs_finite(1, (2, 16, 16)),
              sensible="its 4 coils compressed to one virtual coil per slice (with a warning): 2 reconstructions")
_predict_case("files_h5_kspace_into_denoiser", "single-coil k-space (2 channels) into a 1-channel denoiser",
              h5_file("y.h5", lambda: {"kspace": _complex((2, 16, 16))}),
              "clear", mentions=(("2 channel", "channels"),))
_predict_case("files_mrc_corrupt", "an .mrc of random bytes", bytes_file("y.mrc", random_bytes(2048)), "clear",
              mentions=("y.mrc",))
_predict_case("files_fits_valid", "a float32 FITS image", fits_file("y.fits", image), "handled",
              check=outputs_finite(1, (16, 16)), sensible="one finite reconstruction")
_predict_case("files_fits_corrupt", "a .fits of random bytes", bytes_file("y.fits", random_bytes(2880)), "clear",
              mentions=("y.fits",))
_predict_case("files_fits_table_only", "a FITS file holding a table and no image", fits_file("y.fits", None),
              "clear", mentions=("y.fits", "no image"))
_predict_case("files_dicom_corrupt", "a .dcm of random bytes", bytes_file("y.dcm", random_bytes(2048)), "clear",
              mentions=("y.dcm",))
_predict_case("files_dicom_without_pixels", "a DICOM file without pixel data", dicom_file("y.dcm", None), "clear",
              mentions=("y.dcm", "pixel"))
_predict_case("files_input_missing", "an input path that does not exist", lambda ctx, v: {"file": "nope.tif"},
              "clear", mentions=("nope.tif",))
_predict_case("files_folder_empty", "an empty input folder", folder("in"), "clear", input_key="folder",
              mentions=(("empty", "no "),))
_predict_case("files_folder_unsupported_file", "a folder holding a .txt file",
              folder("in", text_file("in/notes.txt", "hello")), "clear", input_key="folder", mentions=("notes.txt",))
_predict_case("files_unsupported_extension", "a .txt input file", text_file("y.txt", "1 2 3\n"), "clear",
              mentions=("y.txt",))
_predict_case("files_folder_mixed_sizes", "a folder of images of different sizes",
              folder("in", npy_file("in/a.npy", image), npy_file("in/b.npy", lambda: image((20, 20)))), "handled",
              input_key="folder", check=outputs_finite(2),
              sensible="each image reconstructed at its own size, one output per input file")


def _simulated(extra_argv: tuple, name: str = "meas.npz", key: str = "file"):
    """A measurement file written by ``selfinv simulate`` from the base config with ``extra_argv``."""

    def setup(ctx, v):
        p = Path(v["dir"]) / name
        o = run_cli_inprocess(["simulate", "--config", v["cfg"], "--output", str(p), "--data.num_patches", "4",
                               *extra_argv])
        if o.exit_code != 0 or not p.exists():
            raise RuntimeError(f"simulate failed: {o.exc_type} {o.exc_msg} {o.stderr[-300:]}")
        return {key: str(p)}

    return setup


_predict_case("files_measurement_file_of_other_physics", "a simulated inpainting file (with masks) into a denoiser",
              _simulated(("--physics.name", "inpainting")), "clear", mentions=("mask", ("denoising", "inpainting")))


def _yaml_case(id, description, text, mentions, encoding="utf-8", extra=()):
    case(id, "files", description, text_file("run.yaml", text, key="yaml", encoding=encoding),
         cli(*safe_run(("fit", "--config", "<yaml>", "--trainer.output_dir", "<out>") + tuple(extra))), "clear",
         mentions=mentions)


_yaml_case("files_yaml_empty", "an empty YAML config", "", ("run.yaml", "empty"))
_yaml_case("files_yaml_list", "a YAML list instead of a mapping", "- data\n- physics\n", ("run.yaml", "mapping"))
_yaml_case("files_yaml_scalar", "a YAML file holding one word", "hello\n", ("run.yaml", "mapping"))
_yaml_case("files_yaml_duplicate_section", "the data section twice",
           "data: {patch_size: 16}\nphysics: {name: denoising}\ndata: {patch_size: 32}\n", ("data", "twice"))
_yaml_case("files_yaml_tab", "a tab in the indentation", "data:\n\tpatch_size: 16\n", ("run.yaml", ("line 2", "tab")))
_yaml_case("files_yaml_non_utf8", "a Latin-1 config (non-UTF-8 bytes)",
           "# réglages d'Hélène\ndata: {patch_size: 16}\n", ("run.yaml", ("utf-8", "utf8", "encoding")),
           encoding="latin-1")
_yaml_case("files_yaml_unknown_section", "a misspelled section", "optimiser: {lr: 0.1}\n", ("optimiser", "optim"))
_yaml_case("files_yaml_python_tag", "a Python object tag in the config",
           "data: !!python/object/apply:os.getcwd []\n", ("run.yaml", ("python", "tag", "plain")))
_yaml_case("files_yaml_section_not_mapping", "a section given as a string", "physics: denoising\n",
           ("physics", "mapping"))
_yaml_case("files_yaml_losses_mapping", "losses given as a mapping, not a list",
           "losses: {name: sure}\n", ("losses", "list"))
_yaml_case("files_yaml_unclosed_bracket", "an unclosed flow mapping", "data: {patch_size: 16\n",
           ("run.yaml", "line"))

case("files_data_path_is_an_image", "files", "data.path: one 16x16 PNG, too small to hold out a validation "
     "region and cut 16x16 training patches", png_file("y.png", lambda: image((16, 16), "uint8", scale=255)),
     cli(*FIT, "--data.path", "<file>"), "clear", mentions=("y.png", ("patch_size", "val_fraction")))
case("files_data_path_truncated", "files", "data.path pointing at a truncated measurement file",
     setups(_simulated((), "full.npz", "full"), truncated("full", 0.5, "meas.npz")),
     cli(*FIT, "--data.path", "<file>"), "clear", mentions=("meas.npz",))
case("files_data_path_without_y", "files", "data.path: an .npz holding one array, not named 'y'",
     npz_file("meas.npz", lambda: {"x": image((4, 1, 16, 16))}),
     cli(*FIT, "--data.path", "<file>"), "handled", check=lambda o, v: _trained(o, v),
     sensible="the user's own images (the only array of the file): trains on them")


def _y_only_npz():
    return npz_file("meas.npz", lambda: {"y": image((8, 1, 16, 16))})


def _trained(o, v):
    ck = Path(v["out"]) / "checkpoints" / "last.ckpt"
    return ck.exists(), ("trained from the measurements alone: last.ckpt written" if ck.exists()
                         else "no last.ckpt written")


case("files_data_path_measurements_only", "files", "data.path: measurements without ground truth (the normal case)",
     _y_only_npz(), cli(*FIT, "--data.path", "<file>", "--data.dataset", "null"), "handled", check=_trained,
     sensible="a self-supervised run needs no clean image: exit 0 and a checkpoint")
case("files_select_by_psnr_without_ground_truth", "files", "select_by val/psnr on measurements without ground truth",
     _y_only_npz(), cli(*FIT, "--data.path", "<file>", "--data.dataset", "null", "--select_by", "val/psnr"),
     "clear", mentions=("val/psnr", "ground truth"))
case("files_supervised_without_ground_truth", "files", "the supervised loss on measurements without ground truth",
     _y_only_npz(), cli(*FIT, "--data.path", "<file>", "--data.dataset", "null", "--losses.0.name", "supervised"),
     "clear", mentions=("supervised", "ground truth"))


# =====================================================================================================
# checkpoints
# =====================================================================================================

def _ckpt_case(id, description, setup, mentions, expected="clear", command="predict", **kw):
    if command == "predict":
        action = cli("predict", "--checkpoint", "<bad_ckpt>", "--output", "<out>", "--input", "<file>")
        setup = setups(npy_file("y.npy", image), setup)
    elif command == "validate":
        action = cli(*VALIDATE, "--checkpoint", "<bad_ckpt>")
    elif command == "resume":
        action = cli(*FIT, "--resume", "<bad_ckpt>", "--trainer.max_steps", "4")
    elif command == "finetune":
        action = cli("finetune", "--checkpoint", "<bad_ckpt>", "--measurement", "<meas>", "--output", "<dir>/x.tif",
                     "--run_dir", "<out>", "--steps", "1", "--batch_size", "1")
        setup = setups(_measurement_png(), setup)
    else:
        raise ValueError(command)
    case(id, "checkpoints", description, setup, action, expected, mentions=mentions, **kw)


def _copy_ckpt(name, fraction=None, key="bad_ckpt"):
    def setup(ctx, v):
        data = Path(v["ckpt"]).read_bytes()
        p = Path(v["dir"]) / name
        p.write_bytes(data if fraction is None else data[: int(len(data) * fraction)])
        return {key: str(p)}

    return setup


def _del(*keys):
    def modify(ck):
        node = ck
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return modify


def _first_weight(ck):
    return next(k for k, t in ck["state_dict"].items() if k.startswith("model.") and t.is_floating_point())


def _drop_weight(ck):
    del ck["state_dict"][_first_weight(ck)]


def _nan_weights(ck):
    t = ck["state_dict"][_first_weight(ck)]
    t.view(-1)[0] = float("nan")


def _other_run_config(ck):
    ck["hyper_parameters"]["config"]["model"]["backbone"]["args"]["base_channels"] = 8


def _invalid_config(ck):
    ck["hyper_parameters"]["config"]["losses"][0]["name"] = "nope"


_ckpt_case("ckpt_missing", "predict with a checkpoint path that does not exist",
           lambda ctx, v: {"bad_ckpt": "nope.ckpt"}, ("nope.ckpt",))
_ckpt_case("ckpt_is_a_directory", "predict with a folder as checkpoint", lambda ctx, v: {"bad_ckpt": v["dir"]},
           (("directory", "folder", "not a file"),))
_ckpt_case("ckpt_empty", "an empty .ckpt file", bytes_file("empty.ckpt", b"", key="bad_ckpt"), ("empty.ckpt",))
_ckpt_case("ckpt_truncated", "a checkpoint cut in half", _copy_ckpt("half.ckpt", 0.5), ("half.ckpt",))
_ckpt_case("ckpt_corrupt", "a .ckpt of random bytes", bytes_file("junk.ckpt", random_bytes(4096), key="bad_ckpt"),
           ("junk.ckpt",))
_ckpt_case("ckpt_is_a_png", "a PNG renamed .ckpt",
           png_file("img.ckpt", lambda: image((16, 16), "uint8", scale=255), key="bad_ckpt", format="PNG"),
           ("img.ckpt",))
_ckpt_case("ckpt_is_a_bare_tensor", "a torch.save'd tensor, not a checkpoint dict",
           ckpt_variant("tensor.ckpt", lambda ck: __import__("torch").zeros(3)), ("tensor.ckpt",))
_ckpt_case("ckpt_is_a_state_dict_only", "a bare state_dict (no config) saved as .ckpt",
           ckpt_variant("sd.ckpt", lambda ck: ck["state_dict"]), ("sd.ckpt", ("config", "hyper_parameters")))
_ckpt_case("ckpt_pickled_object", "a checkpoint holding a pickled Python object",
           ckpt_variant("obj.ckpt", lambda ck: {**ck, "extra": __import__("argparse").Namespace(a=1)}),
           ("obj.ckpt",))
_ckpt_case("ckpt_without_config", "a checkpoint without hyper_parameters",
           ckpt_variant("nocfg.ckpt", _del("hyper_parameters")), ("nocfg.ckpt", ("config", "hyper_parameters")))
_ckpt_case("ckpt_without_state_dict", "a checkpoint without state_dict",
           ckpt_variant("nosd.ckpt", _del("state_dict")), ("nosd.ckpt", ("state_dict", "weights")))
_ckpt_case("ckpt_missing_weight", "a checkpoint with one weight tensor missing",
           ckpt_variant("missing.ckpt", _drop_weight), ("missing.ckpt", "model."))
_ckpt_case("ckpt_config_of_another_run", "a checkpoint whose config (base_channels 8) does not match its weights (4)",
           ckpt_variant("other.ckpt", _other_run_config), ("other.ckpt", ("shape", "size")))
_ckpt_case("ckpt_invalid_stored_config", "a checkpoint whose stored config names an unknown loss",
           ckpt_variant("badcfg.ckpt", _invalid_config), ("badcfg.ckpt", "nope"))
_ckpt_case("ckpt_nonfinite_weights", "a checkpoint with a NaN weight", ckpt_variant("nan.ckpt", _nan_weights),
           ("nan.ckpt", ("nan", "non-finite", "not finite")), invariants=(no_nonfinite_outputs(),))
_ckpt_case("ckpt_validate_corrupt", "validate --checkpoint of random bytes",
           bytes_file("junk.ckpt", random_bytes(4096), key="bad_ckpt"), ("junk.ckpt",), command="validate")
_ckpt_case("ckpt_resume_corrupt", "fit --resume of a truncated checkpoint", _copy_ckpt("half.ckpt", 0.5),
           ("half.ckpt",), command="resume")
_ckpt_case("ckpt_finetune_truncated", "finetune --checkpoint of a truncated checkpoint", _copy_ckpt("half.ckpt", 0.5),
           ("half.ckpt",), command="finetune")
case("ckpt_validate_config_mismatch", "checkpoints", "validate a checkpoint with a config of another network",
     None, cli(*VALIDATE, "--model.backbone.args", "{scales: 2, base_channels: 8, batch_norm: false}",
               "--checkpoint", "<ckpt>"), "clear",
     mentions=(("last.ckpt", "checkpoint"), ("shape", "size", "base_channels")))
case("ckpt_resume_other_loss", "checkpoints", "--resume from a SURE run with the R2R loss (another run)",
     None, cli(*FIT, "--losses.0.name", "r2r", "--resume", "<ckpt>", "--trainer.max_steps", "4"),
     "clear", mentions=("sure", "r2r"))
case("ckpt_resume_other_noise_level", "checkpoints", "--resume from a sigma=0.1 run with sigma=0.2",
     None, cli(*FIT, "--physics.noise.args", "{sigma: 0.2}", "--resume", "<ckpt>", "--trainer.max_steps", "4"),
     "clear", mentions=("sigma", "0.1", "0.2"))
case("ckpt_resume_other_network", "checkpoints", "--resume with a wider network than the checkpoint's",
     None, cli(*FIT, "--model.backbone.args", "{scales: 2, base_channels: 8, batch_norm: false}", "--resume",
               "<ckpt>", "--trainer.max_steps", "4"), "clear", mentions=(("shape", "size", "base_channels"),))
case("ckpt_resume_last_without_checkpoint", "checkpoints", "--resume last in a fresh output folder",
     None, cli(*FIT, "--resume", "last"), "clear", mentions=("last",))
case("ckpt_resume_missing_file", "checkpoints", "--resume of a path that does not exist",
     None, cli(*FIT, "--resume", "nope.ckpt"), "clear", mentions=("nope.ckpt",))


def _metrics_appended(o, v):
    import csv

    path = Path(v["myrun"]) / "logs" / "metrics.csv"
    if not path.exists():
        return False, "metrics.csv missing after the resume"
    with open(path) as f:
        steps = sorted({int(float(r["step"])) for r in csv.DictReader(f) if r.get("step") not in (None, "")})
    before = [s for s in steps if s < 2]
    after = [s for s in steps if s >= 2]
    if not before:
        return False, f"metrics.csv lost the first part of the run (steps logged: {steps})"
    if not after:
        return False, f"metrics.csv has no row of the resumed part (steps logged: {steps})"
    return True, f"metrics.csv holds steps {steps[0]}..{steps[-1]} (first part kept, resumed part appended)"


case("ckpt_metrics_csv_after_resume", "checkpoints", "metrics.csv keeps the first part of the run after --resume",
     copy_run(), cli("fit", "--config", "<cfg>", "--trainer.output_dir", "<myrun>", "--resume", "last",
                     "--trainer.max_steps", "4"),
     "handled", check=_metrics_appended,
     sensible="exit 0 and metrics.csv holds the rows of steps 0-1 (first run) and of steps >= 2 (resumed)")


# =====================================================================================================
# faults
# =====================================================================================================

case("fault_divergence_lr_1000", "faults", "--optim.lr 1000: the loss becomes non-finite",
     None, cli(*FIT, "--optim.lr", "1000", "--trainer.max_steps", "6", "--data.num_patches", "16"),
     "clear", any_nonzero=True, mentions=("step", "sure", ("nan", "non-finite", "inf", "diverge")),
     invariants=(no_nonfinite_checkpoints("out"),))
_predict_case("fault_nan_pixel_in_predict_input", "NaN (blank) pixels in the float image given to predict",
              npy_file("y.npy", lambda: __import__("numpy").where(image() > 0.99, float("nan"), image())), "handled",
              group="faults", check=all_of(warned("blank", "nan"), outputs_keep_blank()),
              sensible="a warning; the reconstruction keeps the blank pixels blank and is finite elsewhere")
_predict_case("fault_inf_pixel_in_predict_input", "a +inf pixel in the image given to predict",
              npy_file("y.npy", lambda: __import__("numpy").where(image() > 0.99, float("inf"), image())), "clear",
              group="faults", any_nonzero=True, mentions=(("inf", "non-finite", "not finite"),),
              invariants=(no_nonfinite_outputs(),))
case("fault_nan_in_training_measurements", "faults", "a NaN in training measurements used whole (an .npz 'y')",
     npz_file("meas.npz", lambda: {"y": __import__("numpy").where(image((8, 1, 16, 16)) > 0.999, float("nan"),
                                                                  image((8, 1, 16, 16)))}),
     cli(*FIT, "--data.path", "<file>", "--data.dataset", "null"), "clear",
     mentions=(("meas.npz", "data.path", "measurement"), ("nan", "non-finite", "not finite")))


def _blank_rows(shape=(64, 64), fill=float("nan")):
    a = image(shape)
    a[:8] = fill  # the edge of a registered or stitched image
    return a


case("fault_blank_pixels_in_training_image", "faults", "NaN (blank) rows in a float training image (data.path)",
     npy_file("img.npy", _blank_rows), cli(*FIT, "--data.path", "<file>", "--data.dataset", "null"), "handled",
     check=warned("blank", "nan"), sensible="a warning; training patches avoid the blank pixels",
     invariants=(no_nonfinite_checkpoints("out", "*.ckpt"),))
case("fault_inf_in_training_image", "faults", "an infinity in a float training image (data.path)",
     npy_file("img.npy", lambda: _blank_rows(fill=float("inf"))),
     cli(*FIT, "--data.path", "<file>", "--data.dataset", "null"), "clear",
     mentions=(("img.npy", "data.path", "measurement"), ("inf", "non-finite", "not finite")))
case("fault_disk_full_torch_save", "faults", "disk full while writing a checkpoint (torch.save raises ENOSPC)",
     None, cli(*FIT, patches=[("torch.save", enospc("torch.save"))]), "clear", any_nonzero=True,
     mentions=(("no space", "disk full", "disk"),), invariants=(no_tmp_files("out"),))
case("fault_disk_full_os_replace", "faults",
     "disk full at the atomic rename of a checkpoint (os.replace raises ENOSPC)",
     None, cli(*FIT, patches=[("os.replace", enospc("os.replace"))]), "clear", any_nonzero=True,
     mentions=(("no space", "disk full", "disk"),), invariants=(no_tmp_files("out"),))
_predict_case("fault_disk_full_writing_reconstruction", "disk full while predict writes its output (np.save)",
              npy_file("y.npy", image), "clear", group="faults", extra=("--format", "npy"), any_nonzero=True,
              patches=[("numpy.save", enospc("numpy.save"))], mentions=(("no space", "disk full", "disk"),))


def _no_file(name: str):
    def inv(o, v):
        p = Path(v["dir"]) / name
        return f"a partial {name} ({p.stat().st_size} bytes) was left behind" if p.exists() else None

    return inv


case("fault_disk_full_simulate", "faults", "disk full while simulate writes its measurement file (np.savez)",
     None, cli(*SIMULATE, "--output", "<dir>/m.npz", "--data.num_patches", "2",
               patches=[("numpy.savez", enospc("numpy.savez"))]), "clear", any_nonzero=True,
     mentions=(("no space", "disk full", "disk"),), invariants=(_no_file("m.npz"),))
case("fault_nan_pixel_in_finetune_measurement", "faults", "a NaN pixel in the measurement given to finetune",
     npy_file("y.npy", lambda: __import__("numpy").where(image() > 0.99, float("nan"), image()), key="meas"),
     cli("finetune", "--checkpoint", "<ckpt>", "--measurement", "<meas>", "--output", "<dir>/x.npy",
         "--run_dir", "<out>", "--steps", "1", "--batch_size", "1"), "clear", any_nonzero=True,
     mentions=(("y.npy", "measurement"), ("nan", "non-finite", "not finite")))


def _truncate_last(ctx, v):
    last = Path(v["myrun"]) / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    return {}


case("fault_truncated_last_ckpt_resume_last", "faults",
     "last.ckpt truncated (copied back from a full disk), then --resume last",
     setups(copy_run(), _truncate_last),
     cli("fit", "--config", "<cfg>", "--trainer.output_dir", "<myrun>", "--resume", "last", "--trainer.max_steps", "4"),
     "clear", mentions=("last.ckpt", ("truncated", "corrupt", "damaged", "incomplete", "cannot be read",
                                      "not a valid", "unreadable")))


def _stray_tmp(ctx, v):
    ck = Path(v["myrun"]) / "checkpoints"
    (ck / ".last.ckpt.k1ll3d.tmp").write_bytes(random_bytes(1000))
    (ck / ".best-0-2.ckpt.x9y8z7.tmp").write_bytes(b"")
    return {}


def _tmp_cleaned(o, v):
    left = sorted(p.name for p in (Path(v["myrun"]) / "checkpoints").glob("*.tmp"))
    if left:
        return False, f"stray temporary checkpoint file(s) still there after the next start: {left}"
    return True, "stray .tmp files from the killed write were removed"


case("fault_kill_during_checkpoint_write", "faults",
     "a run killed while writing a checkpoint left .ckpt.tmp files; the next start (--resume last) must clean them",
     setups(copy_run(), _stray_tmp),
     cli("fit", "--config", "<cfg>", "--trainer.output_dir", "<myrun>", "--resume", "last", "--trainer.max_steps", "4"),
     "handled", check=_tmp_cleaned, sensible="exit 0 and no *.tmp left in checkpoints/")
