"""Word alignments from forced aligners: Praat TextGrid (Montreal Forced Aligner), CTM and JSON,
and a check that an alignment's words are the transcript's words (mismatches are reported,
never silently dropped)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from smoltolk.data.manifest import Word, _words
from smoltolk.errors import InputError
from smoltolk.files import decode_utf8, read_lines, read_text

SILENCE = {"", "sil", "sp", "spn", "<eps>", "<sil>"}

_TG_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


def read_textgrid(path: str | Path, tier: str = "words") -> list[Word]:
    """Words of one interval tier of a TextGrid (long or short text format), silences dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: TextGrid file not found")
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # Praat writes UTF-16 with a byte-order mark
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not valid UTF-16 text after its byte-order mark") from None
    else:
        text = decode_utf8(raw, path)
    text = re.sub(r"\[\s*\d*\s*\]", " ", text)  # drop "item [1]:"-style indices (long format)
    tokens = [(m.group(1), m.group(2)) for m in _TG_TOKEN.finditer(text)]  # (string | None, number | None)
    pos = 0

    def take(kind: str):
        nonlocal pos
        if pos >= len(tokens):
            raise InputError(f"{path}: ends early (expected a {kind})")
        s, n = tokens[pos]
        pos += 1
        if kind == "string":
            if s is None:
                raise InputError(f"{path}: expected a quoted string, found the number {n}")
            return s.replace('""', '"')
        if n is None:
            raise InputError(f"{path}: expected a number, found the string {s!r}")
        return float(n)

    if not take("string").startswith("ooTextFile") or take("string") != "TextGrid":  # also "ooTextFile short"
        raise InputError(f"{path}: not a Praat TextGrid (expected 'ooTextFile' / 'TextGrid' header)")
    take("number"), take("number")
    names = []
    for _ in range(int(take("number"))):
        cls, name = take("string"), take("string")
        take("number"), take("number")
        count = int(take("number"))
        names.append(name)
        if cls == "IntervalTier":
            items = [(take("number"), take("number"), take("string")) for _ in range(count)]
            if name == tier:
                words = [{"word": t.strip(), "start": a, "end": b} for a, b, t in items
                         if t.strip().lower() not in SILENCE]
                return _words(words, f"{path} (tier {tier!r})")
        else:  # TextTier: (time, mark) points
            for _ in range(count):
                take("number"), take("string")
    raise InputError(f"{path}: no interval tier named {tier!r} (tiers: {names})")


def read_ctm(path: str | Path) -> dict[str, list[Word]]:
    """CTM lines ``<utterance> <channel> <start> <duration> <word> [<confidence>]`` -> words per utterance."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: CTM file not found")
    out: dict[str, list[dict]] = {}
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip() or line.startswith(";;"):
            continue
        parts = line.split()
        if len(parts) not in (5, 6):
            raise InputError(f"{path}:{n}: expected '<utterance> <channel> <start> <duration> <word> "
                             f"[<confidence>]', got {line.strip()!r}")
        try:
            start, dur = float(parts[2]), float(parts[3])
        except ValueError:
            raise InputError(f"{path}:{n}: start and duration must be numbers, got {parts[2]!r} {parts[3]!r}") \
                from None
        if parts[4].lower() not in SILENCE:
            out.setdefault(parts[0], []).append({"word": parts[4], "start": start, "end": start + dur})
    return {utt: _words(words, f"{path} (utterance {utt!r})") for utt, words in out.items()}


def read_alignment_json(path: str | Path) -> list[Word]:
    """``{"words": [{"word", "start", "end"}, ...]}`` or a bare list of such words."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: alignment file not found")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg})") from None
    words = data.get("words") if isinstance(data, dict) else data
    return _words(words, str(path))


def normalize(word: str) -> str:
    return re.sub(r"[^\w']+", "", word.lower())


def check_transcript(words: list[Word], transcript: str, where: str) -> None:
    """Raise if the aligned words are not the transcript's words (case and punctuation aside),
    naming the first difference."""
    aligned = [normalize(w.word) for w in words]
    original = [t for t in transcript.split() if normalize(t)]
    expected = [normalize(t) for t in original]
    for i, (a, b) in enumerate(zip(aligned, expected, strict=False)):
        if a != b:
            raise InputError(f"{where}: alignment word {i} is {words[i].word!r} but the transcript has "
                             f"{original[i]!r} there")
    if len(aligned) != len(expected):
        raise InputError(f"{where}: the alignment has {len(aligned)} words, the transcript {len(expected)}")


def load_alignments(source: str | Path, ids: list[str], tier: str = "words") -> dict[str, list[Word]]:
    """Word alignments for utterance ``ids`` from a CTM file, or a directory of ``<id>.TextGrid`` /
    ``<id>.json`` files. Utterances without an alignment are absent from the result."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() != ".ctm":
            raise InputError(f"{source}: expected a .ctm file or a directory of <id>.TextGrid / <id>.json files")
        wanted = set(ids)
        return {k: v for k, v in read_ctm(source).items() if k in wanted}
    if not source.is_dir():
        raise InputError(f"{source}: alignment file or directory not found")
    out = {}
    for rid in ids:
        grid, js = source / f"{rid}.TextGrid", source / f"{rid}.json"
        if grid.is_file():
            out[rid] = read_textgrid(grid, tier)
        elif js.is_file():
            out[rid] = read_alignment_json(js)
    return out
