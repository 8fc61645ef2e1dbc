"""Cross-modal diagnostics: the world's files, and each metric on cases with a known answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_backbone, tiny_model

from smoltolk.errors import InputError
from smoltolk.eval.diagnostics import TIE_NATS, LexicalCloze, SpeakerContext, WordTranslation
from smoltolk.eval.scorer import ItemScore, LikelihoodScorer, Segment
from smoltolk.model.hf import load_tokenizer
from smoltolk.world.build import build_world, eval_task_overrides
from smoltolk.world.speech import NUM_UNITS, PseudoSpeech
from smoltolk.world.world import ACTIONS, words


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=3, n_text=30, n_speech=30, n_bench_stories=6, n_bench_pairs=5, min_gap_words=40)
    return out


def _blind_model():
    """A model that ignores its context: no attention output anywhere, so each position sees only itself."""
    model = tiny_model(backbone=tiny_backbone(vocab_size=512), num_units=NUM_UNITS)
    with torch.no_grad():
        for stack in (model.backbone.layers, model.input_adapter, model.output_adapter):
            for layer in stack:
                layer.self_attn.o_proj.weight.zero_()
    return model


def _oracle(items, right) -> list[ItemScore]:
    """Scores 0 for the items ``right`` accepts (by name), -1 for the others."""
    return [ItemScore(0.0 if right(it.name) else -1.0, 1) for it in items]


def test_world_writes_the_diagnostics_with_speech_that_matches_its_words(world):
    root = world / "bench" / "held_out"
    cloze = [json.loads(x) for x in (root / "lexical_cloze.jsonl").read_text().splitlines()]
    assert len(cloze) == 6
    speech = PseudoSpeech(seed=3)
    for row in cloze:
        verb = row["candidates"][row["answer"]]  # the action the context's place and object allow
        assert [a.place for a in ACTIONS if a.phrase.split()[0] == verb] == [row["topic"]]
        assert row["transcript"] == " ".join(words(row["context"]))
        # the context as spoken alone (the same for every candidate: its last sound never hints at the next
        # word); a candidate's units are its own when the context is spoken on with it
        utt, ctx_words = f"h{row['id']}-ctx", row["transcript"].split()
        assert speech.render(utt, ctx_words, speaker=row["speaker"]).units == row["context_units"]
        rec = speech.render(utt, ctx_words + [verb], speaker=row["speaker"])
        start = round(rec.words[-2].end * rec.frame_rate)
        first = int(np.searchsorted(np.cumsum([0, *rec.durations]), start))
        assert rec.units[first:] == row["candidate_units"][row["answer"]]
    overrides = eval_task_overrides(root)
    assert f"tasks.lexical_cloze.path={root / 'lexical_cloze.jsonl'}" in overrides
    translation = [json.loads(x) for x in (root / "word_translation.jsonl").read_text().splitlines()]
    assert {r["group"] for r in translation} == {"held_out"} and all(r["units"] for r in translation)
    for i, r in enumerate(translation):  # the echo frame holds the word, spoken in the word's voice
        assert r["frame"] == f"kate said the word {r['word']} and tom said"
        voice = i % speech.speakers
        assert r["frame_units"] == speech.render(f"frame-{r['word']}", r["frame"].split(), speaker=voice).units
    spk = [json.loads(x) for x in (root / "speaker_context.jsonl").read_text().splitlines()]
    assert all(r["speakers"][0] != r["speakers"][1] and r["context_units"][0] != r["context_units"][1] for r in spk)


def test_lexical_cloze_oracle_is_perfect_and_a_context_blind_model_is_at_chance(world):
    task = LexicalCloze(world / "bench" / "held_out" / "lexical_cloze.jsonl")
    tok = load_tokenizer(world / "tokenizer.json")
    items = task.items(None, tok)
    answers = {r["id"]: r["candidates"][r["answer"]] for r in task.rows}
    # copies the right word in whatever modality, only after the real context: raw and calibrated 100%
    oracle = task.metrics(_oracle(items, lambda n: n.split("/")[2] == "context" and n.split("/")[-1] == answers[
        n.split("/")[1]]), "sum")
    for s in task.settings:
        assert oracle["settings"][s]["accuracy"] == 1 and oracle["settings"][s]["calibrated"]["accuracy"] == 1
        assert oracle["settings"][s]["mean_rank"] == 1
    # a context-blind model gives each candidate the same score after the story and after "then he"
    scores = LikelihoodScorer(_blind_model(), text_bos=0).score(items)
    blind = task.metrics(scores, "sum")
    k = len(task.rows[0]["candidates"])
    for s in task.settings:
        assert blind["settings"][s]["calibrated"]["accuracy"] == pytest.approx(1 / k)  # all tied
        assert blind["settings"][s]["context_gain_nats"] == pytest.approx(0, abs=TIE_NATS)  # the metric's float noise
    with pytest.raises(InputError, match="settings"):
        LexicalCloze(world / "bench" / "held_out" / "lexical_cloze.jsonl", settings=["X->S"])


def test_word_translation_oracle_and_context_blind(world):
    task = WordTranslation(world / "bench" / "heard" / "word_translation.jsonl")
    tok = load_tokenizer(world / "tokenizer.json")
    items = task.items(None, tok)
    oracle = task.metrics(_oracle(items, lambda n: n.split("/")[1] == n.split("/")[2]), "sum")
    assert all(oracle["settings"][s]["accuracy"] == 1 for s in task.settings)
    assert task.settings == ("S->T", "T->S", "S->T echo", "T->S echo")
    by_name = {it.name: it for it in items}
    a, b = task.rows[0], task.rows[1]
    ctx, word = by_name[f"T->S echo/{a['word']}/{b['word']}"].segments  # the written frame, then b spoken
    def written(text):
        return Segment("text", tuple(tok.encode(text, add_special_tokens=False).ids))

    assert ctx == written(a["frame"]) and word == Segment("speech", tuple(b["units"]))
    ctx, word = by_name[f"S->T echo/{a['word']}/{b['word']}"].segments  # the spoken frame, then b written
    assert ctx == Segment("speech", tuple(a["frame_units"])) and word == written(" " + b["word"])
    blind = task.metrics(LikelihoodScorer(_blind_model(), text_bos=0).score(items), "sum")
    n = len(task.rows)
    for s in task.settings:  # after subtracting each candidate's mean, nothing is left: all tie
        assert blind["settings"][s]["calibrated"]["accuracy"] == pytest.approx(1 / n, rel=0.05)
        assert blind["settings"][s]["chance_accuracy"] == pytest.approx(1 / n)


def test_speaker_context_effects(world):
    task = SpeakerContext(world / "bench" / "heard" / "speaker_context.jsonl")
    tok = load_tokenizer(world / "tokenizer.json")
    items = task.items(None, tok)
    # an oracle that only rewards the story's own context: every meaning effect +1 nat, speaker match 0
    oracle = task.metrics(_oracle(items, lambda n: n.split("/")[1].startswith("own")), "sum")["effects"]
    assert oracle["T->S"] == {"nats": 1.0, "positive": 1.0}
    assert oracle["S, speaker match (same story)"]["nats"] == 0
    blind = task.metrics(LikelihoodScorer(_blind_model(), text_bos=0).score(items), "sum")["effects"]
    for name in ("T->S", "T"):  # a text context ends with "." either way: nothing else can reach the ending
        assert blind[name]["nats"] == pytest.approx(0, abs=TIE_NATS)


def test_diagnostic_files_with_bad_records_are_named(tmp_path):
    path = tmp_path / "lexical_cloze.jsonl"
    path.write_text('{"id": "a"}\n')
    with pytest.raises(InputError, match=r"lexical_cloze.jsonl:1: missing context"):
        LexicalCloze(path)
    path.write_text("not json\n")
    with pytest.raises(InputError, match="not JSON"):
        LexicalCloze(path)
    with pytest.raises(InputError, match="missing"):
        WordTranslation(tmp_path / "nope.jsonl")
    # files written before the echo frames score the two plain settings; a half-framed file is refused
    rows = [{"word": "pan", "units": [1, 2]}, {"word": "pot", "units": [3]}]
    path = tmp_path / "word_translation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert WordTranslation(path).settings == ("S->T", "T->S")
    rows[0].update(frame="kate said the word pan and tom said", frame_units=[4])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="line 2 has no frame"):
        WordTranslation(path)


def test_storycloze_by_cue_splits_pairs_by_their_pronouns(tmp_path):
    from smoltolk.world.diagnostics import storycloze_by_cue

    folder = tmp_path / "tstorycloze_xmodal"
    folder.mkdir()
    endings = {"a": ("then he ran home.", "then she ran home."), "b": ("then he ate.", "then he slept."),
               "c": ("then she sat.", "then she stood.")}
    for base, (good, bad) in endings.items():
        for part, text in (("mutual", f"{base} was there."), ("correct", good), ("incorrect", bad)):
            (folder / f"{base}_{part}.txt").write_text(text + "\n")
            (folder / f"{base}_{part}.wav").write_bytes(b"")
    # T->S, one other story each: "a" right raw and calibrated; "b" and "c" wrong raw, right calibrated
    own = {("a", "correct"): -1, ("a", "incorrect"): -2, ("b", "correct"): -2, ("b", "incorrect"): -1,
           ("c", "correct"): -2, ("c", "incorrect"): -1}
    other = {("a", "correct"): -1.5, ("a", "incorrect"): -1.5, ("b", "correct"): -6, ("b", "incorrect"): -1,
             ("c", "correct"): -6, ("c", "incorrect"): -1}
    from smoltolk.eval.tasks import CrossModalStoryCloze

    names = CrossModalStoryCloze(folder, "tstorycloze_xmodal", ["T", "T->S"], 1).item_names()
    assert names[0] == "T/a/correct"  # T is not calibrated (not cross-modal): its items come first, alone
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"item": n, "tokens": 1, "logprob": (
        other if "/after/" in n else own)[tuple(n.split("/")[1:3])]}) + "\n" for n in names))
    split = storycloze_by_cue(folder, scores)
    assert split["T"]["same pronoun"]["calibrated"] is None and split["T"]["same pronoun"]["accuracy"] == 0.0
    got = split["T->S"]
    assert got["pronoun differs"] == {"stories": 1, "accuracy": 1.0, "calibrated": 1.0}
    assert got["same pronoun"] == {"stories": 2, "accuracy": 0.0, "calibrated": 1.0}
    (folder / "c_incorrect.txt").write_text("and she stood.\n")
    with pytest.raises(InputError, match="story 'c': endings should start 'then <pronoun>'"):
        storycloze_by_cue(folder, scores)
    scores.write_text("".join(x + "\n" for x in scores.read_text().splitlines()[:-1]))  # one item short
    with pytest.raises(InputError, match="not those of"):
        storycloze_by_cue(folder, scores)
