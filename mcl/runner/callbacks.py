"""The Lightning callbacks the runner adds to every task's fit (beside the method's own and the
mid-task checkpoint)."""

from __future__ import annotations

import lightning as L


class WhereTrained(L.Callback):
    """Records the device the task's training steps ran on (``runner.ran_on``)."""

    def __init__(self, runner):
        self.runner = runner

    def on_train_start(self, trainer, pl_module) -> None:
        self.runner.ran_on("train")


class BadShareAtFitEnd(L.Callback):
    """Stops the run when, at the end of a task's fit, more than ``data.max_bad_share`` of the
    task's training samples were unreadable. The training loader counts the distinct bad
    samples and checks the share itself once 100 samples (or the whole task) were drawn; a
    fit shorter than that is checked only here."""

    def __init__(self, dm):
        self.dm = dm

    def on_train_end(self, trainer, pl_module) -> None:
        self.dm.check_bad_share(self.dm.bench.task_names[self.dm.task], "train")
