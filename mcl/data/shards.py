"""WebDataset shard I/O: samples (:mod:`mcl.data.schema`) as tar members and back.

A sample in a shard is ``__key__`` + ``json`` (task, modality, LLaVA-style ``conversations``,
``answer_type``, ``answers`` = all references, ``meta``) + the payload by modality:

=========  ==========================================  =====================================
modality   tar members                                 decoded ``payload``
=========  ==========================================  =====================================
image      ``png`` (or ``jpg``/``jpeg``)               PIL RGB image
video      ``frames.npy``                              ``uint8 [F, H, W, 3]``
audio      ``wav`` (16-bit PCM mono, 16 kHz) or        ``float32 [N]`` waveform in [-1, 1)
           ``npy`` (float waveform at 16 kHz)
depth      ``depth.png`` (8-bit grey, metres x 32,     ``uint8 [H, W]`` depth map; the RGB
           smaller = nearer) + ``png`` (the RGB view)  image is ``sample["rgb"]``
points     ``points.npy``                              ``float32 [N, 3]``
=========  ==========================================  =====================================

Decoded samples also carry ``image``: the 48x48 RGB view image-only models consume
(:func:`mcl.data.render.as_image`; the image itself for images). Shards are written with a fixed
mtime so the same seed gives byte-identical tars.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import tarfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image
from webdataset.tariterators import base_plus_ext

from mcl.data.render import as_image
from mcl.data.schema import MODALITIES, RGBD, SAMPLE_RATE, infer_modality, sample_modality

_META = r"__[^/]*__($|/)"  # members webdataset's tar reader skips
FIXED_MTIME = 1_700_000_000  # reproducible tar headers (an int: a float mtime costs every
# member a pax header, which doubles the readers' header parsing)


# why a sample was not read, as results.json's ``skipped[task]["causes"]`` counts them
CAUSES = {
    "unreadable_shard": "in a shard that is not a readable tar (empty, garbage, unreadable file)",
    "truncated_shard": "lost where a shard's tar ends early or breaks off",
    "bad_record": "its json is missing, not JSON or lacks the conversation",
    "undecodable_image": "its image (png/jpg) does not decode",
    "missing_payload": "its modality's payload member is absent",
    "bad_payload": "its payload (npy/wav/...) is malformed",
    "missing_samples": "the shards hold fewer samples than bench.json says, with no damage seen",
    "other": "counted by a caller outside the data module's readers",
}


class BadSample(ValueError):
    """A sample that cannot be decoded; the loaders skip and count these. ``cause`` is one of
    :data:`CAUSES`."""

    def __init__(self, message: str, cause: str = "bad_record"):
        super().__init__(message)
        self.cause = cause


class _ImageError(ValueError):
    """An image member that PIL cannot decode (whatever PIL raised: OSError, SyntaxError...)."""


class Fault(str):
    """One entry of :func:`read_shards`' ``bad`` list: the text (shard and reason) plus
    ``cause`` (:data:`CAUSES`, or ``"tar_error"``) and ``sample`` (``(shard, key)``, or None for a
    tar error, which is not a sample)."""

    cause: str
    sample: tuple[str, str] | None

    def __new__(cls, text: str, cause: str, sample: tuple[str, str] | None = None):
        self = super().__new__(cls, " ".join(str(text).split()))  # one line
        self.cause, self.sample = cause, sample
        return self


def encode_image(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def encode_npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def encode_wav(x: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """A mono waveform in [-1, 1] as 16-bit PCM WAV (``round(x * 32768)``, clipped)."""
    pcm = np.clip(np.round(np.asarray(x, np.float64) * 32768), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _payload_members(modality: str, payload) -> dict[str, bytes]:
    if modality == "image":
        return {"png": encode_image(payload)}
    if modality == "video":
        return {"frames.npy": encode_npy(np.asarray(payload, np.uint8))}
    if modality == "audio":
        return {"wav": encode_wav(payload)}
    if modality == "depth":
        rgbd = payload if isinstance(payload, RGBD) else RGBD(None, payload)
        depth = np.asarray(rgbd.depth)
        if depth.ndim != 2 or depth.dtype != np.uint8:
            raise ValueError(f"a depth map must be uint8 [H, W], got {depth.dtype} {depth.shape}")
        out = {"depth.png": encode_image(Image.fromarray(np.ascontiguousarray(depth)))}
        if rgbd.rgb is not None:
            out["png"] = encode_image(rgbd.rgb)
        return out
    if modality == "points":
        return {"points.npy": encode_npy(np.asarray(payload, np.float32))}
    raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")


def make_record(
    key: str,
    task: str,
    question: str,
    answer: str,
    refs: list[str],
    payload,
    answer_type: str,
    meta: dict | None = None,
    modality: str | None = None,
) -> dict:
    """One sample's tar members. ``payload`` is the native payload (see the module docstring;
    depth takes an :class:`~mcl.data.schema.RGBD` or a bare depth map); ``modality`` defaults
    to the one the payload's type implies."""
    modality = modality or infer_modality(payload)
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
    return {
        "__key__": key,
        "json": json.dumps(record).encode(),
        **_payload_members(modality, payload),
    }


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


def private_tmp(final: Path) -> Path:
    """A private temporary directory beside ``final`` to write into and rename (others never see
    half a benchmark), after removing those that killed processes of this host left behind.
    The caller removes it on any failure (``try/except BaseException``)."""
    host = socket.gethostname().replace("-", "_")
    prefix = f".{final.name}.tmp"
    if final.parent.is_dir():
        for old in final.parent.glob(f"{prefix}{host}-*"):
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    tmp = final.parent / f"{prefix}{host}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _png(data: bytes, mode: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img.convert(mode)
    except MemoryError:
        raise
    except Exception as e:  # PIL raises SyntaxError, OSError, zlib.error, struct.error...
        raise _ImageError(f"undecodable image: {type(e).__name__}: {e}") from e


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _decode_wav(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(
                f"wav must be 16-bit mono, got {8 * w.getsampwidth()}-bit x {w.getnchannels()}"
            )
        if w.getframerate() != SAMPLE_RATE:
            raise ValueError(f"wav must be {SAMPLE_RATE} Hz, got {w.getframerate()}")
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    if len(pcm) == 0:
        raise ValueError("empty wav")
    return (pcm.astype(np.float32) / 32768).astype(np.float32)


def _decode_payload(raw: dict, modality: str):
    """``(payload, extra fields)`` of one sample; raises on anything missing or malformed."""
    if modality == "image":
        for ext in ("png", "jpg", "jpeg"):
            if ext in raw:
                return _png(raw[ext], "RGB"), {}
        raise KeyError("no image payload (png/jpg)")
    if modality == "video":
        if "frames.npy" not in raw:
            raise KeyError("no video payload (frames.npy)")
        a = _npy(raw["frames.npy"])
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or 0 in a.shape:
            raise ValueError(f"frames.npy must be uint8 [F, H, W, 3], got {a.dtype} {a.shape}")
        return a, {}
    if modality == "audio":
        if "wav" in raw:
            return _decode_wav(raw["wav"]), {}
        if "npy" in raw:
            a = _npy(raw["npy"])
            if a.ndim != 1 or a.dtype.kind != "f" or len(a) == 0 or not np.isfinite(a).all():
                raise ValueError(f"npy audio must be a finite float [N], got {a.dtype} {a.shape}")
            return a.astype(np.float32), {}
        raise KeyError("no audio payload (wav/npy)")
    if modality == "depth":
        if "depth.png" not in raw:
            raise KeyError("no depth payload (depth.png)")
        depth = np.asarray(_png(raw["depth.png"], "L"), np.uint8).copy()
        extra = {"rgb": _png(raw["png"], "RGB")} if "png" in raw else {}
        return depth, extra
    if modality == "points":
        if "points.npy" not in raw:
            raise KeyError("no points payload (points.npy)")
        a = _npy(raw["points.npy"])
        if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind != "f" or len(a) < 3:
            raise ValueError(f"points.npy must be float [N, 3], got {a.dtype} {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("points.npy holds non-finite values")
        return a.astype(np.float32), {}
    raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")


def decode_sample(raw: dict) -> dict:
    """Raw tar members -> ``{"key", "image", "payload", "modality", "question", "answer", ...}``.

    ``payload`` is the native payload, ``image`` the RGB view image-only models consume (see the
    module docstring); depth samples add ``rgb``. Raises :class:`BadSample` with the key and the
    reason, never a bare decoder error.
    """
    key = raw.get("__key__", "?")
    cause = "bad_record"
    try:
        rec = json.loads(raw["json"])
        conv = rec["conversations"]
        question = conv[0]["value"].replace("<image>", "").strip()
        answer = conv[1]["value"]
        if not isinstance(question, str) or not isinstance(answer, str):
            raise TypeError("question and answer must be strings")
        modality = sample_modality(rec)
        cause = "bad_payload"
        payload, extra = _decode_payload(raw, modality)
        image = as_image(modality, payload)
    except MemoryError:
        raise
    except Exception as e:  # whatever a corrupt member makes a decoder raise: skipped, counted
        if isinstance(e, _ImageError):
            cause = "undecodable_image"
        elif isinstance(e, KeyError) and cause == "bad_payload":
            cause = "missing_payload"
        text = str(e) if isinstance(e, _ImageError) else f"{type(e).__name__}: {e}"
        raise BadSample(f"sample {key}: " + " ".join(text.split()), cause) from e
    return {
        "key": key,
        "task": rec.get("task"),
        "modality": modality,
        "image": image,
        "payload": payload,
        **extra,
        "question": question,
        "answer": answer,
        "answers": rec.get("answers") or [answer],
        "answer_type": rec.get("answer_type"),
        "meta": rec.get("meta", {}),
    }


def tar_error_text(exn: BaseException) -> str:
    """One line for a tar-level error webdataset handed to a handler: the shard, the error."""
    args = getattr(exn, "args", ()) or ()
    url = next((a for a in reversed(args[1:]) if isinstance(a, str)), None)
    msg, _, where = str(args[0]).partition(" @ ") if args else ("", "", "")
    named = re.search(r"name='([^']*)'", where)  # the tar reader appends its file object
    url = url or (named.group(1) if named else None)
    text = f"{type(exn).__name__}: {msg}" if msg else type(exn).__name__
    return " ".join((f"{url}: {text}" if url else text).split())


def read_shards(
    paths: list[str | Path], bad: list[str] | None = None, indices: set[int] | None = None
) -> list[dict]:
    """Every sample of the given shards, in order, decoded (for evaluation: each counted once).

    With ``bad`` (a list), unreadable samples and tar errors are skipped and described there
    (naming the shard) instead of raising; each entry is a :class:`Fault` (its ``sample`` is None
    for a tar error, which loses an unknown number of samples: compare with :func:`scan_shard`).
    With ``indices``, only the samples at those positions (0-based, in shard order) are decoded
    and returned — a replay buffer without decoding the rest.
    """

    def on_tar_error(exn) -> bool:
        bad.append(Fault(tar_error_text(exn), "tar_error"))
        return True

    urls = [str(p) for p in paths]
    handler = on_tar_error if bad is not None else wds.reraise_exception
    out = []
    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=handler))
    for i, raw in enumerate(pipeline):
        if indices is not None and i not in indices:
            continue
        try:
            out.append(decode_sample(raw))
        except BadSample as e:
            if bad is None:
                raise
            url = str(raw.get("__url__", "?"))
            bad.append(Fault(f"{url}: {e}", e.cause, (url, str(raw.get("__key__", "?")))))
    return out


@dataclass(frozen=True)
class ShardScan:
    """What a shard's tar headers say (:func:`scan_shard`): ``samples`` the tar readers will
    yield (those with at least one complete member), and ``problem`` (None for a sound shard)
    with its ``cause`` (``truncated_shard`` or ``unreadable_shard``)."""

    samples: int
    problem: str | None = None
    cause: str | None = None


def _zeros_to_end(f, offset: int) -> bool:
    f.seek(offset)
    while chunk := f.read(1 << 16):
        if chunk.count(0) != len(chunk):
            return False
    return True


def scan_shard(path: str | Path) -> ShardScan:
    """Check a shard from its tar headers alone (member data is skipped, not read): how many
    samples it yields and whether it is cut short, broken off by a damaged header, or no tar at
    all. Python's and webdataset's tar readers stop silently at a damaged header or a cut at a
    member boundary; this is how the loaders count what such a shard loses."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with tarfile.open(path, "r:") as tf:
            n, last, problem = 0, None, None
            while True:
                try:
                    m = tf.next()
                except (tarfile.TarError, OSError, EOFError) as e:
                    problem = f"cut short after {n} sample(s) ({type(e).__name__}: {e})"
                    break
                if m is None:
                    break
                if not m.isreg() or re.match(_META, m.name):
                    continue
                prefix, _ = base_plus_ext(m.name)
                if prefix is None:
                    continue
                if m.offset_data + m.size > size:
                    problem = f"cut short inside {m.name} (after {n} complete sample(s))"
                    break
                if prefix != last:
                    n, last = n + 1, prefix
            end = tf.offset
            if problem is None:
                if size - end < 1024:  # writers end a tar with two zero blocks
                    problem = f"cut short after {n} sample(s) (no end-of-archive blocks)"
                elif not _zeros_to_end(tf.fileobj, end):
                    problem = f"a damaged tar header at byte {end} ends it after {n} sample(s)"
    except (tarfile.TarError, OSError, EOFError) as e:
        return ShardScan(0, f"not a readable tar ({type(e).__name__}: {e})", "unreadable_shard")
    if problem:
        return ShardScan(n, problem, "truncated_shard")
    if n == 0:
        return ShardScan(0, "holds no sample", "unreadable_shard")
    return ShardScan(n)
