"""Results as Markdown: paper Table 1's columns with checkpoints side by side, then the other tasks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MISSING = "—"
CROSS_MODAL_S = "†"  # S column filled from the cross-modal set (ending only) for want of the speech-only task


def _pct(value: float | None) -> str:
    return MISSING if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _get(results: dict[str, Any], *keys: str) -> float | None:
    node: Any = results
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _story_columns(r: dict[str, Any], prefix: str) -> list[str]:
    xmodal = f"{prefix}storycloze_xmodal"
    cells = [_pct(_get(r, xmodal, "settings", "T", "accuracy"))]
    whole = _get(r, f"{prefix}storycloze", "accuracy")
    if whole is not None:
        cells.append(_pct(whole))
    else:
        s = _get(r, xmodal, "settings", "S", "accuracy")
        cells.append(MISSING if s is None else _pct(s) + CROSS_MODAL_S)
    cells += [_pct(_get(r, xmodal, "settings", s, "accuracy")) for s in ("T->S", "S->T")]
    return cells


def table1(summary: dict[str, Any]) -> str:
    """Paper Table 1's layout: BLIMP T/S, tStoryCloze and sStoryCloze T/S/T->S/S->T, MMLU."""
    head = ("| Model | BLIMP T | BLIMP S | tSC T | tSC S | tSC T→S | tSC S→T | sSC T | sSC S | sSC T→S | sSC S→T "
            "| MMLU |")
    lines = [head, "|" + "---|" * 12]
    for ck in summary["checkpoints"]:
        r = ck["results"]
        cells = [ck["name"], _pct(_get(r, "blimp_text", "accuracy")), _pct(_get(r, "sblimp", "accuracy"))]
        cells += _story_columns(r, "t") + _story_columns(r, "s")
        cells.append(_pct(_get(r, "mmlu", "acc_norm")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def other_table(summary: dict[str, Any]) -> str:
    head = "| Model | sWUGGY all | sWUGGY in-vocab | sBLIMP micro | speech NLL (nats/unit) | MMLU acc | MMLU acc_norm |"
    lines = [head, "|" + "---|" * 7]
    for ck in summary["checkpoints"]:
        r = ck["results"]
        nll = _get(r, "speech_nll", "nll")
        cells = [ck["name"], _pct(_get(r, "swuggy", "accuracy")), _pct(_get(r, "swuggy", "accuracy_in_vocab")),
                 _pct(_get(r, "sblimp", "accuracy_micro")), MISSING if nll is None else f"{nll:.3f}",
                 _pct(_get(r, "mmlu", "acc")), _pct(_get(r, "mmlu", "acc_norm"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnostics_tables(summary: dict[str, Any]) -> list[str]:
    """The cross-modal diagnostics (smoltolk.eval.diagnostics), if any checkpoint has them."""
    ckpts = summary["checkpoints"]
    lines: list[str] = []
    cloze = [ck for ck in ckpts if "lexical_cloze" in ck["results"]]
    if cloze:
        settings = list(cloze[0]["results"]["lexical_cloze"]["settings"])
        k = cloze[0]["results"]["lexical_cloze"]["candidates"]
        lines += ["", f"**Lexical cloze**: the ending's first word among {k} verbs after the story context, top-1 "
                  f"accuracy % (chance {100 / k:.1f}), raw / calibrated (minus the word's score after a bare "
                  "'then he'). t = the context as a transcript (no punctuation, like interleaved training text).",
                  "", "| Model | " + " | ".join(s.replace("->", "→") for s in settings) + " |",
                  "|" + "---|" * (len(settings) + 1)]
        for ck in cloze:
            st = ck["results"]["lexical_cloze"]["settings"]
            lines.append(f"| {ck['name']} | " + " | ".join(
                f"{_pct(st[s]['accuracy'])} / {_pct(st[s]['calibrated']['accuracy'])}" for s in settings) + " |")
    words = [ck for ck in ckpts if "word_translation" in ck["results"]]
    if words:
        n = words[0]["results"]["word_translation"]["words"]
        lines += ["", f"**Word translation**: a word alone in one modality, its form in the other among {n} topic "
                  f"words, top-1 accuracy % (chance {100 / n:.1f}), raw / calibrated (minus each candidate's mean).",
                  "", "| Model | S→T | T→S |", "|---|---|---|"]
        for ck in words:
            st = ck["results"]["word_translation"]["settings"]
            lines.append(f"| {ck['name']} | " + " | ".join(
                f"{_pct(st[s]['accuracy'])} / {_pct(st[s]['calibrated']['accuracy'])}" for s in ("S->T", "T->S"))
                + " |")
    spk = [ck for ck in ckpts if "speaker_context" in ck["results"]]
    if spk:
        effects = list(spk[0]["results"]["speaker_context"]["effects"])
        lines += ["", "**Context effect, speaker controlled**: gain in log-probability (nats) of a story's ending "
                  "after its own context over another story's (same speaker), or after its own context by the "
                  "ending's speaker over the same context by another (speaker match); share of endings with a gain.",
                  "", "| Model | " + " | ".join(e.replace("->", "→") for e in effects) + " |",
                  "|" + "---|" * (len(effects) + 1)]
        for ck in spk:
            ef = ck["results"]["speaker_context"]["effects"]
            lines.append(f"| {ck['name']} | " + " | ".join(
                f"{ef[e]['nats']:+.2f} ({100 * ef[e]['positive']:.0f}%)" for e in effects) + " |")
    return lines


def render(summary: dict[str, Any]) -> str:
    parts = ["# Evaluation", "", "Accuracy in %. BLIMP S: sBLIMP, macro over types; BLIMP T: the sBLIMP "
             "transcriptions as text. StoryCloze S: the speech-only set scored whole; T, T→S, S→T: the cross-modal "
             f"set, ending only ({CROSS_MODAL_S}: S from the cross-modal set). MMLU: 0-shot cloze acc_norm; "
             "evaluate the backbone directory too for the pre-speech-training number.", "", table1(summary), "",
             other_table(summary), *diagnostics_tables(summary), "", "## Scoring", "",
             f"- pairwise score per item: {summary['reduction']} "
             f"log-prob; ties {summary['ties']}"]
    parts += [f"- {task}: {how}" for task, how in summary["scoring"].items()]
    return "\n".join(parts) + "\n"


def write_report(summary: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render(summary))
    return path
