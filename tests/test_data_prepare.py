"""Preparation into shards, and the samplers that read them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smoltolk.data.interleave import InterleaveConfig
from smoltolk.data.manifest import SpeechRecord, TextRecord, Word, write_manifest
from smoltolk.data.prepare import PrepareSettings, load_prepared, prepare, word_token_counts
from smoltolk.data.sampler import BatchSampler, DataConfig, DatasetConfig, Mixture
from smoltolk.errors import ConfigError, InputError
from smoltolk.model.hf import load_tokenizer

EOS_TEXT, SWT = 0, 400  # tokenizer id 0 is <|endoftext|>; SWT = vocab size
WORDS = "once upon a time there was a little fox the cat sat on the mat".split()


def _speech_records(n: int, seed: int = 0, frame_rate: float = 25.0) -> list[SpeechRecord]:
    """Utterances with frame-level units (2-4 frames per unit, 2-4 units per word) and exact word times."""
    rng = np.random.default_rng(seed)
    recs = []
    for u in range(n):
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(3, 12)))]
        frames, times, prev = [], [], None
        for _word in words:
            for _ in range(int(rng.integers(2, 5))):
                unit = int(rng.integers(0, 500))
                while unit == prev:
                    unit = int(rng.integers(0, 500))
                frames += [unit] * int(rng.integers(2, 5))
                prev = unit
            times.append(len(frames) / frame_rate)
        starts = [0.0] + times[:-1]
        recs.append(SpeechRecord(id=f"utt{u}", units=frames, frame_rate=frame_rate, text=" ".join(words).capitalize(),
                                 words=[Word(w, s, e) for w, s, e in zip(words, starts, times, strict=True)]))
    return recs


def _settings(tok, **kw):
    return PrepareSettings(tokenizer=str(tok), text_eos_id=EOS_TEXT, shard_size=4, workers=1, **kw)


def test_word_token_counts_follow_the_running_transcript(bpe_tokenizer_file):
    tok = load_tokenizer(bpe_tokenizer_file)
    words = ["Hello,", "world!", "the", "quick", "brown", "foxes"]
    ids, counts = word_token_counts(tok, words)
    assert ids == tok.encode(" ".join(words), add_special_tokens=False).ids
    assert len(counts) == len(words) and sum(counts) == len(ids) and min(counts) >= 1
    pieces, start = [], 0
    for c in counts:
        pieces.append(tok.decode(ids[start:start + c]).strip())
        start += c
    assert pieces == words


def test_prepare_speech_shards_keep_units_and_words(tmp_path, bpe_tokenizer_file):
    recs = _speech_records(10)
    write_manifest(tmp_path / "speech.jsonl", recs)
    index = prepare(tmp_path / "speech.jsonl", tmp_path / "prep", "speech", _settings(bpe_tokenizer_file),
                    progress=False)
    assert len(index["shards"]) == 3 and sum(s["records"] for s in index["shards"]) == 10
    _, shards = load_prepared(tmp_path / "prep", verify=True)
    tok = load_tokenizer(bpe_tokenizer_file)
    utt = 0
    for shard in shards:
        # the speech stream is every utterance's collapsed units followed by EOS (500)
        eos = np.flatnonzero(np.asarray(shard.stream) == 500)
        c = shard.aligned
        assert len(eos) == c.num_utterances
        for u in range(c.num_utterances):
            rec = recs[utt]
            frames = np.asarray(rec.units)
            collapsed = frames[np.r_[True, frames[1:] != frames[:-1]]]
            assert np.array_equal(c.units[c.utt_units[u]:c.utt_units[u + 1]], collapsed)
            w0, w1 = c.utt_words[u], c.utt_words[u + 1]
            assert w1 - w0 == len(rec.words)
            text = tok.decode(c.tokens[c.word_tokens[w0]:c.word_tokens[w1]].tolist())
            assert text == rec.text
            # each spoken word is exactly the units generated for it (the test made word times exact)
            assert c.word_unit_end[w1 - 1] == c.utt_units[u + 1]
            utt += 1


def test_prepare_is_idempotent_and_resumes(tmp_path, bpe_tokenizer_file, monkeypatch):
    write_manifest(tmp_path / "speech.jsonl", _speech_records(10))
    settings = _settings(bpe_tokenizer_file)
    prepare(tmp_path / "speech.jsonl", tmp_path / "prep", "speech", settings, progress=False)
    mtimes = {p.name: (p / "done.json").stat().st_mtime_ns for p in (tmp_path / "prep").glob("shard-*")}

    import shutil

    import smoltolk.data.prepare as prep

    shutil.rmtree(tmp_path / "prep" / "shard-00001")
    built = []
    real = prep._speech_shard
    monkeypatch.setattr(prep, "_speech_shard", lambda *a: (built.append(a[3].name), real(*a)))
    prepare(tmp_path / "speech.jsonl", tmp_path / "prep", "speech", settings, progress=False)
    assert built == ["shard-00001"]
    for name in ("shard-00000", "shard-00002"):
        assert (tmp_path / "prep" / name / "done.json").stat().st_mtime_ns == mtimes[name]


def test_interrupted_shard_never_looks_finished(tmp_path, bpe_tokenizer_file, monkeypatch):
    write_manifest(tmp_path / "speech.jsonl", _speech_records(6))
    import smoltolk.data.prepare as prep

    def crash(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "speech.jsonl", tmp_path / "prep", "speech", _settings(bpe_tokenizer_file),
                progress=False)
    assert not list((tmp_path / "prep").glob("shard-*"))
    assert not [p for p in (tmp_path / "prep").iterdir() if not p.name.startswith(".")]


def test_parallel_prepare_matches_serial(tmp_path, bpe_tokenizer_file):
    write_manifest(tmp_path / "text.jsonl", [TextRecord(f"d{i}", " ".join(WORDS[i % 5:])) for i in range(9)])
    a = prepare(tmp_path / "text.jsonl", tmp_path / "a", "text", _settings(bpe_tokenizer_file), progress=False)
    b = prepare(tmp_path / "text.jsonl", tmp_path / "b", "text",
                PrepareSettings(str(bpe_tokenizer_file), EOS_TEXT, shard_size=4, workers=2), progress=False)
    assert [s["files"] for s in a["shards"]] == [s["files"] for s in b["shards"]]


@pytest.mark.parametrize("change, match", [
    ({"units": [3, 512]}, "unit 512 is outside"),
    ({"units": None, "audio": "a.wav", "words": None}, "no 'units'"),
    ({"text": "Once upon a dime"}, "alignment word 3 is 'time' but the transcript has 'dime'"),
    ({"words": [Word("once", 0.0, 9.0)], "text": None}, r"word 0 ends at 9.000 s, outside the audio"),
])
def test_bad_records_are_named(tmp_path, bpe_tokenizer_file, change, match):
    recs = _speech_records(3)
    recs[1] = SpeechRecord(**{**recs[1].__dict__, "text": "once upon a time", "words": [
        Word(w, i * 0.1, (i + 1) * 0.1) for i, w in enumerate("once upon a time".split())]})
    recs[1].units = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for k, v in change.items():
        setattr(recs[1], k, v)
    write_manifest(tmp_path / "s.jsonl", recs)
    with pytest.raises(InputError, match=match) as err:
        prepare(tmp_path / "s.jsonl", tmp_path / "p", "speech", _settings(bpe_tokenizer_file), progress=False)
    assert "utt1" in str(err.value) and "s.jsonl" in str(err.value)


@pytest.fixture
def prepared(tmp_path, bpe_tokenizer_file):
    write_manifest(tmp_path / "speech.jsonl", _speech_records(12, seed=1))
    write_manifest(tmp_path / "text.jsonl", [TextRecord(f"d{i}", " ".join(WORDS[i % 7:])) for i in range(20)])
    s = _settings(bpe_tokenizer_file)
    prepare(tmp_path / "speech.jsonl", tmp_path / "speech", "speech", s, progress=False)
    prepare(tmp_path / "text.jsonl", tmp_path / "text", "text", s, progress=False)
    return tmp_path


def _mixture(root, **kw) -> Mixture:
    cfg = DataConfig(datasets=[DatasetConfig(str(root / "speech"), "speech"), DatasetConfig(str(root / "text"), "text"),
                               DatasetConfig(str(root / "speech"), "interleaved")],
                     context=64, interleave=InterleaveConfig(text_span=(2, 4), speech_span=(1, 3)), **kw)
    return Mixture(cfg, swt_id=SWT, speech_eos_id=500)


def test_mixture_samples_each_modality_in_proportion(prepared):
    mix = _mixture(prepared)
    kinds = []
    for i in range(600):
        s = mix.sample(i)
        assert s["tokens"].shape == (65,) and s["is_speech"].dtype == bool
        assert np.all(s["tokens"][s["is_speech"]] <= 500) and np.all(s["tokens"][~s["is_speech"]] <= SWT)
        sp = s["is_speech"].mean()
        kinds.append("speech" if sp == 1 else "text" if sp == 0 else "interleaved")
    counts = {k: kinds.count(k) / len(kinds) for k in ("speech", "text", "interleaved")}
    assert all(0.25 < v < 0.42 for v in counts.values()), counts
    stage1 = _mixture(prepared, modality_weights={"interleaved": 1.0})
    assert all(0 < stage1.sample(i)["is_speech"].mean() < 1 for i in range(50))


def test_document_ids_split_at_eos_when_asked(prepared):
    mix = _mixture(prepared, modality_weights={"text": 1.0}, mask_documents=True)
    s = mix.sample(3)
    eos = np.flatnonzero(s["tokens"][:-1] == EOS_TEXT)
    assert len(eos) >= 1
    assert np.array_equal(np.flatnonzero(np.diff(s["doc_ids"]) == 1), eos)


def test_batches_resume_exactly_and_ranks_split_the_global_batch(prepared):
    mix = _mixture(prepared)
    run = BatchSampler(mix, micro_batch=2, grad_accum=2)
    batches = [next(run) for _ in range(6)]
    resumed = BatchSampler(mix, micro_batch=2, grad_accum=2)
    first = [next(resumed) for _ in range(3)]
    state = json.loads(json.dumps(resumed.state_dict()))
    again = BatchSampler(_mixture(prepared), micro_batch=2, grad_accum=2)
    again.load_state_dict(state)
    for a, b in zip(batches, first + [next(again) for _ in range(3)], strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    # two ranks with micro-batch 1 cover exactly one process's micro-batch 2
    r0, r1 = (BatchSampler(mix, micro_batch=1, rank=r, world_size=2, grad_accum=2) for r in (0, 1))
    for a in batches[:4]:
        x, y = next(r0), next(r1)
        assert np.array_equal(a["tokens"], np.concatenate([x["tokens"], y["tokens"]]))
    with pytest.raises(ConfigError, match="micro_batch=2, this run has 1"):
        BatchSampler(mix, micro_batch=1).load_state_dict(state)


def test_mixture_errors(prepared):
    with pytest.raises(ConfigError, match=r"ask for \['interleaved'\] but no dataset provides them"):
        Mixture(DataConfig(datasets=[DatasetConfig(str(prepared / "text"), "text")],
                           modality_weights={"text": 1.0, "interleaved": 1.0}), SWT, 500)
    with pytest.raises(InputError, match="a text corpus cannot be the speech modality"):
        Mixture(DataConfig(datasets=[DatasetConfig(str(prepared / "text"), "speech")],
                           modality_weights={"speech": 1.0}), SWT, 500)
    with pytest.raises(InputError, match="no index.json"):
        Mixture(DataConfig(datasets=[DatasetConfig(str(prepared), "text")], modality_weights={"text": 1.0}), SWT, 500)


def test_prepare_command_with_textgrid_alignments(tmp_path, bpe_tokenizer_file, capsys):
    from smoltolk.cli import main

    recs = _speech_records(3)
    grids = tmp_path / "grids"
    grids.mkdir()
    for rec in recs[:2]:
        items = "".join(f'{w.start}\n{w.end}\n"{w.word}"\n' for w in rec.words)
        grids.joinpath(f"{rec.id}.TextGrid").write_text(
            f'File type = "ooTextFile"\nObject class = "TextGrid"\n0\n{rec.words[-1].end}\n<exists>\n1\n'
            f'"IntervalTier"\n"words"\n0\n{rec.words[-1].end}\n{len(rec.words)}\n{items}')
        rec.words = None
    recs[2].words = None
    write_manifest(tmp_path / "speech.jsonl", recs)
    assert main(["prepare", str(tmp_path / "speech.jsonl"), str(tmp_path / "out"), "--kind", "speech",
                 "--tokenizer", str(bpe_tokenizer_file), "--alignments", str(grids), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "1 of 3 utterances have no word alignment" in captured.err and "utt2" in captured.err
    index, shards = load_prepared(tmp_path / "out")
    assert index["shards"][0]["aligned_utterances"] == 2 and shards[0].aligned.num_utterances == 2
    assert main(["prepare", str(tmp_path / "speech.jsonl"), str(tmp_path / "out2"), "--kind", "speech",
                 "--tokenizer", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: missing (expected a Hugging Face tokenizers" in capsys.readouterr().err
