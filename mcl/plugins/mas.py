"""mas: Memory Aware Synapses (Aljundi et al. 2018): ewc's penalty with MAS's importance, the
mean absolute gradient of the squared L2 norm of the model's output logits (label-free).

The norm is taken per token over the vocabulary and averaged over the non-padding positions of
the batch, so the importance does not grow with sequence length.
"""

from __future__ import annotations

import torch

from mcl.plugins.ewc import EWCPlugin


class MASPlugin(EWCPlugin):
    name = "mas"

    def importance_loss(self, method, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = method.mllm(**inputs).logits
        mask = batch["attention_mask"].bool()
        return logits.pow(2).sum(-1)[mask].mean()

    def importance_of(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.abs()
