"""Compute scaling on the mini-world: baseline, SmolTolk and -Adapters at several training budgets and
widths (paper Figure 2's layout), held-out topics.

One world and its shards, one pretrained text backbone per width, then for every (width, budget,
model, seed) a two-stage run (a quarter of the steps in stage 1, as the demo) and an evaluation on
the held-out topics: tStoryCloze T->S and S->T, the lexical cloze (calibrated T->S and S->T) and
speech NLL. Each finished run appends one JSON line to ``OUT/results.jsonl`` and deletes its
weights; a re-run skips what is there, so a killed study resumes where it stopped. Runs go from the
smallest budget up, so a partial study already covers every model. ``--plot`` redraws
``OUT/scaling.png`` and ``OUT/scaling.json`` (means and spreads over seeds) from the results, ``summary.md``
(every run) and ``seeds.md`` / ``seeds.json`` (mean and range over seeds, held-out and heard topics).
``--curve-every N`` also scores the held-out benchmarks every N steps while each model trains (learning
curves: the validation steps of the run's metrics.jsonl kept as ``OUT/curves/<key>.jsonl``, drawn in
``OUT/curves.png``);
``--keep-models`` keeps each run's weights in ``OUT/models/<key>``; ``--reevaluate`` scores them again with
the current evaluation (new diagnostics) and replaces their rows' results.

    .venv/bin/python bench/scaling.py --out runs/scaling            # hours of CPU: run it in the background
    .venv/bin/python bench/scaling.py --out runs/scaling --plot     # the figure from what has finished

FLOPs are 6 x parameters x training tokens (forward and backward of every parameter; stage 1 computes
no backbone weight gradients, so this overstates its cost by up to a third).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

from smoltolk.defaults import CARRIER_STYLE_NAMES  # torch-free: OMP_NUM_THREADS is still set before torch loads

MODELS = ("baseline", "smoltolk", "smoltolk-no-adapters")
METRICS = {  # name -> (task, path in the task's results, label)
    "tSC T->S": ("tstorycloze_xmodal", ("settings", "T->S", "accuracy"), "held-out tStoryCloze T→S (%)"),
    "tSC S->T": ("tstorycloze_xmodal", ("settings", "S->T", "accuracy"), "held-out tStoryCloze S→T (%)"),
    "cloze T->S": ("lexical_cloze", ("settings", "T->S", "calibrated", "accuracy"),
                   "held-out lexical cloze T→S, calibrated (%)"),
    "cloze S->T": ("lexical_cloze", ("settings", "S->T", "calibrated", "accuracy"),
                   "held-out lexical cloze S→T, calibrated (%)"),
    "speech NLL": ("speech_nll", ("nll",), "held-out speech NLL (nats/unit)"),
}


def _dig(node, keys):
    for k in keys:
        node = node[k]
    return node


def figure_metrics(results: dict) -> dict:
    """The figure's metrics (``METRICS``) of one run's evaluation results."""
    return {m: _dig(results[task], keys) for m, (task, keys, _) in METRICS.items()}


def run_key(width: int, steps: int, model: str, seed: int) -> str:
    return f"w{width}-s{steps}-{model}-seed{seed}"


def read_results(results: Path) -> list[dict]:
    """The finished runs (a torn last line from a killed run is skipped: that run is redone)."""
    rows = []
    for line in results.read_text().splitlines() if results.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "key" in row:
            rows.append(row)
    return rows


def plan(widths: list[int], budgets: list[int], seeds: list[int], extra_seeds_at_max: list[int],
         models: tuple[str, ...] = MODELS) -> list[tuple]:
    runs = []
    for steps in sorted(budgets):
        for width in widths:
            run_seeds = seeds + (extra_seeds_at_max if steps == max(budgets) else [])
            for seed in run_seeds:
                for model in models:
                    runs.append((width, steps, model, seed))
    return runs


def evaluate_one(model_dir: Path, world_dir: Path, out: Path) -> dict:
    """Held-out topics: tStoryCloze T->S / S->T, the lexical cloze, speech NLL (the figure's metrics); heard
    topics too, with the other diagnostics (``results["heard"]``), to see where a model stands. tStoryCloze
    also calibrated (each ending's score after its story minus its mean after a few others) and split by
    whether the endings' pronouns differ (``by_cue``: a heard-vocabulary cue) or not (only the topic tells)."""
    from smoltolk.demo import evaluate_split
    from smoltolk.world.build import SPLITS

    tasks = ("tstorycloze_xmodal", "lexical_cloze", "speech_nll", "speaker_context", "word_translation")
    results = {split: next(iter(evaluate_split(world_dir, {"model": model_dir}, out, split, tasks=tasks,
                                               overrides=("tasks.tstorycloze_xmodal.settings=[T->S, S->T]",)
                                               ).values()))
               for split in SPLITS}
    return {**results["held_out"], "heard": results["heard"]}


def curve_tasks(world_dir: Path) -> list[str]:
    """``validation.eval`` entries for --curve-every: held-out tStoryCloze T->S and S->T, and the word
    translation (with its echo-frame settings if the world wrote frames)."""
    root = world_dir / "bench" / "held_out"
    xmodal = json.dumps(str(root / "tstorycloze_xmodal"))
    return [f"tasks.tstorycloze_xmodal.path={xmodal}", f"tasks.tstorycloze_xmodal.units={xmodal}",
            "tasks.tstorycloze_xmodal.settings=[T->S, S->T]",
            f"tasks.word_translation.path={json.dumps(str(root / 'word_translation.jsonl'))}"]


def study(args) -> None:
    import torch

    from smoltolk.demo import SIZES, prepare_world, pretrain_backbone, train_model
    from smoltolk.model.tslm import TextSpeechLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = dataclasses.replace(SIZES["quick" if args.quick else "default"], speakers=args.speakers,
                               carriers=args.carriers)
    results = out / "results.jsonl"
    done = {r["key"] for r in read_results(results)}
    todo = [r for r in plan(args.widths, args.budgets, args.seeds, args.extra_seeds, args.models)
            if run_key(*r) not in done]
    print(f"{len(todo)} runs to do; results in {results}", flush=True)
    if not todo:
        return
    if not (out / "world" / "world.json").is_file() or not (out / "data" / "speech" / "index.json").is_file():
        prepare_world(out, base, 0, progress=False)
    world_dir = out / "world"
    made = {"carriers": CARRIER_STYLE_NAMES[0], **json.loads((world_dir / "world.json").read_text())}
    for key, wanted in (("speakers", args.speakers), ("carriers", args.carriers)):
        if made.get(key) != wanted:
            raise SystemExit(f"{world_dir}: the world there has {key}={made.get(key)!r}, this study asks for "
                             f"{wanted!r}; use another --out per lever")
    tok = world_dir / "tokenizer.json"
    from smoltolk.data.prepare import default_text_eos_id

    eos = default_text_eos_id(tok)
    backbones = {}
    for width, steps, model, seed in todo:
        s1 = max(1, round(steps * args.stage1_fraction))
        size = dataclasses.replace(base, width=width, stage1_steps=s1, stage2_steps=steps - s1,
                                   warmup_steps=max(1, s1 // 4))
        if width not in backbones:
            bdir = out / f"backbone-w{width}" / "models" / "backbone"
            if not (bdir / "model.safetensors").is_file():
                pretrain_backbone(out / "data", out / f"backbone-w{width}", size, 0, tok, eos, progress=False)
            backbones[width] = bdir
        key = run_key(width, steps, model, seed)
        t0 = time.time()
        work = out / "work" / key
        curves = [f"validation.every={args.curve_every}",
                  f"validation.eval={json.dumps(curve_tasks(world_dir))}"] if args.curve_every else []
        model_dir = train_model(out / "data", work, model, backbones[width], size, seed, False, progress=False,
                                overrides=args.set + curves)
        train_seconds = time.time() - t0
        if args.curve_every:
            (out / "curves").mkdir(exist_ok=True)
            rows = (work / "runs" / model / "metrics.jsonl").read_text().splitlines()
            (out / "curves" / f"{key}.jsonl").write_text(  # the validation steps only: the curves
                "".join(x + "\n" for x in rows if '"val/' in x))
        res = evaluate_one(model_dir, world_dir, work / "eval")
        params = sum(p.numel() for p in TextSpeechLM.from_pretrained(model_dir).parameters())
        tokens = steps * size.micro_batch * size.context
        row = {"key": key, "width": width, "steps": steps, "model": model, "seed": seed, "params": params,
               "tokens": tokens, "flops": 6 * params * tokens, "train_seconds": round(train_seconds, 1),
               "threads": torch.get_num_threads(), "overrides": args.set, "speakers": args.speakers,
               "carriers": args.carriers, "stage1_steps": size.stage1_steps,
               "metrics": figure_metrics(res),
               "results": res}
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")
        if args.keep_models:
            (out / "models").mkdir(exist_ok=True)
            shutil.rmtree(out / "models" / key, ignore_errors=True)
            shutil.move(str(model_dir), out / "models" / key)
        shutil.rmtree(work)
        print(f"{key}: " + ", ".join(f"{m} {v:.3f}" for m, v in row["metrics"].items())
              + f" ({train_seconds:.0f} s)", flush=True)


def reevaluate(out: Path) -> int:
    """Score the kept models (``OUT/models/<key>``, from --keep-models) again with this evaluation and replace
    their rows' results (training is not redone; each row is written as soon as it is scored); returns how
    many rows were scored again. Rows whose weights were not kept keep their results (said on stdout)."""
    from smoltolk.files import write_text_atomic

    if not (out / "results.jsonl").is_file():
        raise SystemExit(f"{out / 'results.jsonl'}: no results to score again")
    rows, done = read_results(out / "results.jsonl"), 0
    for row in rows:
        model_dir = out / "models" / row["key"]
        if not (model_dir / "model.safetensors").is_file():
            print(f"{row['key']}: weights not kept ({model_dir}), its results stay as they were", flush=True)
            continue
        res = evaluate_one(model_dir, out / "world", out / "work" / f"reevaluate-{row['key']}")
        shutil.rmtree(out / "work" / f"reevaluate-{row['key']}")
        row["results"] = res
        row["metrics"] = figure_metrics(res)
        write_text_atomic(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        done += 1
        print(f"{row['key']}: scored again", flush=True)
    return done


def plot(out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = read_results(out / "results.jsonl")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["width"], r["steps"]), []).append(r)
    summary = []
    for (model, width, steps), rs in sorted(groups.items()):
        entry = {"model": model, "width": width, "steps": steps, "tokens": rs[0]["tokens"],
                 "flops": rs[0]["flops"], "seeds": sorted(r["seed"] for r in rs)}
        for m in METRICS:
            vals = np.array([r["metrics"][m] for r in rs], dtype=float)
            entry[m] = {"mean": float(vals.mean()), "min": float(vals.min()), "max": float(vals.max())}
        summary.append(entry)
    fig, grid = plt.subplots(2, 3, figsize=(13, 7.5))
    axes, legend_ax = grid.flat[:len(METRICS)], grid.flat[-1]
    colors = {"baseline": "tab:gray", "smoltolk": "tab:blue", "smoltolk-no-adapters": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    widths = sorted({e["width"] for e in summary})
    for ax, (m, (_, _, label)) in zip(axes, METRICS.items(), strict=True):
        pct = m != "speech NLL"
        for model in MODELS:
            for w, ls in zip(widths, styles, strict=False):
                es = [e for e in summary if e["model"] == model and e["width"] == w]
                if not es:
                    continue
                x = [e["flops"] for e in es]
                y = [e[m]["mean"] * (100 if pct else 1) for e in es]
                lo = [(e[m]["mean"] - e[m]["min"]) * (100 if pct else 1) for e in es]
                hi = [(e[m]["max"] - e[m]["mean"]) * (100 if pct else 1) for e in es]
                ax.errorbar(x, y, yerr=[lo, hi], color=colors[model], ls=ls, marker="o", ms=3, capsize=2,
                            label=f"{model}, width {w}")
        if pct:
            chance = 50.0 if m.startswith("tSC") else 100 / 24
            ax.axhline(chance, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_title(label, fontsize=9)
    legend_ax.axis("off")
    legend_ax.legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=9)
    fig.suptitle("Mini-world compute scaling (held-out topics; dotted: chance; bars: seed range)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=120)
    data = {"metrics": {m: label for m, (_, _, label) in METRICS.items()}, "points": summary}
    (out / "scaling.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


CURVES = {  # --curve-every's panels: label -> metrics.jsonl columns (one line each)
    "held-out tStoryCloze (%)": {"T→S": "val/tstorycloze_xmodal/settings/T->S/accuracy",
                                 "S→T": "val/tstorycloze_xmodal/settings/S->T/accuracy"},
    "held-out word translation, calibrated (%)": {
        s: f"val/word_translation/settings/{s}/calibrated/accuracy"
        for s in ("T->S", "S->T", "T->S echo", "S->T echo")},
}


def plot_curves(out: Path) -> Path | None:
    """``OUT/curves.png`` from ``OUT/curves/*.jsonl`` (--curve-every): each benchmark against training steps,
    one colour per run, one line style per setting; dotted: chance."""
    files = sorted((out / "curves").glob("*.jsonl")) if (out / "curves").is_dir() else []
    if not files:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4.2))
    styles = ["-", "--", ":", "-."]
    for color, f in zip(itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]), files):
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        for ax, columns in zip(axes, CURVES.values(), strict=True):
            for ls, (name, col) in zip(styles, columns.items(), strict=False):
                pts = [(r["step"], 100 * r[col]) for r in rows if col in r]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=color, ls=ls, marker="o", ms=3, label=f"{f.stem}: {name}")
            chances = [c.replace("calibrated/accuracy", "chance_accuracy") for c in columns.values()
                       if c.endswith("calibrated/accuracy")]
            chance = next((r[c] for r in rows for c in chances if c in r), 0.5)  # tStoryCloze: two endings
            ax.axhline(100 * chance, color="k", lw=0.6, ls=":")
    for ax, label in zip(axes, CURVES, strict=True):
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("training step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    return out / "curves.png"


MEANING = "S, ending by the context's speaker"  # the speaker_context effect of the story's meaning alone


def table(out: Path) -> str:
    """``OUT/summary.md``: every run's key numbers, held-out and heard topics (the diagnostics included)."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}"

    def nats(x):
        return "-" if x is None else f"{x:+.2f}"

    def get(node, *keys):
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node

    def both(node, before, after, suffix=""):  # "T->S / S->T" of one measure
        return " / ".join(pct(get(node, *before, f"{x}{suffix}", *after)) for x in ("T->S", "S->T"))

    def nll(node):
        value = get(node, "speech_nll", "nll")
        return "-" if value is None else f"{value:.3f}"

    head = ("| model | width | steps | seed | tSC T→S | tSC S→T | cloze T→S cal | cloze S→T cal | heard: cloze S cal "
            "(gain nats) | heard: cloze T→S cal (gain) | heard: speech meaning / voice (nats) | speech NLL held-out / "
            "heard | heard: tSC T→S / S→T | word transl. echo T→S / S→T cal | tSC cal T→S / S→T | same pronoun: "
            "tSC cal T→S / S→T | heard, same pronoun: tSC cal T→S / S→T |")
    lines = [head, "|" + "---|" * 17]
    for r in sorted(read_results(out / "results.jsonl"), key=lambda r: (r["width"], r["steps"], r["seed"], r["model"])):
        res, heard = r["results"], r["results"].get("heard", {})
        cloze = ("lexical_cloze", "settings")
        effects = ("speaker_context", "effects")
        cells = [r["model"], str(r["width"]), str(r["steps"]), str(r["seed"]),
                 pct(get(res, "tstorycloze_xmodal", "settings", "T->S", "accuracy")),
                 pct(get(res, "tstorycloze_xmodal", "settings", "S->T", "accuracy")),
                 pct(get(res, *cloze, "T->S", "calibrated", "accuracy")),
                 pct(get(res, *cloze, "S->T", "calibrated", "accuracy")),
                 f"{pct(get(heard, *cloze, 'S', 'calibrated', 'accuracy'))} "
                 f"({nats(get(heard, *cloze, 'S', 'context_gain_nats'))})",
                 f"{pct(get(heard, *cloze, 'T->S', 'calibrated', 'accuracy'))} "
                 f"({nats(get(heard, *cloze, 'T->S', 'context_gain_nats'))})",
                 f"{nats(get(heard, *effects, MEANING, 'nats'))} / "
                 f"{nats(get(heard, *effects, 'S, speaker match (same story)', 'nats'))}",
                 f"{nll(res)} / {nll(heard)}",
                 both(heard, ("tstorycloze_xmodal", "settings"), ("accuracy",)),
                 both(res, ("word_translation", "settings"), ("calibrated", "accuracy"), suffix=" echo"),
                 both(res, ("tstorycloze_xmodal", "settings"), ("calibrated", "accuracy")),
                 both(res, ("tstorycloze_xmodal", "by_cue"), ("same pronoun", "calibrated")),
                 both(heard, ("tstorycloze_xmodal", "by_cue"), ("same pronoun", "calibrated"))]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


SEED_COLUMNS = {  # label -> (split, path in the results)
    "held-out tSC T→S": ("held_out", ("tstorycloze_xmodal", "settings", "T->S", "accuracy")),
    "held-out tSC S→T": ("held_out", ("tstorycloze_xmodal", "settings", "S->T", "accuracy")),
    "held-out cloze T→S cal": ("held_out", ("lexical_cloze", "settings", "T->S", "calibrated", "accuracy")),
    "held-out cloze S→T cal": ("held_out", ("lexical_cloze", "settings", "S->T", "calibrated", "accuracy")),
    "heard tSC T→S": ("heard", ("tstorycloze_xmodal", "settings", "T->S", "accuracy")),
    "heard tSC S→T": ("heard", ("tstorycloze_xmodal", "settings", "S->T", "accuracy")),
    "heard cloze S cal": ("heard", ("lexical_cloze", "settings", "S", "calibrated", "accuracy")),
    "heard cloze T→S cal": ("heard", ("lexical_cloze", "settings", "T->S", "calibrated", "accuracy")),
}


def seed_table(out: Path) -> str | None:
    """``OUT/seeds.md`` (and ``seeds.json``): mean and range over seeds of every (model, width, steps) run
    with two seeds or more, held-out and heard topics; None when there is none."""
    groups: dict[tuple, list[dict]] = {}
    for r in read_results(out / "results.jsonl"):
        groups.setdefault((r["width"], r["steps"], r["model"]), []).append(r)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None

    def value(r: dict, split: str, keys: tuple) -> float | None:
        node = r["results"] if split == "held_out" else r["results"].get("heard", {})
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return float(node) if isinstance(node, (int, float)) else None

    lines = ["| model | width | steps | seeds | " + " | ".join(SEED_COLUMNS) + " |",
             "|" + "---|" * (4 + len(SEED_COLUMNS))]
    data = []
    order = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], MODELS.index(kv[0][2])))
    for (width, steps, model), rs in order:
        entry = {"model": model, "width": width, "steps": steps, "seeds": sorted(r["seed"] for r in rs)}
        cells = [model, str(width), str(steps), ",".join(map(str, entry["seeds"]))]
        for label, (split, keys) in SEED_COLUMNS.items():
            vals = [v for v in (value(r, split, keys) for r in rs) if v is not None]
            if not vals:
                cells.append("-")
                continue
            mean = sum(vals) / len(vals)
            entry[label] = {"mean": mean, "min": min(vals), "max": max(vals), "n": len(vals)}
            cells.append(f"{100 * mean:.1f} ({100 * min(vals):.0f}-{100 * max(vals):.0f})")
        lines.append("| " + " | ".join(cells) + " |")
        data.append(entry)
    text = "\n".join(lines) + "\n"
    (out / "seeds.md").write_text(text)
    (out / "seeds.json").write_text(json.dumps(data, indent=2) + "\n")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/scaling")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--widths", type=ints, default=[64, 128])
    ap.add_argument("--budgets", type=ints, default=[250, 500, 1000, 2000, 4000],
                    help="training steps per model (x micro-batch 8 x context 256 tokens)")
    ap.add_argument("--seeds", type=ints, default=[0])
    ap.add_argument("--extra-seeds", type=ints, default=[1, 2],
                    help="more seeds at the largest budget")
    ap.add_argument("--models", type=lambda s: tuple(s.split(",")), default=MODELS,
                    help="a subset of " + ",".join(MODELS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a training-config setting for every run (a lever, e.g. data.interleave.text_span=[2,6]); "
                         "use a separate --out per lever")
    ap.add_argument("--speakers", type=int, default=4, help="pseudo-speech voices of the world (a lever: "
                    "each voice realises most phonemes with its own units)")
    ap.add_argument("--carriers", choices=CARRIER_STYLE_NAMES, default=CARRIER_STYLE_NAMES[0],
                    help="how the world's held-out words are heard alone (a lever: echo says each twice, so "
                         "interleaved samples can pair its text and its sound)")
    ap.add_argument("--stage1-fraction", type=float, default=0.25,
                    help="share of each budget's steps in stage 1 (frozen backbone; a lever)")
    ap.add_argument("--curve-every", type=int, default=0, metavar="N",
                    help="score held-out tStoryCloze T->S / S->T and word translation every N training steps "
                         "(learning curves: OUT/curves/<key>.jsonl, OUT/curves.png)")
    ap.add_argument("--keep-models", action="store_true", help="keep each run's weights in OUT/models/<key>")
    ap.add_argument("--quick", action="store_true", help="the demo's --quick world and sizes (for tests)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", action="store_true", help="only redraw the figure from the results")
    ap.add_argument("--reevaluate", action="store_true",
                    help="score the kept models (--keep-models) again with this evaluation, then redraw")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if args.reevaluate:
        reevaluate(Path(args.out))
    elif not args.plot:
        study(args)
    if (Path(args.out) / "results.jsonl").is_file():
        data = plot(Path(args.out))
        table(Path(args.out))
        seed_table(Path(args.out))
        plot_curves(Path(args.out))
        print(json.dumps({"points": len(data["points"]), "figure": str(Path(args.out) / "scaling.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
