"""How much of a real benchmark's text the tiny base can read, said once at the start of a run.

The tiny base's tokenizer is word-level over its synthetic world and the twins' words
(:func:`mcl.models.tiny.build_tokenizer`); every other word reads as ``<unk>`` and can never be
generated. On real text most answers hold such words, so the tiny base answers ``""`` or a fragment:
real scores need a real base. The vocabulary stays as it is (it defines every shipped base and
every recorded result); this module only measures and says so.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from mcl.models.tiny import pre_tokenizer

REAL_MODELS = "model=llava15_7b, qwen2_vl_7b, internvl3_8b ..."


def words(texts: list[str]) -> list[str]:
    """The words of ``texts`` as the tiny tokenizer splits them (``<image>`` left out)."""
    pre = pre_tokenizer()
    return [w for t in texts for w, _ in pre.pre_tokenize_str(t) if w != "<image>"]


def coverage(vocab, texts: list[str]) -> float | None:
    """The share of the distinct words of ``texts`` that ``vocab`` holds (None: no words)."""
    distinct = set(words(texts))
    return sum(w in vocab for w in distinct) / len(distinct) if distinct else None


def shard_texts(paths: list[Path], limit: int) -> tuple[list[str], list[str]]:
    """Questions and reference answers of up to ``limit`` records of the shards, read from
    their ``.json`` members alone (no payload is decoded)."""
    questions: list[str] = []
    answers: list[str] = []
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if len(questions) >= limit:
                    return questions, answers
                if not member.name.endswith(".json"):
                    continue
                rec = json.load(tar.extractfile(member))
                conv = rec.get("conversations") or [{}, {}]
                questions.append(str(conv[0].get("value", "")))
                answers += [str(a) for a in rec.get("answers") or [conv[-1].get("value", "")]]
    return questions, answers


def notice(vocab, bench, model_name: str, per_task: int = 200) -> str:
    """One line: the share of the benchmark's words (and of its answers' words) the tiny base
    knows, read from up to ``per_task`` test samples a task."""
    questions: list[str] = []
    answers: list[str] = []
    for spec in bench.tasks + bench.unseen:
        split = "test" if "test" in spec else "train"
        if split not in spec:
            continue
        q, a = shard_texts(bench.shard_paths(spec, split), per_task)
        questions += q
        answers += a
    everything = coverage(vocab, questions + answers)
    answered = coverage(vocab, answers)
    if everything is None:
        return f"[mcl] model={model_name}: no text found in the benchmark's shards"
    share = f"{everything:.0%} of this benchmark's words"
    if answered is not None:
        share += f" and {answered:.0%} of its answers' words"
    return (
        f"[mcl] model={model_name} knows {share} (the rest read as <unk> and cannot be "
        f"generated, so answers come out empty or partial); real scores need a real model "
        f"({REAL_MODELS})"
    )
