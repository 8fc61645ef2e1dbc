"""Manifests (JSONL, Parquet) and alignment formats (TextGrid long/short, CTM, JSON)."""

from __future__ import annotations

import json

import pytest

from smoltolk.data.alignments import check_transcript, read_alignment_json, read_ctm, read_textgrid
from smoltolk.data.manifest import (
    SpeechRecord,
    TextRecord,
    Word,
    read_speech_manifest,
    read_text_manifest,
    write_manifest,
)
from smoltolk.errors import InputError

SPEECH = [
    SpeechRecord(id="u1", units=[3, 4, 5, 6], durations=[1, 2, 1, 1], frame_rate=25.0, text="the cat",
                 words=[Word("the", 0.0, 0.08), Word("cat", 0.08, 0.2)]),
    SpeechRecord(id="u2", audio="wavs/u2.wav", text="hello"),
    SpeechRecord(id="u3", units=[1, 2, 3]),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_manifests_round_trip(tmp_path, suffix):
    write_manifest(tmp_path / f"speech{suffix}", SPEECH)
    assert read_speech_manifest(tmp_path / f"speech{suffix}") == SPEECH
    texts = [TextRecord("d1", "Once upon a time."), TextRecord("d2", "ünïcode ✓")]
    write_manifest(tmp_path / f"text{suffix}", texts)
    assert read_text_manifest(tmp_path / f"text{suffix}") == texts


@pytest.mark.parametrize("record, match", [
    ({"audio": "a.wav"}, r"speech.jsonl:2: missing 'id'"),
    ({"id": "x"}, r"speech.jsonl:2 \(id 'x'\): needs 'audio'"),
    ({"id": "x", "units": []}, "empty utterance"),
    ({"id": "x", "units": [1, "2"]}, "'units' must be a list of integers"),
    ({"id": "x", "units": [1], "speaker": "s"}, r"unknown field\(s\) \['speaker'\]"),
    ({"id": "x", "units": [1, 2], "frame_rate": 25, "words": [{"word": "a", "start": 0.5, "end": 0.2}]},
     r"words\[0\] \('a'\): expected 0 <= start <= end"),
    ({"id": "x", "units": [1, 2], "frame_rate": 25, "words": [{"word": "a", "start": 0.1, "end": 0.5},
                                                              {"word": "b", "start": 0.3, "end": 0.6}]},
     "starts at 0.3 s, before words"),
    ({"id": "x", "units": [1, 2], "words": [{"word": "a", "start": 0.1, "end": 0.5}]}, "needs 'frame_rate'"),
    ({"id": "x", "units": [1, 2], "words": [{"word": "a", "start": 0.1}]}, r"words\[0\] must have keys"),
    ({"id": "u1", "units": [1]}, "duplicate id 'u1'"),
])
def test_bad_speech_records_are_named(tmp_path, record, match):
    path = tmp_path / "speech.jsonl"
    path.write_text(json.dumps({"id": "u1", "units": [1]}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(InputError, match=match):
        read_speech_manifest(path)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(InputError, match="manifest file not found"):
        read_speech_manifest(tmp_path / "none.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": \n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        read_text_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "t.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(InputError, match=r"t.jsonl:1 \(id 'a'\): missing 'text'"):
        read_text_manifest(tmp_path / "t.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_speech_manifest(tmp_path / "bad.parquet")


LONG_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.5
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.2
            text = ""
        intervals [2]:
            xmin = 0.2
            xmax = 0.61
            text = "say ""hi"""
        intervals [3]:
            xmin = 0.61
            xmax = 1.1
            text = "there"
        intervals [4]:
            xmin = 1.1
            xmax = 1.5
            text = "sil"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.5
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 1.5
            text = "S"
'''

SHORT_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

0
1.5
<exists>
2
"TextTier"
"events"
0
1.5
1
0.7
"click"
"IntervalTier"
"words"
0
1.5
3
0
0.2
""
0.2
0.61
"say ""hi"""
0.61
1.1
"there"
'''


@pytest.mark.parametrize("content", [LONG_TEXTGRID, SHORT_TEXTGRID])
def test_textgrid_long_and_short_formats(tmp_path, content):
    path = tmp_path / "a.TextGrid"
    path.write_text(content)
    assert read_textgrid(path) == [Word('say "hi"', 0.2, 0.61), Word("there", 0.61, 1.1)]
    with pytest.raises(InputError, match=r"no interval tier named 'word'.*'words'"):
        read_textgrid(path, tier="word")


def test_textgrid_errors(tmp_path):
    path = tmp_path / "a.TextGrid"
    path.write_text(LONG_TEXTGRID[: LONG_TEXTGRID.index("intervals [3]")])
    with pytest.raises(InputError, match="ends early"):
        read_textgrid(path)
    path.write_text("hello")
    with pytest.raises(InputError, match="not a Praat TextGrid|ends early"):
        read_textgrid(path)


def test_ctm_and_json(tmp_path):
    ctm = tmp_path / "a.ctm"
    ctm.write_text(";; comment\nu1 1 0.10 0.20 hello 0.9\nu1 1 0.30 0.25 world\nu2 A 0.0 0.5 <sil>\nu2 A 0.5 0.1 hi\n")
    words = read_ctm(ctm)
    assert words["u1"] == [Word("hello", 0.1, pytest.approx(0.3)), Word("world", 0.3, 0.55)]
    assert [w.word for w in words["u2"]] == ["hi"]
    ctm.write_text("u1 1 0.1 hello\n")
    with pytest.raises(InputError, match=r"a.ctm:1: expected '<utterance> <channel>"):
        read_ctm(ctm)
    js = tmp_path / "a.json"
    js.write_text(json.dumps({"words": [{"word": "a", "start": 0, "end": 0.1}]}))
    assert read_alignment_json(js) == [Word("a", 0.0, 0.1)]
    js.write_text(json.dumps([{"word": "a", "start": 0.2, "end": 0.1}]))
    with pytest.raises(InputError, match="a.json"):
        read_alignment_json(js)


def test_transcript_mismatches_are_reported():
    words = [Word("Hello", 0, 1), Word("world", 1, 2)]
    check_transcript(words, "hello, World!", "u1")
    with pytest.raises(InputError, match="u1: alignment word 1 is 'world' but the transcript has 'there'"):
        check_transcript(words, "hello there", "u1")
    with pytest.raises(InputError, match="the alignment has 2 words, the transcript 3"):
        check_transcript(words, "hello world again", "u1")


def test_textgrid_old_short_header(tmp_path):
    path = tmp_path / "old.TextGrid"
    path.write_text(SHORT_TEXTGRID.replace('File type = "ooTextFile"', 'File type = "ooTextFile short"'))
    assert [w.word for w in read_textgrid(path)] == ['say "hi"', "there"]
