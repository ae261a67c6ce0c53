"""Sample schema and WebDataset shard I/O.

A sample in a shard is ``__key__`` + ``json`` (task, modality, LLaVA-style ``conversations``,
``answer_type``, ``answers`` = all references, ``meta``) + the payload by modality (``png`` for
images). Shards are written with a fixed mtime so the same seed gives byte-identical tars.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import webdataset as wds
from PIL import Image

FIXED_MTIME = 1_700_000_000.0  # reproducible tar headers


class BadSample(ValueError):
    """A sample that cannot be decoded; the loaders skip and count these."""


def encode_image(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def make_record(
    key: str,
    task: str,
    question: str,
    answer: str,
    refs: list[str],
    image: Image.Image,
    answer_type: str,
    meta: dict | None = None,
    modality: str = "image",
) -> dict:
    record = {
        "task": task,
        "modality": modality,
        "conversations": [
            {"from": "human", "value": "<image>\n" + question},
            {"from": "gpt", "value": answer},
        ],
        "answer_type": answer_type,
        "answers": refs,
        "meta": meta or {},
    }
    return {"__key__": key, "json": json.dumps(record).encode(), "png": encode_image(image)}


def write_shards(pattern: str, records, shard_size: int) -> list[str]:
    """Write records to ``pattern`` (``%06d``-style); returns the shard file names written."""
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    with wds.ShardWriter(
        pattern, maxcount=shard_size, verbose=0, mtime=FIXED_MTIME, encoder=False
    ) as sink:
        for rec in records:
            sink.write(rec)
        names = [Path(pattern % i).name for i in range(sink.shard)]
    return names


def decode_sample(raw: dict) -> dict:
    """Raw tar members -> ``{"key", "image", "question", "answer", "answers", ...}``.

    Raises :class:`BadSample` with the key and the reason, never a bare decoder error.
    """
    key = raw.get("__key__", "?")
    try:
        rec = json.loads(raw["json"])
        conv = rec["conversations"]
        question = conv[0]["value"].replace("<image>", "").strip()
        answer = conv[1]["value"]
        image = None
        for ext in ("png", "jpg", "jpeg"):
            if ext in raw:
                image = Image.open(io.BytesIO(raw[ext]))
                image.load()
                image = image.convert("RGB")
                break
        if image is None:
            raise KeyError("no image payload (png/jpg)")
    except (KeyError, IndexError, TypeError, ValueError, OSError) as e:
        raise BadSample(f"sample {key}: {type(e).__name__}: {e}") from e
    return {
        "key": key,
        "task": rec.get("task"),
        "image": image,
        "question": question,
        "answer": answer,
        "answers": rec.get("answers") or [answer],
        "answer_type": rec.get("answer_type"),
        "meta": rec.get("meta", {}),
    }


def read_shards(paths: list[str | Path]) -> list[dict]:
    """Every sample of the given shards, in order, decoded (for evaluation: each counted once)."""
    out = []
    urls = [str(p) for p in paths]
    ds = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())
    for raw in ds:
        out.append(decode_sample(raw))
    return out
