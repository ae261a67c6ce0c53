"""Plugin: one regulariser or rehearsal rule, attachable to any trainable method.

The method calls every hook *after* its own hook of the same moment has returned (the whole
subclass chain: a method that adds parameters at task start has added them), in list order:

- ``check_model(method, mllm)``        before ``setup_model`` touches the model: refuse one the
                                       plugin cannot use (ValueError, one line).
- ``setup(method)``                    after ``setup_model``: register the plugin's tensors.
- ``before_task(method, task, dm)``    after ``on_task_start`` (the task's trainable set is
                                       final, the optimizer not built yet): snapshots.
- ``after_task(method, task, dm)``     after ``on_task_end``: importance, statistics.
- ``loss_terms(method, batch, out)``   named terms added to each training step's loss; the
                                       method sums them and logs each (``train/<plugin>/<term>``).
- ``adapt_train_data(method, task, bench)``  the task's training mixture (``{task: weight or
                                       Share}``), or None to leave it alone.
- ``task_info(method, task)``          what to record after a task (merged into the method's).

State: a plugin is an ``nn.Module`` held by the method (``method.plugins[name]``), so the
tensors it registers (buffers, in ``setup``) are part of the method's task checkpoints and of
every resume, through the ordinary ``state_dict``/``load_state_dict``. Plain attributes are not
saved: rebuild them in ``before_task``.

``writes`` names the exclusive slots a plugin takes (``train_mixture``): two writers of one slot,
or a plugin taking a slot its method fills itself, are refused when the method is built.
"""

from __future__ import annotations

import torch
from torch import nn

#: slots only one party may fill: the method (by overriding the hook) or one plugin
EXCLUSIVE = {"train_mixture": "the training mixture"}


class Plugin(nn.Module):
    #: the key under ``method.plugins`` and in logged names; unique per method
    name: str = "plugin"
    #: exclusive slots this plugin fills (keys of ``EXCLUSIVE``)
    writes: frozenset[str] = frozenset()

    def check_model(self, method, mllm) -> None:
        """Raise ValueError (one line) for a model this plugin cannot work with."""

    def setup(self, method) -> None:
        """Register tensors (buffers) sized from the method's modules."""

    def before_task(self, method, task: int, dm) -> None:
        """Task ``task`` is about to train; the method's trainable set is final."""

    def after_task(self, method, task: int, dm) -> None:
        """Task ``task`` finished training (the model as trained)."""

    def loss_terms(self, method, batch: dict, out) -> dict[str, torch.Tensor]:
        """Terms added to this training step's loss, by name (empty: none)."""
        return {}

    def adapt_train_data(self, method, task: int, bench) -> dict | None:
        """The mixture to train task ``task`` on (``{task index: weight or Share}``), or None."""
        return None

    def task_info(self, method, task: int) -> dict:
        """Numbers or lists to record after task ``task`` (``results.json`` ``method_info``)."""
        return {}

    def extra_repr(self) -> str:
        return self.name
