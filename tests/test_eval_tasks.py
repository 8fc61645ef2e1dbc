"""Benchmark readers on small fixture trees laid out like the public releases, and their metrics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from smoltolk.errors import InputError
from smoltolk.eval.scorer import ItemScore
from smoltolk.eval.tasks import MMLU, BlimpText, CrossModalStoryCloze, SBlimp, SpeechNLL, StoryCloze, SWuggy, read_mmlu
from smoltolk.eval.units import load_unit_source


class WordTokenizer:
    """Stands in for a tokenizers.Tokenizer: one id per character (leading spaces kept)."""

    class _Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text, add_special_tokens=False):
        return self._Enc([ord(c) % 40 for c in text])


def write_gold(folder, columns, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "gold.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        (folder / f"{r['filename']}.wav").write_bytes(b"")  # names only; units come from a units file
    return folder


SWUGGY_COLS = ["id", "filename", "voice", "frequency", "word", "phones", "length", "correct"]
SBLIMP_COLS = ["filename", "type", "subtype", "transcription", "correct", "id", "voice"]


def swuggy_tree(tmp_path):
    rows = []
    for item_id, freq in (("1", "12"), ("2", "0")):
        for voice in ("Alex", "Bruce"):
            for correct in (1, 0):
                name = f"{'w' if correct else 'nw'}{item_id}_{voice}"
                rows.append({"id": item_id, "filename": name, "voice": voice, "frequency": freq if correct else "",
                             "word": "x", "phones": "x", "length": "1", "correct": correct})
    return write_gold(tmp_path / "lexical" / "dev", SWUGGY_COLS, rows)


def scores(values):
    return [ItemScore(v * n, n) for v, n in values]


def test_swuggy_pairs_average_over_voices_then_ids(tmp_path):
    task = SWuggy(swuggy_tree(tmp_path))
    names = task.item_names()
    assert task.split == "dev" and len(names) == 8
    good = {"w1_Alex": -1.0, "nw1_Alex": -2.0, "w1_Bruce": -3.0, "nw1_Bruce": -2.0,  # id 1: 1 and 0 -> 0.5
            "w2_Alex": -1.0, "nw2_Alex": -1.0, "w2_Bruce": -1.0, "nw2_Bruce": -5.0}  # id 2: tie 0.5 and 1 -> 0.75
    m = task.metrics(scores([(good[n], 4) for n in names]), "mean")
    assert m["accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["accuracy_in_vocab"] == pytest.approx(0.5)  # only id 1 has frequency > 0
    assert m["ids"] == 2 and m["ids_in_vocab"] == 1 and m["pairs"] == 4


def test_sum_and_mean_can_disagree(tmp_path):
    task = SWuggy(swuggy_tree(tmp_path))
    # the word: mean -1 over 10 units (sum -10); the non-word: mean -2 over 2 units (sum -4)
    vals = {n: (-1.0, 10) if n.startswith("w") else (-2.0, 2) for n in task.item_names()}
    s = scores([vals[n] for n in task.item_names()])
    assert task.metrics(s, "mean")["accuracy"] == 1.0
    assert task.metrics(s, "sum")["accuracy"] == 0.0


def test_unpaired_and_missing_files(tmp_path):
    folder = swuggy_tree(tmp_path)
    rows = list(csv.DictReader(open(folder / "gold.csv")))
    write_gold(tmp_path / "bad", SWUGGY_COLS, [r for r in rows if r["filename"] != "nw2_Bruce"])
    with pytest.raises(InputError, match=r"unpaired item \('2', 'Bruce'\)"):
        SWuggy(tmp_path / "bad")
    with pytest.raises(InputError, match="gold.csv: missing"):
        SWuggy(tmp_path / "nowhere")
    write_gold(tmp_path / "cols", ["id", "filename", "correct"], [{"id": 1, "filename": "a", "correct": 1}])
    with pytest.raises(InputError, match=r"missing column\(s\) \['voice', 'frequency', 'word'\]"):
        SWuggy(tmp_path / "cols")


def test_units_from_jsonl_npy_and_txt(tmp_path):
    (tmp_path / "units.jsonl").write_text(
        json.dumps({"id": "a", "units": [1, 1, 2, 3, 3]}) + "\n"  # frame-level: collapsed
        + json.dumps({"id": "b", "units": [4, 4], "durations": [2, 1]}) + "\n")  # already collapsed
    store = load_unit_source(tmp_path / "units.jsonl", ["a", "b"])
    assert store["a"].tolist() == [1, 2, 3] and store["b"].tolist() == [4, 4]
    with pytest.raises(InputError, match=r"no units for 1 of 3 files, e\.g\. \['c'\]"):
        load_unit_source(tmp_path / "units.jsonl", ["a", "b", "c"])
    folder = tmp_path / "per_file"
    folder.mkdir()
    np.save(folder / "x.npy", np.array([5, 5, 6]))
    (folder / "y.txt").write_text("7 8 8 9\n")
    store = load_unit_source(folder, ["x", "y"])
    assert store["x"].tolist() == [5, 6] and store["y"].tolist() == [7, 8, 9]
    with pytest.raises(InputError, match=r"no z\.npy or z\.txt"):
        load_unit_source(folder, ["z"])


def test_sblimp_macro_over_types(tmp_path):
    rows = []
    spec = [("morphology", "a", "1"), ("morphology", "a", "2"), ("morphology", "b", "3"), ("syntax", "c", "4")]
    for typ, sub, item_id in spec:
        for voice in ("V1", "V2"):
            for correct in (1, 0):
                rows.append({"filename": f"{item_id}_{voice}_{correct}", "type": typ, "subtype": sub,
                             "transcription": f"s{item_id}{'' if correct else ' not'}", "correct": correct,
                             "id": item_id, "voice": voice})
    folder = write_gold(tmp_path / "syntactic" / "test", SBLIMP_COLS, rows)
    task = SBlimp(folder)
    assert task.split == "test"
    right = {"1", "2", "3"}  # morphology all right; syntax wrong with V1, tie with V2
    vals = []
    for r in task.rows:
        good = r["correct"] == "1"
        if r["id"] in right:
            vals.append((-1.0 if good else -2.0, 3))
        elif r["voice"] == "V1":
            vals.append((-2.0 if good else -1.0, 3))
        else:
            vals.append((-1.0, 3))
    m = task.metrics(scores(vals), "mean")
    assert m["by_type"] == {"morphology": 1.0, "syntax": 0.25}
    assert m["accuracy"] == pytest.approx(0.625) and m["accuracy_micro"] == pytest.approx(3.25 / 4)
    text = BlimpText(folder)
    items = text.items(None, WordTokenizer())
    assert len(items) == 8 and all(not it.has_speech for it in items)  # one sentence per side, voices merged
    assert items[1].segments[0].ids == tuple(ord(c) % 40 for c in "s1 not")


def story_tree(tmp_path, n=3, drop=None):
    folder = tmp_path / "sSC"
    folder.mkdir()
    for k in range(n):
        for i, side in ((2 * k, "correct"), (2 * k + 1, "incorrect")):
            name = f"{i}_story{k}-ab_{side}"
            if name != drop:
                (folder / f"{name}.wav").write_bytes(b"")
    return folder


def test_storycloze_pairs_by_story(tmp_path):
    task = StoryCloze(story_tree(tmp_path), "sstorycloze")
    assert task.item_names()[:2] == ["0_story0-ab_correct", "1_story0-ab_incorrect"]
    m = task.metrics(scores([(-1, 5), (-2, 5), (-2, 5), (-1, 5), (-1, 5), (-1, 5)]), "mean")
    assert m == {"accuracy": pytest.approx(0.5), "items": 3}


def test_storycloze_unpaired(tmp_path):
    with pytest.raises(InputError, match="unpaired: story 'story1-ab' has no incorrect ending"):
        StoryCloze(story_tree(tmp_path, drop="3_story1-ab_incorrect"), "sstorycloze")


def xmodal_tree(tmp_path, skip=()):
    folder = tmp_path / "xsc"
    folder.mkdir()
    units = []
    for b in ("s1", "s2"):
        for part, text in (("mutual", "ab cd" + " kl" * (b == "s2")), ("correct", "ef"), ("incorrect", "gh ij")):
            if f"{b}_{part}.txt" not in skip:
                (folder / f"{b}_{part}.txt").write_text(text + "\n")
            (folder / f"{b}_{part}.wav").write_bytes(b"")
            mutual = [3, 4, 5] if b == "s1" else [3, 4, 7]  # the stories' contexts differ
            units.append({"id": f"{b}_{part}", "units": mutual if part == "mutual" else [5, 6]})
    (tmp_path / "units.jsonl").write_text("".join(json.dumps(u) + "\n" for u in units))
    return folder


def test_cross_modal_items_per_setting(tmp_path):
    folder = xmodal_tree(tmp_path)
    task = CrossModalStoryCloze(folder, "sstorycloze_xmodal")
    store = load_unit_source(tmp_path / "units.jsonl", task.audio())
    items = task.items(store, WordTokenizer())
    assert len(items) == 4 * 2 * 2 and all(it.score_from == 1 for it in items)
    by_setting = dict(zip(["T", "S", "T->S", "S->T"], [items[k * 4] for k in range(4)]))
    t = by_setting["T"]
    assert [s.modality for s in t.segments] == ["text", "text"]
    assert t.segments[1].ids == tuple(ord(c) % 40 for c in " ef")  # the ending keeps its leading space
    s = by_setting["S"]
    assert s.segments[0].ids == (3, 4, 5) and s.segments[1].ids == (6,)  # collapsed across the junction
    assert [seg.modality for seg in by_setting["T->S"].segments] == ["text", "speech"]
    assert [seg.modality for seg in by_setting["S->T"].segments] == ["speech", "text"]


def test_cross_modal_settings_keep_their_own_accuracy(tmp_path):
    """Each setting is scored alone (the authors' script accumulated across settings)."""
    folder = xmodal_tree(tmp_path)
    every = CrossModalStoryCloze(folder, "tstorycloze_xmodal")
    # T: both right; S: both wrong; T->S: one tie; S->T: right and wrong
    vals = [(-1, 2), (-2, 2)] * 2 + [(-2, 2), (-1, 2)] * 2 + [(-1, 2), (-1, 2), (-1, 2), (-3, 2)] \
        + [(-1, 2), (-2, 2), (-3, 2), (-2, 2)]
    m = every.metrics(scores(vals), "mean")["settings"]
    assert m == {"T": {"accuracy": 1.0}, "S": {"accuracy": 0.0}, "T->S": {"accuracy": 0.75},
                 "S->T": {"accuracy": 0.5}}
    only_s = CrossModalStoryCloze(folder, "tstorycloze_xmodal", ["S"])
    assert only_s.metrics(scores(vals[4:8]), "mean")["settings"]["S"]["accuracy"] == 0.0
    assert not CrossModalStoryCloze(folder, "x", ["T"]).speech


def calibration_tree(tmp_path):
    """Four stories with their own texts and units; s0's wrong ending is s1's right one."""
    folder = tmp_path / "cal"
    folder.mkdir()
    units = []
    for i in range(4):
        texts = {"mutual": f"m{i} m{i}", "correct": f"c{i}", "incorrect": "c1" if i == 0 else f"w{i}"}
        for part, text in texts.items():
            (folder / f"s{i}_{part}.txt").write_text(text + "\n")
            (folder / f"s{i}_{part}.wav").write_bytes(b"")
            units.append({"id": f"s{i}_{part}", "units": [10 + i, 20 + i] if part == "mutual" else [30 + i, 5]})
    (tmp_path / "units.jsonl").write_text("".join(json.dumps(u) + "\n" for u in units))
    return folder


def test_cross_modal_calibration_cancels_each_endings_own_likelihood(tmp_path):
    """An ending the model finds likely anyway wins raw; calibrated, only what its own story adds counts."""
    folder = calibration_tree(tmp_path)
    task = CrossModalStoryCloze(folder, "tstorycloze_xmodal", ["T->S", "S->T"], calibration_contexts=2)
    names = task.item_names()
    assert names[:2] == ["T->S/s0/correct", "T->S/s0/incorrect"] and len(names) == 2 * 4 * 2 * 3
    # never after the story an ending belongs to: s0's wrong ending is s1's right one, so s0 and s1 skip each other
    others = {b: sorted(n.split("/after/")[1] for n in names if n.startswith(f"T->S/{b}/correct/after/"))
              for b in ("s0", "s1", "s2", "s3")}
    assert others == {"s0": ["s2", "s3"], "s1": ["s2", "s3"], "s2": ["s0", "s3"], "s3": ["s0", "s1"]}
    items = task.items(load_unit_source(tmp_path / "units.jsonl", task.audio()), WordTokenizer())
    by_name = dict(zip(names, items, strict=True))
    assert by_name["T->S/s0/correct/after/s2"].segments[0] == by_name["T->S/s2/correct"].segments[0]
    assert by_name["T->S/s0/correct/after/s2"].segments[1] == by_name["T->S/s0/correct"].segments[1]

    # T->S: raw right (correct -1, incorrect -2) but the story lowers the correct ending (its mean after the
    # others is 1 higher) and raises the wrong one (1 lower): calibrated wrong. S->T: raw wrong (-3 vs -2),
    # calibrated right (the story adds 2 to the correct ending, 0 to the wrong one). The two other contexts
    # differ (+-0.5), so a layout mix-up of contexts, sides or settings changes the result.
    def value(name):
        setting, _, side, *rest = name.split("/")
        own = {("T->S", "correct"): -1, ("T->S", "incorrect"): -2, ("S->T", "correct"): -3,
               ("S->T", "incorrect"): -2}[(setting, side)]
        if not rest:
            return own
        shift = {("T->S", "correct"): 1, ("T->S", "incorrect"): -1, ("S->T", "correct"): -2,
                 ("S->T", "incorrect"): 0}[(setting, side)]
        mine = [n for n in names if n.startswith(name.split("/after/")[0] + "/after/")]
        first = name == mine[0]
        return own + shift + (0.5 if first else -0.5)

    m = task.metrics(scores([(value(n), 1) for n in names]), "sum")["settings"]
    assert m["T->S"]["accuracy"] == 1.0 and m["T->S"]["calibrated"]["accuracy"] == 0.0
    assert m["S->T"]["accuracy"] == 0.0 and m["S->T"]["calibrated"]["accuracy"] == 1.0
    assert m["T->S"]["calibrated"]["gain_nats"] == {"correct": -1.0, "incorrect": 1.0}
    assert m["S->T"]["calibrated"]["gain_nats"] == {"correct": 2.0, "incorrect": 0.0}
    # a context-blind model (each ending scores the same after any story) is at chance calibrated
    blind = task.metrics(scores([(-1 if "/correct" in n else -2, 1) for n in names]), "sum")["settings"]
    assert blind["T->S"]["calibrated"]["accuracy"] == 0.5
    mixed = CrossModalStoryCloze(folder, "tstorycloze_xmodal", ["T", "T->S"], calibration_contexts=2)
    assert not any(n.startswith("T/") and "/after/" in n for n in mixed.item_names())  # cross-modal settings only
    m = mixed.metrics(scores([(-1, 1)] * len(mixed.item_names())), "sum")["settings"]
    assert "calibrated" not in m["T"] and m["T->S"]["calibrated"]["accuracy"] == 0.5
    with pytest.raises(InputError, match="fewer than calibration_contexts=3"):
        CrossModalStoryCloze(folder, "tstorycloze_xmodal", ["T->S"], calibration_contexts=3)


def test_cross_modal_missing_text(tmp_path):
    folder = xmodal_tree(tmp_path, skip={"s2_correct.txt"})
    with pytest.raises(InputError, match=r"story 's2' lacks s2_correct\.txt"):
        CrossModalStoryCloze(folder, "sstorycloze_xmodal")
    CrossModalStoryCloze(folder, "sstorycloze_xmodal", ["S"])  # speech only: the text is not needed


def test_mmlu_csv_layout_query_and_norm(tmp_path):
    test = tmp_path / "mmlu" / "test"
    test.mkdir(parents=True)
    with open(test / "high_school_physics_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["What is g?", "a long right answer", "9.8", "1", "0", "A"],
                                 ["Second?", "x", "y", "z", "w", "D"]])
    with open(test / "anatomy_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["Bones?", "206", "12", "3", "4", "A"]] * 3)
    qs = read_mmlu(tmp_path / "mmlu", max_per_subject=2)
    assert [q.subject for q in qs] == ["anatomy", "anatomy", "high_school_physics", "high_school_physics"]
    task = MMLU(tmp_path / "mmlu", max_per_subject=2)
    items = task.items(None, WordTokenizer())
    query = "The following are questions about high school physics.\nQuestion: What is g?\nAnswer:"
    assert items[8].segments[0].ids == tuple(ord(c) % 40 for c in query)
    assert items[8].segments[1].ids == tuple(ord(c) % 40 for c in " a long right answer")
    # question 3: the short wrong answer wins on the sum, the long right one per character
    vals = [(-1, 1), (-5, 1), (-5, 1), (-5, 1)] * 2 + [(-10, 1), (-8, 1), (-30, 1), (-30, 1)] \
        + [(-1, 1), (-1, 1), (-1, 1), (-1, 1)]
    m = task.metrics([ItemScore(v, n) for v, n in vals], "mean")
    assert m["by_subject"]["anatomy"] == {"acc": 1.0, "acc_norm": 1.0, "items": 2}
    assert m["by_subject"]["high_school_physics"]["acc"] == pytest.approx((0 + 0.25) / 2)
    assert m["by_subject"]["high_school_physics"]["acc_norm"] == pytest.approx((1 + 0.25) / 2)


def test_mmlu_jsonl_and_errors(tmp_path):
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps({"subject": "law", "question": "Q", "choices": ["a", "b"], "answer": 1}) + "\n"
                    + json.dumps({"subject": "law", "question": "Q2", "choices": ["a", "b"], "answer": "B"}) + "\n")
    assert [q.answer for q in read_mmlu(path)] == [1, 1]
    path.write_text(json.dumps({"subject": "law", "question": "Q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(InputError, match="outside the 2 choices"):
        read_mmlu(path)
    with pytest.raises(InputError, match="_test.csv"):
        read_mmlu(tmp_path)


def test_speech_nll_uses_manifest_units(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"id": "u1", "units": [1, 2, 2, 3]}) + "\n"
                    + json.dumps({"id": "u2", "units": [4, 5], "durations": [1, 1]}) + "\n")
    task = SpeechNLL(path)
    store = task.manifest_units()
    assert [len(it.segments[0].ids) for it in task.items(store, None)] == [3, 2]
    m = task.metrics([ItemScore(-6.0, 3), ItemScore(-1.0, 2)], "mean")
    assert m["nll"] == pytest.approx(7 / 5) and m["nll_utterance_mean"] == pytest.approx((2 + 0.5) / 2)
