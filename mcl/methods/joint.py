"""joint: the multi-task upper bound. One LoRA (as seq_lora) trained, at task t, on tasks 1..t
mixed (whole training sets, so weights follow their sizes): after the last task it has seen
every task together.

This is the cumulative form of joint training, so every row of the accuracy matrix is a
multi-task model of the tasks so far; ``cumulative: false`` instead trains on *all* tasks from
the first step (the classic single-stage upper bound; its FWT column is then meaningless).
"""

from __future__ import annotations

from mcl.methods.seq_lora import SeqLoRA


class Joint(SeqLoRA):
    reference = True  # the upper bound

    def __init__(self, name: str = "joint", cumulative: bool = True, **kw):
        super().__init__(name=name, **kw)
        self.cumulative = cumulative

    def train_mixture(self, task: int, bench) -> dict[int, float]:
        last = task if self.cumulative else len(bench.tasks) - 1
        return {j: 1.0 for j in range(last + 1)}
