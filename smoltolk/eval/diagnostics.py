"""Diagnostics of cross-modal transfer: where does it fail? (files: :mod:`smoltolk.world.diagnostics`)

- ``lexical_cloze``: a story's context, then its ending's first word (the action verb that the
  context's place and object decide) ranked among all the world's action verbs, for every pair of
  context / word modality. ``t`` is the context as a transcript (no punctuation, as the text of
  interleaved training samples) beside ``T``, the written context. Raw ranks carry each word's prior
  (a word heard only in carrier utterances is improbable anywhere); *calibrated* ranks subtract each
  candidate's score after a bare ``then he``, so they measure what the context adds.
- ``word_translation``: a spoken word alone -> its written form among the split's topic words, and
  back. Calibrated: each candidate's mean score over all contexts is subtracted (a word prior).
- ``speaker_context``: how much a story's own context raises its ending's log-probability over
  another story's, with the ending spoken by the context's speaker or another one, and how much
  hearing the ending's own speaker in the context adds with the story fixed.

Every score is the summed log-probability of the word or ending (its probability as a whole).
Scores are rounded to ``TIE_NATS`` (float noise is not a preference); ties count 1/m among m.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from smoltolk.errors import InputError
from smoltolk.eval.scorer import Item, ItemScore, Reduction, Segment, choice_score, continuation_item
from smoltolk.eval.tasks import TIE_NATS, Task, _encode, _mean, _merge_units
from smoltolk.files import read_lines

CLOZE_SETTINGS = ("T", "S", "T->S", "S->T", "t", "t->S")


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing (expected a JSONL file)")
    rows = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not JSON ({e.msg})") from None
        missing = [k for k in required if k not in row]
        if missing:
            raise InputError(f"{path}:{n}: missing {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no records")
    return rows


def _speech(units: list[int], where: str) -> tuple[int, ...]:
    if not units:
        raise InputError(f"{where}: empty units")
    return tuple(int(u) for u in units)


def _ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Rank (1 = best; ties share the mean rank) of each row's gold column."""
    g = scores[np.arange(len(gold)), gold][:, None]
    return (scores > g).sum(1) + ((scores == g).sum(1) + 1) / 2


def _choice(scores: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    scores = np.round(scores / TIE_NATS) * TIE_NATS
    n = scores.shape[1]
    return {"accuracy": _mean([choice_score(list(row), int(k)) for row, k in zip(scores, gold, strict=True)]),
            "mean_rank": float(_ranks(scores, gold).mean()), "chance_accuracy": 1 / n, "chance_rank": (n + 1) / 2}


class LexicalCloze(Task):
    name, title, speech, text, inline_units = "lexical_cloze", "lexical cross-modal cloze", True, True, True

    def __init__(self, path: str | Path, settings=CLOZE_SETTINGS, limit: int | None = None) -> None:
        bad = [s for s in settings if s not in CLOZE_SETTINGS]
        if bad or not settings:
            raise InputError(f"lexical_cloze: settings must be among {list(CLOZE_SETTINGS)}, got {list(settings)}")
        self.settings = list(dict.fromkeys(settings))
        self.path = Path(path)
        self.rows = read_jsonl(path, ("id", "context", "transcript", "null", "context_units", "null_units",
                                      "candidates", "candidate_units", "answer"))[:limit]
        k = len(self.rows[0]["candidates"])
        for n, r in enumerate(self.rows, 1):
            if len(r["candidates"]) != k:
                raise InputError(f"{self.path}: record {n} ({r['id']}) has {len(r['candidates'])} candidates, the "
                                 f"first record {k}; every record needs the same candidate list")
            if not (len(r["candidate_units"]) == k and 0 <= r["answer"] < k):
                raise InputError(f"{self.path}: record {n} ({r['id']}): candidates, their units and answer disagree")

    def item_names(self) -> list[str]:
        return [f"{s}/{r['id']}/{ctx}/{c}" for s in self.settings for r in self.rows for ctx in ("context", "null")
                for c in r["candidates"]]

    def items(self, units, tokenizer: Any) -> list[Item]:
        names = iter(self.item_names())
        items = []
        for s in self.settings:
            ctx_mod, word_mod = (s, s) if "->" not in s else s.split("->")
            for r in self.rows:
                where = f"{self.path}: {r['id']}"
                for which in ("context", "null"):
                    if ctx_mod == "S":
                        ctx = Segment("speech", _speech(r[f"{which}_units"], where))
                    else:  # T: as written; t: as a transcript (the null context is the same either way)
                        text = r[which] if which == "null" or ctx_mod == "T" else r["transcript"]
                        ctx = Segment("text", _encode(tokenizer, text))
                    for c, cu in zip(r["candidates"], r["candidate_units"], strict=True):
                        if word_mod == "S":  # after a spoken context, collapsed across the junction
                            units = np.asarray(_speech(cu, where))
                            if ctx.modality == "speech":
                                units = _merge_units(np.asarray(ctx.ids), units)
                            word = Segment("speech", tuple(int(u) for u in units))
                        else:
                            word = Segment("text", _encode(tokenizer, " " + c))
                        items.append(continuation_item(ctx, word, next(names)))
        return items

    def scoring(self, reduction: Reduction) -> str:
        return ("summed log-prob of each candidate word after the context (calibrated: minus its log-prob after "
                "the bare 'then he'); speech context starts with BOS = speech EOS, SWT between modalities")

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        out: dict[str, Any] = {"settings": {}, "items": len(self.rows), "candidates": len(self.rows[0]["candidates"])}
        k = len(self.rows[0]["candidates"])
        gold = np.array([r["answer"] for r in self.rows])
        lp = np.array([s.logprob for s in scores]).reshape(len(self.settings), len(self.rows), 2, k)
        for i, s in enumerate(self.settings):
            raw, null = lp[i, :, 0], lp[i, :, 1]
            out["settings"][s] = {**_choice(raw, gold), "calibrated": _choice(raw - null, gold),
                                  "context_gain_nats": float((raw - null)[np.arange(len(gold)), gold].mean())}
        return out


class WordTranslation(Task):
    name, title, speech, text, inline_units = "word_translation", "word translation", True, True, True
    settings: tuple[str, ...] = ("S->T", "T->S")
    # with the world's echo frame ("kate said the word drill and tom said" -> drill in the other modality)
    echo_settings = ("S->T echo", "T->S echo")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows = read_jsonl(path, ("word", "units"))
        if len(self.rows) < 2:
            raise InputError(f"{self.path}: at least two words are needed")
        framed = ["frame" in r and "frame_units" in r for r in self.rows]
        if any(framed) and not all(framed):
            raise InputError(f"{self.path}: line {framed.index(False) + 1} has no frame/frame_units, others do")
        self.framed = all(framed)  # files written before the echo frames have none
        if self.framed:
            self.settings = (*self.settings, *self.echo_settings)

    def item_names(self) -> list[str]:
        return [f"{s}/{a['word']}/{b['word']}" for s in self.settings for a in self.rows for b in self.rows]

    def items(self, units, tokenizer: Any) -> list[Item]:
        names = iter(self.item_names())
        n = range(len(self.rows))
        spoken = [Segment("speech", _speech(r["units"], f"{self.path}: {r['word']}")) for r in self.rows]
        alone = [Segment("text", _encode(tokenizer, r["word"])) for r in self.rows]  # a text's first word
        after = [Segment("text", _encode(tokenizer, " " + r["word"])) for r in self.rows]  # after a switch
        items = [continuation_item(spoken[i], after[j], next(names)) for i in n for j in n]
        items += [continuation_item(alone[i], spoken[j], next(names)) for i in n for j in n]
        if self.framed:
            said = [Segment("speech", _speech(r["frame_units"], f"{self.path}: {r['word']}")) for r in self.rows]
            written = [Segment("text", _encode(tokenizer, r["frame"])) for r in self.rows]
            items += [continuation_item(said[i], after[j], next(names)) for i in n for j in n]
            items += [continuation_item(written[i], spoken[j], next(names)) for i in n for j in n]
        return items

    def scoring(self, reduction: Reduction) -> str:
        return ("summed log-prob of each candidate word in the other modality after the word alone, or (echo) after "
                "the echo frame that holds it (calibrated: minus the candidate's mean over all words)")

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        n = len(self.rows)
        lp = np.array([s.logprob for s in scores]).reshape(len(self.settings), n, n)
        gold = np.arange(n)
        out: dict[str, Any] = {"settings": {}, "words": n}
        for i, s in enumerate(self.settings):
            out["settings"][s] = {**_choice(lp[i], gold), "calibrated": _choice(lp[i] - lp[i].mean(0), gold)}
        return out


class SpeakerContext(Task):
    name, title, speech, text, inline_units = "speaker_context", "context effect, speaker controlled", True, True, True
    # effect -> (item with the story's own context, item with the contrast)
    EFFECTS = {
        "S, ending by the context's speaker": ("own_a/end_a", "other_a/end_a"),
        "S, ending by another speaker": ("own_a/end_b", "other_a/end_b"),
        "S, speaker match (same story)": ("own_a/end_a", "own_b/end_a"),
        "T->S": ("own_T/end_a", "other_T/end_a"),
        "S->T": ("own_a/end_T", "other_a/end_T"),
        "T": ("own_T/end_T", "other_T/end_T"),
    }
    PARTS = tuple(dict.fromkeys(p for pair in EFFECTS.values() for p in pair))

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows = read_jsonl(path, ("id", "context", "other_context", "ending", "context_units",
                                      "other_context_units", "ending_units"))

    def item_names(self) -> list[str]:
        return [f"{r['id']}/{p}" for r in self.rows for p in self.PARTS]

    def items(self, units, tokenizer: Any) -> list[Item]:
        names = iter(self.item_names())
        items = []
        for r in self.rows:
            where = f"{self.path}: {r['id']}"
            ctx = {"own_a": r["context_units"][0], "own_b": r["context_units"][1],
                   "other_a": r["other_context_units"][0]}
            for part in self.PARTS:
                c, e = part.split("/")
                if c.endswith("_T"):
                    context = Segment("text", _encode(tokenizer, r["context" if c == "own_T" else "other_context"]))
                else:
                    context = Segment("speech", _speech(ctx[c], where))
                if e == "end_T":
                    ending = Segment("text", _encode(tokenizer, " " + r["ending"]))
                else:
                    end = np.asarray(_speech(r["ending_units"][0 if e == "end_a" else 1], where))
                    if context.modality == "speech":
                        end = _merge_units(np.asarray(context.ids), end)
                    ending = Segment("speech", tuple(int(u) for u in end))
                items.append(continuation_item(context, ending, next(names)))
        return items

    def scoring(self, reduction: Reduction) -> str:
        return "summed log-prob of the ending; gain = after the story's own context minus after the contrast"

    def metrics(self, scores: list[ItemScore], reduction: Reduction) -> dict[str, Any]:
        lp = np.array([s.logprob for s in scores]).reshape(len(self.rows), len(self.PARTS))
        col = {p: i for i, p in enumerate(self.PARTS)}
        out: dict[str, Any] = {"effects": {}, "items": len(self.rows)}
        for name, (own, contrast) in self.EFFECTS.items():
            gain = lp[:, col[own]] - lp[:, col[contrast]]
            out["effects"][name] = {"nats": float(gain.mean()), "positive": float((gain > 0).mean())}
        return out
