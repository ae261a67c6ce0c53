"""Readers of published benchmark files: fixtures in each benchmark's own layout, with the field
names its official loader reads, go in; every reference comes out, and every unusable record is a
one-line Problem naming the field and the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from mcl.data.readers import READERS, Problem, ReadError, Record, split_items, to_llava
from mcl.data.readers.record import MALFORMED, MISSING, UNMATCHED, UNSUPPORTED
from mcl.eval.caption import bleu_coco
from mcl.eval.scorers import choice_score, iou_score, vqa_score

ROOT = Path(__file__).resolve().parent.parent

# TextVQA's 10 human answers: 4 agree on one word, 3 on another, 1 on a third
TEN = ["nikon"] * 4 + ["canon"] * 3 + ["sony"] + ["leica"] * 2
CAPTIONS = [
    "a dog runs across a grassy field",
    "a brown dog running on the grass",
    "a dog plays outside in a park",
    "the dog is running through a field",
    "a happy dog sprints across green grass",
]


def write(path: Path, data, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


def read(name: str, *args, **kwargs) -> tuple[list[Record], list[Problem]]:
    return split_items(READERS[name](*args, **kwargs))


def test_registry_names_one_reader_per_format():
    assert set(READERS) == {
        "llava",
        "question_answers",
        "coco_captions",
        "internvl",
        "lavis",
        "coin",
    }


# ------------------------------------------------------------------------------------- CoIN
def test_coin_test_file_keeps_answer_and_grounding_box_with_size(tmp_path):
    root = tmp_path / "Instructions_Original"
    vqa = write(
        root / "VQAv2/test.json",
        [
            {
                "question_id": 262148000,
                "image": "COCO2014/val2014/COCO_val2014_000000262148.jpg",
                "text": "Where is he looking?\nAnswer the question using a single word or phrase.",
                "answer": "down",
            }
        ],
    )
    grounding = write(
        root / "Grounding/test.json",
        [
            {
                "question_id": 7,
                "image": "COCO2014/train2014/COCO_train2014_000000581857.jpg",
                "text": "Please provide the bounding box coordinate of the region this sentence "
                "describes: woman in red.",
                "answer_bbox": "[0.12, 0.2, 0.56, 0.9]",
                "size": [640, 480],
            }
        ],
    )
    (rec,), problems = read("coin", vqa)
    assert not problems
    assert (rec.id, rec.answers, rec.image) == (
        "262148000",
        ["down"],
        "COCO2014/val2014/COCO_val2014_000000262148.jpg",
    )
    (box,), problems = read("coin", grounding)
    assert not problems
    assert box.bbox == [0.12, 0.2, 0.56, 0.9] and box.image_size == [640, 480]
    assert box.answers == ["[0.12, 0.2, 0.56, 0.9]"]
    assert iou_score("[0.12, 0.2, 0.56, 0.9]", box.answers) == 1.0
    meta = to_llava(box)["meta"]
    assert meta == {"bbox": [0.12, 0.2, 0.56, 0.9], "image_size": [640, 480]}


def test_coin_train_file_is_read_as_conversations(tmp_path):
    train = write(
        tmp_path / "Instructions_Original/ScienceQA/train.json",
        [
            {
                "id": "sqa-1",
                "image": "ScienceQA/train/1/image.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhich is bigger?\nA. ant\nB. cow"},
                    {"from": "gpt", "value": "B"},
                ],
            }
        ],
    )
    (rec,), problems = read("coin", train)
    assert not problems and rec.answers == ["B"] and rec.question.startswith("Which is bigger?")


def test_a_test_file_missing_answer_is_one_line_naming_field_and_file(tmp_path):
    test = write(
        tmp_path / "UCIT/IconQA/test.json",
        [
            {"question_id": "a", "image": "x.png", "text": "How many?", "answer": "3"},
            {"question_id": "b", "image": "y.png", "text": "How many?"},
        ],
    )
    records, (problem,) = read("coin", test)
    assert [r.id for r in records] == ["a"]
    line = str(problem)
    assert "\n" not in line
    assert "'answer'" in line and str(test) in line and "record b" in line
    assert (problem.field, problem.reason) == ("answer", MISSING)


def test_grounding_without_size_or_with_a_bad_box_is_a_problem(tmp_path):
    test = write(
        tmp_path / "Grounding/test.json",
        [
            {"question_id": 1, "image": "a.jpg", "text": "find it", "answer_bbox": "[0.1, 0.2]"},
            {"question_id": 2, "image": "a.jpg", "text": "find it", "answer_bbox": "[0, 0, 1, 1]"},
        ],
    )
    _, problems = read("coin", test)
    assert [(p.field, p.reason) for p in problems] == [
        ("answer_bbox", MALFORMED),
        ("size", MISSING),
    ]


def test_mllm_dcl_test_file_keeps_options(tmp_path):
    test = write(
        tmp_path / "Domain_data/RS/test.json",
        [
            {
                "question_id": "rs-1",
                "image": "RS/img/1.png",
                "text": "What is shown?\nA. farm\nB. harbour",
                "answer": "B",
                "choices": ["farm", "harbour"],
            }
        ],
    )
    (rec,), _ = read("coin", test)
    assert rec.options == ["farm", "harbour"] and to_llava(rec)["meta"]["options"] == rec.options


def test_coin_textvqa_scored_from_the_official_answer_file(tmp_path):
    test = write(
        tmp_path / "Instructions_Original/TextVQA/test.json",
        [{"question_id": 34602, "image": "TextVQA/train_images/003a.jpg", "text": "brand?"}],
    )
    answers = write(
        tmp_path / "TextVQA/TextVQA_0.5.1_val.json",
        {
            "data": [
                {"question_id": 34602, "image_id": "003a", "question": "brand?", "answers": TEN}
            ]
        },
    )
    (rec,), problems = read("coin", test, answers=answers)
    assert not problems and rec.answers == TEN


# ------------------------------------------------------------------------------------ LLaVA
def test_llava_mixture_text_only_records_are_recognised(tmp_path):
    mix = write(
        tmp_path / "llava_v1_5_mix665k.json",
        [
            {
                "id": "000000033471",
                "image": "coco/train2017/000000033471.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat are the colors of the bus?"},
                    {"from": "gpt", "value": "White and red."},
                    {"from": "human", "value": "What feature can be seen on the back?"},
                    {"from": "gpt", "value": "An advertisement."},
                ],
            },
            {
                "id": "i6IyJda_0",
                "model": "",
                "conversations": [
                    {"from": "human", "value": "How to make a cake?"},
                    {"from": "gpt", "value": "Mix flour, eggs and sugar, then bake."},
                ],
            },
            {
                "id": "lost",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is this?"},
                    {"from": "gpt", "value": "A cat."},
                ],
            },
        ],
    )
    (image_rec, text_rec), (problem,) = read("llava", mix)
    assert not image_rec.text_only and image_rec.turns == [
        ("What feature can be seen on the back?", "An advertisement.")
    ]
    assert text_rec.text_only and text_rec.image is None
    assert (problem.record, problem.field, problem.reason) == ("lost", "image", MISSING)
    as_dict = to_llava(text_rec)
    assert "image" not in as_dict
    assert as_dict["conversations"][0]["value"] == "How to make a cake?"
    assert len(to_llava(image_rec)["conversations"]) == 4


def test_llava_malformed_conversation_is_named(tmp_path):
    bad = write(
        tmp_path / "train.json",
        [{"id": "x", "image": "a.jpg", "conversations": [{"from": "human", "value": "hi"}]}],
    )
    _, (problem,) = read("llava", bad)
    assert (problem.field, problem.reason) == ("conversations", MALFORMED)


def test_llava_empty_answers_lose_only_their_turn(tmp_path):
    turns = [("<image>\nq1", ""), ("q2", "a2"), ("q3", None), ("q4", "a4")]
    conv = [
        t for q, a in turns for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})
    ]
    path = write(
        tmp_path / "train.json",
        [
            {"id": "first-empty", "image": "a.jpg", "conversations": conv},
            {"id": "later-empty", "image": "a.jpg", "conversations": conv[2:]},
        ],
    )
    (rec,), (problem,) = read("llava", path)
    assert (problem.record, problem.field, problem.reason) == (
        "first-empty",
        "conversations",
        MISSING,
    )
    assert rec.answers == ["a2"] and rec.turns == [("q4", "a4")] and rec.extra["empty_turns"] == 1


# ---------------------------------------------------------------- question file + answer file
def _textvqa(tmp_path: Path, question_id) -> tuple[Path, Path]:
    questions = write(
        tmp_path / "eval/textvqa/llava_textvqa_val_v051_ocr.jsonl",
        [
            {
                "question_id": question_id,
                "image": "003a8ae2ef43b901.jpg",
                "text": "what is the brand of this camera?\nReference OCR token: NIKON, 35mm\n"
                "Answer the question using a single word or phrase.",
                "category": "default",
            }
        ],
        jsonl=True,
    )
    answers = write(
        tmp_path / "eval/textvqa/TextVQA_0.5.1_val.json",
        {
            "dataset_name": "textvqa",
            "data": [
                {
                    "question_id": 34602,
                    "image_id": "003a8ae2ef43b901",
                    "question": "what is the brand of this camera?",
                    "answers": TEN,
                }
            ],
        },
    )
    return questions, answers


@pytest.mark.parametrize("question_id", [34602, "003a8ae2ef43b901"])
def test_textvqa_keeps_all_ten_answers_and_scores_the_official_way(tmp_path, question_id):
    """Joined on question_id, or as LLaVA-1.5's eval does (image id + question line)."""
    (rec,), problems = read("question_answers", *_textvqa(tmp_path, question_id))
    assert not problems and rec.answers == TEN
    assert vqa_score("Nikon", rec.answers) == pytest.approx(1.0)  # 4 of 10 agree
    assert vqa_score("canon", rec.answers) == pytest.approx(0.9)  # 3 of 10
    assert vqa_score("sony", rec.answers) == pytest.approx(0.3)  # 1 of 10
    assert to_llava(rec)["answers"] == TEN


def test_convert_keeps_the_ten_answers_of_a_read_record(tmp_path):
    """A record through ``to_llava`` is a file ``python -m mcl.data.convert`` takes as it is."""
    (rec,), _ = read("question_answers", *_textvqa(tmp_path, 34602))
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), "white").save(images / rec.image)
    src = write(tmp_path / "converted.json", [to_llava(rec)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mcl.data.convert", "--bench", "cvit", "--task", "textvqa"]
    cmd += ["--split", "test", "--json", str(src), "--images", str(images), "--out", str(out)]
    done = subprocess.run(cmd + ["--quiet"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (shard,) = sorted((out / "textvqa").glob("test-*.tar"))
    with tarfile.open(shard) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith(".json")]
        sample = json.loads(tar.extractfile(member).read())
    assert sample["answers"] == TEN


def test_vqa_annotation_file_keeps_answers_with_repeats(tmp_path):
    questions = write(
        tmp_path / "questions.jsonl",
        [{"question_id": 1, "image": "a.jpg", "text": "what brand?"}],
        jsonl=True,
    )
    answers = write(
        tmp_path / "textvqa_val_annotations.json",
        {"annotations": [{"question_id": 1, "answers": [{"answer": a} for a in TEN]}]},
    )
    (rec,), _ = read("question_answers", questions, answers)
    assert rec.answers == TEN


def test_gqa_answers_come_from_the_question_dict(tmp_path):
    questions = write(
        tmp_path / "llava_gqa_testdev_balanced.jsonl",
        [
            {"question_id": "20968379", "image": "n288870.jpg", "text": "Is it red?"},
            {"question_id": "404", "image": "n1.jpg", "text": "Where?"},
        ],
        jsonl=True,
    )
    answers = write(
        tmp_path / "testdev_balanced_questions.json",
        {
            "20968379": {
                "imageId": "n288870",
                "question": "Is it red?",
                "answer": "no",
                "fullAnswer": "No, it is blue.",
            }
        },
    )
    (rec,), (problem,) = read("question_answers", questions, answers)
    assert rec.answers == ["no"] and rec.extra["fullAnswer"] == "No, it is blue."
    assert (problem.record, problem.reason) == ("404", UNMATCHED) and str(answers) in str(problem)


def _scienceqa(tmp_path: Path) -> Path:
    problems = write(
        tmp_path / "ScienceQA/problems.json",
        {
            "4": {
                "question": "Which animal is bigger?",
                "choices": ["ant", "cow", "bee"],
                "answer": 1,
                "hint": "",
                "image": "image.png",
                "split": "test",
                "subject": "natural science",
            },
            "5": {
                "question": "Which word is a noun?",
                "choices": ["run", "table"],
                "answer": 1,
                "hint": "Nouns name things.",
                "image": None,
                "split": "test",
            },
        },
    )
    write(tmp_path / "ScienceQA/pid_splits.json", {"test": ["4", "5"], "train": []})
    return problems


def test_scienceqa_problems_keep_options_and_text_only_questions(tmp_path):
    problems = _scienceqa(tmp_path)
    (with_image, text_only), issues = read("question_answers", None, problems)
    assert not issues
    assert with_image.image == "test/4/image.png" and text_only.text_only
    assert with_image.answers == ["B"] and with_image.options == ["ant", "cow", "bee"]
    assert "B. cow" in with_image.question and "Context: Nouns name things." in text_only.question
    assert choice_score("B", with_image.answers, with_image.options) == 1.0
    assert choice_score("cow", with_image.answers, with_image.options) == 1.0
    assert choice_score("A", with_image.answers, with_image.options) == 0.0


def test_scienceqa_llava_question_file_joins_problems(tmp_path):
    problems = _scienceqa(tmp_path)
    questions = write(
        tmp_path / "llava_test_CQM-A.json",
        [
            {
                "id": "5",
                "conversations": [
                    {"from": "human", "value": "Which word is a noun?\nA. run\nB. table"},
                    {"from": "gpt", "value": "B"},
                ],
            }
        ],
    )
    (rec,), _ = read("question_answers", questions, problems)
    assert rec.text_only and rec.answers == ["B"] and rec.options == ["run", "table"]


def test_an_answer_file_of_unknown_shape_is_one_line(tmp_path):
    questions = write(tmp_path / "q.jsonl", [{"question_id": 1, "text": "?"}], jsonl=True)
    answers = write(tmp_path / "a.json", [1, 2, 3])
    with pytest.raises(ReadError, match="a.json"):
        read("question_answers", questions, answers)


# ------------------------------------------------------------------------------ captions
def _coco_refs(tmp_path: Path) -> Path:
    return write(
        tmp_path / "flickr30k/flickr30k_test_karpathy.json",
        {
            "images": [
                {"id": 1, "file_name": "Images/1000092795.jpg"},
                {"id": 2, "file_name": "Images/2.jpg"},
            ],
            "annotations": [{"image_id": 1, "id": i, "caption": c} for i, c in enumerate(CAPTIONS)]
            + [{"image_id": 2, "id": 9, "caption": "a red car"}],
        },
    )


def test_coco_style_references_keep_all_five_captions(tmp_path):
    (five, one), problems = read("coco_captions", _coco_refs(tmp_path))
    assert not problems
    assert five.answers == CAPTIONS and five.image == "Images/1000092795.jpg"
    assert one.answers == ["a red car"]
    pred = "a dog running across the grass"
    assert bleu_coco([pred], [five.answers]) != bleu_coco([pred], [five.answers[:1]])


def test_karpathy_list_references_are_merged_per_image(tmp_path):
    refs = write(
        tmp_path / "coco_karpathy_test.json",
        [{"image": "val2014/COCO_val2014_000000391895.jpg", "caption": CAPTIONS[:3]}]
        + [{"image": "val2014/COCO_val2014_000000391895.jpg", "caption": c} for c in CAPTIONS[3:]],
    )
    (rec,), _ = read("coco_captions", refs)
    assert rec.answers == CAPTIONS


def test_ucit_caption_test_file_joined_by_position_like_mcitlib(tmp_path):
    refs = _coco_refs(tmp_path)
    questions = write(
        tmp_path / "UCIT/Flickr30k/test.json",
        [
            {
                "question_id": "f-a",
                "image": "flickr30k/a.jpg",
                "text": "Describe the image briefly.",
            },
            {
                "question_id": "f-b",
                "image": "flickr30k/b.jpg",
                "text": "Describe the image briefly.",
            },
        ],
    )
    (first, second), problems = read("coco_captions", refs, questions)
    assert not problems
    assert first.answers == CAPTIONS and second.answers == ["a red car"]
    assert first.extra["join"] == "position" and first.question == "Describe the image briefly."


def test_caption_join_by_image_name(tmp_path):
    refs = _coco_refs(tmp_path)
    questions = write(
        tmp_path / "test.json",
        [{"question_id": 9, "image": "flickr30k/Images/2.jpg", "text": "Caption it."}],
    )
    (rec,), _ = read("coco_captions", refs, questions)
    assert rec.answers == ["a red car"] and rec.extra["join"] == "image"


def test_an_image_without_captions_is_a_problem(tmp_path):
    refs = write(
        tmp_path / "val.json",
        {"images": [{"id": 3, "file_name": "3.jpg"}], "annotations": []},
    )
    _, (problem,) = read("coco_captions", refs)
    assert (problem.record, problem.field) == ("3", "caption")


# ------------------------------------------------------------------------- InternVL / LAVIS
def test_internvl_jsonl_training_and_eval_shapes(tmp_path):
    train = write(
        tmp_path / "data/iconqa/train.jsonl",
        [
            {
                "id": 0,
                "image": "iconqa/1.png",
                "width": 300,
                "height": 200,
                "conversations": [
                    {"from": "human", "value": "How many dots?"},
                    {"from": "gpt", "value": "3"},
                ],
            },
            {
                "id": 1,
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello"},
                ],
            },
            {
                "id": 2,
                "image": ["a.png", "b.png"],
                "conversations": [
                    {"from": "human", "value": "<image>\n<image>\nSame?"},
                    {"from": "gpt", "value": "no"},
                ],
            },
        ],
        jsonl=True,
    )
    (rec, text_rec), (problem,) = read("internvl", train)
    assert rec.image == "iconqa/1.png" and rec.extra == {"width": 300, "height": 200}
    assert text_rec.text_only
    assert (problem.field, problem.reason) == ("image", UNSUPPORTED)
    test = write(
        tmp_path / "data/kvqa/test.jsonl",
        [
            {
                "question_id": 5,
                "image": "kvqa/5.jpg",
                "question": "Who is this?",
                "answer": ["Obama", "Barack Obama"],
            }
        ],
        jsonl=True,
    )
    prompt = "Answer the question using a single word or phrase."
    (rec,), _ = read("internvl", test, prompt=prompt)
    assert rec.answers == ["Obama", "Barack Obama"]
    assert rec.question.endswith("\n" + prompt) and rec.instruction == prompt


def test_internvl_multiple_choice_lines_as_dmole_asks_them(tmp_path):
    # data/iconqa/multi_text_choice_test.jsonl, data/pmcvqa/test_clean.jsonl: the fields that
    # eval/vqa/evaluate_multi_choice.py (gcd19/D-MoLE) reads; `answer` indexes `choices`
    test = write(
        tmp_path / "data/iconqa/multi_text_choice_test.jsonl",
        [
            {"image": "iconqa/1.png", "question": "Which is bigger?", "choices": ["a", "b", "c"]}
            | {"answer": 2},
            {"image": "iconqa/2.png", "question": "Which?", "choices": ["x", "y"], "answer": "y"},
            {"image": "iconqa/3.png", "question": "Which?", "choices": ["x", "y"]},
            {"image": "iconqa/4.png", "question": "Which?", "choices": "x y", "answer": 0},
        ],
        jsonl=True,
    )
    (rec,), problems = read("internvl", test)
    mc = "Answer with the option's letter from the given choices directly."
    assert rec.question == f"Which is bigger?\nA. a\nB. b\nC. c\n{mc}"
    assert rec.answers == ["C"] and rec.options == ["a", "b", "c"] and rec.instruction == mc
    assert choice_score("C", rec.answers, rec.options) == 1.0
    assert choice_score("c", rec.answers, rec.options) == 1.0  # the option's text
    assert choice_score("A", rec.answers, rec.options) == 0.0
    assert [(p.field, p.reason) for p in problems] == [
        ("answer", MALFORMED),
        ("answer", MISSING),
        ("choices", MALFORMED),
    ]
    assert "index of the right choice" in str(problems[0])


def test_internvl_grounding_lines_keep_pixel_box_and_size(tmp_path):
    # data/sk-vg/test.jsonl: the fields eval/refcoco/evaluate_grounding.py (gcd19/D-MoLE) reads
    rec = {"image": "sk-vg/images/1.jpg", "sent": "the man on the left", "width": 640}
    test = write(
        tmp_path / "data/sk-vg/test.jsonl",
        [
            rec | {"bbox": [64, 48, 320, 240], "height": 480, "knowledge": "he wears a hat"},
            rec | {"bbox": [0, 0, 10, 10]},
            rec | {"bbox": [0, 0, 10], "height": 480},
            {"image": "x.jpg", "bbox": [0, 0, 1, 1], "width": 2, "height": 2},
        ],
        jsonl=True,
    )
    (box,), problems = read("internvl", test)
    assert box.bbox == [64, 48, 320, 240] and box.image_size == [640, 480]
    assert box.question == (
        "Based on the knowledge he wears a hat.\nPlease provide the bounding box coordinate of "
        "the region this sentence describes: <ref>the man on the left</ref>"
    )
    # InternVL's answer is on a 0-1000 scale per axis, as D-MoLE rescales it to pixels
    assert box.answers == ["[[100, 100, 500, 500]]"]
    # a 0-1000 prediction scores as D-MoLE's pixel IoU does: [100, 100, 500, 400] covers 3/4
    assert iou_score("<ref>the man</ref><box>[[100, 100, 500, 400]]</box>", box.answers) == 1.0
    assert iou_score("[[100, 100, 500, 250]]", box.answers) == 0.0  # IoU 3/8
    assert to_llava(box)["meta"] == {"bbox": [64, 48, 320, 240], "image_size": [640, 480]}
    assert [(p.field, p.reason) for p in problems] == [
        ("height", MISSING),
        ("bbox", MALFORMED),
        ("sent", MISSING),
    ]


def test_lavis_answer_list_kept_with_repeats_and_missing_answer_named(tmp_path):
    ann = write(
        tmp_path / "okvqa/annotations/vqa_val_eval.json",
        [
            {"question_id": 1, "question": "What brand?", "answer": TEN, "image": "val2014/1.jpg"},
            {"question_id": 2, "question": "What brand?", "image": "val2014/2.jpg"},
        ],
    )
    (rec,), (problem,) = read("lavis", ann)
    assert rec.answers == TEN
    assert vqa_score("canon", rec.answers) == pytest.approx(0.9)
    assert problem.field == "answer" and str(ann) in str(problem)


# ------------------------------------------------------------------------------ whole files
def test_unreadable_files_raise_one_line(tmp_path):
    with pytest.raises(ReadError, match="no such file"):
        read("coin", tmp_path / "absent.json")
    obj = write(tmp_path / "one.json", {"a": 1})
    with pytest.raises(ReadError, match="one JSON object"):
        read("lavis", obj)


def test_a_bad_jsonl_line_spoils_only_its_record(tmp_path):
    path = tmp_path / "test.jsonl"
    good = {"question_id": 1, "question": "q?", "answer": "a", "image": "i.jpg"}
    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    (rec,), (problem,) = read("lavis", path)
    assert rec.id == "1" and problem.reason == MALFORMED and problem.record == "#1"


# ------------------------------------------------------------------------------ structure
def test_readers_import_only_the_standard_library():
    """Reading a benchmark's files must not build models or pull in the synthetic worlds."""
    code = (
        "import sys, mcl.data.readers\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PIL', 'numpy')"
        " or (m.startswith('mcl.') and not m.startswith('mcl.data.readers') and m != 'mcl.data'))\n"
        "print(','.join(bad))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_formats_page_documents_every_reader():
    page = (ROOT / "docs" / "data_formats.md").read_text(encoding="utf-8")
    for name in READERS:
        assert f"## `{name}`" in page
