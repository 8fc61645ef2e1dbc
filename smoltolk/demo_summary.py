"""What a demo run (or several seeds of it) showed: the headline metrics, one verdict per split, seed tables.

The paper's claim as the demo tests it: SmolTolk above both the baseline and SmolTolk without adapters (Table 2's
-Adapters) across modalities. Its two measures here are the cross-modal tStoryCloze T->S (a written story, the
spoken ending) and the calibrated T->S lexical cloze (a written context, the spoken verb it calls for, minus the
verb's own prior). A split's verdict says whether SmolTolk is ahead of both on both, in every seed, and whether
the seed ranges are apart.
"""

from __future__ import annotations

import statistics
from typing import Any

from smoltolk.defaults import DEMO_MODELS as MODELS

SPLITS = {"heard": "heard topics", "held_out": "held-out topics"}  # report order: where the claim shows first
# name -> (path in a model's results, percent?, higher is better?)
METRICS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "tSC T→S": (("tstorycloze_xmodal", "settings", "T->S", "accuracy"), True, True),
    "tSC S→T": (("tstorycloze_xmodal", "settings", "S->T", "accuracy"), True, True),
    "cloze T→S cal.": (("lexical_cloze", "settings", "T->S", "calibrated", "accuracy"), True, True),
    "cloze S cal.": (("lexical_cloze", "settings", "S", "calibrated", "accuracy"), True, True),
    "cloze T cal.": (("lexical_cloze", "settings", "T", "calibrated", "accuracy"), True, True),
    "speech NLL": (("speech_nll", "nll"), False, False),
}
CLAIM = ("tSC T→S", "cloze T→S cal.")  # the measures the verdict judges
OTHERS = ("baseline", "smoltolk-no-adapters")
LABELS = {"baseline": "baseline", "smoltolk": "SmolTolk", "smoltolk-no-adapters": "-Adapters"}


def metric(results: dict, name: str) -> float | None:
    """One headline metric of one model's results (percent where it is an accuracy), or None if absent."""
    path, pct, _ = METRICS[name]
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return 100 * node if pct else node


def values(summaries: list[dict], split: str, model: str, name: str) -> list[float]:
    """The metric over the seeds' summaries (those that have it)."""
    out = [metric(s["results"].get(split, {}).get(model, {}), name) for s in summaries]
    return [v for v in out if v is not None]


def spread(vals: list[float], digits: int = 1) -> str:
    """``mean (min–max)``, or the one value (one seed, or every seed alike)."""
    if not vals:
        return "-"
    fmt = f"{{:.{digits}f}}"
    if len(vals) == 1 or fmt.format(min(vals)) == fmt.format(max(vals)):
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"


def differences(summaries: list[dict], split: str, name: str, other: str) -> list[float]:
    """SmolTolk minus ``other`` on the metric, seed by seed (seeds where both have it)."""
    out = []
    for s in summaries:
        by_model = s["results"].get(split, {})
        a, b = metric(by_model.get("smoltolk", {}), name), metric(by_model.get(other, {}), name)
        if a is not None and b is not None:
            out.append(a - b)
    return out


def judge(summaries: list[dict], split: str) -> dict:
    """Whether SmolTolk is ahead of the baseline and -Adapters on the claim's measures in this split:
    ``ahead`` (in every seed, on both measures, against both), ``apart`` (SmolTolk's lowest seed above the
    others' highest, on both), the per-measure differences, and the measures that failed."""
    failed, apart, rows = [], True, {}
    for name in CLAIM:
        smol = values(summaries, split, "smoltolk", name)
        for other in OTHERS:
            diff = differences(summaries, split, name, other)
            rows[(name, other)] = diff
            if not diff or min(diff) <= 0:
                failed.append((name, other))
            theirs = values(summaries, split, other, name)
            if not smol or not theirs or min(smol) <= max(theirs):
                apart = False
    return {"ahead": not failed, "apart": apart and not failed, "failed": failed, "differences": rows}


def verdict(summaries: list[dict], split: str) -> str:
    """One sentence: did the claim reproduce on this split, with the numbers (means and seed ranges)."""
    j = judge(summaries, split)
    n = len(summaries)
    seeds = f"{n} seeds" if n > 1 else "one seed"
    figures = "; ".join(
        f"{name} " + " / ".join(spread(values(summaries, split, m, name)) for m in MODELS) for name in CLAIM)
    order = " / ".join(LABELS[m] for m in MODELS)
    where = SPLITS[split]
    if j["ahead"]:
        how = ("ahead in every seed, seed ranges apart" if j["apart"] and n > 1 else
               "ahead in every seed, seed ranges overlapping" if n > 1 else "ahead")
        return (f"**{where.capitalize()}: reproduced** ({seeds}) — SmolTolk above both the baseline and -Adapters "
                f"across modalities ({how}): {figures} ({order}; %).")
    lost = ", ".join(f"{name} vs {LABELS[other]}" for name, other in j["failed"])
    return (f"**{where.capitalize()}: not reproduced** ({seeds}) — SmolTolk is not ahead on {lost}: {figures} "
            f"({order}; %; chance: tSC 50, cloze 4.2).")


def seed_table(summaries: list[dict]) -> list[str]:
    """Markdown: every headline metric, mean (min–max) over seeds, per split and model; then SmolTolk minus
    the baseline and minus -Adapters, seed by seed, mean (min–max)."""
    names = list(METRICS)
    lines = ["| topics | model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for split, where in SPLITS.items():
        for model in MODELS:
            cells = [spread(values(summaries, split, model, n), 3 if n == "speech NLL" else 1) for n in names]
            lines.append(f"| {where} | {LABELS[model]} | " + " | ".join(cells) + " |")
    lines += ["", "| topics | difference | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for split, where in SPLITS.items():
        for other in OTHERS:
            cells = [spread(differences(summaries, split, n, other), 3 if n == "speech NLL" else 1) for n in names]
            lines.append(f"| {where} | SmolTolk − {LABELS[other]} | " + " | ".join(cells) + " |")
    return lines
