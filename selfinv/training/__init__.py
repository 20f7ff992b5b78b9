"""selfinv.training: the Lightning engine (module, data module, atomic checkpoints, figures, metrics)."""

from selfinv.training.checkpoint import AtomicCheckpointIO, atomic_save, load_checkpoint
from selfinv.training.datamodule import EpochSeededSampler, MeasurementDataModule, split_measurements
from selfinv.training.metrics import psnr, ssim
from selfinv.training.module import SelfSupervisedModule

__all__ = ["AtomicCheckpointIO", "atomic_save", "load_checkpoint", "EpochSeededSampler",
           "MeasurementDataModule", "split_measurements", "psnr", "ssim", "SelfSupervisedModule"]
