"""replay: a small buffer of every earlier task, mixed into later tasks' training data.

At task t the DataModule trains on all of task t and on ``share`` (default 1%, as in the EProj
codebase) of each earlier task's training set, drawn once with ``buffer_seed`` (the same samples
for every later task). The mixture is a concatenation, so a buffer's weight in a batch is its size
relative to the current task's. It takes the training mixture: a method that sets its own
(``joint``) or a second rehearsal plugin is refused.
"""

from __future__ import annotations

from mcl.data.datamodule import Share
from mcl.plugins.base import Plugin


class ReplayPlugin(Plugin):
    name = "replay"
    writes = frozenset({"train_mixture"})

    def __init__(self, share: float = 0.01, buffer_seed: int = 0):
        super().__init__()
        if not 0 < share <= 1:
            raise ValueError(f"replay share must be in (0, 1], got {share} (1% is share=0.01)")
        self.share, self.buffer_seed = share, buffer_seed

    def adapt_train_data(self, method, task: int, bench) -> dict[int, Share] | None:
        if task == 0:
            return None
        mix = {j: Share(self.share, self.buffer_seed) for j in range(task)}
        mix[task] = Share(1.0)
        return mix
