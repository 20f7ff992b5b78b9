"""A CSV logger whose ``metrics.csv`` survives a resume.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a
resumed run would lose the curves of everything before the checkpoint.
``RunCSVLogger(..., resume_step=N)`` keeps the rows logged at steps ``<= N`` (the
checkpoint's step: rows after it belong to work the resumed run replays) and
appends to them; without ``resume_step`` it starts a fresh file, like Lightning's.
"""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int):
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if _step(r) <= self._resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


def _step(row: dict) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the run's ``metrics.csv`` when resuming from step ``resume_step``."""

    def __init__(self, save_dir: str, resume_step: int | None = None, **kwargs):
        super().__init__(save_dir, **kwargs)
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            if self._resume_step is None:
                return super().experiment
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self._resume_step)
        return self._experiment
