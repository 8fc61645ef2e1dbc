"""Results as Markdown: paper Table 1's columns with checkpoints side by side, then the other tasks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from smoltolk.files import write_text_atomic

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


TABLE1_COLUMNS = ("BLIMP T", "BLIMP S", "tSC T", "tSC S", "tSC T→S", "tSC S→T", "sSC T", "sSC S", "sSC T→S",
                  "sSC S→T")


def table1(summary: dict[str, Any], labels: tuple[str, ...] = ("Model",), mmlu: bool = True,
           speech_nll: bool = False) -> str:
    """Paper Table 1's layout: BLIMP T/S, tStoryCloze and sStoryCloze T/S/T->S/S->T, MMLU (``mmlu``), then
    speech NLL (``speech_nll``). A checkpoint's row starts with its ``labels`` (default: its name)."""
    names = [*labels, *TABLE1_COLUMNS, *(["MMLU"] if mmlu else []), *(["speech NLL"] if speech_nll else [])]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for ck in summary["checkpoints"]:
        r = ck["results"]
        cells = [*(ck["labels"] if "labels" in ck else [ck["name"]]), _pct(_get(r, "blimp_text", "accuracy")),
                 _pct(_get(r, "sblimp", "accuracy"))]
        cells += _story_columns(r, "t") + _story_columns(r, "s")
        if mmlu:
            cells.append(_pct(_get(r, "mmlu", "acc_norm")))
        if speech_nll:
            nll = _get(r, "speech_nll", "nll")
            cells.append(MISSING if nll is None else f"{nll:.3f}")
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


def salmon_table(summary: dict[str, Any]) -> list[str]:
    """SALMon in its paper's layout: a column per part (in the release's order, then any others), the mean."""
    from smoltolk.eval.tasks import SALMON_PARTS, SALMON_TITLES

    have = [ck for ck in summary["checkpoints"] if "salmon" in ck["results"]]
    if not have:
        return []
    found = {p for ck in have for p in ck["results"]["salmon"]["parts"]}
    parts = [p for p in SALMON_PARTS if p in found] + sorted(found - set(SALMON_PARTS))
    names = [SALMON_TITLES.get(p, p) for p in parts]
    lines = ["", "**SALMon** (acoustic consistency and alignment; accuracy %, chance 50 with one negative):", "",
             "| Model | " + " | ".join(names) + " | mean |", "|" + "---|" * (len(parts) + 2)]
    for ck in have:
        r = ck["results"]["salmon"]
        cells = [_pct(r["parts"][p]["accuracy"]) if p in r["parts"] else MISSING for p in parts]
        lines.append(f"| {ck['name']} | " + " | ".join(cells) + f" | {_pct(r['accuracy'])} |")
    return lines


def _diagnostic_table(ckpts: list[dict[str, Any]], task: str, field: str, caption, cell) -> list[str]:
    """One table of a diagnostic: a column per setting / effect (``field`` of the task's results), a row per
    checkpoint; ``caption(first results)`` the line above it, ``cell(value)`` each cell."""
    have = [ck for ck in ckpts if task in ck["results"]]
    if not have:
        return []
    first = have[0]["results"][task]
    columns = list(dict.fromkeys(c for ck in have for c in ck["results"][task][field]))  # every model's, in order
    lines = ["", caption(first), "", "| Model | " + " | ".join(c.replace("->", "→") for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for ck in have:
        values = ck["results"][task][field]
        lines.append(f"| {ck['name']} | " + " | ".join(cell(values[c]) if c in values else "-" for c in columns) + " |")
    return lines


def _raw_and_calibrated(v: dict[str, Any]) -> str:
    return f"{_pct(v['accuracy'])} / {_pct(v['calibrated']['accuracy'])}"


def diagnostics_tables(summary: dict[str, Any]) -> list[str]:
    """The cross-modal diagnostics (smoltolk.eval.diagnostics), if any checkpoint has them."""
    ckpts = summary["checkpoints"]
    return [
        *_diagnostic_table(ckpts, "lexical_cloze", "settings", lambda r: (
            f"**Lexical cloze**: the ending's first word among {r['candidates']} verbs after the story context, "
            f"top-1 accuracy % (chance {100 / r['candidates']:.1f}), raw / calibrated (minus the word's score "
            "after a bare 'then he'). t = the context as a transcript (no punctuation, like interleaved training "
            "text)."), _raw_and_calibrated),
        *_diagnostic_table(ckpts, "word_translation", "settings", lambda r: (
            f"**Word translation**: a word alone in one modality, its form in the other among {r['words']} topic "
            f"words, top-1 accuracy % (chance {100 / r['words']:.1f}), raw / calibrated (minus each candidate's "
            "mean); echo: after the frame 'kate said the word W and tom said' (the world's echo carriers)."),
            _raw_and_calibrated),
        *_diagnostic_table(ckpts, "speaker_context", "effects", lambda r: (
            "**Context effect, speaker controlled**: gain in log-probability (nats) of a story's ending after its "
            "own context over another story's (same speaker), or after its own context by the ending's speaker "
            "over the same context by another (speaker match); share of endings with a gain."),
            lambda v: f"{v['nats']:+.2f} ({100 * v['positive']:.0f}%)"),
    ]


def render(summary: dict[str, Any]) -> str:
    parts = ["# Evaluation", "", "Accuracy in %. BLIMP S: sBLIMP, macro over types; BLIMP T: the sBLIMP "
             "transcriptions as text. StoryCloze S: the speech-only set scored whole; T, T→S, S→T: the cross-modal "
             f"set, ending only ({CROSS_MODAL_S}: S from the cross-modal set). MMLU: 0-shot cloze acc_norm; "
             "evaluate the backbone directory too for the pre-speech-training number.", "", table1(summary), "",
             other_table(summary), *salmon_table(summary), *diagnostics_tables(summary), "", "## Scoring", "",
             f"- pairwise score per item: {summary['reduction']} "
             f"log-prob; ties {summary['ties']}"]
    parts += [f"- {task}: {how}" for task, how in summary["scoring"].items()]
    return "\n".join(parts) + "\n"


def write_report(summary: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    write_text_atomic(path, render(summary))
    return path
