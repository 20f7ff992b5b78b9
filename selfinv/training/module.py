"""The Lightning module: a reconstructor trained by a weighted sum of (self-supervised) losses.

``training_step`` builds the batch's operator ``physics.with_params(**batch["params"])``
and minimises ``sum_k w_k L_k(y, A, f)`` (``selfinv.losses.base.WeightedSum``); the
ground truth is passed to the loss only when a term needs it (the supervised
ceiling). ``validation_step`` computes the loss's validation criterion
``loss.validation_loss`` (the loss itself unless the loss declares a criterion
comparable across training, ``selfinv.losses.base``) on held-out
**measurements** — the self-supervised criterion driving checkpoint selection
and early stopping — and logs PSNR/SSIM of the test-time estimator
``loss.estimator(model)`` beside it when ground truth is known.

Random draws of the losses use ``self.generator`` seeded from ``(seed, global
rank)``; validation uses a generator re-seeded at each validation, so the
selection criterion is comparable from one epoch to the next. Generator,
torch/CUDA/numpy/python RNG states are saved in checkpoints as tensors and
plain types (loadable with ``weights_only=True``).

Divergence (``selfinv.training.divergence``): every step records, on the device and
without a host sync, whether the loss and each term are finite and the loss has not
exploded; the record is read every ``check_every`` steps (the logging interval) and
before every validation and checkpoint, together with the finiteness of the network's
weights (a non-finite gradient makes them non-finite at the optimiser step: checked
there rather than at every step, where the norms of every gradient cost ~0.5 ms on a
CPU). Divergence stops training with ``TrainingDiverged`` naming the first bad step and
term, so no diverged weights are ever checkpointed.
"""

from __future__ import annotations

import math
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn

from selfinv.losses.base import WeightedSum, set_input_checks
from selfinv.physics.base import Physics
from selfinv.training.divergence import DivergenceMonitor
from selfinv.training.metrics import psnr, ssim
from selfinv.training.optimizers import adam
from selfinv.training.schedules import warmup_cosine

_RNG_KEY = "selfinv_rng"


class SelfSupervisedModule(pl.LightningModule):
    """Holds ``model(y, physics)``, the physics, the loss sum and the optimiser settings.

    Args:
        model: reconstructor called as ``model(y, physics)``.
        physics: the measurement operator (per-sample parameters come from the batch).
        loss: a ``WeightedSum`` of losses (submodules, so their buffers are checkpointed).
        lr, weight_decay: Adam settings.
        scheduler: ``"none"``, ``"cosine"`` (over ``max_steps``) or ``"step"``.
        seed: seed of the loss generator (offset by the global rank).
        config: the plain-dict run config, stored as hyper-parameters.
    """

    def __init__(self, model: nn.Module, physics: Physics, loss: WeightedSum, lr: float = 1e-3,
                 weight_decay: float = 0.0, scheduler: str = "none", step_size: int = 1000,
                 gamma: float = 0.5, seed: int = 0, config: dict | None = None, check_every: int = 10,
                 normalization: dict | None = None, warmup: float = 0.03):
        super().__init__()
        self.model, self.physics, self.loss = model, physics, loss
        self.lr, self.weight_decay, self.scheduler = lr, weight_decay, scheduler
        self.step_size, self.gamma, self.seed, self.warmup = step_size, gamma, seed, warmup
        self.check_every = max(1, int(check_every))
        self.save_hyperparameters({"config": config or {}, "normalization": normalization or {}})
        self._resized: dict[tuple[int, ...], Physics] = {}
        self._generator: torch.Generator | None = None
        self._pending_generator_state: Tensor | None = None
        self._val_generator: torch.Generator | None = None
        self.divergence = DivergenceMonitor()
        set_input_checks(loss, False)  # the engine checks the measurements once, when they are loaded

    # -- generators ----------------------------------------------------------------------
    def _rank(self) -> int:
        return int(self.global_rank) if self._trainer is not None else 0

    @property
    def generator(self) -> torch.Generator:
        """The generator of the losses' random draws on the module's device (created lazily)."""
        dev = self.device
        if self._generator is None or torch.device(self._generator.device).type != dev.type:
            g = torch.Generator(device=dev)
            g.manual_seed(self.seed * 1_000_003 + self._rank())
            if self._pending_generator_state is not None:
                g.set_state(self._pending_generator_state)
                self._pending_generator_state = None
            self._generator = g
        return self._generator

    # -- steps ---------------------------------------------------------------------------
    def operator_for(self, batch: dict) -> Physics:
        """The batch's operator: the physics for the batch's measurement shape, with its parameters."""
        shape = tuple(batch["y"].shape[1:])
        physics = self._resized.get(shape)
        if physics is None:
            physics = self._resized[shape] = self.physics.for_measurement(shape)
        params = batch.get("params", {})
        return physics.with_params(**params) if params else physics

    def _loss(self, batch: dict, generator: torch.Generator, validation: bool = False) -> Tensor:
        y, phys = batch["y"], self.operator_for(batch)
        x = batch.get("x") if self.loss.needs_ground_truth else None
        if self.loss.needs_ground_truth and x is None:
            raise ValueError("a supervised loss term needs ground truth 'x' in the batch, but the data has none")
        # extra batch entries the loss declares (e.g. Noise2Noise's second copy ``y2``)
        extra = {k: batch.get(k) for k in self.loss.batch_keys}
        fn = self.loss.validation_loss if validation else self.loss
        return fn(y, phys, self.model, x=x, generator=generator, **extra)

    def forward(self, y: Tensor, physics: Physics | None = None, generator: torch.Generator | None = None
                ) -> Tensor:
        """The test-time reconstruction ``loss.estimator(model)(y, physics, generator)``."""
        return self.loss.estimator(self.model)(y, physics if physics is not None else self.physics, generator)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        value = self._loss(batch, self.generator)
        if self._logs_this_step():
            bs = batch["y"].shape[0]
            self.log("train/loss", value, prog_bar=True, batch_size=bs)
            for name, term in self.loss.last_terms.items():
                self.log(f"train/{name}", term, batch_size=bs)
        self.divergence.record(int(self.global_step), [value.detach(), *self.loss.last_terms.values()])
        return value

    def _logs_this_step(self) -> bool:
        """Whether the loggers write this training step (every ``log_every_n_steps``, as Lightning's own
        monitors ask): ``self.log`` costs ~0.4 ms a call on a CPU, 4 % of a small network's step, and a value
        logged at the other steps is never written (the progress bar refreshes at the same interval)."""
        trainer = self._trainer
        if trainer is None:
            return True
        # Lightning's own flag (LearningRateMonitor reads it too); a Lightning without it: log every step
        writes = getattr(getattr(trainer, "_logger_connector", None), "should_update_logs", True)
        return bool(writes or trainer.fast_dev_run)

    # -- divergence ------------------------------------------------------------------------
    def _value_names(self) -> list[str]:
        return ["loss", *(f"loss term '{n}'" for n in self.loss.last_terms),
                "network weights (a non-finite gradient reached them)"]

    def check_finite(self) -> None:
        """Raise ``TrainingDiverged`` if the run diverged since the start (one host sync)."""
        weights = [p.detach() for p in self.parameters()]
        self.divergence.record_weights(int(self.global_step), list(torch._foreach_norm(weights)) if weights else [])
        self.divergence.check(self._value_names(), f"Lower optim.lr (now {self.lr:g}), check the data and the "
                                                   f"noise settings, or use a gentler loss setting.")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (self.global_step % self.check_every) == 0:
            self.check_finite()

    def on_validation_start(self) -> None:
        self.check_finite()

    def configure_model(self) -> None:
        # convolutions are faster on NHWC tensors on CPU (oneDNN) and GPU (tensor cores); the backbones
        # give their input the layout of their weights (selfinv.models.dtype). Done here, before the
        # strategy wraps the model: DDP's gradient buckets are views laid out like the parameters at
        # wrapping time, and a later layout change leaves the all-reduced gradients unused.
        self.model.to(memory_format=torch.channels_last)

    def on_train_epoch_end(self) -> None:
        self.check_finite()

    def on_validation_epoch_start(self) -> None:
        self._val_generator = torch.Generator(device=self.device)
        self._val_generator.manual_seed(self.seed * 1_000_003 + 500_009 + self._rank())

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        bs = batch["y"].shape[0]
        if self._val_generator is None:
            self.on_validation_epoch_start()
        value = self._loss(batch, self._val_generator, validation=True)
        self.log("val/loss", value, prog_bar=True, batch_size=bs, sync_dist=True)
        for name, term in self.loss.last_terms.items():
            self.log(f"val/{name}", term, batch_size=bs, sync_dist=True)
        x = batch.get("x")
        if x is not None:
            with torch.no_grad():
                phys = self.operator_for(batch)
                x_hat = self(batch["y"], phys, self._val_generator).float()
                x0 = phys.A_dagger(batch["y"]).float()
            self.log("val/psnr", psnr(x_hat, x.float()).mean(), prog_bar=True, batch_size=bs, sync_dist=True)
            self.log("val/psnr_dagger", psnr(x0, x.float()).mean(), batch_size=bs, sync_dist=True)
            if min(x.shape[-2:]) >= 11:
                self.log("val/ssim", ssim(x_hat, x.float()).mean(), batch_size=bs, sync_dist=True)

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler == "none":
            return opt
        if self.scheduler == "warmup_cosine":
            total, seconds, elapsed = self._budget()
            sched = warmup_cosine(opt, total, self.warmup, seconds, elapsed)
        elif self.scheduler == "cosine":
            total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1000
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(total)))
        elif self.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=self.gamma)
        else:
            raise ValueError(f"optim.scheduler must be 'none', 'warmup_cosine', 'cosine' or 'step', got "
                             f"{self.scheduler!r}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _budget(self) -> tuple[int, float | None, Any]:
        """``(steps, seconds, elapsed)`` of the run: its step budget, its wall-clock budget (None) and the
        trainer's training-time clock (which a resume restores)."""
        if self._trainer is None:
            return 1000, None, None
        trainer = self.trainer
        total = int(trainer.estimated_stepping_batches) if math.isfinite(trainer.estimated_stepping_batches) \
            else 1000
        from lightning.pytorch.callbacks import Timer

        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None or timer._duration is None:
            return total, None, None
        return total, float(timer._duration), lambda: timer.time_elapsed("train")

    # -- RNG state in checkpoints --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        np_state = np.random.get_state()
        py_state = random.getstate()
        state = {
            "loss_generator": self.generator.get_state().cpu(),
            "torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "python": {"version": py_state[0], "state": list(py_state[1]),
                       "gauss": py_state[2]},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
        checkpoint[_RNG_KEY] = state
        self._mark_unfinished_epoch(checkpoint)

    def _mark_unfinished_epoch(self, checkpoint: dict) -> None:
        """A checkpoint written when ``max_steps``/``max_time`` stops training inside an epoch: Lightning
        has already counted that epoch as completed, so a resume would start the next one and lose the
        rest of this one. Record it as started but not completed; with the data module's position the
        resume then continues with the next batch of the same epoch."""
        if self._trainer is None:
            return
        trainer = self.trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        total = trainer.num_training_batches
        if not (isinstance(total, int) and 0 < done < total):
            return
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress")
        if not progress:
            return
        for part in ("total", "current"):
            p = progress[part]
            if p["completed"] == p["started"] and p["started"] > 0:
                p["completed"] = p["processed"] = p["started"] - 1
        checkpoint["epoch"] = progress["current"]["completed"]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(_RNG_KEY)
        if state is None:
            return
        self._pending_generator_state = state["loss_generator"]
        self._generator = None
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
