"""The mini-world: determinism, the knowledge split, pseudo-speech invariants, minimal pairs, the
world's rules, and benchmark files read back by the eval task readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from smoltolk.data.manifest import read_speech_manifest, read_text_manifest
from smoltolk.data.units import word_ends_to_collapsed
from smoltolk.eval.tasks import SETTINGS, BlimpText, CrossModalStoryCloze, SBlimp, SpeechNLL, StoryCloze
from smoltolk.eval.units import load_unit_source
from smoltolk.world.build import SPLITS, build_world
from smoltolk.world.speech import (
    NOISE_UNITS,
    NUM_UNITS,
    PHONEMES,
    UNITS_PER_PHONE,
    PseudoSpeech,
    letter_to_sound,
    phonemes,
)
from smoltolk.world.world import (
    ANIMALS,
    GIVE_VERBS,
    INTRANSITIVE_VERBS,
    NAMES,
    PLACE_BY_NAME,
    PLACES,
    VERBS,
    Split,
    coherent,
    hard_negative,
    judge,
    make_story,
    minimal_pairs,
    split_violations,
    topic_words,
    words,
)

SIZES = {"n_text": 300, "n_speech": 150, "n_bench_stories": 12, "n_bench_pairs": 10}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=3, **SIZES)
    return out


def test_generator_is_deterministic_by_seed(world, tmp_path):
    again = build_world(tmp_path / "same", seed=3, **SIZES)
    for rel in ["text.jsonl", "speech.jsonl", "bench/held_out/sblimp/gold.csv", "bench/heard/sstorycloze/units.jsonl"]:
        assert (world / rel).read_bytes() == (tmp_path / "same" / rel).read_bytes(), rel
    assert json.loads((world / "world.json").read_text())["split"] == again["split"]
    build_world(tmp_path / "other", seed=4, **SIZES)
    assert (world / "text.jsonl").read_bytes() != (tmp_path / "other" / "text.jsonl").read_bytes()


def test_split_holds_and_text_covers_the_whole_world(world):
    info = json.loads((world / "world.json").read_text())
    split = Split(info["split"]["heard"], info["split"]["held_out"], info["split"]["held_out_words"])
    assert sorted(split.heard + split.held_out) == sorted(p.name for p in PLACES)
    assert not set(split.heard) & set(split.held_out)
    speech = read_speech_manifest(world / "speech.jsonl")
    assert split_violations(split, [(r.id, r.text) for r in speech], info["min_gap_words"]) == []
    stories = [r for r in speech if " went to the " in r.text]
    assert len(stories) == SIZES["n_speech"] and {r.text.split()[4] for r in stories} <= set(split.heard)
    # held-out words are heard, but only alone in carrier utterances
    topic_of = split.topic_of()
    carriers = [r for r in speech if r not in stories]
    assert carriers and all(sum(w in topic_of for w in words(r.text)) == 1 for r in carriers)
    assert not any(w in topic_of for r in stories for w in words(r.text))
    text_words = {w for r in read_text_manifest(world / "text.jsonl") for w in words(r.text)}
    for topic in split.held_out:
        assert topic in text_words


def test_split_violations_catch_associations_and_close_mentions():
    split = Split.make(0, held_out=["kitchen", "lake"])
    story = "tom went to the kitchen he picked up the pan then he fried an egg with the pan"
    assert split_violations(split, [("s1", story)])[0].startswith("s1: 5 held-out words in one utterance: kitchen")
    # one word said twice (an echo carrier) is no association
    assert split_violations(split, [("s2", "tom said the word pan and mia said pan")]) == []
    filler = " ".join(["the dog sleeps"] * 10)  # 30 words
    corpus = [("a", "tom said the word pan"), ("f1", filler), ("b", "mia said the word spoon"),
              ("f2", filler), ("f3", filler), ("c", "the word was boat")]
    assert split_violations(split, corpus, min_gap_words=30) == []
    assert split_violations(split, corpus, min_gap_words=31) == [
        "b: kitchen words only 30 words after a (at least 31)"]
    # read cyclically (104 words): the lake's single mention is fine; the kitchen's gap from b's end
    # round to a's start is 64 words
    assert split_violations(split, corpus, min_gap_words=65) == [
        "b: kitchen words only 30 words after a (at least 65)",
        "a: kitchen words only 64 words after b (wrapping around the corpus; at least 65)"]


def test_no_training_sample_holds_a_held_out_association(world):
    """Interleaved samples (and speech windows, which span fewer words) of at most ``min_gap_words``
    tokens, built by the real interleaver from the speech corpus with one token per word (the
    most words a sample can span), never touch two utterances with words of one held-out topic."""
    from smoltolk.data.interleave import AlignedCorpus, InterleaveConfig, Interleaver

    info = json.loads((world / "world.json").read_text())
    split = Split(info["split"]["heard"], info["split"]["held_out"], info["split"]["held_out_words"])
    topic_of = split.topic_of()
    speech = read_speech_manifest(world / "speech.jsonl")
    utt_words = [words(r.text) for r in speech]
    corpus = AlignedCorpus.from_words([[([1], [2]) for _ in ws] for ws in utt_words])
    topic_at = np.array([next((topic_of[w] for w in ws if w in topic_of), "") for ws in utt_words])
    utt_of_word = np.repeat(np.arange(len(utt_words)), [len(ws) for ws in utt_words])
    inter = Interleaver(corpus, swt_id=3, text_eos_id=0, speech_eos_id=1, cfg=InterleaveConfig())
    rng = np.random.default_rng(0)
    touched = 0
    for _ in range(3000):
        utts, total = set(), 0
        for span in inter.spans(rng):
            utts |= set(utt_of_word[span.start:span.stop].tolist())
            total += (span.stop - span.start) + span.switch_before + span.eos
            if total >= info["min_gap_words"]:
                break
        topics = [topic_at[u] for u in utts if topic_at[u]]
        assert len(topics) == len(set(topics)), sorted(topics)
        touched += bool(topics)
    assert touched > 100  # held-out words do occur in samples, alone


def test_echo_carriers_say_each_held_out_word_twice_and_keep_the_split(world, tmp_path):
    """The "echo" lever: every held-out word heard in speech is said twice in one neutral utterance (so an
    interleaved switch between the mentions pairs its text and its sound), and the split still holds."""
    info = build_world(tmp_path / "echo", seed=3, carriers="echo", **SIZES)
    assert info["carriers"] == "echo"
    split = Split(info["split"]["heard"], info["split"]["held_out"], info["split"]["held_out_words"])
    topic_of = split.topic_of()
    speech = read_speech_manifest(tmp_path / "echo" / "speech.jsonl")
    assert split_violations(split, [(r.id, r.text) for r in speech], info["min_gap_words"]) == []
    carriers = [r for r in speech if " went to the " not in r.text]
    assert carriers
    for r in carriers:
        held = [w for w in words(r.text) if w in topic_of]
        assert len(held) == 2 and held[0] == held[1] and " and " in r.text, r.text
    # the plain world of the same seed has the same spoken stories: only the carriers differ
    stories = [r.text for r in speech if " went to the " in r.text]
    assert stories == [r.text for r in read_speech_manifest(world / "speech.jsonl") if " went to the " in r.text]


def test_neutral_carriers_hear_each_held_out_word_in_everyday_sentences_and_keep_the_split(world, tmp_path):
    """The "neutral" world (issue 25): a held-out word is heard in speech in an everyday sentence that fits it
    and says nothing of its topic, one held-out word per utterance, said once; the split still holds for
    utterances and for samples (split_violations), and the spoken stories are the plain world's."""
    info = build_world(tmp_path / "neutral", seed=3, carriers="neutral", **SIZES)
    assert info["carriers"] == "neutral"
    split = Split(info["split"]["heard"], info["split"]["held_out"], info["split"]["held_out_words"])
    topic_of = split.topic_of()
    speech = read_speech_manifest(tmp_path / "neutral" / "speech.jsonl")
    assert split_violations(split, [(r.id, r.text) for r in speech], info["min_gap_words"]) == []
    sentences = [r for r in speech if " went to the " not in r.text]
    assert len(sentences) > 20
    for r in sentences:
        held = [w for w in words(r.text) if w in topic_of]
        assert len(held) == 1 and " the word " not in r.text and " said " not in r.text, r.text
    stories = [r.text for r in speech if " went to the " in r.text]
    assert stories == [r.text for r in read_speech_manifest(world / "speech.jsonl") if " went to the " in r.text]
    # the text corpus has the genre too, on every topic's words
    text = [r.text for r in read_text_manifest(tmp_path / "neutral" / "text.jsonl")]
    assert any(t.startswith(tuple(NAMES)) and " liked the " in t for t in text)


@pytest.mark.parametrize("place", [p.name for p in PLACES])
def test_every_topic_word_has_a_neutral_sentence_holding_no_other_topic_word(place):
    from smoltolk.world.world import carrier

    topic_of = {w: p.name for p in PLACES for w in topic_words(p.name)}
    rng = np.random.default_rng(0)
    for word in sorted(topic_words(place)):
        for _ in range(8):
            sentence = carrier(rng, word, "neutral")
            assert [w for w in words(sentence) if w in topic_of] == [word], sentence


def test_carrier_styles_and_bad_style():
    from smoltolk.errors import InputError
    from smoltolk.world.world import carrier

    rng = np.random.default_rng(0)
    assert words(carrier(rng, "drill")).count("drill") == 1
    assert all(words(carrier(rng, "drill", "echo")).count("drill") == 2 for _ in range(10))
    with pytest.raises(ValueError, match="unknown carrier style 'loud'"):
        carrier(rng, "drill", "loud")
    with pytest.raises(InputError, match="carriers 'loud'"):
        build_world(Path("/nonexistent-never-written"), carriers="loud", **SIZES)


def test_split_by_seed_or_by_name():
    assert Split.make(0).held_out == Split.make(0).held_out and len(Split.make(0).held_out) == len(PLACES) // 2
    assert {tuple(Split.make(s).held_out) for s in range(6)} != {tuple(Split.make(0).held_out)}
    split = Split.make(0, held_out=["lake", "kitchen"])
    assert split.held_out == ["kitchen", "lake"] and len(split.heard) == len(PLACES) - 2
    assert "with" not in split.held_out_words["kitchen"] and "spoon" in split.held_out_words["kitchen"]
    assert "the" not in split.held_out_words["kitchen"] and "went" not in split.held_out_words["lake"]
    with pytest.raises(ValueError):
        Split.make(0, held_out=["moon"])


def test_benchmark_stories_stay_out_of_training(world):
    training = {r.text for r in read_text_manifest(world / "text.jsonl")}
    for split in SPLITS:
        for f in (world / "bench" / split / "sstorycloze_xmodal").glob("*_mutual.txt"):
            context = f.read_text().strip()
            assert not any(t.startswith(context) for t in training)


def test_pseudo_speech_invariants(world):
    recs = read_speech_manifest(world / "speech.jsonl")
    n_units = n_words = 0
    for r in recs:
        units = np.asarray(r.units)
        assert np.all(units[1:] != units[:-1])  # collapsed
        assert units.min() >= 0 and units.max() < NUM_UNITS and min(r.durations) >= 1
        assert r.text == " ".join(w.word for w in r.words)
        ends = word_ends_to_collapsed(np.array([w.end for w in r.words]), np.asarray(r.durations), r.frame_rate)
        starts = np.r_[0, ends[:-1]]
        assert ends[-1] == len(units) and np.all(ends > starts)  # every word owns >= 1 whole unit
        assert r.words[0].start == 0 and all(a.end == b.start for a, b in zip(r.words, r.words[1:]))
        for w, s, e in zip(r.words, starts, ends):  # each word's units realise that word's phonemes
            phones = set(phonemes(w.word))
            assert all(u in NOISE_UNITS or PHONEMES[u // UNITS_PER_PHONE] in phones for u in units[s:e]), w.word
        n_units += len(units)
        n_words += len(r.words)
    assert 4.0 <= n_units / n_words <= 6.0


def test_pseudo_speech_varies_by_speaker_and_falls_back_to_rules():
    ps = PseudoSpeech(seed=0, jitter=0.0, noise=0.0)
    sentence = words("then she stirred the soup with the spoon")
    a, b = ps.render("a", sentence, speaker=0), ps.render("b", sentence, speaker=1)
    assert a.units != b.units
    assert ps.render("c", sentence, speaker=0).units == a.units  # no jitter: speaker and context decide
    assert phonemes("zorblat") == letter_to_sound("zorblat") and len(phonemes("zorblat")) >= 5
    assert phonemes("kitchen") == ["K", "IH", "CH", "AH", "N"]  # from the CMU dictionary


def test_minimal_pairs_differ_in_exactly_the_intended_word():
    rng = np.random.default_rng(0)
    kinds = set()
    for place in PLACE_BY_NAME:
        for pair in minimal_pairs(rng, place, 10, "p"):
            good, bad = pair.good.split(), pair.bad.split()
            diff = [(g, b) for g, b in zip(good, bad) if g != b]
            assert len(good) == len(bad) and len(diff) == 1, pair
            g, b = diff[0]
            p = PLACE_BY_NAME[place]
            if pair.type == "agreement":
                assert {g, b} in [{v, s} for v, s in VERBS.items()]
                plural = good[1] in ANIMALS.values()
                assert (g in VERBS) == plural and pair.subtype == ("plural_subject" if plural else "singular_subject")
            elif pair.type == "determiner_noun":
                k = p.objects.index(g) if g in p.objects else p.plurals.index(g)
                assert {g, b} == {p.objects[k], p.plurals[k]}
                assert (g in p.objects) == (pair.subtype == "a_singular")
            else:
                assert pair.type == "argument_structure" and g in GIVE_VERBS and b in INTRANSITIVE_VERBS
            kinds.add((pair.type, pair.subtype))
    assert len(kinds) == 5


def test_endings_are_judged_by_the_worlds_rules():
    rng = np.random.default_rng(1)
    places = [p.name for p in PLACES]
    kinds = set()
    for i in range(200):
        st = make_story(rng, places[i % len(places)], f"s{i}")
        assert coherent(st.state, st.ending)
        assert f"went to the {st.state.place}" in st.context[0] and st.state.held in st.context[1]
        bad, kind = hard_negative(rng, st, places)
        assert not coherent(st.state, bad)
        assert judge(st.context_text(), st.ending_sentence()) and not judge(st.context_text(), st.ending_sentence(bad))
        kinds.add(kind)
        assert (bad.place != st.state.place) == (kind == "wrong_place")
    assert kinds == {"wrong_place", "wrong_object"}
    context = "anna went to the kitchen. she picked up the pan. it was a warm day. she felt calm."
    assert judge(context, "then she fried an egg with the pan")
    assert not judge(context, "then he fried an egg with the pan")  # the wrong pronoun
    assert not judge(context, "then she cut the bread with the knife")  # not in hand
    assert not judge(context, "then she dug a hole with the shovel")  # another place
    with pytest.raises(ValueError):
        judge(context, "then she sang a song")


def test_benchmarks_round_trip_through_the_eval_readers(world):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(world / "tokenizer.json"))
    n_stories, n_pairs = SIZES["n_bench_stories"], SIZES["n_bench_pairs"]
    for split in SPLITS:
        root = world / "bench" / split
        sblimp = SBlimp(root / "sblimp")
        units = load_unit_source(root / "sblimp", sblimp.audio())
        assert len(sblimp.pairs) == 2 * n_pairs and len(sblimp.items(units, None)) == 4 * n_pairs
        with open(root / "sblimp" / "gold.csv") as f:
            row = next(csv.DictReader(f))
        rendered = PseudoSpeech(seed=3).render(row["filename"], row["transcription"].split(), int(row["voice"][1:]))
        assert units[row["filename"]].tolist() == rendered.units
        assert len(BlimpText(root / "sblimp" / "gold.csv").items(None, tok)) == 2 * n_pairs
        for name in ("sstorycloze", "tstorycloze"):
            task = StoryCloze(root / name, name)
            assert len(task.items(load_unit_source(root / name, task.audio()), None)) == 2 * n_stories
            xm = CrossModalStoryCloze(root / f"{name}_xmodal", f"{name}_xmodal", SETTINGS)
            items = xm.items(load_unit_source(root / f"{name}_xmodal", xm.audio()), tok)
            assert len(xm.stories) == n_stories and len(items) == 4 * 2 * n_stories
        # the written items, judged by the world's rules: every correct ending holds, no incorrect one does
        for name in ("sstorycloze_xmodal", "tstorycloze_xmodal"):
            for f in sorted((root / name).glob("*_mutual.txt")):
                context = f.read_text()
                assert judge(context, Path(str(f).replace("_mutual", "_correct")).read_text())
                assert not judge(context, Path(str(f).replace("_mutual", "_incorrect")).read_text())
        dev = SpeechNLL(root / "speech_dev.jsonl")
        assert dev.own_units and len(dev.items(dev.manifest_units(), None)) == n_stories
    info = json.loads((world / "world.json").read_text())
    counts = info["counts"]["benchmarks"]["held_out"]
    assert {k: counts[k] for k in ("sblimp_pairs", "stories")} == {"sblimp_pairs": n_pairs, "stories": n_stories}
    assert counts["diagnostics"]["lexical_cloze"] == counts["diagnostics"]["speaker_context"] == n_stories
    held_out = set(info["split"]["held_out"])
    for f in (world / "bench" / "held_out" / "sstorycloze_xmodal").glob("*_mutual.txt"):
        assert words(f.read_text())[4] in held_out


def test_the_world_writes_a_salmon_speaker_consistency_task_with_a_voice_switch(world):
    from smoltolk.eval.tasks import Salmon
    from smoltolk.eval.units import load_unit_source

    root = world / "bench" / "held_out" / "salmon"
    task = Salmon(root)
    assert list(task.parts) == ["speaker_consistency"] and len(task.parts["speaker_consistency"]) == 12
    units = load_unit_source(root, task.audio())
    for positive, negative in task.parts["speaker_consistency"]:
        a, b = list(units[f"speaker_consistency/{positive}"]), list(units[f"speaker_consistency/{negative}"])
        assert a != b, positive  # the same words, another voice for the second half
        shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
        assert shared >= 5  # the first half is the same recording
    overrides = json.loads((world / "world.json").read_text())["eval_tasks"]["held_out"]
    assert f"tasks.salmon.units={root}" in overrides


def test_every_pair_of_voices_differs():
    """Distinct speaker ids give distinct voices (CRC32's linearity once made ids 0 and 2, 1 and 3 the same)."""
    from itertools import combinations

    speech = PseudoSpeech(seed=0, speakers=8)
    for a, b in combinations(range(8), 2):
        differ = sum(speech.phone_units(p, "", "", a) != speech.phone_units(p, "", "", b) for p in PHONEMES)
        assert differ >= len(PHONEMES) // 3, (a, b, differ)
