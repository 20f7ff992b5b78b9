"""End-of-fit figures: a reconstruction grid and the loss curves, written in the run folder."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from selfinv import report


class FiguresCallback(pl.Callback):
    """At the end of ``fit``, write ``reconstruction.png`` (measurement, A†y, reconstruction,
    ground truth when known) on the first validation batch and ``loss_curves.png`` from
    the CSV log, into ``out_dir``."""

    def __init__(self, out_dir: str, max_rows: int = 3):
        super().__init__()
        self.out_dir, self.max_rows = out_dir, max_rows
        self.written: list[str] = []

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is not None:
            batch = next(iter(loader))
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            was_training = pl_module.training
            pl_module.eval()
            with torch.no_grad():
                phys = pl_module.operator_for(batch)
                x_hat = pl_module(batch["y"], phys)
                x0 = phys.A_dagger(batch["y"])
            pl_module.train(was_training)
            self.written.append(report.reconstruction_figure(
                os.path.join(self.out_dir, "reconstruction.png"), batch["y"], x0, x_hat, batch.get("x"),
                self.max_rows))
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.CSVLogger):
                logger.save()
                csv_path = os.path.join(logger.log_dir, "metrics.csv")
                if os.path.exists(csv_path):
                    self.written.append(report.loss_curves_figure(
                        os.path.join(self.out_dir, "loss_curves.png"), csv_path))
                break


class FinalCheckpoint(pl.Callback):
    """Rewrite ``last.ckpt`` when training ends, so a run stopped by ``max_steps`` or ``max_time``
    in the middle of an epoch still leaves its final weights (called on every rank)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state, not only the weights
