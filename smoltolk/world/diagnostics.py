"""Diagnostic benchmarks of cross-modal transfer, written beside the mini-world's benchmarks.

StoryCloze accuracy says whether a model prefers the right ending; these say *where* transfer
fails. Each is one JSONL file under ``bench/<split>/`` read by :mod:`smoltolk.eval.diagnostics`;
speech is given as units inline (rendered by the world's pseudo-speech), text as plain strings.

``lexical_cloze.jsonl``: a story's context and ``then <he|she>``, and the ending's first word (its
action verb, which the context's place and object decide) among every action verb of the world.
One line per story::

    {"id", "topic", "speaker", "context": written text (sentences end with "."),
     "transcript": the same words without punctuation (as interleaved training text), "null": "then he",
     "context_units": units of transcript spoken alone, "null_units": the last two words' units in them,
     "candidates": [verb, ...], "candidate_units": [units of each verb spoken after the context],
     "answer": index of the right verb}

The context's speech is rendered alone, so its last sounds never hint at the next word; the null
context is its own ``then he``, so a model that ignores everything before sees the same inputs.

``word_translation.jsonl``: every topic word spoken alone, to be matched with its written form, and
in an echo frame ("kate said the word drill and tom said": the frame of the world's echo carriers,
whose next word is the same word again)::

    {"word", "topic", "group": "heard" | "held_out", "units", "frame": text, "frame_units": it spoken}

``speaker_context.jsonl``: a story's ending after its own context and after another story's, with
the ending spoken by the context's speaker or by another one, so that speaker adaptation and
meaning can be told apart::

    {"id", "topic", "context", "other_context", "ending", "speakers": [a, b],
     "context_units": [by a, by b], "other_context_units": [by a], "ending_units": [by a, by b]}
"""

from __future__ import annotations

import json
from pathlib import Path

from smoltolk.files import write_text_atomic
from smoltolk.world.speech import PseudoSpeech
from smoltolk.world.world import ACTIONS, ECHO_CARRIERS, Story, topic_words, words

CLOZE_CANDIDATES = tuple(dict.fromkeys(a.phrase.split()[0] for a in ACTIONS))  # the 24 action verbs


def _unit_index(rec, frame: int) -> int:
    """Index of the first unit of ``rec`` that starts at ``frame`` (a word boundary)."""
    frames = 0
    for i, d in enumerate(rec.durations):
        if frames >= frame:
            return i
        frames += d
    return len(rec.units)


def _tail(speech: PseudoSpeech, utt_id: str, head: list[str], word: str, speaker: int) -> list[int]:
    """Units of ``word`` spoken right after ``head`` (its coarticulation included), by ``speaker``."""
    rec = speech.render(utt_id, [*head, word], speaker=speaker)
    return list(rec.units[_unit_index(rec, round(rec.words[-2].end * rec.frame_rate)):])


def lexical_cloze(items: list[Story], speech: PseudoSpeech, prefix: str) -> list[dict]:
    out = []
    for k, st in enumerate(items):
        speaker = k % speech.speakers
        opener = ["then", st.state.pronoun]
        transcript = words(st.context_text()) + opener
        ctx = speech.render(f"{prefix}{st.id}-ctx", transcript, speaker=speaker)
        null_start = _unit_index(ctx, round(ctx.words[-3].end * ctx.frame_rate))  # "then he" as said in it
        out.append({
            "id": st.id, "topic": st.topic, "speaker": speaker,
            "context": st.context_text() + " " + " ".join(opener), "transcript": " ".join(transcript),
            "null": " ".join(opener), "context_units": ctx.units, "null_units": ctx.units[null_start:],
            "candidates": list(CLOZE_CANDIDATES),
            "candidate_units": [_tail(speech, f"{prefix}{st.id}-ctx", transcript, c, speaker)
                                for c in CLOZE_CANDIDATES],
            "answer": CLOZE_CANDIDATES.index(st.ending.phrase.split()[0]),
        })
    return out


ECHO_FRAME = ECHO_CARRIERS[0].rsplit(" ", 1)[0]  # "{name} said the word {word} and {other} said"


def word_translation(places: list[str], group: str, speech: PseudoSpeech) -> list[dict]:
    rows = [{"word": w, "topic": place, "group": group} for place in places for w in sorted(topic_words(place))]
    for i, row in enumerate(rows):
        voice = i % speech.speakers
        row["units"] = speech.render(f"word-{row['word']}", [row["word"]], speaker=voice).units
        row["frame"] = ECHO_FRAME.format(name="kate", other="tom", word=row["word"])
        row["frame_units"] = speech.render(f"frame-{row['word']}", words(row["frame"]), speaker=voice).units
    return rows


def speaker_context(items: list[Story], speech: PseudoSpeech, prefix: str) -> list[dict]:
    out = []
    for k, st in enumerate(items):
        other = items[(k + 1) % len(items)]
        a, b = k % speech.speakers, (k + 1) % speech.speakers
        ctx, other_ctx, ending = words(st.context_text()), words(other.context_text()), words(st.ending_sentence())
        render = speech.render
        out.append({
            "id": st.id, "topic": st.topic, "context": st.context_text(), "other_context": other.context_text(),
            "ending": st.ending_sentence() + ".", "speakers": [a, b],
            "context_units": [render(f"{prefix}{st.id}-ctx", ctx, speaker=s).units for s in (a, b)],
            "other_context_units": [render(f"{prefix}{other.id}-ctx", other_ctx, speaker=a).units],
            "ending_units": [render(f"{prefix}{st.id}-end", ending, speaker=s).units for s in (a, b)],
        })
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_diagnostics(root: Path, items: list[Story], places: list[str], group: str,
                      speech: PseudoSpeech, prefix: str) -> dict[str, int]:
    """The three diagnostic files for one benchmark split (``group``: "heard" or "held_out") under
    ``root``; returns their sizes."""
    cloze = lexical_cloze(items, speech, prefix)
    translation = word_translation(places, group, speech)
    speakers = speaker_context(items, speech, prefix) if speech.speakers > 1 else []
    _write_jsonl(root / "lexical_cloze.jsonl", cloze)
    _write_jsonl(root / "word_translation.jsonl", translation)
    if speakers:
        _write_jsonl(root / "speaker_context.jsonl", speakers)
    return {"lexical_cloze": len(cloze), "word_translation": len(translation), "speaker_context": len(speakers)}


ENDING_CUES = ("pronoun differs", "same pronoun")  # the two kinds of StoryCloze pair in the world
CALIBRATION_CONTEXTS = 4  # other stories each cross-modal tStoryCloze ending is also scored after (calibrated)


def storycloze_by_cue(folder: str | Path, scores: str | Path, reduction: str = "mean") -> dict:
    """A world's cross-modal StoryCloze split by what tells its two endings apart (``then <he|she> ...``):
    pairs whose pronouns differ can be told by agreement with the story's person, a cue of the heard
    vocabulary; pairs with the same pronoun only by what the story is about. ``scores``: the per-item
    scores ``smoltolk eval`` wrote for the task in ``folder`` (its settings and, with ``calibration_contexts``
    > 0, the calibrated accuracy are read from the item names). Returns ``{setting: {cue: {"stories",
    "accuracy", "calibrated"}}}``."""
    from smoltolk.errors import InputError
    from smoltolk.eval.scorer import ItemScore
    from smoltolk.eval.tasks import CrossModalStoryCloze

    folder, scores = Path(folder), Path(scores)
    rows = [json.loads(x) for x in scores.read_text().splitlines() if x.strip()]
    names = [r["item"] for r in rows]
    if not names:
        raise InputError(f"{scores}: no scores")
    settings = list(dict.fromkeys(n.split("/")[0] for n in names))
    calibrated = next((n.split("/after/")[0] for n in names if "/after/" in n), None)
    k = 0 if calibrated is None else sum(n.startswith(calibrated + "/after/") for n in names)
    task = CrossModalStoryCloze(folder, folder.name, settings, k)
    if task.item_names() != names:
        raise InputError(f"{scores}: its items are not those of {folder} (settings {settings}, "
                         f"calibration_contexts {k}): scores of another benchmark?")
    differs = []
    for st in task.stories:
        endings = [st.files[f"{side}.txt"].read_text(encoding="utf-8").split() for side in ("correct", "incorrect")]
        if any(len(e) < 2 or e[0] != "then" for e in endings):
            raise InputError(f"{folder}: story {st.base!r}: endings should start 'then <pronoun>', got "
                             f"{[' '.join(e[:2]) for e in endings]}")
        differs.append(endings[0][1] != endings[1][1])
    per = task.story_scores([ItemScore(r["logprob"], r["tokens"]) for r in rows], reduction)
    out: dict = {}
    for setting, got in per.items():
        for cue in ENDING_CUES:
            keep = [i for i, d in enumerate(differs) if d == (cue == ENDING_CUES[0])]
            cell = {"stories": len(keep), "accuracy": None, "calibrated": None}
            if keep:
                cell["accuracy"] = float(got["raw"][keep].mean())
                if "calibrated" in got:
                    cell["calibrated"] = float(got["calibrated"][keep].mean())
            out.setdefault(setting, {})[cue] = cell
    return out


def add_storycloze_cues(checkpoint: dict, bench: str | Path, eval_out: str | Path, reduction: str) -> None:
    """Add ``by_cue`` (:func:`storycloze_by_cue`) to one checkpoint's ``tstorycloze_xmodal`` results, as
    ``smoltolk eval`` returned them (``{"name", "results"}``) for the world's ``bench/<split>`` in ``eval_out``."""
    xm = checkpoint["results"].get("tstorycloze_xmodal")
    if xm is not None:
        xm["by_cue"] = storycloze_by_cue(Path(bench) / "tstorycloze_xmodal",
                                         Path(eval_out) / checkpoint["name"] / "scores" / "tstorycloze_xmodal.jsonl",
                                         reduction)
