"""DeepSpeed ZeRO on CPU (gloo), for checking the DeepSpeed path without a GPU.

Needs ``pip install -e ".[deepspeed]"``; DeepSpeed then picks its CPU accelerator by itself
(no GPU found) and builds its small shared-memory op with gcc on first use (cached afterwards).
Lightning's ``DeepSpeedStrategy`` cannot do this as shipped, for three reasons. This subclass
removes each one and changes nothing else:

- ``setup_environment`` raises "The DeepSpeed strategy is only supported on CUDA GPUs" for any
  accelerator other than ``CUDAAccelerator``.
- ``setup_distributed`` calls ``_validate_device_index_selection``, which requires each device's
  index to equal the rank's local rank; CPU devices have no index ("The selected device indices
  [None, None] don't match the local rank values of processes").
- ``_setup_model_and_optimizer`` passes ``device_rank=root_device.index`` (``None`` on CPU) to
  ``deepspeed.initialize``, whose ``DeepSpeedEngine._set_distributed_vars`` then fails on
  ``None >= 0`` (TypeError).

``start_method`` picks the launcher: ``fork`` (default; forked ranks train, the weights come back to
the main process, as with ``ddp_fork``) or ``popen`` (Lightning's own: every rank reruns the
command, as on GPUs). ZeRO-2 keeps the weights replicated, so the returned state dict is full.
"""

from __future__ import annotations

import argparse

from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher


class DeepSpeedCPUStrategy(DeepSpeedStrategy):
    strategy_name = "deepspeed_cpu"

    def __init__(self, *args, start_method: str = "fork", **kwargs):
        super().__init__(*args, **kwargs)
        self._start_method = start_method

    def _configure_launcher(self) -> None:
        if self._start_method == "popen":
            return super()._configure_launcher()
        self._launcher = _MultiProcessingLauncher(self, start_method=self._start_method)

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # DeepSpeedStrategy's, minus the CUDA-only check

    def setup_distributed(self) -> None:
        reset_seed()  # DeepSpeedStrategy's, minus the device-index check CPU devices fail
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),  # not root_device.index (None)
            config=self.config,
            model=model,
            model_parameters=filter(lambda p: p.requires_grad, model.parameters()),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer
