"""PathWeave (Yu et al., NeurIPS 2024): modality-incremental learning with Adapter-in-Adapter.

Documented in ``docs/methods/pathweave.md``. A vision LLM (frozen) learns one new modality per
stage.

- **Sites** (module-name patterns, ``re.fullmatch``): the connector's linears and the LM's
  attention projections by default (PathWeave's X-InstructBLIP sites are its Q-Former's
  attention linears and its LLM projection; LLaVA's connector is the MLP projector). At
  ``sum_sites`` the path's experts are summed with no gate (PathWeave's LLM projection).
- **Stage m** (a task whose modality is not a ``base_modalities`` one) adds path m at every
  site (:class:`~mcl.adapters.ana.AnALinear`): A^m, an in-adapter F_i^m per earlier modality i,
  and from the second new modality on a dense noisy gate G^m. It trains path m and the
  modality's input module (``mllm.xmodal``); everything else is frozen, so every earlier path
  is bit-identical afterwards. Plain LM loss: no replay, no distillation.
- **Test time**: the input's modality picks its path, per sample (``mllm.route``); no task id.
  Each path's parameters are its own (stored per modality), unlike the original code, which
  retrained shared in-adapters and evaluated each modality with its own stage's checkpoint.
- A stage of a ``base_modalities`` modality (image: the pretrained base) trains nothing; its
  path is the frozen base.
- ``faithful_to_code`` reproduces two quirks of the original: points (3-D) get no mixture at
  ``quirk_v_sites`` (its cross-attention V), and video/audio bypass their ``sum_sites``
  adapters in training (so those stay zero).
"""

from __future__ import annotations

import re

from mcl.adapters import wrap_linears
from mcl.adapters.ana import AnALinear
from mcl.methods.base import ContinualMethod


class PathWeave(ContinualMethod):
    def __init__(
        self,
        name: str = "pathweave",
        sites: tuple[str, ...] = (
            r".*multi_modal_projector\.linear_[12]",
            r".*language_model\..*self_attn\.(q|k|v|o)_proj",
        ),
        sum_sites: tuple[str, ...] = (r".*multi_modal_projector\.linear_2",),
        bottleneck: int = 8,
        base_modalities: tuple[str, ...] = ("image",),
        faithful_to_code: bool = False,
        quirk_v_sites: tuple[str, ...] = (r".*self_attn\.v_proj",),
        **kw,
    ):
        super().__init__(name=name, **kw)
        self.sites, self.sum_sites = list(sites), list(sum_sites)
        self.bottleneck, self.base_modalities = bottleneck, list(base_modalities)
        self.faithful_to_code, self.quirk_v_sites = faithful_to_code, list(quirk_v_sites)
        self.order: list[str] = []  # the new modalities, in the order their paths were added
        self._stage: dict | None = None

    # ------------------------------------------------------------------ model
    def check_bench(self, bench) -> None:
        mods = {t.get("modality", "image") for t in bench.tasks}
        if len(mods - set(self.base_modalities)) < 1 or len(mods) < 2:
            raise ValueError(
                f"PathWeave learns one modality per stage, but bench {bench.name} has only "
                f"{', '.join(sorted(mods))} tasks; use a modality-incremental bench (bench=mcl)"
            )

    def setup_model(self, mllm) -> None:
        if getattr(mllm, "xmodal", None) is None:
            raise ValueError(
                "PathWeave routes each sample by its modality and needs the model's x-modal "
                "input modules; set model.xmodal.enabled=true"
            )
        super().setup_model(mllm)
        pattern = "|".join(f"(?:{p})" for p in self.sites)
        self.site_names = wrap_linears(
            mllm.model, pattern, lambda lin: AnALinear(lin, mllm.route, self.bottleneck)
        )
        for n, site in self.ana_modules().items():  # PathWeave's LLM projection: summed
            site.gated = not any(re.fullmatch(p, n) for p in self.sum_sites)
        self.keep_wrapped_base()
        self.connector_params = sum(
            p.numel() for m in mllm.part_modules("projector") for p in m.parameters()
        )
        # what fully tuning the wrapped layers would train (the adapters' reference point)
        self.site_params = sum(
            p.numel() for s in self.ana_modules().values() for p in s.base.parameters()
        )

    def ana_modules(self) -> dict[str, AnALinear]:
        return {n: self.mllm.model.get_submodule(n) for n in self.site_names}

    def _add_path(self, m: str) -> None:
        earlier = list(self.order)
        for n, site in self.ana_modules().items():
            site.add_path(m, earlier)
            if self.faithful_to_code:
                if m == "points" and any(re.fullmatch(p, n) for p in self.quirk_v_sites):
                    site.skip[m] = "always"
                if m in ("video", "audio") and not site.gated:
                    site.skip[m] = "train"
        self.order.append(m)

    def _ensure_path(self, task: int, dm) -> str:
        """Task ``task``'s modality, with its path added if it needs one and has none yet."""
        m = dm.bench.tasks[task].get("modality", "image")
        if m not in self.base_modalities and m not in self.order:
            self._add_path(m)
        return m

    # ------------------------------------------------------------------ hooks
    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        self._stage = {"modality": self._ensure_path(task, dm)}
        self.set_trainable()

    def on_resume(self, finished_task: int) -> None:
        for t in range(finished_task + 1):
            self._ensure_path(t, self._dm)

    def path_names(self, m: str) -> set[str]:
        prefix = "mllm.model."
        return {
            f"{prefix}{n}.{pn}"
            for n, site in self.ana_modules().items()
            if m in site.uni
            for pn, _ in site.path_params(m)
        }

    def expected_trainable(self) -> set[str]:
        m = (self._stage or {}).get("modality")
        if m is None or m in self.base_modalities:
            return super().expected_trainable() - self.modal_input_names()
        return super().expected_trainable() | self.path_names(m)

    @property
    def trains(self) -> bool:  # a base-modality stage (image) has nothing to train
        return bool(self.expected_trainable()) if self._stage else True

    def task_info(self, task: int) -> dict:
        m = (self._stage or {}).get("modality")
        params = dict(self.named_parameters())
        names = self.path_names(m) if m in self.order else set()
        path = sum(params[n].numel() for n in names)
        modal = sum(params[n].numel() for n in self.modal_input_names()) if path else 0
        connector_sites = sum(params[n].numel() for n in names if "multi_modal_projector" in n)
        return {
            "modality": m,
            "paths": list(self.order),
            "trained": m in self.order,
            "path_params": path,
            "path_params_connector_sites": connector_sites,
            "modal_input_params": modal,
            "connector_params": self.connector_params,
            "site_params": self.site_params,
            "path_share_of_sites_pct": round(100 * path / self.site_params, 2),
            "path_share_of_connector_pct": round(100 * path / self.connector_params, 2),
            "connector_sites_share_pct": round(100 * connector_sites / self.connector_params, 2),
        }
