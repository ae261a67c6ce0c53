"""The non-image synthetic world: generators, their renderings (``mcl.data.render``), shard
round trips and the mcl twin."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from mcl.data import render as R
from mcl.data import schema as S
from mcl.data.shards import BadSample, decode_sample, make_record, read_shards, write_shards
from mcl.data.synthetic import world as W
from mcl.data.synthetic import world_av as A
from mcl.data.synthetic.twins import recipes

GENERATORS = {
    "video": A.make_video,
    "audio": A.make_audio,
    "depth": A.make_depth,
    "points": A.make_points,
}


def _rng(task: str, i: int, split: str = "train", seed: int = 0):
    return W.sample_rng(seed, task, split, i)


def _bytes(payload) -> bytes:
    if isinstance(payload, S.RGBD):
        return payload.rgb.tobytes() + payload.depth.tobytes()
    return np.asarray(payload).tobytes()


def _cell_patch(img: Image.Image, cell: int) -> np.ndarray:
    r, c = divmod(cell, W.GRID)
    a = np.asarray(img, float)
    return a[r * W.CELL : (r + 1) * W.CELL, c * W.CELL : (c + 1) * W.CELL]


# ---- generators ----


@pytest.mark.parametrize("modality", list(GENERATORS))
def test_generators_are_deterministic(modality):
    gen = GENERATORS[modality]
    for i in range(5):
        (p1, info1), (p2, info2) = gen(_rng(modality, i)), gen(_rng(modality, i))
        assert _bytes(p1) == _bytes(p2) and info1 == info2
        assert S.infer_modality(p1) == modality
    other = [_bytes(gen(_rng(modality, i, seed=1))[0]) for i in range(5)]
    assert other != [_bytes(gen(_rng(modality, i))[0]) for i in range(5)]


def test_video_frames_and_ground_truth():
    seen = set()
    for i in range(60):
        frames, info = A.make_video(_rng("video", i))
        assert frames.dtype == np.uint8 and frames.shape[1:] == (48, 48, 3)
        assert 4 <= len(frames) <= 8
        first, last = frames[0], frames[-1]
        ink = lambda f, cell: (_cell_patch(Image.fromarray(f), cell) < 250).any(-1).sum()  # noqa: E731
        # the shape really starts in its start cell and ends in its end cell
        assert ink(first, info["start_cell"]) > 40 and ink(last, info["end_cell"]) > 40
        if info["kind"] == "move":
            dc, dr = A.DIRECTIONS[info["direction"]]
            assert info["end_cell"] - info["start_cell"] == 2 * (dc + W.GRID * dr)
            assert ink(last, info["start_cell"]) == 0
        else:
            # the final frame's fill is the final colour
            fill = np.array(W.COLOURS[info["colour"]])
            assert (np.abs(_cell_patch(Image.fromarray(last), info["end_cell"]) - fill).sum(-1)
                    == 0).sum() > 10  # fmt: skip
        seen.add(info["direction"] or "recolour")
    assert seen == {"left", "right", "top", "bottom", "recolour"}


def test_video_render_shows_where_the_shape_went():
    renders = {}
    for i in range(80):
        frames, info = A.make_video(_rng("video", i), kind="move")
        img = R.as_image("video", frames)
        assert img.size == (48, 48) and img.mode == "RGB"
        # the end cell holds the solid shape, the start cell only a faint ghost
        ink_end = 255 - _cell_patch(img, info["end_cell"]).mean()
        ink_start = 255 - _cell_patch(img, info["start_cell"]).mean()
        assert ink_end > 1.5 * ink_start > 0
        renders.setdefault(info["direction"], []).append(np.asarray(img))
    assert set(renders) == set(A.DIRECTIONS)
    # left vs right: no left render equals any right render
    assert all(not np.array_equal(a, b) for a in renders["left"] for b in renders["right"])


def _beeps_from_envelope(wave: np.ndarray) -> int:
    env = np.convolve(np.abs(wave), np.ones(160) / 160, mode="same")  # 10 ms
    on = env > 0.2 * env.max()
    return int((np.diff(on.astype(int)) == 1).sum() + on[0])


def test_audio_ground_truth_is_in_the_waveform():
    for i in range(40):
        wave, info = A.make_audio(_rng("audio", i))
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert len(wave) == int(S.SAMPLE_RATE * A.CLIP_SECONDS) <= S.SAMPLE_RATE
        assert np.abs(wave).max() < 1
        # on the 16-bit grid: a WAV stores it exactly
        assert np.array_equal(np.round(wave.astype(np.float64) * 32768) / 32768, wave)
        assert _beeps_from_envelope(wave) == info["n_beeps"]
        # the dominant frequency of the first and last beep follows the contour and register
        f = []
        for a, b in [
            (info["onsets"][0], info["offsets"][0]),
            (info["onsets"][-1], info["offsets"][-1]),
        ]:
            seg = wave[int(a * S.SAMPLE_RATE) : int(b * S.SAMPLE_RATE)]
            if info["n_beeps"] == 1:  # one beep: compare its first and last fifth
                k = len(seg) // 5
                seg = seg[:k] if not f else seg[-k:]
            spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
            f.append(np.fft.rfftfreq(len(seg), 1 / S.SAMPLE_RATE)[spec.argmax()])
        assert (f[1] > f[0]) == (info["contour"] == "rising")
        lo, hi = A.REGISTERS[info["register"]]
        assert all(lo * 0.8 < x < hi * 1.1 for x in f)


def _ink_rows(img: Image.Image, cols: slice) -> float:
    ink = 255 - np.asarray(img, float)[:, cols, 0]
    return float((ink.sum(1) * np.arange(48)).sum() / ink.sum())  # ink-weighted mean row


def test_audio_grid_view_draws_measured_beeps_register_and_contour():
    from mcl.data.synthetic import world as W

    for i in range(80):
        wave, info = A.make_audio(_rng("audio", i))
        f = R.audio_features(wave)  # measured from the waveform, not taken from ``info``
        assert f == {k: info[k] for k in ("n_beeps", "register", "contour")}
        img = np.asarray(R.as_image("audio", wave))
        colour = np.array(W.COLOURS["red" if info["contour"] == "rising" else "blue"])
        cells = [c for c in range(9) if (img[c // 3 * 16 + 8, c % 3 * 16 + 8] == colour).all()]
        assert len(cells) == info["n_beeps"]
        rows = {c // 3 for c in cells if c != 4}  # the 4th beep sits in the centre
        assert rows == ({0} if info["register"] == "high" else {2})


def test_audio_spectrogram_shows_contour_register_and_beeps():
    seen = {}
    for i in range(60):
        wave, info = A.make_audio(_rng("audio", i))
        img = R.render_audio(wave)
        assert img.size == (48, 48) and img.mode == "RGB"
        a, b = info["onsets"][0], info["offsets"][-1]
        x0, x1 = int(a / A.CLIP_SECONDS * 48), int(b / A.CLIP_SECONDS * 48)
        third = max(1, (x1 - x0) // 3)
        early, late = _ink_rows(img, slice(x0, x0 + third)), _ink_rows(img, slice(x1 - third, x1))
        assert (late < early) == (info["contour"] == "rising")  # row 0 = highest pitch
        centre = _ink_rows(img, slice(0, 48))
        assert (centre < 16) if info["register"] == "high" else (centre >= 32)
        # beeps = separate runs of inked columns
        inked = (255 - np.asarray(img, float)[..., 0]).max(0) > 128
        assert (np.diff(inked.astype(int)) == 1).sum() + inked[0] == info["n_beeps"]
        seen[(info["contour"], info["register"])] = np.asarray(img)
    assert len(seen) == 4  # rising/falling x high/low all drawn, and all different
    renders = list(seen.values())
    assert all(not np.array_equal(renders[i], renders[j]) for i in range(4) for j in range(i))


def test_depth_nearest_object_has_the_smallest_depth_and_is_darkest():
    for i in range(40):
        rgbd, info = A.make_depth(_rng("depth", i))
        assert rgbd.rgb.size == (48, 48) and rgbd.depth.shape == (48, 48)
        assert rgbd.depth.dtype == np.uint8
        objs = info["objects"]
        assert 2 <= len(objs) <= 3 and len({o["shape"] for o in objs}) == len(objs)
        depths = sorted(o["depth"] for o in objs)
        assert all(b - a >= 0.5 for a, b in zip(depths, depths[1:]))
        # the depth map at each object's centre holds its distance (metres x DEPTH_SCALE)
        centre = [divmod(o["cell"], 3) for o in objs]
        at = [int(rgbd.depth[r * 16 + 8, c * 16 + 8]) for r, c in centre]
        assert at == [round(o["depth"] * A.DEPTH_SCALE) for o in objs]
        near = info["nearest"]
        assert at[near] == min(at) < round(A.WALL_DEPTH * A.DEPTH_SCALE)
        img = np.asarray(R.as_image("depth", rgbd))
        ink = [255 - img[r * 16 + 8, c * 16 + 8, 0] for r, c in centre]
        assert ink[near] == 255 and sorted(ink, reverse=True)[1] < 255  # nearest = black
        assert img[0, 0, 0] == 255 or any(o["cell"] == 0 for o in objs)  # the wall is white


def _segment_distance(p: np.ndarray, a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(p - a - t[:, None] * (b - a), axis=1)


def _surface_distance(shape: str, p: np.ndarray) -> np.ndarray:
    """Distance of canonical points to the canonical solid's surface."""
    prm = A.SOLID_PARAMS[shape]
    if shape == "sphere":
        return np.abs(np.linalg.norm(p, axis=1) - prm["radius"])
    if shape == "cube":
        q = np.abs(p) - prm["half"]
        outside = np.linalg.norm(np.maximum(q, 0), axis=1)
        return np.abs(outside + np.minimum(q.max(1), 0))
    rz = np.stack([np.linalg.norm(p[:, :2], axis=1), p[:, 2]], 1)  # (rho, z) half-plane
    if shape == "torus":
        return np.abs(np.hypot(rz[:, 0] - prm["major"], rz[:, 1]) - prm["minor"])
    r, h = prm["radius"], prm["height"]
    if shape == "cylinder":
        segs = [((r, -h / 2), (r, h / 2)), ((0, h / 2), (r, h / 2)), ((0, -h / 2), (r, -h / 2))]
    else:
        segs = [((0, h / 2), (r, -h / 2)), ((0, -h / 2), (r, -h / 2))]
    return np.min([_segment_distance(rz, a, b) for a, b in segs], 0)


def test_point_clouds_lie_on_their_solid():
    seen = set()
    for i in range(40):
        pts, info = A.make_points(_rng("points", i))
        assert pts.dtype == np.float32 and pts.shape == (info["n"], 3)
        assert 256 <= len(pts) <= 1024
        rot, s = np.array(info["rotation"]), info["scale"]
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-9) and np.linalg.det(rot) > 0
        canon = (pts - np.array(info["offset"])) @ rot / s  # undo the pose
        d = _surface_distance(info["shape"], canon)
        noise = info["noise"] / s
        assert np.median(d) < 1.5 * noise and d.max() < 6 * noise + 1e-3
        seen.add(info["shape"])
    assert seen == set(A.SOLIDS)


@pytest.mark.parametrize("shape", ["sphere", "cylinder", "cone", "torus"])
def test_point_render_is_a_canonical_view(shape):
    # the same cloud in two poses renders the same silhouette (symmetric solids: no ambiguity)
    canon = A.solid_surface(np.random.default_rng(0), shape, 800)
    masks = []
    for seed in (1, 2):
        rot = A.random_rotation(np.random.default_rng(seed))
        img = R.as_image("points", (canon @ rot.T).astype(np.float32))
        assert img.size == (48, 48) and img.mode == "RGB"
        masks.append(np.asarray(img)[..., 0] < 255)
    iou = (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum()
    assert iou > 0.9


def test_point_renders_differ_between_solids():
    views = {
        s: np.asarray(R.as_image("points", A.make_points(_rng("p", 0), s)[0])) for s in A.SOLIDS
    }
    for a in A.SOLIDS:
        for b in A.SOLIDS:
            if a < b:
                assert ((views[a] < 255) != (views[b] < 255)).any(-1).mean() > 0.05, (a, b)
    assert views["torus"][24, 24, 0] == 255  # the hole
    assert views["sphere"][24, 24, 0] < 255


# ---- shards ----


def _write_and_read(tmp_path, records):
    names = write_shards(str(tmp_path / "s-%06d.tar"), records, shard_size=100)
    return read_shards([tmp_path / n for n in names])


def test_every_modality_round_trips_through_a_shard(tmp_path):
    image = W.draw_objects(W.random_objects(_rng("image", 0), 2))
    made = {"image": (image, None)}
    for modality, gen in GENERATORS.items():
        made[modality] = gen(_rng(modality, 3))
    records = [
        make_record(f"k{i}", "t", "q?", "a", ["a"], payload, "word", {"m": 1}, modality=modality)
        for i, (modality, (payload, _)) in enumerate(made.items())
    ]
    # the modality is inferred from the payload when not given
    for (_, (payload, _)), rec in zip(made.items(), records):
        inferred = make_record(rec["__key__"], "t", "q?", "a", ["a"], payload, "word", {"m": 1})
        assert inferred == rec
    out = _write_and_read(tmp_path, records)
    assert [s["modality"] for s in out] == list(made)
    for s, (modality, (payload, _)) in zip(out, made.items()):
        assert s["question"] == "q?" and s["answer"] == "a" and s["meta"] == {"m": 1}
        assert s["image"].size == (48, 48) and s["image"].mode == "RGB"
        if modality == "image":
            assert s["payload"].tobytes() == payload.tobytes() == s["image"].tobytes()
        elif modality == "depth":
            assert np.array_equal(s["payload"], payload.depth) and s["payload"].dtype == np.uint8
            assert s["rgb"].tobytes() == payload.rgb.tobytes()
        else:
            assert s["payload"].dtype == payload.dtype and np.array_equal(s["payload"], payload)
        want = R.as_image(modality, payload)
        assert s["image"].tobytes() == want.tobytes()


def test_wav_is_16_bit_pcm_at_16_khz():
    import wave

    w, _ = A.make_audio(_rng("audio", 1))
    rec = make_record("k", "t", "q", "a", ["a"], w, "word", modality="audio")
    assert set(rec) == {"__key__", "json", "wav"}
    with wave.open(io.BytesIO(rec["wav"])) as f:
        assert (f.getframerate(), f.getsampwidth(), f.getnchannels()) == (16000, 2, 1)
        assert f.getnframes() == len(w)
    rgbd, _ = A.make_depth(_rng("depth", 1))
    assert set(make_record("k", "t", "q", "a", ["a"], rgbd, "w")) == {
        "__key__", "json", "png", "depth.png",
    }  # fmt: skip
    pts, _ = A.make_points(_rng("points", 1))
    assert "points.npy" in make_record("k", "t", "q", "a", ["a"], pts, "w")
    frames, _ = A.make_video(_rng("video", 1))
    assert "frames.npy" in make_record("k", "t", "q", "a", ["a"], frames, "w")


def _raw(modality: str, **members) -> dict:
    conv = [{"value": "<image>\nq"}, {"value": "a"}]
    rec = {"modality": modality, "conversations": conv}
    return {"__key__": "bad", "json": json.dumps(rec).encode(), **members}


def test_decoder_rejects_bad_non_image_payloads():
    frames = make_record("k", "t", "q", "a", ["a"], A.make_video(_rng("v", 0))[0], "w")
    cases = [
        _raw("video"),  # missing
        _raw("video", **{"frames.npy": frames["frames.npy"][:100]}),  # truncated
        _raw("video", **{"frames.npy": frames["frames.npy"][:128] + b"\0" * 10}),
        _raw("audio"),
        _raw("audio", wav=b"RIFF....WAVEfmt "),
        _raw(
            "audio",
            npy=make_record(
                "k", "t", "q", "a", ["a"], np.zeros((4, 3), np.float32), "w", modality="points"
            )["points.npy"],
        ),  # fmt: skip
        _raw("depth"),
        _raw("depth", **{"depth.png": b"\x89PNG broken"}),
        _raw("points", **{"points.npy": b"\x93NUMPY garbage"}),
        _raw("points", **{"points.npy": frames["frames.npy"]}),  # wrong shape / dtype
        _raw("smell", png=b""),
    ]
    for raw in cases:
        with pytest.raises(BadSample, match="bad"):
            decode_sample(raw)
    # a pickled object array is refused, never unpickled
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadSample):
        decode_sample(_raw("points", **{"points.npy": buf.getvalue()}))


# ---- the mcl twin ----

TWIN = recipes("mcl")
EXPECTED_MODALITY = {"image": "image", "video": "video", "audio": "audio", "depth": "depth",
                     "3d": "points"}  # fmt: skip


def test_mcl_twin_tasks_templates_and_modalities():
    assert list(TWIN) == ["image", "video", "audio", "depth", "3d"]
    for name, r in TWIN.items():
        assert r.name == name and r.modality == EXPECTED_MODALITY[name]
        assert r.scorer in {"vqa", "exact", "mc", "cider"}
        assert len(set(r.train_templates)) >= 8 and len(set(r.heldout_templates)) >= 4
        assert not set(r.train_templates) & set(r.heldout_templates)
        assert 0 < r.chance < 100 and r.max_new_tokens >= 2
        answers, kinds = set(), set()
        for i in range(60):
            for heldout in (False, True):
                s = r.sample(_rng(name, i, "test"), heldout=heldout)
                assert S.infer_modality(s.image) == r.modality
                assert "{" not in s.question and s.answer and len(s.answer.split()) <= 2
                assert s.refs == [s.answer] and s.meta["template"] == (
                    "heldout" if heldout else "train"
                )
                answers.add(s.answer)
                kinds.add(s.meta.get("kind"))
                img = R.as_image(r.modality, s.image)
                assert img.size == (48, 48) and img.mode == "RGB"
        # every answer word is declared (templates + vocab), so the tokenizer knows it
        words = " ".join(r.train_templates + r.heldout_templates + r.vocab).split()
        answer_words = {w for a in answers for w in a.split()}
        assert answer_words <= set(words), answer_words - set(words)
        assert len(answers) >= 4
        if name in ("video", "audio", "depth"):
            assert len(kinds) >= 2


def test_mcl_twin_heldout_phrasings_are_new():
    for name in ("video", "audio", "depth"):
        r = TWIN[name]
        train_qs = {r.sample(_rng(name, i)).question for i in range(200)}
        held_qs = {r.sample(_rng(name, i, "test"), heldout=True).question for i in range(200)}
        assert not train_qs & held_qs


def test_mcl_twin_answers_match_the_generators():
    for i in range(40):
        s = TWIN["audio"].sample(_rng("audio", i))
        _, info = A.make_audio(_rng("audio", i))  # make() draws the clip first
        want = {"contour": info["contour"], "count": str(info["n_beeps"]),
                "register": info["register"]}[s.meta["kind"]]  # fmt: skip
        assert s.answer == want
        s = TWIN["depth"].sample(_rng("depth", i))
        rgbd, info = A.make_depth(_rng("depth", i))
        assert np.array_equal(s.image.depth, rgbd.depth)
        if s.meta["kind"] == "pair":
            asked = [o for o in info["objects"] if o["cell"] in s.meta["cells"]]
            assert len(asked) == 2
            assert all(W.POSITIONS[o["cell"]] in s.question for o in asked)
        else:
            asked = info["objects"]
        assert s.answer == W.POSITIONS[min(asked, key=lambda o: o["depth"])["cell"]]
        s = TWIN["video"].sample(_rng("video", i))
        _, info = A.make_video(_rng("video", i))
        assert s.answer == (info["direction"] if s.meta["kind"] == "move" else info["colour"])
        s = TWIN["3d"].sample(_rng("3d", i))
        assert s.answer == A.make_points(_rng("3d", i))[1]["shape"]
        s = TWIN["image"].sample(_rng("image", i))
        rng = _rng("image", i)
        (target,) = W.random_objects(rng, 1)
        assert s.answer == target.colour and f"{target.position}" in s.question


def test_audio_grid_is_drawn_in_the_image_world():
    """The audio view is the world's squares (what the tiny tower reads): one per beep, the row
    by register, the colour by contour, exactly as the image world draws them."""
    for i in range(12):
        wave, _ = A.make_audio(_rng("audio", i))
        f = R.audio_features(wave)
        colour = "red" if f["contour"] == "rising" else "blue"
        cells = {"high": [0, 1, 2, 4], "low": [6, 7, 8, 4]}[f["register"]][: f["n_beeps"]]
        want = W.draw_objects([W.Obj("square", colour, c) for c in cells])
        assert R.render_audio_grid(wave).tobytes() == want.tobytes()
