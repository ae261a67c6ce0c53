"""Lightning's CSV logger, safe when several processes append to one ``metrics.csv``.

With ``hardware=ddp_cpu`` each task's training runs in forked ranks: rank 0's logger copy writes
the training keys, the main process (which never saw them) writes the evaluation keys, and
Lightning's writer, trusting its in-memory key list, fails to rewrite the header ("dict contains
fields not in fieldnames"). This writer reads the file's header before each save.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _HeaderAwareWriter(ExperimentWriter):
    def save(self) -> None:
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            # Lightning keeps the keys sorted; the file's header was written that way too
            self.metrics_keys = sorted(set(self.metrics_keys) | set(header))
        super().save()


class CSVLogger(_CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HeaderAwareWriter(log_dir=self.log_dir)
        return self._experiment
