"""Corpus manifests: one record per speech utterance or text document, in JSONL or Parquet.

Speech utterance (``SpeechRecord``)::

    {"id": "book1-0001",                     # unique, required
     "audio": "wavs/book1-0001.flac",         # path (relative to the manifest's folder) and/or
     "units": [17, 402, 9, ...],              # speech units (collapsed or not; see "durations")
     "durations": [2, 1, 3, ...],             # optional: frames per unit (units are collapsed)
     "frame_rate": 25.0,                      # frames per second of the units (needed with "words")
     "text": "the cat sat",                  # optional transcript
     "words": [{"word": "the", "start": 0.12, "end": 0.30}, ...]}   # optional word alignment (seconds)

Text document (``TextRecord``)::

    {"id": "fineweb-000123", "text": "..."}

Errors name the file, the line (JSONL) or row (Parquet), the record id and what was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smoltolk.errors import InputError
from smoltolk.files import read_lines


@dataclass
class Word:
    word: str
    start: float
    end: float


@dataclass
class SpeechRecord:
    id: str
    audio: str | None = None
    units: list[int] | None = None
    durations: list[int] | None = None
    frame_rate: float | None = None
    text: str | None = None
    words: list[Word] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TextRecord:
    id: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fail(where: str, msg: str) -> InputError:
    return InputError(f"{where}: {msg}")


def _ints(value: Any, name: str, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _fail(where, f"'{name}' must be a list of integers")
    return value


def _words(value: Any, where: str) -> list[Word]:
    if not isinstance(value, list):
        raise _fail(where, "'words' must be a list of {word, start, end}")
    out: list[Word] = []
    for i, w in enumerate(value):
        if not isinstance(w, dict) or not {"word", "start", "end"} <= set(w):
            raise _fail(where, f"words[{i}] must have keys word, start, end; got {w!r}")
        start, end = w["start"], w["end"]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (start, end)):
            raise _fail(where, f"words[{i}] ({w['word']!r}): start and end must be finite numbers (seconds)")
        if start < 0 or end < start:
            raise _fail(where, f"words[{i}] ({w['word']!r}): expected 0 <= start <= end, got {start} .. {end}")
        if out and start < out[-1].end - 1e-6:
            raise _fail(where, f"words[{i}] ({w['word']!r}) starts at {start} s, before words[{i - 1}] ends "
                               f"({out[-1].end} s); word times must not go backwards")
        out.append(Word(str(w["word"]), float(start), float(end)))
    return out


def parse_speech_record(data: Any, where: str) -> SpeechRecord:
    if not isinstance(data, dict):
        raise _fail(where, f"expected a JSON object, got {type(data).__name__}")
    known = {"id", "audio", "units", "durations", "frame_rate", "text", "words"}
    rec_id = data.get("id")
    if not isinstance(rec_id, str) or not rec_id:
        raise _fail(where, "missing 'id' (a non-empty string)")
    where = f"{where} (id {rec_id!r})"
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(where, f"unknown field(s) {unknown}; a speech record has {sorted(known)}")
    data = {k: v for k, v in data.items() if v is not None}
    if "audio" not in data and "units" not in data:
        raise _fail(where, "needs 'audio' (a path) or 'units' (a list of unit ids)")
    rec = SpeechRecord(id=rec_id)
    if "audio" in data:
        if not isinstance(data["audio"], str):
            raise _fail(where, "'audio' must be a path string")
        rec.audio = data["audio"]
    if "units" in data:
        rec.units = _ints(data["units"], "units", where)
        if not rec.units:
            raise _fail(where, "'units' is empty (an empty utterance)")
    if "durations" in data:
        rec.durations = _ints(data["durations"], "durations", where)
        if rec.units is None or len(rec.durations) != len(rec.units):
            raise _fail(where, "'durations' needs 'units' of the same length")
        if any(d <= 0 for d in rec.durations):
            raise _fail(where, "'durations' must be positive frame counts")
    if "frame_rate" in data:
        if not isinstance(data["frame_rate"], (int, float)) or data["frame_rate"] <= 0:
            raise _fail(where, f"'frame_rate' must be a positive number, got {data['frame_rate']!r}")
        rec.frame_rate = float(data["frame_rate"])
    if "text" in data:
        if not isinstance(data["text"], str):
            raise _fail(where, "'text' must be a string")
        rec.text = data["text"]
    if "words" in data:
        rec.words = _words(data["words"], where)
        if not rec.words:
            raise _fail(where, "'words' is empty")
        if rec.units is not None and rec.frame_rate is None:
            raise _fail(where, "'words' with 'units' needs 'frame_rate' to place the words on the units")
    return rec


def parse_text_record(data: Any, where: str) -> TextRecord:
    if not isinstance(data, dict):
        raise _fail(where, f"expected a JSON object, got {type(data).__name__}")
    rec_id = data.get("id")
    if not isinstance(rec_id, str) or not rec_id:
        raise _fail(where, "missing 'id' (a non-empty string)")
    if not isinstance(data.get("text"), str):
        raise _fail(f"{where} (id {rec_id!r})", "missing 'text' (a string)")
    unknown = sorted(set(data) - {"id", "text"})
    if unknown:
        raise _fail(f"{where} (id {rec_id!r})", f"unknown field(s) {unknown}; a text record has ['id', 'text']")
    return TextRecord(rec_id, data["text"])


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, raw record) for each record of a JSONL or Parquet file."""
    if not path.is_file():
        raise InputError(f"{path}: manifest file not found")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise InputError(f"{path}: not a readable Parquet file ({e})") from None
        for i, row in enumerate(table.to_pylist()):
            yield f"{path}: row {i}", {k: v for k, v in row.items() if v is not None}
        return
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None


def read_speech_manifest(path: str | Path) -> list[SpeechRecord]:
    """All speech records of a JSONL / Parquet manifest, validated; ids must be unique."""
    return _read(Path(path), parse_speech_record)[0]


def read_text_manifest(path: str | Path) -> list[TextRecord]:
    return _read(Path(path), parse_text_record)[0]


def read_manifest_located(path: str | Path, kind: str) -> tuple[list, list[str]]:
    """(records, where each was read: ``file:line`` or ``file: row i``) of a speech or text manifest."""
    return _read(Path(path), parse_speech_record if kind == "speech" else parse_text_record)


def _read(path: Path, parse) -> tuple[list, list[str]]:
    records, wheres, seen = [], [], {}
    for where, raw in _rows(path):
        rec = parse(raw, where)
        if rec.id in seen:
            raise InputError(f"{where}: duplicate id {rec.id!r} (first at {seen[rec.id]})")
        seen[rec.id] = where
        records.append(rec)
        wheres.append(where)
    if not records:
        raise InputError(f"{path}: the manifest holds no records")
    return records, wheres


def write_manifest(path: str | Path, records: list[SpeechRecord] | list[TextRecord]) -> Path:
    """Write records as JSONL or Parquet (by suffix), atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rows = [r.to_json() for r in records]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows, schema=_parquet_schema(records)), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _parquet_schema(records: list):
    import pyarrow as pa

    if records and isinstance(records[0], TextRecord):
        return pa.schema([("id", pa.string()), ("text", pa.string())])
    word = pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())])
    return pa.schema([("id", pa.string()), ("audio", pa.string()), ("units", pa.list_(pa.int64())),
                      ("durations", pa.list_(pa.int64())), ("frame_rate", pa.float64()), ("text", pa.string()),
                      ("words", pa.list_(word))])
