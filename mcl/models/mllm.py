"""The MLLM wrapper: one HF model + its processor, and the two things mcl asks of any family —
turn samples into a training batch with answer-only labels, and generate answers in batches.

Family-specific details (how ``<image>`` expands, which modules are the LM) live here so that
methods and the runner never depend on them.
"""

from __future__ import annotations

import contextlib
import re

import torch
from torch import nn

from mcl.data.schema import sample_instruction

IGNORE_INDEX = -100
# batch entries that are not model inputs: skip accounting, the raw questions and the recorded
# instructions (methods that route by instruction, e.g. EProj, SMoLoRA, embed them)
NON_MODEL_KEYS = ("n_skipped", "skipped_examples", "questions", "instructions", "virtual_mask")
EXPAND_MODES = ("mcl", "processor")  # who expands the image placeholder (see ChatCollator)
# processor outputs aligned with input_ids (besides the mask): kept, extended over the answer
PER_TOKEN_KEYS = ("mm_token_type_ids",)


def model_inputs(batch: dict) -> dict:
    """The tensors the HF model takes, without mcl's bookkeeping entries."""
    return {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}


class ChatCollator:
    """Samples -> tensors. Holds only the processor (cheap to copy into DataLoader workers).

    A sample is a dict with ``question``, ``answer`` and ``image``; ``None`` or a dict with a
    ``corrupt`` key marks a sample the decoder rejected, dropped here and counted in
    ``batch["n_skipped"]``.
    """

    def __init__(self, processor, image_seq_length: int | None, expand: str = "mcl"):
        if expand not in EXPAND_MODES:
            raise ValueError(f"expand={expand!r}; choose one of {', '.join(EXPAND_MODES)}")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        # "mcl": the collator expands <image> into image_seq_length tokens itself (LLaVA-1.5,
        # one fixed-size image each); "processor": the family's processor expands its image
        # placeholder (a count that depends on the image) and returns the image tensors
        self.expand = expand
        self.image_seq_length = image_seq_length  # tokens one <image> expands to ("mcl")
        self._prompts: dict[str, str] = {}  # rendering the chat template is the slow part
        self._ids: dict[str, list[int]] = {}  # token ids of prompts and answers seen before
        # soft-prompt slots: this many pad-id placeholders right after the image tokens (before
        # the instruction), marked in batch["virtual_mask"]; a prompt method writes its vectors
        # there through an input-embedding hook (0 = none; set by the method)
        self.virtual_tokens = 0
        # x-modal inputs (mcl.models.xmodal.attach_xmodal): placeholder tokens and cue per
        # modality, and how payloads become tensors; None = every sample is an image
        self.modal: dict | None = None

    def set_modal(self, tokens: dict, cues: dict, **prep) -> None:
        if self.expand != "mcl":
            raise ValueError(
                "x-modal inputs need the LLaVA-1.5 collation (expand='mcl'); this model's "
                "processor expands images itself: set model.xmodal.enabled=false"
            )
        self.modal = {"tokens": dict(tokens), "cues": dict(cues), **prep}

    def prompt(self, question: str) -> str:
        """The chat-formatted prompt up to and including the assistant cue."""
        if question not in self._prompts:
            if len(self._prompts) > 100_000:  # bounded: real datasets have unique questions
                self._prompts.clear()
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            self._prompts[question] = self.processor.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return self._prompts[question]

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids (no special tokens) per text, cached: instruction templates and short
        answers repeat, and tokenizing was a third of collation. Callers must not mutate them."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        if missing:
            if len(self._ids) + len(missing) > 200_000:  # bounded: real data is mostly unique
                self._ids.clear()
            ids = self.tokenizer(missing, add_special_tokens=False)["input_ids"]
            self._ids.update(zip(missing, ids))
        return [self._ids[t] for t in texts]

    def _images(self, images) -> torch.Tensor:
        from mcl.models.fast_pixels import fast_pixel_values

        # the processor's bits, 3.7x faster on a batch of 32 (None: use the processor)
        fast = fast_pixel_values(self.processor.image_processor, images)
        if fast is not None:
            return fast
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def _placeholder(self, modality: str | None) -> str:
        """What one ``<image>`` becomes: the modality's cue and its placeholder tokens."""
        tok = self.processor.image_token
        if self.modal is None:
            return tok * self.image_seq_length
        cue = self.modal["cues"].get(modality, "")
        return (cue + " " if cue else "") + tok * self.modal["tokens"][modality]

    def _prompt_ids(self, questions: list[str], modalities=None) -> list[list[int]]:
        tok = self.processor.image_token
        modalities = modalities or ["image"] * len(questions)
        texts = [
            self.prompt(q).replace(tok, self._placeholder(m), 1)
            for q, m in zip(questions, modalities)
        ]
        ids = self.token_ids(texts)
        if not self.virtual_tokens:
            return ids
        image_id = self.tokenizer.convert_tokens_to_ids(tok)
        slots = [self.tokenizer.pad_token_id] * self.virtual_tokens
        out = []
        for seq in ids:
            at = self._slot_at(seq, image_id)
            out.append(seq[:at] + slots + seq[at:])
        return out

    @staticmethod
    def _slot_at(ids: list[int], image_id: int) -> int:
        """Where soft-prompt slots go: after the last image token (else at the start)."""
        last = max((i for i, t in enumerate(ids) if t == image_id), default=-1)
        return last + 1

    def _virtual_masks(self, prompt_ids: list[list[int]], lengths: list[int]) -> list[list[int]]:
        image_id = self.tokenizer.convert_tokens_to_ids(self.processor.image_token)
        out = []
        for p, n in zip(prompt_ids, lengths):
            at = self._slot_at(p, image_id)  # the slots themselves are pad ids
            row = [0] * n
            row[at : at + self.virtual_tokens] = [1] * self.virtual_tokens
            out.append(row)
        return out

    def _processor_inputs(self, questions, images) -> tuple[list, dict, dict]:
        """Processor mode: the chat-formatted prompts through the family's processor, which
        expands each image placeholder and builds the image tensors. Returns each row's prompt
        ids (the processor's padding stripped), per-token extras (e.g. Qwen2-VL's
        ``mm_token_type_ids``, same stripping) and the image tensors (``pixel_values`` and
        ``image_sizes`` / ``image_grid_thw``)."""
        # (x-modal inputs cannot get here: set_modal refuses processor mode)
        if self.virtual_tokens:
            raise ValueError(
                "soft-prompt slots (virtual_tokens) need expand='mcl' (LLaVA-1.5 collation); "
                "this model's processor expands images itself"
            )
        out = self.processor(
            text=[self.prompt(q) for q in questions],
            images=list(images),
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,  # as the LLaVA-1.5 path: the template holds any BOS
        )
        out = dict(out)
        ids, mask = out.pop("input_ids"), out.pop("attention_mask").bool()
        out.pop("token_type_ids", None)  # a BERT-style tokenizer output no MLLM takes

        def rows(t: torch.Tensor) -> list[list[int]]:
            return [r[m].tolist() for r, m in zip(t, mask)]

        extras = {k: rows(out.pop(k)) for k in PER_TOKEN_KEYS if k in out}
        return rows(ids), extras, out

    def _pad(self, seqs: list[list[int]], value: int, left: bool) -> torch.Tensor:
        width = max(map(len, seqs))
        out = torch.full((len(seqs), width), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            if left:
                out[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            else:
                out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out

    def _inputs(self, images, samples) -> dict[str, torch.Tensor]:
        """The non-text inputs: ``pixel_values``, or every modality's tensors (x-modal)."""
        if self.modal is None:
            return {"pixel_values": self._images(images)}
        from mcl.models.xmodal import collate_modal

        return collate_modal(self, samples)

    def _modalities(self, samples) -> list[str] | None:
        if self.modal is None or samples is None:
            return None
        return [s.get("modality") or "image" for s in samples]

    def _encode(self, questions, images, samples) -> tuple[list[list[int]], dict, dict]:
        """Each row's prompt ids (image tokens expanded), per-token extras to pad alongside
        them, and the non-text input tensors."""
        if self.expand == "processor":
            return self._processor_inputs(questions, images)
        ids = self._prompt_ids(questions, self._modalities(samples))
        return ids, {}, self._inputs(images, samples)

    def encode_train(self, questions, answers, images, samples=None) -> dict[str, torch.Tensor]:
        """Right-padded batch; labels cover the answer and EOS only (prompt and image = -100).
        ``samples`` (the decoded samples) are needed for non-image modalities."""
        prompt_ids, extras, inputs = self._encode(questions, images, samples)
        answers = [" " + a for a in answers]
        answer_ids = self.token_ids(answers)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        seqs = [p + a + [eos] for p, a in zip(prompt_ids, answer_ids)]
        labels = [[IGNORE_INDEX] * len(p) + a + [eos] for p, a in zip(prompt_ids, answer_ids)]
        out = {
            "input_ids": self._pad(seqs, pad, left=False),
            "attention_mask": self._pad([[1] * len(s) for s in seqs], 0, left=False),
            "labels": self._pad(labels, IGNORE_INDEX, left=False),
        }
        for k, rows in extras.items():  # answer and EOS are text (type 0), as is padding
            out[k] = self._pad([r + [0] * (len(a) + 1) for r, a in zip(rows, answer_ids)], 0, False)
        out.update(inputs)
        if self.virtual_tokens:
            masks = self._virtual_masks(prompt_ids, [len(s) for s in seqs])
            out["virtual_mask"] = self._pad(masks, 0, left=False).bool()
        return out

    def encode_prompts(self, questions, images, samples=None) -> dict[str, torch.Tensor]:
        """Left-padded prompts for batched generation."""
        ids, extras, inputs = self._encode(questions, images, samples)
        out = {
            "input_ids": self._pad(ids, self.tokenizer.pad_token_id, left=True),
            "attention_mask": self._pad([[1] * len(s) for s in ids], 0, left=True),
        }
        for k, rows in extras.items():
            out[k] = self._pad(rows, 0, left=True)
        out.update(inputs)
        if self.virtual_tokens:
            masks = self._virtual_masks(ids, [len(s) for s in ids])
            out["virtual_mask"] = self._pad(masks, 0, left=True).bool()
        return out

    def train_batch(self, samples: list[dict | None]) -> dict[str, torch.Tensor]:
        good = [s for s in samples if s is not None and "corrupt" not in s]
        bad = [f"{s.get('shard', '?')}: {s['corrupt']}" for s in samples if s and "corrupt" in s]
        if not good:
            return {"n_skipped": torch.tensor(len(samples)), "skipped_examples": bad[:1]}
        batch = self.encode_train(
            [s["question"] for s in good],
            [s["answer"] for s in good],
            [s["image"] for s in good],
            samples=good,
        )
        batch["n_skipped"] = torch.tensor(len(samples) - len(good))
        batch["skipped_examples"] = bad[:1]
        batch["questions"] = [s["question"] for s in good]
        batch["instructions"] = [sample_instruction(s) for s in good]
        return batch

    def prompt_batch(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.encode_prompts(
            [s["question"] for s in samples], [s["image"] for s in samples], samples=samples
        )
        batch["questions"] = [s["question"] for s in samples]
        batch["instructions"] = [sample_instruction(s) for s in samples]
        return batch


class MLLM(nn.Module):
    """A multimodal LLM with a processor; ``model`` is the HF ``...ForConditionalGeneration``."""

    def __init__(
        self,
        model: nn.Module,
        processor,
        image_seq_length: int | None,
        name: str = "mllm",
        info: dict | None = None,
        family: str = "llava",
        expand: str = "mcl",
    ):
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.collator = ChatCollator(processor, image_seq_length, expand=expand)
        self.name = name
        self.family = family  # llava | llava_next | qwen2_vl | qwen2_5_vl | internvl
        self.info = info or {}
        # non-image input modules (mcl.models.xmodal.attach_xmodal) and the routing state that
        # modality-routed adapters read; both unused by image-only models
        self.xmodal: nn.Module | None = None
        from mcl.models.xmodal import Route

        self.route = Route()

    # where each trainable "part" lives, by module-name suffix, per architecture family
    # (transformers 5: LLaVA, LLaVA-NeXT and InternVL-hf: vision_tower + multi_modal_projector;
    # Qwen2-VL / Qwen2.5-VL: visual, whose merger is the projector; InternVL's remote code: mlp1).
    # Every family's LM is model.language_model.
    PARTS = {
        "projector": ("multi_modal_projector", "visual.merger", "mlp1"),
        "vision": ("vision_tower", "vision_model", "visual"),
        "lm": ("language_model", "lm_head"),
    }

    def part_modules(self, part: str) -> list[nn.Module]:
        """The modules that make up a part of the model (``projector``, ``vision`` or ``lm``), for
        methods that fine-tune a part in full."""
        if part not in self.PARTS:
            raise ValueError(f"unknown model part '{part}'; choose from {sorted(self.PARTS)}")
        found: list[tuple[str, nn.Module]] = []
        for name, module in self.model.named_modules():
            hit = any(name == s or name.endswith("." + s) for s in self.PARTS[part])
            # keep top-most matches only (a part's submodules are already inside it)
            if hit and not any(name.startswith(f + ".") for f, _ in found):
                found.append((name, module))
        if not found:
            raise ValueError(f"model {self.name} has no '{part}' (looked for {self.PARTS[part]})")
        return [m for _, m in found]

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Recompute the base's layer activations in the backward pass instead of keeping them
        (``model.gradient_checkpointing``; what 7B recipes use). Non-reentrant, so gradients
        reach adapters inside a frozen base without inputs that require grad."""
        if not on:
            return
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            raise ValueError(f"{self.name} does not support gradient checkpointing")

        def context_fn():  # the recomputation sees the forward's modality routing
            return contextlib.nullcontext(), self.route.replay()

        kw = {"use_reentrant": False, "context_fn": context_fn}
        if hasattr(self.model, "activation_checkpointing_enable"):  # newer transformers
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)

    def require_image_features(self, who: str) -> None:
        """Refuse (one line) a method that runs the vision tower on ``pixel_values`` itself:
        only the LLaVA-1.5 collation gives one fixed-size image per row."""
        if self.collator.expand != "mcl":
            raise ValueError(
                f"{who} runs the vision tower on pixel_values itself, which only LLaVA-1.5-style "
                f"models support; {self.name} is a {self.family} model (its processor tiles or "
                "flattens images): pick another method"
            )

    def lm_targets(self, names: list[str]) -> str:
        """A regex matching the given linear names inside the LM only (never the vision tower)."""
        alt = "|".join(re.escape(n) for n in names)
        return rf"(.*\.)?language_model\..*\.({alt})"

    def _xmodal_inputs(self, batch: dict) -> dict:
        """An x-modal batch as LM inputs: embeddings with every modality's features in place
        (the route says, per row, which modality the sample is)."""
        from mcl.models.xmodal import XMODAL_KEYS, embed

        rest = {k: v for k, v in batch.items() if k not in XMODAL_KEYS and k != "pixel_values"}
        rest.pop("input_ids")
        return {"inputs_embeds": embed(self, batch), **rest}

    def forward(self, **batch):
        if "modality_ids" not in batch:
            return self.model(**batch)
        with self.route.scope(ids=batch["modality_ids"].to(batch["input_ids"].device)):
            return self.model(**self._xmodal_inputs(batch))

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int = 8) -> list[str]:
        """Greedy decoding; returns the decoded answers without the prompt."""
        kw = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if "modality_ids" in batch:  # generation from embeddings returns the new tokens only
            with self.route.scope(ids=batch["modality_ids"].to(batch["input_ids"].device)):
                new = self.model.generate(**self._xmodal_inputs(model_inputs(batch)), **kw)
        else:
            out = self.model.generate(**model_inputs(batch), **kw)
            new = out[:, batch["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
