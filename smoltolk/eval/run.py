"""``smoltolk eval``: score one or more checkpoints on the configured benchmarks and write the results.

Output folder::

    eval_config.json                 the resolved config, the checkpoints, versions
    results.json                     every metric of every checkpoint, and how each task was scored
    results.md                       paper Table 1's layout, checkpoints side by side (+ other tasks)
    <checkpoint>/scores/<task>.jsonl per-item summed log-prob and scored-token count
    <checkpoint>/zerospeech/lexical/<split>.txt, syntactic/<split>.txt   "<wav stem> <score>" lines
    units/<task>/                    speech units made from the benchmark's audio (reusable as tasks.<task>.units)

A checkpoint is a smoltolk directory or a Hugging Face text LM directory; the latter is scored
with its own :class:`~smoltolk.model.llama.LlamaLM` (its text path exactly, own RoPE base), so it
runs the text tasks only (MMLU before speech training, BLIMP T, StoryCloze T).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from smoltolk.config import to_dict
from smoltolk.errors import CheckpointError
from smoltolk.eval.config import EvalConfig
from smoltolk.eval.diagnostics import LexicalCloze, SpeakerContext, WordTranslation
from smoltolk.eval.report import write_report
from smoltolk.eval.scorer import LikelihoodScorer
from smoltolk.eval.tasks import (
    MMLU,
    BlimpText,
    CrossModalStoryCloze,
    Salmon,
    SBlimp,
    SpeechNLL,
    StoryCloze,
    SWuggy,
    Task,
    check_wavs,
)
from smoltolk.eval.units import UnitStore, load_unit_source, tokenize_audio
from smoltolk.files import write_text_atomic
from smoltolk.model.load import DTYPES, checkpoint_kind, checkpoint_names, load_model  # noqa: F401  (re-exported)


def build_tasks(cfg: EvalConfig) -> list[Task]:
    """Read and check every configured benchmark's files (errors before any model is loaded)."""
    tasks: list[Task] = []
    for name, tc in cfg.active_tasks().items():
        if name == "swuggy":
            tasks.append(SWuggy(tc.path))
        elif name == "sblimp":
            tasks.append(SBlimp(tc.path))
        elif name == "blimp_text":
            tasks.append(BlimpText(tc.path))
        elif name in ("sstorycloze", "tstorycloze"):
            tasks.append(StoryCloze(tc.path, name))
        elif name.endswith("_xmodal"):
            tasks.append(CrossModalStoryCloze(tc.path, name, tc.settings, tc.calibration_contexts))
        elif name == "speech_nll":
            tasks.append(SpeechNLL(tc.path))
        elif name == "mmlu":
            tasks.append(MMLU(tc.path, tc.max_per_subject))
        elif name == "lexical_cloze":
            tasks.append(LexicalCloze(tc.path, tc.settings, tc.limit))
        elif name == "word_translation":
            tasks.append(WordTranslation(tc.path))
        elif name == "speaker_context":
            tasks.append(SpeakerContext(tc.path))
        elif name == "salmon":
            tasks.append(Salmon(tc.path))
    return tasks


def make_scorer(model, cfg: EvalConfig, tokenizer=None) -> LikelihoodScorer:
    """The likelihood scorer an eval config asks for (batching, layout, BOS, prefix sharing)."""
    return LikelihoodScorer(model, batch_tokens=cfg.batch_tokens, layout=cfg.layout, pack_length=cfg.pack_length,
                            text_bos=resolve_text_bos(model, cfg.text_bos, tokenizer),
                            share_prefixes=cfg.share_prefixes, progress=cfg.progress)


DOCUMENT_SEPARATOR = "<|endoftext|>"


def resolve_text_bos(model, setting: int | str, tokenizer=None) -> int | None:
    """The token a text item starts after. ``"auto"``: the tokenizer's ``<|endoftext|>`` if it has one
    (GPT-2-style BPE models such as SmolLM and SmolLM2 separate their pretraining documents with it, so
    a text after it is a document start; SmolLM2-Instruct's ``bos_token_id`` is ``<|im_start|>``, a chat
    turn's opener, after which plain text is out of place), else the backbone's ``bos_token_id`` (Llama's
    ``<s>``, Llama 3's ``<|begin_of_text|>``), else its ``eos_token_id``. ``"none"``: no token; or an id."""
    if setting == "none":
        return None
    if setting != "auto":
        return int(setting)
    if tokenizer is not None and (sep := tokenizer.token_to_id(DOCUMENT_SEPARATOR)) is not None:
        return sep
    cfg = model.config.backbone if hasattr(model.config, "backbone") else model.config
    return cfg.bos_token_id if cfg.bos_token_id is not None else cfg.eos_token_id


def _tokenizer_if_any(path: str | Path, required: bool):
    from smoltolk.model.hf import load_tokenizer

    if required or Path(path).is_file() or (Path(path) / "tokenizer.json").is_file():
        return load_tokenizer(path)
    return None


def check_checkpoints(checkpoints: list[str], tasks: list[Task]) -> dict[str, str]:
    """Kind of each checkpoint; a text-only one asked for speech tasks is an error, before any work."""
    kinds = {}
    speech_tasks = [t.name for t in tasks if t.speech]
    for ckpt in checkpoints:
        kinds[ckpt] = checkpoint_kind(ckpt)
        if kinds[ckpt] == "hf" and speech_tasks:
            raise CheckpointError(f"{ckpt}: a Hugging Face text LM has no speech modules, so it cannot run the "
                                  f"speech task(s) {speech_tasks}; evaluate it on text tasks only (mmlu, blimp_text, "
                                  "*_xmodal with settings [T]), or wrap and train it first")
    return kinds


def resolve_units(tasks: list[Task], cfg: EvalConfig, out: Path) -> dict[str, UnitStore | None]:
    """Speech units of every speech task: pre-computed files, the manifest's own, or the speech tokenizer."""
    tokenizer = None
    stores: dict[str, UnitStore | None] = {}
    active = cfg.active_tasks()
    for task in tasks:
        if not task.speech:
            stores[task.name] = None
            continue
        if getattr(task, "inline_units", False):  # the diagnostics carry their units
            stores[task.name] = None
            continue
        if isinstance(task, SpeechNLL) and task.own_units:
            stores[task.name] = task.manifest_units()
            continue
        audio = task.audio()
        source = getattr(active[task.name], "units", None)
        if source is not None:
            stores[task.name] = load_unit_source(source, audio)
            continue
        check_wavs(audio, f"{task.name} ({active[task.name].path})")
        if tokenizer is None and cfg.speech_tokenizer.features is not None:
            from smoltolk.data.speech_tokenizer import load_speech_tokenizer

            st = cfg.speech_tokenizer
            tokenizer = load_speech_tokenizer(st.features, st.kmeans, layer=st.layer, device=cfg.device)
        stores[task.name] = tokenize_audio(audio, out / "units" / task.name, tokenizer, progress=cfg.progress)
    return stores


def evaluate_checkpoint(path: str, tasks: list[Task], units: dict[str, UnitStore | None], cfg: EvalConfig,
                        out: Path) -> dict[str, Any]:
    """Score one checkpoint on every task; write its per-item scores and ZeroSpeech files under ``out``."""

    model = load_model(path, cfg.device, cfg.dtype)
    tokenizer = None
    if any(t.text for t in tasks) or cfg.text_bos == "auto":
        tokenizer = _tokenizer_if_any(cfg.tokenizer or path, required=any(t.text for t in tasks))
    scorer = make_scorer(model, cfg, tokenizer)
    results: dict[str, Any] = {}
    for task in tasks:
        start = time.perf_counter()
        scores = scorer.score(task.items(units[task.name], tokenizer))
        metrics = task.metrics(scores, cfg.reduction)
        metrics["seconds"] = round(time.perf_counter() - start, 3)
        results[task.name] = metrics
        _write_scores(out / "scores" / f"{task.name}.jsonl", task.item_names(), scores)
        if task.zerospeech:
            sub = out / "zerospeech" / task.zerospeech / f"{task.split}.txt"
            sub.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(sub, "".join(f"{n} {s.value(cfg.reduction):.6f}\n"
                                            for n, s in zip(task.item_names(), scores)))
    del model
    return results


def _write_scores(path: Path, names: list[str], scores) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps({"item": n, "logprob": s.logprob, "tokens": s.num_tokens}) + "\n"
                                    for n, s in zip(names, scores)))


def evaluate(checkpoints: list[str], cfg: EvalConfig, out: str | Path, summary_files: bool = True) -> dict[str, Any]:
    """Score every checkpoint on every configured task; write results.json / results.md / eval_config.json
    (``summary_files`` False: only each checkpoint's own folder, for runs whose summaries
    :func:`write_summary` merges)."""
    from smoltolk.errors import ConfigError

    out = Path(out)
    if not checkpoints:
        raise ConfigError("give at least one checkpoint to evaluate")
    if not cfg.active_tasks():
        raise ConfigError("no tasks configured: give --tasks NAME=PATH ... (or tasks.NAME.path=... in a config)")
    tasks = build_tasks(cfg)
    kinds = check_checkpoints(checkpoints, tasks)
    out.mkdir(parents=True, exist_ok=True)
    names = checkpoint_names(checkpoints)
    summary: dict[str, Any] = {
        "reduction": cfg.reduction,
        "scoring": {t.name: t.scoring(cfg.reduction) for t in tasks},
        "ties": "count 0.5 (1/m for a gold choice tied with m-1 others)",
        "checkpoints": [],
    }
    if summary_files:
        _write_config(out, cfg, dict(zip(names, map(str, checkpoints))))
    units = resolve_units(tasks, cfg, out)
    for name, ckpt in zip(names, checkpoints):
        results = evaluate_checkpoint(ckpt, tasks, units, cfg, out / name)
        summary["checkpoints"].append({"name": name, "path": str(ckpt), "kind": kinds[ckpt], "results": results})
        if summary_files:
            write_text_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")  # after each checkpoint
    if summary_files:
        write_report(summary, out / "results.md")
    return summary


def _write_config(out: Path, cfg: EvalConfig, checkpoints: dict[str, str]) -> None:
    write_text_atomic(out / "eval_config.json", json.dumps({
        "config": to_dict(cfg), "checkpoints": checkpoints,
        "versions": {"torch": torch.__version__, "python": platform.python_version()}}, indent=2) + "\n")


def write_summary(out: str | Path, cfg: EvalConfig, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One folder's eval_config.json, results.json and results.md for :func:`evaluate` runs made into it with
    ``summary_files=False`` (one checkpoint each, say, side by side); returns the merged summary."""
    out = Path(out)
    merged = {**summaries[0], "checkpoints": [c for s in summaries for c in s["checkpoints"]]}
    _write_config(out, cfg, {c["name"]: c["path"] for c in merged["checkpoints"]})
    write_text_atomic(out / "results.json", json.dumps(merged, indent=2) + "\n")
    write_report(merged, out / "results.md")
    return merged
