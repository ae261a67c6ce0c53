"""FSDP on CPU (gloo), for checking the sharded path without a GPU (``hardware=fsdp_cpu``).

Lightning's ``FSDPStrategy`` cannot do this as shipped:

- ``_AcceleratorConnector._check_strategy_and_fallback`` refuses ``strategy="fsdp"`` or an
  instance whose type *is* ``FSDPStrategy`` unless the accelerator is ``cuda``/``gpu``. A subclass
  is not caught by that check, and torch's FSDP itself runs on CPU with gloo.
- ``FSDPStrategy`` always launches ranks with the subprocess launcher (it reruns ``sys.argv``), so
  it cannot run from inside pytest or a notebook. Here the ranks are forked, as with ``ddp_fork``.
- torch's FSDP raises "FSDP needs a non-CPU accelerator device" unless it is given
  ``device_id=torch.device("cpu")``; Lightning passes ``root_device.index``, which is ``None`` on
  CPU. Here the CPU device itself is passed.
- The fork launcher sends rank 0's ``lightning_module.state_dict()`` back to the main process;
  under FSDP (``use_orig_params``) that holds the rank's flat *shards*, which do not load into the
  unwrapped module. Here it sends the full, unsharded state dict (FSDP's full-state-dict context,
  a collective every rank joins).
- Lightning's full-state-dict context sets ``offload_to_cpu=True`` with several ranks. On a CPU
  device FSDP's ``FlatParamHandle.to_cpu()`` then "moves" the unsharded flat parameter to the CPU
  (a no-op: the same storage) and frees that storage, so cloning the parameters for the state dict
  reads freed memory (a segfault in ``_full_post_state_dict_hook``). On CPU this gathers without
  the offload.
- With ranks that outlive ``fit`` (``start_method: popen``, as on GPUs), the LightningModule's
  parameters are left as views into each rank's *shard* after ``fit`` (``use_orig_params``), so
  evaluation and task-boundary work outside the step would see shards (the runner's rank sync then
  fails: "the ranks built different method state"). ``teardown`` here puts the full parameters
  back into the plain module on every rank and drops FSDP's marks, so the next task's Trainer can
  wrap it again.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import (
    _MultiProcessingLauncher,
    _WorkerOutput,
)
from lightning.pytorch.trainer.states import TrainerFn


class _FullStateLauncher(_MultiProcessingLauncher):
    """Forked ranks; rank 0 returns the full (gathered) state dict, not its shards."""

    def _collect_rank_zero_results(self, trainer, results: Any) -> _WorkerOutput | None:
        state_dict = self._strategy.lightning_module_state_dict()  # collective: every rank
        if self._strategy.local_rank != 0:
            return None
        weights_path = None
        if trainer.state.fn == TrainerFn.FITTING:
            weights_path = os.path.join(tempfile.mkdtemp(), ".temp.ckpt")
            self._strategy.checkpoint_io.save_checkpoint(state_dict, weights_path)
        extra = self.get_extra_results(trainer)
        return _WorkerOutput(None, weights_path, trainer.state, results, extra)


class FSDPCPUStrategy(FSDPStrategy):
    """``FSDPStrategy`` that runs on CPU. ``start_method``: ``fork`` (default; forked ranks train
    and hand the full trained weights back to the main process, as with ``ddp_fork``) or ``popen``
    (Lightning's own launcher: every rank reruns the command and lives on, as on GPUs)."""

    strategy_name = "fsdp_cpu"

    def __init__(self, *args, start_method: str = "fork", **kwargs):
        super().__init__(*args, **kwargs)
        self._start_method = start_method

    def _configure_launcher(self) -> None:
        if self._start_method == "popen":  # Lightning's own: every rank reruns the command
            return super()._configure_launcher()
        self._launcher = _FullStateLauncher(self, start_method=self._start_method)

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,  # torch.device("cpu"): FSDP accepts it, not None
            **self.kwargs,
        )
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if self.root_device.type != "cpu" or self._state_dict_type != "full":
            return super().lightning_module_state_dict()
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
        with FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT, config):
            return self.model.state_dict()

    def on_train_end(self) -> None:
        super().on_train_end()
        self._trained = True  # every rank got here: the collective below cannot hang on one

    def teardown(self) -> None:
        if self._start_method == "popen" and getattr(self, "_trained", False):
            self._unshard_into_module()
        super().teardown()

    def _unshard_into_module(self) -> None:
        """Every rank: the LightningModule's parameters become full, plain tensors again."""
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if not any(isinstance(m, FSDP) for m in self.model.modules()):
            return
        params = dict(self.lightning_module.named_parameters())
        with FSDP.summon_full_params(self.model, writeback=False, rank0_only=False):
            full = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.data = full[n]
            p.grad = None
            if hasattr(p, "_fsdp_flattened"):
                delattr(p, "_fsdp_flattened")
