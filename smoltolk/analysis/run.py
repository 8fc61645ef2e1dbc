"""``smoltolk analyze``: the paper's representation analyses of one or more checkpoints.

- ``layer-weights``: w across layers along a few utterances with word boundaries (PNG), the
  distribution of w per layer, softmax(phi) as bars (paper Figs. 5, 7-9);
- ``segmentation``: word boundaries from peaks of the last layer's w; prominence tuned on a dev
  split for the R-value, P / R / F1 / R-value on a test split (Table 3);
- ``intrinsic-dim``: GRIDE ID per layer of the final state of random 20-word windows, text and
  speech, activations clipped at the 95th percentile, mean and std over batches (Fig. 3);
- ``overlap``: fraction of one modality's variance on the other's top-k principal directions
  per layer, both directions, with the k/d floor, on paired windows (Fig. 4).
- ``word-alignment`` (ours, not the paper's; asked for by name, with ``words``): per layer, whether a
  spoken word's state is nearest its own written word's among a word list (retrieval accuracy both
  ways, chance 1 / N), one curve per list, e.g. the mini-world's heard and held-out words: where in the
  model the two modalities of a word meet, if anywhere.

Output: ``<out>/<checkpoint>/analysis.json`` and PNGs; with several checkpoints, comparison
figures and ``<out>/analysis.json``; ``<out>/analysis_config.json`` (the resolved config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from smoltolk.analysis import plots
from smoltolk.analysis.intrinsic_dim import clip_above_percentile, gride_scaling, plateau
from smoltolk.analysis.overlap import paired_retrieval, subspace_overlap
from smoltolk.analysis.representations import (
    AlignedUtterance,
    encode_windows,
    final_representations,
    layer_weights,
    read_aligned,
    speech_windows,
    text_windows,
)
from smoltolk.analysis.segmentation import PROMINENCE_GRID, peak_boundaries, reference_boundaries, tune_and_test
from smoltolk.config import to_dict
from smoltolk.errors import CheckpointError, ConfigError, InputError

PAPER_ANALYSES = ("layer-weights", "segmentation", "intrinsic-dim", "overlap")  # the default; they read ``speech``
ANALYSES = (*PAPER_ANALYSES, "word-alignment")
NEEDS_DYNAMIC = ("layer-weights", "segmentation")


@dataclass
class AnalysisConfig:
    speech: str | None = None  # aligned speech manifest (units + durations + frame_rate + words); the paper's analyses
    text: str | None = None  # text manifest for the text side of intrinsic-dim (default: the speech transcripts)
    segmentation_dev: str | None = None  # aligned manifests; default: ``speech`` split in two (seeded)
    segmentation_test: str | None = None
    analyses: list[str] = field(default_factory=lambda: list(PAPER_ANALYSES))
    # word-alignment: word lists, JSONL with "word" and "units" per line (the mini-world's
    # bench/<split>/word_translation.jsonl); each is named by its folder
    words: list[str] = field(default_factory=list)
    num_samples: int = 10000  # representations per batch (paper: 10k)
    num_batches: int = 5  # batches (paper: 5): mean and std over them
    window_words: int = 20
    clip_percentile: float = 95.0
    gride_range_max: int = 64
    id_rank: int | None = None  # read the ID at this n2 (a power of 2); None: where the curve is flattest
    overlap_k: int = 50
    tolerance: int = 1
    plot_utterances: int = 3
    weight_utterances: int = 200  # utterances for the distribution of w
    seed: int = 0
    batch_tokens: int = 8192
    tokenizer: str | None = None  # default: <checkpoint>/tokenizer.json
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or not self.analyses:
            raise ConfigError(f"analyses: expected some of {list(ANALYSES)}, got {self.analyses}")
        paper = [a for a in self.analyses if a in PAPER_ANALYSES]
        if paper and not self.speech:
            raise ConfigError(f"{', '.join(paper)} need(s) an aligned speech manifest: give --speech MANIFEST "
                              "(or speech: in a config)")
        if "word-alignment" in self.analyses and not self.words:
            raise ConfigError("word-alignment needs word lists: give --words FILE.jsonl [...] (e.g. a mini-world's "
                              "bench/held_out/word_translation.jsonl)")
        if (self.segmentation_dev is None) != (self.segmentation_test is None):
            raise ConfigError("give both segmentation_dev and segmentation_test, or neither (then the speech "
                              "manifest is split in two)")
        for name in ("num_samples", "num_batches", "window_words", "overlap_k", "gride_range_max", "batch_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.clip_percentile <= 100:
            raise ConfigError(f"clip_percentile must be in (0, 100], got {self.clip_percentile}")
        if self.id_rank is not None and (self.id_rank < 2 or self.id_rank & (self.id_rank - 1)):
            raise ConfigError(f"id_rank must be a power of two >= 2, got {self.id_rank}")


def build_analysis_config(path: str | None = None, overrides: list[str] | None = None,
                          **settings: object) -> AnalysisConfig:
    """File (optional) <- ``key=value`` overrides <- settings given directly (those not None), through
    :func:`smoltolk.config.load_config`."""
    from smoltolk.config import load_config

    return load_config(AnalysisConfig, path, overrides, settings, where="analysis config")


def load_analysis_model(path: str | Path, cfg: AnalysisConfig):
    from smoltolk.model.load import DTYPES, checkpoint_kind
    from smoltolk.model.tslm import TextSpeechLM

    if checkpoint_kind(path) != "smoltolk":
        raise CheckpointError(f"{path}: a Hugging Face text LM has no speech modules to analyse; give a smoltolk "
                              "text-speech checkpoint")
    return TextSpeechLM.from_pretrained(path, dtype=DTYPES[cfg.dtype], device=cfg.device).eval()


def check_checkpoints(checkpoints: list[str], cfg: AnalysisConfig) -> None:
    """Every checkpoint can run every requested analysis (one clear error before any work)."""
    from smoltolk.model.load import checkpoint_kind
    from smoltolk.model.tslm import read_model_config

    for ckpt in checkpoints:
        if checkpoint_kind(ckpt) != "smoltolk":
            raise CheckpointError(f"{ckpt}: a Hugging Face text LM has no speech modules to analyse; give a "
                                  "smoltolk text-speech checkpoint")
        pooling = read_model_config(Path(ckpt)).speech.pooling
        wanted = [a for a in cfg.analyses if a in NEEDS_DYNAMIC]
        if wanted and pooling != "dynamic":
            others = [a for a in cfg.analyses if a not in NEEDS_DYNAMIC] or ["intrinsic-dim", "overlap"]
            raise ConfigError(f"{ckpt}: {', '.join(wanted)} need(s) dynamic layer pooling, but this model has "
                              f"speech.pooling={pooling!r}; run --analyses {' '.join(others)} on it")


# ---------------------------------------------------------------------------------------------------
# One analysis each
# ---------------------------------------------------------------------------------------------------


def run_layer_weights(model, utterances: list[AlignedUtterance], cfg: AnalysisConfig, out: Path) -> dict[str, Any]:
    chosen = utterances[:cfg.weight_utterances]
    weights = layer_weights(model, chosen, cfg.batch_tokens)
    figures = []
    for u, w in list(zip(chosen, weights))[:cfg.plot_utterances]:
        bounds = reference_boundaries(u.word_ends, len(u.units))
        figures.append(str(plots.plot_utterance_weights(w, bounds, out / f"layer_weights_{u.id}.png",
                                                        title=f"dynamic layer weights w along \"{_words(u)}\"")))
    figures.append(str(plots.plot_weight_distribution(weights, out / "layer_weight_distribution.png")))
    phi = torch.softmax(model.phi.detach().float().cpu(), 0).numpy()
    figures.append(str(plots.plot_phi(phi, out / "phi.png")))
    stacked = np.concatenate(weights)
    return {"phi_softmax": phi.tolist(), "w_mean_per_layer": stacked.mean(0).tolist(),
            "w_std_per_layer": stacked.std(0).tolist(), "utterances": len(chosen), "figures": figures}


def _split(utterances: list[AlignedUtterance], seed: int) -> tuple[list, list]:
    if len(utterances) < 2:
        raise ConfigError("segmentation needs at least two utterances to split into dev and test")
    order = np.random.default_rng(seed).permutation(len(utterances))
    half = len(order) // 2
    return [utterances[i] for i in order[:half]], [utterances[i] for i in order[half:]]


def run_segmentation(model, utterances: list[AlignedUtterance], cfg: AnalysisConfig, out: Path) -> dict[str, Any]:
    if cfg.segmentation_dev is not None:
        dev, test = read_aligned(cfg.segmentation_dev), read_aligned(cfg.segmentation_test)
        split = {"dev": cfg.segmentation_dev, "test": cfg.segmentation_test}
    else:
        dev, test = _split(utterances, cfg.seed)
        split = {"dev": f"half of {cfg.speech} (seed {cfg.seed})", "test": f"the other half of {cfg.speech}"}

    def prepared(utts: list[AlignedUtterance]):
        last = [w[:, -1] for w in layer_weights(model, utts, cfg.batch_tokens)]
        return last, [reference_boundaries(u.word_ends, len(u.units)) for u in utts]

    dev_data, test_data = prepared(dev), prepared(test)
    result = tune_and_test(dev_data, test_data, PROMINENCE_GRID, cfg.tolerance)
    result.update(split=split, dev_utterances=len(dev), test_utterances=len(test))
    if test:  # one example with its predicted boundaries
        w = layer_weights(model, test[:1], cfg.batch_tokens)[0]
        peaks = peak_boundaries(w[:, -1], result["prominence"])
        result["figure"] = str(plots.plot_utterance_weights(
            w, test_data[1][0], out / "segmentation_example.png", peaks=peaks,
            title=f"\"{_words(test[0])}\": last-layer w peaks at prominence {result['prominence']:g}"))
    return result


def _words(u: AlignedUtterance, most: int = 12) -> str:
    """An utterance's words for a figure title (its id if it has none)."""
    words = list(u.words) if u.words else []
    if not words:
        return u.id
    return " ".join(words[:most]) + (" ..." if len(words) > most else "")


def _batched(x: np.ndarray, cfg: AnalysisConfig) -> list[np.ndarray]:
    return np.array_split(x, cfg.num_batches)


def _id_curve(reps: np.ndarray, cfg: AnalysisConfig) -> dict[str, Any]:
    """ID per layer: reps (L + 1, N, d) -> mean and std over batches, plus the scaling curves."""
    means, stds, curves = [], [], []
    for layer in reps:
        clipped = clip_above_percentile(layer, cfg.clip_percentile)
        ids, scaling = [], []
        for batch in _batched(clipped, cfg):
            s = gride_scaling(batch, cfg.gride_range_max)
            if cfg.id_rank is None:
                k = plateau(s["ids"])
            elif cfg.id_rank in s["ranks"]:
                k = s["ranks"].index(cfg.id_rank)
            else:
                raise ConfigError(f"id_rank {cfg.id_rank} is not among the scales {s['ranks']}")
            ids.append(s["ids"][k])
            scaling.append(s)
        means.append(float(np.mean(ids)))
        stds.append(float(np.std(ids)))
        curves.append({"ranks": scaling[0]["ranks"], "ids_mean": np.mean([s["ids"] for s in scaling], 0).tolist()})
    return {"mean": means, "std": stds, "scaling": curves}


def _overlap_curve(text: np.ndarray, speech: np.ndarray, cfg: AnalysisConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"speech_on_text": {"mean": [], "std": []}, "text_on_speech": {"mean": [], "std": []}}
    for t_layer, s_layer in zip(text, speech):
        t_layer = clip_above_percentile(t_layer, cfg.clip_percentile)
        s_layer = clip_above_percentile(s_layer, cfg.clip_percentile)
        per_batch = [subspace_overlap(t, s, cfg.overlap_k) for t, s in zip(_batched(t_layer, cfg),
                                                                             _batched(s_layer, cfg))]
        for key in ("speech_on_text", "text_on_speech"):
            values = [b[key] for b in per_batch]
            out[key]["mean"].append(float(np.mean(values)))
            out[key]["std"].append(float(np.std(values)))
        out["random_floor"] = per_batch[0]["random_floor"]
    out["k"] = cfg.overlap_k
    return out


def run_representations(model, tokenizer, utterances: list[AlignedUtterance], cfg: AnalysisConfig,
                        out: Path) -> dict[str, Any]:
    """Intrinsic dimension and/or subspace overlap (they share the speech windows)."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.num_samples * cfg.num_batches
    paired = speech_windows(utterances, n, cfg.window_words, rng)
    speech = final_representations(model, encode_windows(paired, "speech", tokenizer), cfg.batch_tokens, cfg.progress)
    text_paired = final_representations(model, encode_windows(paired, "text", tokenizer), cfg.batch_tokens,
                                        cfg.progress)
    result: dict[str, Any] = {"samples": n, "batches": cfg.num_batches, "window_words": cfg.window_words,
                              "distinct_speech_windows": len({w.units.tobytes() for w in paired})}
    if "intrinsic-dim" in cfg.analyses:
        if cfg.text is not None:
            windows = text_windows(cfg.text, n, cfg.window_words, rng)
            text = final_representations(model, encode_windows(windows, "text", tokenizer), cfg.batch_tokens,
                                         cfg.progress)
        else:
            text = text_paired
        result["intrinsic_dimension"] = {
            "text": _id_curve(text, cfg), "speech": _id_curve(speech, cfg), "estimator": "GRIDE (smoltolk's own)",
            "read_at": f"n2={cfg.id_rank}" if cfg.id_rank else "the flattest step of the scaling curve",
            "clip_percentile": cfg.clip_percentile, "text_source": cfg.text or f"transcripts of {cfg.speech}"}
        idc = result["intrinsic_dimension"]
        result["intrinsic_dimension"]["figure"] = str(plots.plot_per_layer(
            {m: (np.array(idc[m]["mean"]), np.array(idc[m]["std"])) for m in ("text", "speech")},
            out / "intrinsic_dimension.png", "intrinsic dimension (GRIDE)", "intrinsic dimension per layer"))
    if "overlap" in cfg.analyses:
        ov = _overlap_curve(text_paired, speech, cfg)
        ov["figure"] = str(plots.plot_per_layer(
            {k: (np.array(ov[k]["mean"]), np.array(ov[k]["std"])) for k in ("speech_on_text", "text_on_speech")},
            out / "subspace_overlap.png", f"variance explained (top {cfg.overlap_k} PCs)", "subspace overlap",
            floor=ov["random_floor"]))
        result["subspace_overlap"] = ov
    return result


def word_list_name(path: str | Path) -> str:
    """A word list's name in results: its folder (``bench/held_out/word_translation.jsonl`` -> held_out)."""
    return Path(path).parent.name or Path(path).stem


def run_word_alignment(model, tokenizer, cfg: AnalysisConfig, out: Path) -> dict[str, Any]:
    """Per word list and layer: the spoken word alone (its units) and the written word alone (its tokens), each
    after its modality's document start as the benchmarks score them (speech EOS; the text BOS of ``smoltolk
    eval``'s ``text_bos=auto``), the last position's state of each, paired retrieval
    (:func:`~smoltolk.analysis.overlap.paired_retrieval`)."""
    from smoltolk.eval.diagnostics import read_jsonl
    from smoltolk.eval.run import resolve_text_bos

    text_start = resolve_text_bos(model, "auto", tokenizer)
    text_start = [] if text_start is None else [text_start]
    result: dict[str, Any] = {}
    names = [word_list_name(path) for path in cfg.words]
    if len(set(names)) < len(names) or "figure" in names:
        raise ConfigError(f"words: each list is named by its folder and the names must differ (and not be "
                          f"'figure'); got {names} for {cfg.words}")
    for path in cfg.words:
        rows = read_jsonl(path, ("word", "units"))
        if len(rows) < 2:
            raise InputError(f"{path}: word-alignment needs at least two words, found {len(rows)}")
        spoken, written = [], []
        for i, r in enumerate(rows, 1):
            units, ids = [int(u) for u in r["units"]], tokenizer.encode(str(r["word"]), add_special_tokens=False).ids
            if not units or not ids or not all(0 <= u < model.num_units for u in units):
                raise InputError(f"{path}:{i}: word {r['word']!r} needs a non-empty spelling and units in "
                                 f"[0, {model.num_units}), found units {units[:12]}")
            spoken.append(([model.speech_eos_id, *units], True))
            written.append(([*text_start, *ids], False))
        spoken = final_representations(model, spoken, cfg.batch_tokens)
        written = final_representations(model, written, cfg.batch_tokens)
        layers = [paired_retrieval(s, t) for s, t in zip(spoken, written, strict=True)]
        result[word_list_name(path)] = {"words": len(rows), "file": str(path), "chance": layers[0]["chance"],
                                        **{k: [x[k] for x in layers]
                                           for k in ("speech_to_text", "text_to_speech", "pair_margin")}}
    curves = {f"{name} {way.replace('_', ' ')}": (np.array(r[way]), np.zeros(len(r[way])))
              for name, r in result.items() for way in ("speech_to_text", "text_to_speech")}
    chance = max(r["chance"] for r in result.values())
    result["figure"] = str(plots.plot_per_layer(curves, out / "word_alignment.png", "retrieval accuracy",
                                                "spoken word -> its written form, and back", floor=chance,
                                                floor_label="chance (shortest list)"))
    return result


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------


def analyze_checkpoint(path: str, cfg: AnalysisConfig, out: Path) -> dict[str, Any]:
    from smoltolk.model.hf import load_tokenizer

    model = load_analysis_model(path, cfg)
    utterances = read_aligned(cfg.speech) if cfg.speech else []
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"checkpoint": str(path), "pooling": model.config.speech.pooling,
                              "layers": model.config.backbone.num_layers}
    if "layer-weights" in cfg.analyses:
        result["layer_weights"] = run_layer_weights(model, utterances, cfg, out)
    if "segmentation" in cfg.analyses:
        result["segmentation"] = run_segmentation(model, utterances, cfg, out)
    if {"intrinsic-dim", "overlap", "word-alignment"} & set(cfg.analyses):
        tokenizer = load_tokenizer(cfg.tokenizer or path)
    if {"intrinsic-dim", "overlap"} & set(cfg.analyses):
        result.update(run_representations(model, tokenizer, utterances, cfg, out))
    if "word-alignment" in cfg.analyses:
        result["word_alignment"] = run_word_alignment(model, tokenizer, cfg, out)
    (out / "analysis.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _compare(results: dict[str, dict[str, Any]], out: Path) -> None:
    """Figures with every checkpoint's curves (as the paper compares its ablations)."""
    ids = {f"{name} {m}": (np.array(r["intrinsic_dimension"][m]["mean"]), np.array(r["intrinsic_dimension"][m]["std"]))
           for name, r in results.items() if "intrinsic_dimension" in r for m in ("text", "speech")}
    if ids:
        plots.plot_per_layer(ids, out / "intrinsic_dimension.png", "intrinsic dimension (GRIDE)",
                             "intrinsic dimension per layer")
    ov = {f"{name} {k}": (np.array(r["subspace_overlap"][k]["mean"]), np.array(r["subspace_overlap"][k]["std"]))
          for name, r in results.items() if "subspace_overlap" in r for k in ("speech_on_text", "text_on_speech")}
    if ov:
        floor = next(r["subspace_overlap"]["random_floor"] for r in results.values() if "subspace_overlap" in r)
        plots.plot_per_layer(ov, out / "subspace_overlap.png", "variance explained", "subspace overlap", floor=floor)
    wa = {f"{name} {words} S->T": (np.array(r["word_alignment"][words]["speech_to_text"]),
                                     np.zeros(len(r["word_alignment"][words]["speech_to_text"])))
          for name, r in results.items() if "word_alignment" in r for words in r["word_alignment"] if words != "figure"}
    if wa:
        chance = max(w["chance"] for r in results.values() if "word_alignment" in r
                     for k, w in r["word_alignment"].items() if k != "figure")
        plots.plot_per_layer(wa, out / "word_alignment.png", "retrieval accuracy", "spoken word -> its written form",
                             floor=chance, floor_label="chance (shortest list)")


def analyze(checkpoints: list[str], cfg: AnalysisConfig, out: str | Path) -> dict[str, Any]:
    """Run the configured analyses on every checkpoint; write JSON and figures under ``out``."""
    from smoltolk.model.load import checkpoint_names

    if not checkpoints:
        raise ConfigError("give at least one checkpoint to analyse")
    check_checkpoints(checkpoints, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = checkpoint_names(checkpoints)
    (out / "analysis_config.json").write_text(json.dumps(
        {"config": to_dict(cfg), "checkpoints": dict(zip(names, checkpoints))}, indent=2) + "\n")
    results = {name: analyze_checkpoint(ckpt, cfg, out / name) for name, ckpt in zip(names, checkpoints)}
    if len(results) > 1:
        _compare(results, out)
        (out / "analysis.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
