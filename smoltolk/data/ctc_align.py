"""CTC forced alignment: word times from a local character-level CTC model (e.g. a Hugging Face
``Wav2Vec2ForCTC`` directory) and a transcript, by Viterbi over the CTC state graph.

The paper aligned its corpora with the MMS forced aligner (Pratap et al., 2024); any CTC model
in the Hugging Face ``Wav2Vec2ForCTC`` format works here. Nothing is downloaded: pass a local
directory holding ``config.json``, the weights and ``vocab.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smoltolk.data.alignments import normalize
from smoltolk.data.manifest import Word
from smoltolk.errors import CheckpointError, InputError
from smoltolk.files import read_text, require_safetensors


def ctc_viterbi(log_probs: np.ndarray, targets: list[int], blank: int = 0) -> np.ndarray:
    """Most likely CTC path of ``targets`` through ``log_probs`` (T, C).

    Returns, for each frame, the index of the target it emits, or -1 for a blank frame.
    Raises when the audio has too few frames for the targets (with their required blanks).
    """
    t_len, n = log_probs.shape[0], len(targets)
    ext = np.full(2 * n + 1, blank, dtype=np.int64)  # blank, y1, blank, y2, ..., blank
    ext[1::2] = targets
    s_len = len(ext)
    repeats = sum(1 for a, b in zip(targets, targets[1:], strict=False) if a == b)
    if t_len < n + repeats:
        raise InputError(f"{t_len} frames cannot hold {n} labels ({repeats} repeated pairs need a blank between)")
    # skip transitions s-2 -> s allowed into a label that differs from the label two states back
    can_skip = np.zeros(s_len, dtype=bool)
    can_skip[3::2] = ext[3::2] != ext[1:-2:2]
    neg = -np.inf
    score = np.full(s_len, neg)
    score[0] = log_probs[0, ext[0]]
    if s_len > 1:
        score[1] = log_probs[0, ext[1]]
    back = np.zeros((t_len, s_len), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, t_len):
        stay = score
        step = np.r_[neg, score[:-1]]
        skip = np.where(can_skip, np.r_[neg, neg, score[:-2]], neg)
        cand = np.stack([stay, step, skip])
        choice = np.argmax(cand, axis=0)
        score = cand[choice, np.arange(s_len)] + log_probs[t, ext]
        back[t] = choice
    end = s_len - 1 if s_len == 1 or score[-1] >= score[-2] else s_len - 2
    if not np.isfinite(score[end]):
        raise InputError("no CTC path fits the transcript into the audio")
    path = np.empty(t_len, dtype=np.int64)
    s = end
    for t in range(t_len - 1, -1, -1):
        path[t] = s
        s -= back[t, s]
    return np.where(path % 2 == 1, (path - 1) // 2, -1)


class CTCAligner:
    """Word alignment with a local ``Wav2Vec2ForCTC``-format model (16 kHz audio)."""

    def __init__(self, directory: str | Path, device: str = "cpu") -> None:
        try:
            from transformers import Wav2Vec2ForCTC
        except ImportError:
            raise InputError("CTC alignment needs transformers (pip install transformers)") from None
        directory = Path(directory)
        vocab_path = directory / "vocab.json"
        if not vocab_path.is_file():
            raise InputError(f"{vocab_path}: missing (expected the CTC model's character vocabulary)")
        try:
            self.vocab: dict[str, int] = json.loads(read_text(vocab_path))
        except json.JSONDecodeError as e:
            raise InputError(f"{vocab_path}: not valid JSON ({e.msg})") from None
        require_safetensors(directory, "a CTC model")
        try:
            self.model = Wav2Vec2ForCTC.from_pretrained(directory, use_safetensors=True,
                                                        local_files_only=True).to(device).eval()
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{directory}: cannot load the CTC model ({str(e).splitlines()[0]})") from None
        self.device = device
        cfg = self.model.config
        self.blank = cfg.pad_token_id if cfg.pad_token_id is not None else self.vocab.get("<pad>", 0)
        self.delimiter = "|" if "|" in self.vocab else " "
        self.frame_rate = 16000 / float(np.prod(cfg.conv_stride))
        self.upper = sum(k.isupper() for k in self.vocab) > sum(k.islower() for k in self.vocab)

    def _labels(self, words: list[str], where: str) -> tuple[list[int], list[int]]:
        """Label ids of the transcript and the word index of each label (delimiters: -1)."""
        labels, owner = [], []
        for i, word in enumerate(words):
            chars = normalize(word)
            chars = chars.upper() if self.upper else chars
            unknown = sorted({c for c in chars if c not in self.vocab})
            if unknown:
                raise InputError(f"{where}: word {i} {word!r} has characters {unknown} the CTC vocabulary lacks")
            if i:
                labels.append(self.vocab[self.delimiter])
                owner.append(-1)
            labels += [self.vocab[c] for c in chars]
            owner += [i] * len(chars)
        return labels, owner

    def align(self, wave: np.ndarray, transcript: str, where: str = "utterance") -> list[Word]:
        """Word times (seconds) of ``transcript``'s words in ``wave`` (mono, 16 kHz)."""
        import torch

        words = [w for w in transcript.split() if normalize(w)]
        if not words:
            raise InputError(f"{where}: empty transcript")
        labels, owner = self._labels(words, where)
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(wave, dtype=np.float32), device=self.device)[None]
            log_probs = torch.log_softmax(self.model(x).logits[0].float(), dim=-1).cpu().numpy()
        try:
            frames = ctc_viterbi(log_probs, labels, self.blank)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        owner_arr = np.asarray(owner)
        word_of_frame = np.where(frames >= 0, owner_arr[np.clip(frames, 0, None)], -1)
        out = []
        for i, w in enumerate(words):
            hit = np.flatnonzero(word_of_frame == i)
            out.append(Word(w, float(hit[0] / self.frame_rate), float((hit[-1] + 1) / self.frame_rate)))
        return out


def align_manifest(manifest: str | Path, out: str | Path, aligner: CTCAligner, progress: bool = True) -> dict:
    """Align every record of a speech manifest that has ``audio`` and ``text``; writes
    ``<out>/<id>.json`` (``{"words": [...]}``, the format ``smoltolk prepare --alignments`` reads).
    Existing outputs are kept (a re-run resumes). Returns counts."""
    from smoltolk.data.audio import load_audio
    from smoltolk.data.manifest import read_speech_manifest
    from smoltolk.progress import progress_bar

    manifest, out = Path(manifest), Path(out)
    records = read_speech_manifest(manifest)
    todo = [r for r in records if r.audio is not None and r.text is not None]
    if not todo:
        raise InputError(f"{manifest}: no record has both 'audio' and 'text' to align")
    out.mkdir(parents=True, exist_ok=True)
    done = skipped = 0
    for rec in progress_bar(todo, desc="align", unit="utt", disable=not progress):
        target = out / f"{rec.id}.json"
        if target.is_file():
            skipped += 1
            continue
        audio = Path(rec.audio) if Path(rec.audio).is_absolute() else manifest.parent / rec.audio
        words = aligner.align(load_audio(audio), rec.text, where=f"{manifest} (id {rec.id!r})")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps({"words": [w.__dict__ for w in words]}) + "\n")
        tmp.replace(target)
        done += 1
    return {"aligned": done, "kept": skipped, "without_audio_or_text": len(records) - len(todo)}
