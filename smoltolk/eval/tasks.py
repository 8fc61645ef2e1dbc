"""Benchmarks in their public file layouts: readers, items to score, and metrics.

Every task reads and checks its files when it is built (before any model is loaded), turns
them into :class:`~smoltolk.eval.scorer.Item` s once speech units and the text tokenizer are
at hand, and turns the item scores into metrics. Definitions follow
``benchmarks-and-analysis.md``; ties count 0.5 (1/m among m tied choices).

=====================  ==========================================================================
task                   layout (``path``)
=====================  ==========================================================================
swuggy                 ZeroSpeech 2021 lexical: a folder with ``gold.csv`` (``id, filename, voice,
                       frequency, word, phones, length, correct``) and ``{filename}.wav``
sblimp                 ZeroSpeech 2021 syntactic: ``gold.csv`` (``filename, type, subtype,
                       transcription, correct, id, voice``) and ``{filename}.wav``
blimp_text             the same sBLIMP ``gold.csv``, scoring the transcriptions as text (BLIMP T)
sstorycloze,           a folder of ``{i}_{storyid}_correct.wav`` and ``{j}_{storyid}_incorrect.wav``
tstorycloze            (each the whole story), scored whole, speech only
sstorycloze_xmodal,    a folder of ``{base}_mutual``, ``{base}_correct``, ``{base}_incorrect``, each
tstorycloze_xmodal     ``.wav`` and ``.txt``; settings T, S, T->S, S->T; only the ending is scored
speech_nll             a speech manifest (JSONL / Parquet; ``units`` or ``audio`` per utterance)
salmon                 SALMon's release: a folder per part (``speaker_consistency``, ...), each of
                       ``sample_{i}_{k}.wav``, option ``k`` 0 the positive, the others negatives
mmlu                   Hendrycks' release (``[test/]{subject}_test.csv``: question, A, B, C, D,
                       answer letter; no header) or JSONL rows ``{"subject", "question",
                       "choices": [...], "answer": index or letter}``
=====================  ==========================================================================
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smoltolk.errors import InputError
from smoltolk.eval.scorer import (
    Item,
    ItemScore,
    Reduction,
    Segment,
    choice_score,
    continuation_item,
    pair_score,
    speech_item,
    text_item,
)
from smoltolk.eval.units import UnitStore
from smoltolk.files import read_lines, read_text

SETTINGS = ("T", "S", "T->S", "S->T")


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _encode(tokenizer: Any, text: str) -> tuple[int, ...]:
    ids = tuple(tokenizer.encode(text, add_special_tokens=False).ids)
    if not ids:
        raise InputError(f"text {text!r} tokenizes to nothing")
    return ids


class Task:
    """A benchmark: reads its files, builds items, computes metrics. Subclasses set the class facts."""

    name = ""
    title = ""
    speech = False  # needs speech units (and a model with speech modules)
    text = False  # needs the text tokenizer
    zerospeech: str | None = None  # ZeroSpeech 2021 submission folder ("lexical", "syntactic")

    def audio(self) -> dict[str, Path]:
        """Wav stem -> path of every audio file whose units the items need."""
        return {}

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        raise NotImplementedError

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        raise NotImplementedError

    def item_names(self) -> list[str]:
        raise NotImplementedError

    def scoring(self, reduction: Reduction) -> str:
        """How items are scored, stated beside every result."""
        return f"{reduction} log-prob per unit of the whole utterance (BOS = speech EOS)"


def check_wavs(paths: dict[str, Path], where: str) -> None:
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise InputError(f"{where}: {len(missing)} audio file(s) missing, e.g. {', '.join(map(str, missing[:3]))}")


# --------------------------------------------------------------------------------------------------
# ZeroSpeech 2021: sWUGGY (lexical) and sBLIMP (syntactic)
# --------------------------------------------------------------------------------------------------


def read_gold(path: str | Path, columns: Sequence[str]) -> tuple[list[dict[str, str]], Path, Path]:
    """Rows of a ZeroSpeech ``gold.csv`` (``path``: the file or its folder), its path and the wav folder."""
    path = Path(path)
    gold = path if path.suffix == ".csv" else path / "gold.csv"
    if not gold.is_file():
        raise InputError(f"{gold}: missing (expected the benchmark's gold.csv)")
    with io.StringIO(read_text(gold), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{gold}: missing column(s) {missing}; expected {list(columns)}")
        rows = list(reader)
    if not rows:
        raise InputError(f"{gold}: no rows")
    for n, row in enumerate(rows, start=2):
        if row["correct"] not in ("0", "1", "True", "False", "true", "false"):
            raise InputError(f"{gold}:{n}: 'correct' must be 1 or 0, got {row['correct']!r}")
        row["correct"] = "1" if row["correct"] in ("1", "True", "true") else "0"
    return rows, gold, gold.parent


def _pairs(rows: list[dict[str, str]], key: Callable[[dict[str, str]], tuple], gold: Path) -> dict[tuple, tuple]:
    """Group rows by ``key`` into (good filenames, bad filenames); every group needs both."""
    groups: dict[tuple, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in rows:
        groups[key(row)][0 if row["correct"] == "1" else 1].append(row["filename"])
    for k, (good, bad) in groups.items():
        if not good or not bad:
            have = good or bad
            raise InputError(f"{gold}: unpaired item {k}: {have} has no {'in' if good else ''}correct counterpart")
    return dict(groups)


def _pair_mean(scores: dict[str, float], good: list[str], bad: list[str]) -> float:
    return _mean([pair_score(scores[g], scores[b]) for g in good for b in bad])


class ZeroSpeechTask(Task):
    speech = True
    columns: tuple[str, ...] = ()

    def __init__(self, path: str | Path) -> None:
        self.rows, self.gold, self.wav_dir = read_gold(path, self.columns)
        names = [r["filename"] for r in self.rows]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise InputError(f"{self.gold}: filename {dup!r} appears twice")
        self.split = self.gold.parent.name if self.gold.parent.name in ("dev", "test") else "dev"

    def audio(self) -> dict[str, Path]:
        return {r["filename"]: self.wav_dir / f"{r['filename']}.wav" for r in self.rows}

    def item_names(self) -> list[str]:
        return [r["filename"] for r in self.rows]

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        return [speech_item(units[r["filename"]], r["filename"]) for r in self.rows]

    def by_name(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, float]:
        return {r["filename"]: s.value(reduction) for r, s in zip(self.rows, scores)}


class SWuggy(ZeroSpeechTask):
    """Word vs non-word; pairs averaged over voices within an id, then over ids; all and in-vocab."""

    name, title, zerospeech = "swuggy", "sWUGGY", "lexical"
    columns = ("id", "filename", "voice", "frequency", "word", "correct")

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.pairs = _pairs(self.rows, lambda r: (r["id"], r["voice"]), self.gold)
        self.frequency: dict[str, float] = {}
        for n, row in enumerate(self.rows, start=2):
            if row["correct"] == "1":
                try:
                    freq = float(row["frequency"] or 0)
                except ValueError:
                    raise InputError(f"{self.gold}:{n}: 'frequency' must be a number, "
                                     f"got {row['frequency']!r}") from None
                self.frequency[row["id"]] = max(freq, self.frequency.get(row["id"], 0.0))

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        by_name = self.by_name(scores, reduction)
        per_id: dict[str, list[float]] = defaultdict(list)
        for (item_id, _voice), (good, bad) in sorted(self.pairs.items()):
            per_id[item_id].append(_pair_mean(by_name, good, bad))
        id_acc = {i: _mean(v) for i, v in per_id.items()}
        in_vocab = [a for i, a in id_acc.items() if self.frequency.get(i, 0.0) > 0]
        return {"accuracy": _mean(list(id_acc.values())), "accuracy_in_vocab": _mean(in_vocab),
                "ids": len(id_acc), "ids_in_vocab": len(in_vocab), "pairs": len(self.pairs), "files": len(self.rows)}


class SBlimp(ZeroSpeechTask):
    """Grammatical vs ungrammatical; averaged over voices within (type, subtype, id); macro over types."""

    name, title, zerospeech = "sblimp", "sBLIMP", "syntactic"
    columns = ("filename", "type", "subtype", "transcription", "correct", "id", "voice")

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.pairs = _pairs(self.rows, lambda r: (r["type"], r["subtype"], r["id"], r["voice"]), self.gold)

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        by_name = self.by_name(scores, reduction)
        per_item: dict[tuple, list[float]] = defaultdict(list)
        for (typ, sub, item_id, _voice), (good, bad) in self.pairs.items():
            per_item[(typ, sub, item_id)].append(_pair_mean(by_name, good, bad))
        return _by_type({k: _mean(v) for k, v in per_item.items()}, pairs=len(self.pairs), files=len(self.rows))


def _by_type(item_acc: dict[tuple, float], **extra: Any) -> dict[str, Any]:
    by_type: dict[str, list[float]] = defaultdict(list)
    by_subtype: dict[str, list[float]] = defaultdict(list)
    for (typ, sub, _id), acc in item_acc.items():
        by_type[typ].append(acc)
        by_subtype[f"{typ}/{sub}"].append(acc)
    types = {t: _mean(v) for t, v in sorted(by_type.items())}
    return {"accuracy": _mean(list(types.values())), "accuracy_micro": _mean(list(item_acc.values())),
            "by_type": types, "by_subtype": {s: _mean(v) for s, v in sorted(by_subtype.items())},
            "items": len(item_acc), **extra}


class BlimpText(Task):
    """BLIMP T: the sBLIMP transcriptions scored as text (one sentence per (type, subtype, id) side)."""

    name, title, text = "blimp_text", "BLIMP (text, sBLIMP transcriptions)", True

    def __init__(self, path: str | Path) -> None:
        rows, gold, _ = read_gold(path, SBlimp.columns)
        sentences: dict[tuple, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
        for row in rows:
            sentences[(row["type"], row["subtype"], row["id"])][0 if row["correct"] == "1" else 1].add(
                row["transcription"].strip())
        self.pairs = []
        for key, (good, bad) in sorted(sentences.items()):
            if len(good) != 1 or len(bad) != 1:
                raise InputError(f"{gold}: item {key} needs one grammatical and one ungrammatical transcription, "
                                 f"got {sorted(good)} / {sorted(bad)}")
            self.pairs.append((key, good.pop(), bad.pop()))

    def item_names(self) -> list[str]:
        return [f"{'/'.join(k)}/{side}" for k, _, _ in self.pairs for side in ("good", "bad")]

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        names = iter(self.item_names())
        return [text_item(_encode(tokenizer, s), next(names)) for _, g, b in self.pairs for s in (g, b)]

    def scoring(self, reduction: Reduction) -> str:
        return f"{reduction} log-prob per token of the whole sentence (after the text BOS, if the model has one)"

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        acc = {key: pair_score(scores[2 * k].value(reduction), scores[2 * k + 1].value(reduction))
               for k, (key, _, _) in enumerate(self.pairs)}
        return _by_type(acc)


# --------------------------------------------------------------------------------------------------
# Spoken StoryCloze (speech only) and the cross-modal variant
# --------------------------------------------------------------------------------------------------

_STORY = re.compile(r"^(\d+)_(.+)_(correct|incorrect)$")


class StoryCloze(Task):
    """sStoryCloze / tStoryCloze: each wav is a whole story; the correct one should score higher."""

    speech = True

    def __init__(self, path: str | Path, name: str) -> None:
        self.name = name
        self.title = {"sstorycloze": "sStoryCloze", "tstorycloze": "tStoryCloze"}.get(name, name)
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder (expected the benchmark's .wav files)")
        sides: dict[str, dict[str, str]] = defaultdict(dict)
        for wav in sorted(folder.glob("*.wav")):
            m = _STORY.match(wav.stem)
            if m is None:
                raise InputError(f"{wav}: name not of the form {{i}}_{{storyid}}_correct|incorrect.wav")
            if m.group(3) in sides[m.group(2)]:
                raise InputError(f"{wav}: story {m.group(2)!r} has two {m.group(3)} endings")
            sides[m.group(2)][m.group(3)] = wav.stem
        if not sides:
            raise InputError(f"{folder}: no {{i}}_{{storyid}}_correct.wav / _incorrect.wav files")
        for story, have in sides.items():
            if len(have) != 2:
                other = "incorrect" if "correct" in have else "correct"
                raise InputError(f"{folder / (next(iter(have.values())) + '.wav')}: unpaired: story {story!r} "
                                 f"has no {other} ending")
        self.folder = folder
        self.stories = sorted(sides.items(), key=lambda kv: int(_STORY.match(kv[1]["correct"]).group(1)))

    def item_names(self) -> list[str]:
        return [have[side] for _, have in self.stories for side in ("correct", "incorrect")]

    def audio(self) -> dict[str, Path]:
        return {stem: self.folder / f"{stem}.wav" for stem in self.item_names()}

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        return [speech_item(units[stem], stem) for stem in self.item_names()]

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        acc = [pair_score(scores[2 * k].value(reduction), scores[2 * k + 1].value(reduction))
               for k in range(len(self.stories))]
        return {"accuracy": _mean(acc), "items": len(acc)}


@dataclass
class _Story:
    base: str
    files: dict[str, Path]  # "mutual.txt", "correct.wav", ...


TIE_NATS = 1e-4  # scores are rounded to this where items from different batches are compared: float noise


def _merge_units(context: np.ndarray, ending: np.ndarray) -> np.ndarray:
    """The ending's units after the context's, collapsed across the junction (as one recording would be)."""
    return ending[1:] if len(ending) > 1 and ending[0] == context[-1] else ending


class CrossModalStoryCloze(Task):
    """StoryCloze with context and ending each in text or speech; only the ending is scored.

    Each setting keeps its own items and its own accuracy (the authors' script carried one
    accumulator across settings; here nothing is shared).

    ``calibration_contexts`` K > 0 (a diagnostic, off by default: the benchmark is the raw comparison)
    also scores each ending of the cross-modal settings (T->S, S->T) after the contexts of the K stories
    that follow its own (cyclically; a story with an ending of the same text is skipped, so an ending is
    never scored after the story it belongs to) and reports a *calibrated* accuracy: the ending whose
    score after its own story exceeds its mean score after those others by more wins (differences below
    ``TIE_NATS`` are ties). An ending's own likelihood (its length, how familiar its words are) then
    cancels and only what the story adds counts, as the lexical cloze's calibration.
    """

    def __init__(self, path: str | Path, name: str, settings: Sequence[str] = SETTINGS,
                 calibration_contexts: int = 0) -> None:
        self.name = name
        self.title = {"sstorycloze_xmodal": "sStoryCloze", "tstorycloze_xmodal": "tStoryCloze"}.get(name, name)
        bad = [s for s in settings if s not in SETTINGS]
        if bad or not settings:
            raise InputError(f"{name}: settings must be among {list(SETTINGS)}, got {list(settings)}")
        self.settings = list(dict.fromkeys(settings))
        self.speech = any("S" in s for s in self.settings)
        self.text = any("T" in s for s in self.settings)
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder (expected {{base}}_mutual|_correct|_incorrect .wav/.txt)")
        found: dict[str, dict[str, Path]] = defaultdict(dict)
        for f in sorted(folder.iterdir()):
            m = re.match(r"^(.+)_(mutual|correct|incorrect)\.(wav|txt)$", f.name)
            if m:
                found[m.group(1)][f"{m.group(2)}.{m.group(3)}"] = f
        if not found:
            raise InputError(f"{folder}: no {{base}}_mutual / _correct / _incorrect .wav or .txt files")
        need = sorted({f"{part}.{ext}" for s in self.settings for part, ext in self._needs(s)})
        for base, files in sorted(found.items()):
            missing = [n for n in need if n not in files]
            if missing:
                raise InputError(f"{folder}: story {base!r} lacks {', '.join(f'{base}_{n}' for n in missing)} "
                                 f"(needed by settings {self.settings})")
        self.folder = folder
        self.stories = [_Story(b, f) for b, f in sorted(found.items())]
        if not 0 <= calibration_contexts < len(self.stories):
            raise InputError(f"{name}: calibration_contexts must be in [0, {len(self.stories) - 1}] (other stories "
                             f"of {folder}), got {calibration_contexts}")
        self.calibration_contexts = calibration_contexts
        self._others = self._calibration_stories() if calibration_contexts else []

    def _calibration_stories(self) -> list[list[int]]:
        """For each story, the K stories (the next ones, cyclically) whose contexts calibrate its endings:
        none with an ending of the same text as one of its own (where the texts are there)."""
        def endings(st: _Story) -> set[str]:
            return {" ".join(read_text(st.files[f"{side}.txt"]).split()) for side in ("correct", "incorrect")
                    if f"{side}.txt" in st.files}

        texts = [endings(st) for st in self.stories]
        n, k, out = len(self.stories), self.calibration_contexts, []
        for i in range(n):
            chosen = [j % n for j in range(i + 1, i + n) if not texts[j % n] & texts[i]][:k]
            if len(chosen) < k:
                raise InputError(f"{self.name}: story {self.stories[i].base!r} has only {len(chosen)} other stories "
                                 f"without one of its endings, fewer than calibration_contexts={k}")
            out.append(chosen)
        return out

    @staticmethod
    def _needs(setting: str) -> list[tuple[str, str]]:
        ctx, end = (setting, setting) if "->" not in setting else setting.split("->")
        ext = {"T": "txt", "S": "wav"}
        return [("mutual", ext[ctx]), ("correct", ext[end]), ("incorrect", ext[end])]

    def audio(self) -> dict[str, Path]:
        out = {}
        for st in self.stories:
            for s in self.settings:
                for part, ext in self._needs(s):
                    if ext == "wav":
                        out[f"{st.base}_{part}"] = st.files[f"{part}.wav"]
        return out

    def _layout(self) -> list[tuple[str, int, int, str]]:
        """(setting, story of the context, story of the ending, side) of every item, in scoring order: each
        setting's own-context pairs, then (with calibration) each cross-modal ending after K other contexts."""
        n = len(self.stories)
        own = [(s, i, i, side) for s in self.settings for i in range(n) for side in ("correct", "incorrect")]
        others = [(s, j, i, side) for s in self.calibrated_settings for i in range(n)
                  for side in ("correct", "incorrect") for j in self._others[i]]
        return own + others

    @property
    def calibrated_settings(self) -> list[str]:
        """The settings calibration scores: the cross-modal ones, if ``calibration_contexts`` > 0."""
        return [s for s in self.settings if "->" in s] if self.calibration_contexts else []

    def item_names(self) -> list[str]:
        names = []
        for s, ctx, end, side in self._layout():
            st = self.stories[end]
            names.append(f"{s}/{st.base}/{side}" if ctx == end else
                         f"{s}/{st.base}/{side}/after/{self.stories[ctx].base}")
        return names

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        texts: dict[Path, str] = {}

        def text(path: Path) -> str:
            if path not in texts:
                texts[path] = " ".join(read_text(path).split())
                if not texts[path]:
                    raise InputError(f"{path}: empty")
            return texts[path]

        def context(modality: str, st: _Story) -> Segment:
            if modality == "T":
                return Segment("text", _encode(tokenizer, text(st.files["mutual.txt"])))
            return Segment("speech", tuple(units[f"{st.base}_mutual"].tolist()))

        items = []
        for (s, ctx, end, side), name in zip(self._layout(), self.item_names(), strict=True):
            ctx_mod, end_mod = (s, s) if "->" not in s else s.split("->")
            before, st = context(ctx_mod, self.stories[ctx]), self.stories[end]
            if end_mod == "T":  # a word inside running text carries its leading space
                ending = Segment("text", _encode(tokenizer, " " + text(st.files[f"{side}.txt"])))
            else:
                end_units = units[f"{st.base}_{side}"]
                if ctx_mod == "S":  # collapsed as after its own story, whichever context precedes it
                    end_units = _merge_units(units[f"{st.base}_mutual"], end_units)
                ending = Segment("speech", tuple(end_units.tolist()))
            items.append(continuation_item(before, ending, name))
        return items

    def scoring(self, reduction: Reduction) -> str:
        return (f"{reduction} log-prob per token of the ending only (context, SWT if the modality changes, "
                "ending; speech context starts with BOS = speech EOS)")

    def story_scores(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, dict[str, np.ndarray]]:
        """Per setting, per story (in ``self.stories`` order): ``raw`` pair scores (1, 0.5 on a tie, 0),
        and with calibration ``calibrated`` ones and ``gain`` (stories, 2: correct, incorrect), what the
        story adds to each ending."""
        n, k, m = len(self.stories), self.calibration_contexts, len(self.settings)
        if len(scores) != len(self._layout()):
            raise InputError(f"{self.name}: {len(scores)} scores for {len(self._layout())} items")
        values = np.array([x.value(reduction) for x in scores], dtype=float)
        own = values[:2 * n * m].reshape(m, n, 2)  # setting, story, side (the layout's order)
        out: dict[str, dict[str, np.ndarray]] = {}
        for j, s in enumerate(self.settings):  # each setting's scores only
            out[s] = {"raw": np.array([pair_score(own[j, i, 0], own[j, i, 1]) for i in range(n)])}
        calibrated = self.calibrated_settings
        if calibrated:
            null = values[2 * n * m:].reshape(len(calibrated), n, 2, k).mean(-1)
            for c, s in enumerate(calibrated):
                gain = own[self.settings.index(s)] - null[c]
                gain = np.round(gain / TIE_NATS) * TIE_NATS  # float noise (other batch shapes) is not a preference
                out[s]["gain"] = gain
                out[s]["calibrated"] = np.array([pair_score(gain[i, 0], gain[i, 1]) for i in range(n)])
        return out

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        out: dict[str, Any] = {"settings": {}, "items": len(self.stories)}
        for s, per in self.story_scores(scores, reduction).items():
            out["settings"][s] = {"accuracy": _mean(list(per["raw"]))}
            if "calibrated" in per:
                out["settings"][s]["calibrated"] = {
                    "accuracy": _mean(list(per["calibrated"])),
                    "gain_nats": {"correct": float(per["gain"][:, 0].mean()),
                                  "incorrect": float(per["gain"][:, 1].mean())}}
        if self.calibration_contexts:
            out["calibration_contexts"] = self.calibration_contexts
        return out


# --------------------------------------------------------------------------------------------------
# Speech NLL on a dev manifest
# --------------------------------------------------------------------------------------------------


class SpeechNLL(Task):
    """Negative log-likelihood of the units of each utterance (BOS = speech EOS), nats per unit."""

    name, title, speech = "speech_nll", "speech NLL", True

    def __init__(self, path: str | Path) -> None:
        from smoltolk.data.manifest import read_speech_manifest

        self.manifest = Path(path)
        self.records = read_speech_manifest(self.manifest)
        self.own_units = all(r.units is not None for r in self.records)
        if not self.own_units:
            lacking = [r.id for r in self.records if r.units is None and r.audio is None]
            if lacking:
                raise InputError(f"{self.manifest}: records {lacking[:3]} have neither 'units' nor 'audio'")

    def audio(self) -> dict[str, Path]:
        if self.own_units:
            return {}
        return {r.id: (Path(r.audio) if Path(r.audio).is_absolute() else self.manifest.parent / r.audio)
                for r in self.records}

    def manifest_units(self) -> UnitStore:
        from smoltolk.eval.units import read_units_manifest

        return UnitStore(read_units_manifest(self.manifest), str(self.manifest))

    def item_names(self) -> list[str]:
        return [r.id for r in self.records]

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        return [speech_item(units[r.id], r.id) for r in self.records]

    def scoring(self, reduction: Reduction) -> str:
        return "negative log-prob per unit in nats, token-weighted over the set (BOS = speech EOS)"

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        total = sum(s.logprob for s in scores)
        tokens = sum(s.num_tokens for s in scores)
        return {"nll": -total / tokens, "nll_utterance_mean": _mean([-s.mean for s in scores]),
                "units": tokens, "utterances": len(scores)}


# --------------------------------------------------------------------------------------------------
# SALMon (acoustic consistency and alignment)
# --------------------------------------------------------------------------------------------------

SALMON_PARTS = ("speaker_consistency", "gender_consistency", "sentiment_consistency", "rir_consistency",
                "bg_domain_consistency", "bg_all_consistency", "sentiment_alignment", "bg_alignment")
SALMON_TITLES = {"speaker_consistency": "Speaker", "gender_consistency": "Gender",
                 "sentiment_consistency": "Sentiment", "rir_consistency": "Room",
                 "bg_domain_consistency": "Background (in-domain)", "bg_all_consistency": "Background (random)",
                 "sentiment_alignment": "Sentiment align.", "bg_alignment": "Background align."}
_SALMON_WAV = re.compile(r"^sample_(\d+)_(\d+)$")


class Salmon(Task):
    """SALMon: in each sample a positive recording (acoustically consistent, or aligned with its text) and
    negatives that break it; the score is the share of samples whose positive gets the highest likelihood of
    the whole recording (summed over its units, as SALMon scores), ties counted 1/m. Every part folder found
    is scored (the eight of the release, or a subset, or a part of one's own)."""

    name, title, speech = "salmon", "SALMon", True

    def __init__(self, path: str | Path) -> None:
        root = Path(path)
        if not root.is_dir():
            raise InputError(f"{root}: not a folder (expected SALMon's part folders, e.g. speaker_consistency/)")
        self.root = root
        self.parts: dict[str, list[list[str]]] = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.wav"))):
            samples: dict[int, dict[int, str]] = defaultdict(dict)
            for wav in sorted(folder.glob("*.wav")):
                m = _SALMON_WAV.match(wav.stem)
                if m is None:
                    raise InputError(f"{wav}: name not of the form sample_{{i}}_{{k}}.wav (k 0: the positive)")
                samples[int(m.group(1))][int(m.group(2))] = wav.stem
            for i, options in sorted(samples.items()):
                if 0 not in options or len(options) < 2 or sorted(options) != list(range(len(options))):
                    raise InputError(f"{folder}: sample {i} has options {sorted(options)}; expected 0 (the "
                                     "positive) and 1, 2, ... (negatives)")
            self.parts[folder.name] = [[opts[k] for k in sorted(opts)] for _, opts in sorted(samples.items())]
        if not self.parts:
            raise InputError(f"{root}: no part folder with sample_{{i}}_{{k}}.wav files (expected e.g. "
                             f"{', '.join(SALMON_PARTS[:2])})")

    def _keys(self) -> list[tuple[str, str]]:
        return [(part, stem) for part, samples in self.parts.items() for sample in samples for stem in sample]

    def item_names(self) -> list[str]:
        return [f"{part}/{stem}" for part, stem in self._keys()]

    def audio(self) -> dict[str, Path]:
        return {f"{part}/{stem}": self.root / part / f"{stem}.wav" for part, stem in self._keys()}

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        return [speech_item(units[name], name) for name in self.item_names()]

    def scoring(self, reduction: Reduction) -> str:
        return "sum of log-probs over the whole recording's units, as SALMon scores (BOS = speech EOS)"

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        by_part, k = {}, 0
        for part, samples in self.parts.items():
            acc = []
            for sample in samples:
                acc.append(choice_score([scores[k + j].logprob for j in range(len(sample))], 0))
                k += len(sample)
            by_part[part] = {"accuracy": _mean(acc), "samples": len(acc)}
        return {"parts": by_part, "accuracy": _mean([v["accuracy"] for v in by_part.values()]),
                "samples": sum(v["samples"] for v in by_part.values())}


# --------------------------------------------------------------------------------------------------
# MMLU (0-shot cloze), for text retention
# --------------------------------------------------------------------------------------------------


@dataclass
class MMLUQuestion:
    subject: str
    question: str
    choices: list[str]
    answer: int


def _answer_index(value: Any, n: int, where: str) -> int:
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in "ABCDEFGHIJ":
        idx = "ABCDEFGHIJ".index(value.strip().upper())
    elif isinstance(value, int) and not isinstance(value, bool):
        idx = value
    elif isinstance(value, str) and value.strip().isdigit():
        idx = int(value)
    else:
        raise InputError(f"{where}: answer must be a letter or an index, got {value!r}")
    if not 0 <= idx < n:
        raise InputError(f"{where}: answer {value!r} is outside the {n} choices")
    return idx


def read_mmlu(path: str | Path, max_per_subject: int | None = 1000) -> list[MMLUQuestion]:
    """Questions of Hendrycks' CSV release or of a JSONL file, at most ``max_per_subject`` per subject."""
    path = Path(path)
    questions: list[MMLUQuestion] = []
    if path.is_file() and path.suffix == ".jsonl":
        for n, line in enumerate(read_lines(path), start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not {"subject", "question", "choices", "answer"} <= set(row):
                raise InputError(f"{where}: expected {{'subject', 'question', 'choices', 'answer'}}")
            choices = [str(c) for c in row["choices"]]
            if len(choices) < 2:
                raise InputError(f"{where}: needs at least two choices")
            questions.append(MMLUQuestion(str(row["subject"]), str(row["question"]), choices,
                                          _answer_index(row["answer"], len(choices), where)))
    else:
        folder = path / "test" if (path / "test").is_dir() else path
        files = sorted(folder.glob("*_test.csv")) if folder.is_dir() else []
        if not files:
            raise InputError(f"{path}: expected a .jsonl file or a folder of {{subject}}_test.csv files "
                             "(Hendrycks' release, optionally under test/)")
        for csv_path in files:
            subject = csv_path.name[: -len("_test.csv")]
            with io.StringIO(read_text(csv_path), newline="") as f:
                for n, row in enumerate(csv.reader(f), start=1):
                    where = f"{csv_path}:{n}"
                    if len(row) != 6:
                        raise InputError(f"{where}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
                    questions.append(MMLUQuestion(subject, row[0], row[1:5], _answer_index(row[5], 4, where)))
    if not questions:
        raise InputError(f"{path}: no questions")
    if max_per_subject is not None:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for q in questions:
            seen[q.subject] += 1
            if seen[q.subject] <= max_per_subject:
                kept.append(q)
        questions = kept
    return questions


def mmlu_query(q: MMLUQuestion) -> str:
    subject = q.subject.replace("_", " ")
    return f"The following are questions about {subject}.\nQuestion: {q.question.strip()}\nAnswer:"


class MMLU(Task):
    """0-shot cloze: query, then each choice " " + answer; acc by summed log-prob, acc_norm by sum / characters."""

    name, title, text = "mmlu", "MMLU", True

    def __init__(self, path: str | Path, max_per_subject: int | None = 1000) -> None:
        self.questions = read_mmlu(path, max_per_subject)

    def item_names(self) -> list[str]:
        return [f"{q.subject}/{i}/{k}" for i, q in enumerate(self.questions) for k in range(len(q.choices))]

    def items(self, units: UnitStore | None, tokenizer: Any) -> list[Item]:
        items, names = [], iter(self.item_names())
        for q in self.questions:
            query = Segment("text", _encode(tokenizer, mmlu_query(q)))
            for choice in q.choices:
                items.append(continuation_item(query, Segment("text", _encode(tokenizer, " " + choice.strip())),
                                               next(names)))
        return items

    def scoring(self, reduction: Reduction) -> str:
        return ("0-shot cloze; acc: summed log-prob of ' ' + choice; acc_norm: that sum / characters of "
                "' ' + choice; macro over subjects (micro also given)")

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        acc: dict[str, list[float]] = defaultdict(list)
        acc_norm: dict[str, list[float]] = defaultdict(list)
        k = 0
        for q in self.questions:
            block = scores[k:k + len(q.choices)]
            k += len(q.choices)
            acc[q.subject].append(choice_score([s.logprob for s in block], q.answer))
            acc_norm[q.subject].append(choice_score(
                [s.logprob / len(" " + c.strip()) for s, c in zip(block, q.choices)], q.answer))
        subjects = sorted(acc)
        return {"acc": _mean([_mean(acc[s]) for s in subjects]),
                "acc_norm": _mean([_mean(acc_norm[s]) for s in subjects]),
                "acc_micro": _mean([v for s in subjects for v in acc[s]]),
                "acc_norm_micro": _mean([v for s in subjects for v in acc_norm[s]]),
                "by_subject": {s: {"acc": _mean(acc[s]), "acc_norm": _mean(acc_norm[s]), "items": len(acc[s])}
                               for s in subjects},
                "questions": len(self.questions), "subjects": len(subjects)}

