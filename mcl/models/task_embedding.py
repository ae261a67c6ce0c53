"""Task embeddings and per-sample query features from frozen encoders (EProj/TIR; reusable).

Default encoders need no download: the MLLM's own frozen vision tower (its pooled/CLS output)
for images, and its frozen input-embedding table, mean-pooled over the tokens, for text
(docs/methods/eproj.md allows this in place of BERT). Any object with the same two methods
(``image(pixel_values)`` and ``text(list_of_str)``, both returning ``(B, d)``) can stand in.

A task's embedding: sub-sample its training set, average each kind's features (image,
instruction, answer) and L2-normalise the means — one vector per (task, kind).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("image", "instruction", "answer")


class FrozenFeatures:
    """Query features from an MLLM's frozen vision tower and input embeddings."""

    def __init__(self, mllm, batch_size: int = 64):
        self.mllm, self.batch_size = mllm, batch_size
        self.tower = mllm.part_modules("vision")[0]

    @property
    def image_dim(self) -> int:
        """Width of ``image()``'s features: the tower's hidden size (pooled or mean)."""
        return self.tower.config.hidden_size

    @torch.no_grad()
    def image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        p = next(self.tower.parameters())
        out = self.tower(pixel_values=pixel_values.to(p.device, p.dtype))
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state.mean(1)).float()

    @torch.no_grad()
    def text(self, texts: list[str]) -> torch.Tensor:
        tok = self.mllm.collator.token_ids(list(texts))  # cached: instructions repeat
        table = self.mllm.model.get_input_embeddings()
        rows = []
        for ids in tok:
            ids = ids or [self.mllm.tokenizer.unk_token_id or 0]
            emb = table(torch.tensor(ids, device=table.weight.device))
            rows.append(emb.float().mean(0))
        return torch.stack(rows)

    def samples(self, samples: list[dict], kinds=KINDS) -> dict[str, torch.Tensor]:
        """Per-sample features of the given kinds, ``{kind: (N, d)}``."""
        collator = self.mllm.collator
        out: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
        for i in range(0, len(samples), self.batch_size):
            chunk = samples[i : i + self.batch_size]
            if "image" in out:
                out["image"].append(self.image(collator._images([s["image"] for s in chunk])))
            if "instruction" in out:
                out["instruction"].append(self.text([s["question"] for s in chunk]))
            if "answer" in out:
                out["answer"].append(self.text([s["answer"] for s in chunk]))
        return {k: torch.cat(v) for k, v in out.items()}


def task_embedding(features, samples: list[dict]) -> dict[str, torch.Tensor]:
    """One L2-normalised mean feature per kind for a task, from (a sub-sample of) its data."""
    if not samples:
        raise ValueError("task embedding needs at least one sample")
    per_sample = features.samples(samples)
    return {k: F.normalize(v.mean(0), dim=0) for k, v in per_sample.items()}


def zscore_similarity(embeddings: torch.Tensor) -> torch.Tensor:
    """TIR's similarity of k+1 task embeddings (rows, L2-normalised) of one kind: every pairwise
    dot product, z-scored over all pairs i < j, through a sigmoid; with one pair, the raw
    cosine. Returns the symmetric (k+1, k+1) matrix (diagonal: 1)."""
    g = embeddings @ embeddings.T
    n = g.shape[0]
    if n < 2:
        return torch.ones_like(g)
    iu = torch.triu_indices(n, n, offset=1)
    pairs = g[iu[0], iu[1]]
    if pairs.numel() == 1:
        sim = g.clone()
    else:
        std = pairs.std()
        sim = torch.sigmoid((g - pairs.mean()) / (std if std > 0 else 1.0))
    sim.fill_diagonal_(1.0)
    return sim


def task_similarity(embeddings: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """sim(i, j) = product over kinds of each kind's z-scored similarity (TIR)."""
    sim = None
    for kind in KINDS:
        s = zscore_similarity(torch.stack([e[kind] for e in embeddings]))
        sim = s if sim is None else sim * s
    return sim
