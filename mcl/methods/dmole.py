"""dmole: Dynamic Mixture of Curriculum LoRA Experts (Ge et al. 2025; docs/methods/dmole.md),
as the official code does it, with the choices the release leaves open as options.

Candidates are the attention linears of the vision tower and the LM (``vision_targets``,
``lm_targets``). At ``on_task_start(t)``, on the adapter-free model (every expert off):

1. **Zero-cost scores**: the LM loss is back-propagated, without an optimizer step, over
   ``round(zc_portion * #batches) + 1`` of task t's training batches (the code's loop runs one
   batch past the portion); a candidate's score is the summed L2 norms of the gradients of its
   *pretrained* weight and bias. (``round`` here and in 2. is the code's ``int(x + 0.5)``,
   halves up -- :func:`round_half_up` -- not Python's ``round``, which takes them to even.)
2. **Allocation** (:func:`mcl.callbacks.allocation.allocate`, shared with any expert-adding
   method): ``round(budget_portion * #units)`` units per task (a unit is a module, or with
   ``granularity=block`` one layer's attention); the vision tower gets
   ``max(floor(vit_min_share * total), round(total * its share of the gradient mass))`` of them
   -- this split *is* the code's inter-modal curriculum -- and each modality takes its
   top-scored units (``allocator=zc``) or a fixed, evenly spaced set (``allocator=fixed``, the
   "no allocator" ablation). ``budget_params`` instead caps the new expert parameters.
   Each chosen module gets one new LoRA expert for task t (r, alpha = 2r); older experts freeze.
3. **Autoencoder**: the frozen sequence representation -- the tower's last hidden state
   max-pooled over tokens, concatenated with the LM body's hidden states over the instruction
   alone, max-pooled over positions (padding included, as in the code), L2-normalised -- of
   ``rep_samples`` training samples fits task t's AE (the code's Linear-ReLU-Linear-Sigmoid,
   Adam 5e-3 cosine to 1e-3, early stop after 10 epochs; ``ae_batch_size`` 64 keeps the code's
   ~10 steps an epoch on a few hundred samples, where 1024 would take one step an epoch, stop
   on the early plateau after ~25 steps and route at chance on the twin); its threshold is the
   ``tau_quantile`` of its own reconstruction errors (no released rule; spec section 1.4).

Routing (:meth:`DMoLE.route`): a sample votes for the task whose AE reconstructs it best among
those whose threshold it passes (none passed: no vote). ``route_granularity=batch`` (default,
the code's ``get_task_ids``): at test the batch takes the most-voted task plus the second if it
has >= ``second_task_share`` of the valid votes; in training only the AEs of earlier tasks
(< t) vote, task t is always on, and the most-voted earlier task joins it if it has that share.
``sample`` is mcl's addition, not the code's: each sample uses its own vote (in training, t
plus the sample's earlier task), so a batch mixing tasks is routed per sample instead of by a
vote that batch homogeneity helps. Nothing voted at test time means no expert: the pretrained
model answers. The selected tasks' experts are summed in every layer holding one.

``curriculum``: ``split`` (the code: the budget split above), ``none`` (the "no curriculum"
ablation: an even split), or ``rescale`` (the paper's wording: an even split, and each step's
update of a modality's new experts scaled by twice its gradient share -- a rescaled *update*,
since Adam undoes a rescaled gradient -- by :class:`mcl.callbacks.curriculum.UpdateRatioCallback`,
which takes the groups and ratios from :meth:`DMoLE.update_groups` / :meth:`DMoLE.update_ratios`).
"""

from __future__ import annotations

import contextlib
import math
import re

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from mcl.adapters.dmole import DMoLELinear, TaskAutoencoder
from mcl.callbacks.allocation import MODALITIES, allocate, round_half_up
from mcl.callbacks.curriculum import UpdateRatioCallback, share_ratios
from mcl.methods.base import ContinualMethod
from mcl.models.mllm import model_inputs


def zc_batches(n_train: int, batch_size: int, portion: float) -> int:
    """Batches the zero-cost proxy scores: the code's ``max_batch_num = int(len(loader) *
    portion + 0.5)``, and its loop runs batches ``0..max_batch_num``, one more."""
    return round_half_up(math.ceil(n_train / batch_size) * portion) + 1


class DMoLE(ContinualMethod):
    image_only = True  # routes by pixel_values: no video/audio/... input modules

    def __init__(
        self,
        name: str = "dmole",
        r: int = 8,
        alpha: float | None = None,
        dropout: float = 0.05,
        vision_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj"),
        lm_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        granularity: str = "module",
        budget_portion: float = 0.5,
        budget_params: int | None = None,
        vit_min_share: float = 0.25,
        allocator: str = "zc",
        curriculum: str = "split",
        zc_portion: float = 0.01,
        rep_samples: int = 500,
        ae_hidden: int = 128,
        ae_output: str = "sigmoid",
        ae_epochs: int = 1000,
        ae_lr: float = 5e-3,
        ae_min_lr: float = 1e-3,
        ae_batch_size: int = 64,
        ae_patience: int = 10,
        tau_quantile: float = 0.95,
        second_task_share: float = 0.3,
        route_granularity: str = "batch",
        text_pool: str = "all",
        sample_seed: int = 0,
        **kw,
    ):
        super().__init__(name=name, **kw)
        for key, value, allowed in (
            ("granularity", granularity, ("module", "block")),
            ("route_granularity", route_granularity, ("sample", "batch")),
            ("allocator", allocator, ("zc", "fixed")),
            ("curriculum", curriculum, ("split", "none", "rescale")),
            ("text_pool", text_pool, ("all", "tokens")),
        ):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
        if not 0 < budget_portion <= 1:
            raise ValueError(f"budget_portion={budget_portion} must be in (0, 1]")
        if not 0 <= vit_min_share <= 1:
            raise ValueError(f"vit_min_share={vit_min_share} must be in [0, 1]")
        self.r, self.alpha, self.dropout = r, alpha if alpha is not None else 2 * r, dropout
        self.targets = {"vision": list(vision_targets), "lm": list(lm_targets)}
        self.granularity, self.budget_portion, self.budget_params = (
            granularity,
            budget_portion,
            budget_params,
        )
        self.vit_min_share, self.allocator, self.curriculum = vit_min_share, allocator, curriculum
        self.zc_portion, self.rep_samples = zc_portion, rep_samples
        self.ae_cfg = dict(
            epochs=ae_epochs,
            lr=ae_lr,
            min_lr=ae_min_lr,
            batch_size=ae_batch_size,
            patience=ae_patience,
            quantile=tau_quantile,
        )
        self.ae_hidden, self.ae_output = ae_hidden, ae_output
        self.second_task_share = second_task_share
        self.route_granularity, self.sample_seed = route_granularity, sample_seed
        self.text_pool = text_pool
        self.n_trained = 0
        self.allocations: dict[int, dict] = {}
        self._routes: list[torch.Tensor] = []
        self._share_v = 0.5

    # ------------------------------------------------------------------ structure
    def setup_model(self, mllm) -> None:
        mllm.require_image_features("dmole")  # routes by the tower's features
        super().setup_model(mllm)
        model = mllm.model
        roots = {m: mllm.part_modules(m)[0] for m in MODALITIES}
        prefixes = {m: next(n for n, x in model.named_modules() if x is roots[m]) for m in roots}
        self.modality: dict[str, str] = {}
        for name, mod in list(model.named_modules()):
            for m in MODALITIES:
                leaf = name.rpartition(".")[2]
                if (
                    isinstance(mod, nn.Linear)
                    and name.startswith(prefixes[m] + ".")
                    and leaf in self.targets[m]
                ):
                    self.modality[name] = m
        if not self.modality:
            raise ValueError("no candidate module matches vision_targets / lm_targets")
        n_units = len({self.unit_of(n) for n in self.modality})
        if self.budget_params is None and round_half_up(self.budget_portion * n_units) < 1:
            raise ValueError(
                f"budget_portion={self.budget_portion} of {n_units} candidate units places no "
                f"expert; raise it to at least {0.5 / n_units:.3g}"
            )
        for name in self.modality:
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent)
            base = getattr(holder, child)
            setattr(holder, child, DMoLELinear(base, self.r, self.alpha, self.dropout))
        self.keep_wrapped_base()
        if self.budget_params is not None:
            cost = self.unit_costs()
            if self.budget_params < min(cost.values()):
                raise ValueError(
                    f"budget_params={self.budget_params} is below the cheapest expert "
                    f"({min(cost.values())} parameters at r={self.r}); raise it or lower r"
                )
        self.aes = nn.ModuleDict()
        cfg = model.config
        self.rep_dim = cfg.vision_config.hidden_size + cfg.text_config.hidden_size

    # reached through the model: a second registration would save every expert twice
    @property
    def vision(self) -> nn.Module:
        return self.mllm.part_modules("vision")[0]

    @property
    def lm_body(self) -> nn.Module:
        return self.mllm.part_modules("lm")[0]

    def layers(self) -> dict[str, DMoLELinear]:
        return {n: self.mllm.model.get_submodule(n) for n in self.modality}

    def unit_of(self, name: str) -> str:
        """The allocation unit of a candidate module (itself, or its attention block)."""
        return name if self.granularity == "module" else name.rpartition(".")[0]

    def unit_costs(self) -> dict[str, int]:
        """Parameters one new expert costs per allocation unit (r x (in + out) per module)."""
        cost: dict[str, int] = {}
        for n, layer in self.layers().items():
            lin = layer.base
            cost[self.unit_of(n)] = cost.get(self.unit_of(n), 0) + self.r * (
                lin.in_features + lin.out_features
            )
        return cost

    def set_masks(self, mask: torch.Tensor | None, active: list[int] | None = None) -> None:
        """Hand every wrapped layer the batch's expert mask (on the model's device) and the
        tasks any sample uses (read once per batch; None: each layer runs all its experts,
        masked). The layers then read nothing from the device."""
        for layer in self.layers().values():
            layer.set_route(mask, active)

    # ------------------------------------------------------------------ zero-cost proxy
    def zc_scores(self, task: int, dm) -> dict[str, float]:
        """Per candidate module: sum over its pretrained weight (and bias) of ||dL/dW||_2,
        gradients accumulated over the task's first batches, experts off, no step taken."""
        n_train = dm.bench.tasks[task]["train"]["samples"]
        size = dm.batch_size
        n_batches = zc_batches(n_train, size, self.zc_portion)
        samples = dm.sample_task(task, n_batches * size, self.sample_seed)
        layers = self.layers()
        params = {
            n: [p for p in (x.base.weight, x.base.bias) if p is not None] for n, x in layers.items()
        }
        self.set_masks(None)
        for ps in params.values():
            for p in ps:
                p.requires_grad_(True)
                p.grad = None
        try:
            with torch.enable_grad():
                for batch in self.device_batches(samples, size):
                    self.mllm(**model_inputs(batch)).loss.backward()
            # every module's score on the device, then one read of them all
            norms = [
                sum((p.grad.norm() for p in ps if p.grad is not None), torch.zeros(()))
                for ps in params.values()
            ]
            dev = next(self.mllm.model.parameters()).device
            values = torch.stack([v.to(dev, torch.float32) for v in norms]).tolist()
            return dict(zip(params, values, strict=True))
        finally:
            for ps in params.values():
                for p in ps:
                    p.requires_grad_(False)
                    p.grad = None

    # ------------------------------------------------------------------ sequence representation
    @torch.no_grad()
    def representation(self, pixel_values: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """[vision max-pool || LM-body max-pool over the instruction], L2-normalised; always from
        the adapter-free model (masks off), so the routing space never drifts."""
        saved = [(layer.mask, layer.active) for layer in self.layers().values()]
        self.set_masks(None)
        try:
            p = next(self.vision.parameters())
            img = self.vision(pixel_values=pixel_values.to(p.device, p.dtype)).last_hidden_state
            tok = self.mllm.tokenizer(list(questions), add_special_tokens=False)["input_ids"]
            width = max(1, max(len(t) for t in tok))
            ids = torch.zeros(len(tok), width, dtype=torch.long)  # pad id 0; built on the host,
            att = torch.zeros_like(ids)  # then one copy to the device
            for i, t in enumerate(tok):
                ids[i, : len(t)] = torch.tensor(t, dtype=torch.long)
                att[i, : len(t)] = 1
            ids, att = ids.to(p.device), att.to(p.device)
            txt = self.lm_body(input_ids=ids, attention_mask=att).last_hidden_state.float()
            if self.text_pool == "tokens":  # padding excluded (the code includes it)
                txt = txt.masked_fill(~att.bool()[..., None], float("-inf"))
            z = torch.cat([img.max(1).values.float(), txt.max(1).values], dim=-1)
            return F.normalize(z, dim=-1)
        finally:
            for layer, (mask, active) in zip(self.layers().values(), saved, strict=True):
                layer.set_route(mask, active)

    def sample_representations(self, samples: list[dict], size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(samples), size):
            chunk = samples[i : i + size]
            pix = self.mllm.collator._images([s["image"] for s in chunk])
            out.append(self.representation(pix, [s["question"] for s in chunk]))
        return torch.cat(out)

    # ------------------------------------------------------------------ routing
    def votes(self, z: torch.Tensor, tasks: list[int]) -> torch.Tensor:
        """Per sample: the task whose AE reconstructs it best among those whose threshold it
        passes, or -1 (no vote). On the autoencoders' device (the model's): nothing is read."""
        if not tasks:
            return torch.full((len(z),), -1, dtype=torch.long, device=z.device)
        errors = torch.stack(
            [self.aes[f"t{t}"].error(z.to(self.aes[f"t{t}"].tau.device)) for t in tasks], 1
        )
        taus = torch.stack([self.aes[f"t{t}"].tau for t in tasks]).to(errors.device)
        errors = errors.masked_fill(errors >= taus, float("inf"))
        best = errors.argmin(1)
        ids = torch.tensor(tasks, device=errors.device)[best]
        return torch.where(torch.isfinite(errors.min(1).values), ids, -1)

    def _batch_choice(self, votes: torch.Tensor, training: bool) -> list[int]:
        """The code's batch vote: at test the most-voted task, plus the second if it has at least
        ``second_task_share`` of the valid votes; in training only the most-voted earlier task,
        and only if it has that share. One read of the votes from the device."""
        votes = votes.cpu()
        valid = votes[votes >= 0]
        if not len(valid):
            return []
        counts = torch.bincount(valid)
        order = counts.argsort(descending=True, stable=True)[: 1 if training else 2].tolist()
        share = {t: float(counts[t]) / len(valid) for t in order if counts[t] > 0}
        return [
            t
            for rank, t in enumerate(order)
            if t in share and ((rank == 0 and not training) or share[t] >= self.second_task_share)
        ]

    def route(self, z: torch.Tensor, training_task: int | None = None) -> torch.Tensor:
        """(B, n_tasks) 0/1 expert mask, on ``z``'s device (the model's). In training
        (``training_task`` = t) AEs < t vote and t is always on; at test the AEs of every
        trained task vote. Also sets ``_last_active``: the tasks any sample uses, read from the
        device once for the batch, for the layers (:meth:`set_masks`)."""
        training = training_task is not None
        width = max(self.n_trained, (training_task or 0) + 1, 1)
        votes = self.votes(z, list(range(training_task if training else self.n_trained)))
        mask = torch.zeros(len(z), width, device=z.device)
        if self.route_granularity == "batch":
            chosen = self._batch_choice(votes, training)
            mask[:, chosen] = 1.0
            active = set(chosen)
        else:  # each sample its own vote (none: a row of zeros), built without a host read
            v = votes.to(z.device)
            valid = (v >= 0).to(mask.dtype)[:, None]
            mask.scatter_(1, v.clamp(min=0)[:, None], valid)
            active = None
        if training:
            mask[:, training_task] = 1.0
        if active is None:  # the batch's one read: which experts any sample uses
            active = {t for t, on in enumerate(mask.any(0).tolist()) if on}
        elif training:
            active.add(training_task)
        self._last_votes = votes
        self._last_active = sorted(active)
        return mask

    # ------------------------------------------------------------------ task boundaries
    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        layers = self.layers()
        if dm is not None and all(f"t{task}" not in lay.experts for lay in layers.values()):
            scores = self.zc_scores(task, dm)
            unit_scores: dict[str, float] = {}
            unit_mod: dict[str, str] = {}
            for n, s in scores.items():
                u = self.unit_of(n)
                unit_scores[u] = unit_scores.get(u, 0.0) + s
                unit_mod[u] = self.modality[n]
            alloc = allocate(
                unit_scores,
                unit_mod,
                self.budget_portion,
                self.vit_min_share,
                self.curriculum,
                self.allocator,
                self.budget_params,
                self.unit_costs(),
            )
            modules = [n for n in self.modality if self.unit_of(n) in set(alloc["units"])]
            for n in modules:
                layers[n].add_expert(task)
            self._share_v = alloc["vision_share"]
            samples = dm.sample_task(task, self.rep_samples, self.sample_seed)
            ae = TaskAutoencoder(self.rep_dim, self.ae_hidden, self.ae_output)
            z = self.sample_representations(samples)
            ae.to(z.device)
            fit = ae.fit(z, seed=self.sample_seed * 1000 + task, **self.ae_cfg)
            self.aes[f"t{task}"] = ae.to(next(self.mllm.model.parameters()).device)
            self.allocations[task] = {
                **alloc,
                "modules": modules,
                "scores": {n: round(s, 6) for n, s in scores.items()},
                "new_params": self.expert_params(task),
                **fit,
            }
        self.set_masks(None)
        self.set_trainable()

    def on_task_end(self, task: int, dm) -> None:
        self.n_trained = max(self.n_trained, task + 1)

    def on_resume(self, finished_task: int) -> None:
        self.n_trained = finished_task + 1

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Recreate the experts and AEs a checkpoint holds (the allocation lives in its keys),
        then load it strictly by name."""
        layers = self.layers()
        for key in state:
            m = re.match(r"mllm\.model\.(.+)\.experts\.t(\d+)\.", key)
            if m and f"t{m[2]}" not in layers[m[1]].experts:
                layers[m[1]].add_expert(int(m[2]))
            m = re.match(r"aes\.t(\d+)\.", key)
            if m and f"t{m[1]}" not in self.aes:
                dev = next(self.mllm.model.parameters()).device
                self.aes[f"t{m[1]}"] = TaskAutoencoder(
                    self.rep_dim, self.ae_hidden, self.ae_output
                ).to(dev)
        super().load_adapter_state(state)

    def expert_params(self, task: int) -> int:
        return sum(p.numel() for lay in self.layers().values() for p in lay.expert_params(task))

    def expected_trainable(self) -> set[str]:
        own: set[str] = set()
        if self.current_task is not None:
            t = self.current_task
            ids = {id(p) for lay in self.layers().values() for p in lay.expert_params(t)}
            own = {n for n, p in self.named_parameters() if id(p) in ids}
        return super().expected_trainable() | own

    # ------------------------------------------------------------------ training / test
    def training_step(self, batch: dict, batch_idx: int):
        self.set_masks(None)
        if "input_ids" in batch:
            z = self.representation(batch["pixel_values"], batch["questions"])
            mask = self.route(z, training_task=self.current_task)
            self.set_masks(mask, self._last_active)
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # cleared after the backward, not when the forward returns: a layer under gradient
        # checkpointing runs its forward again in the backward and must route the same way
        self.set_masks(None)

    @contextlib.contextmanager
    def eval_context(self, batch: dict):
        z = self.representation(batch["pixel_values"], batch["questions"])
        mask = self.route(z)
        votes = self._last_votes
        if self.route_granularity == "batch":  # the batch's primary task, for every sample
            chosen = self._batch_choice(votes, training=False)
            votes = torch.full_like(votes, chosen[0] if chosen else -1)
        self._routes.append(votes)  # on the device: read once, in eval_metrics
        self.set_masks(mask, self._last_active)
        try:
            yield
        finally:
            self.set_masks(None)

    def update_groups(self) -> dict[str, list[nn.Parameter]]:
        """The current task's experts by modality, for :class:`UpdateRatioCallback` under
        ``curriculum=rescale`` (none outside a task)."""
        if self.current_task is None:
            return {}
        groups: dict[str, list[nn.Parameter]] = {m: [] for m in MODALITIES}
        for n, lay in self.layers().items():
            groups[self.modality[n]].extend(lay.expert_params(self.current_task))
        return groups

    def update_ratios(self) -> dict[str, float]:
        """Each modality's update scale: twice its gradient share (so the two average 1)."""
        return share_ratios({"vision": self._share_v, "lm": 1 - self._share_v})

    def callbacks(self) -> list[L.Callback]:
        return [UpdateRatioCallback(self)] if self.curriculum == "rescale" else []

    def eval_metrics(self, task: int | None) -> dict[str, float]:
        routes = torch.cat([r.cpu() for r in self._routes] or [torch.zeros(0, dtype=torch.long)])
        self._routes = []
        if not len(routes) or self.n_trained == 0:
            return {}
        out = {"no_expert_pct": 100.0 * float((routes < 0).float().mean())}
        if task is not None:
            out["task_id_acc"] = 100.0 * float((routes == task).float().mean())
        return out

    def task_info(self, task: int) -> dict:
        a = self.allocations.get(task, {})
        stored = sum(self.expert_params(t) for t in range(task + 1))
        info = {k: a[k] for k in ("n_vision", "n_lm", "vision_share", "ae_epochs", "tau") if k in a}
        info |= {
            "new_params": a.get("new_params"),
            "stored_params": stored,
            "budget_units": round_half_up(
                self.budget_portion * len({self.unit_of(n) for n in self.modality})
            )
            if self.budget_params is None
            else None,
            "budget_params": self.budget_params,
            "route_granularity": self.route_granularity,
            "modules": a.get("modules"),
        }
        return info
