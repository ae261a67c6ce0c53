"""zero_shot: the untouched base model on every task, every row (the floor).

Nothing is injected and nothing trains; the runner still walks the sequence so the results have
the same shape as every other method's (each row equals row 0).
"""

from __future__ import annotations

from mcl.methods.base import ContinualMethod


class ZeroShot(ContinualMethod):
    trains = False
    reference = True  # the lower bound

    def __init__(self, name: str = "zero_shot", **training_options):
        # training options (lr, r, ...) a shared experiment preset may set mean nothing here
        super().__init__(name=name)

    def expected_trainable(self) -> set[str]:
        return set()

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        self.set_trainable()
