"""``smoltolk demo``: the mini-world end to end, on a laptop CPU.

Generates the seeded world (:mod:`smoltolk.world`), prepares its corpora, pretrains a tiny text
backbone (saved as a Hugging Face directory with its tokenizer.json), trains the baseline and
SmolTolk and SmolTolk without its adapters (Table 2's "-Adapters") from it on the same token
budget with the two-stage recipe, evaluates all three on the held-out-topic and heard-topic
benchmarks, analyses SmolTolk's layer weights, and writes a Markdown report. Everything lands in
one output directory.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from smoltolk.defaults import CARRIER_STYLE_NAMES, DEMO_MODELS
from smoltolk.errors import ConfigError
from smoltolk.parallel import plan as plan_parallel


@dataclass
class DemoSize:
    n_text: int
    n_speech: int
    n_bench_stories: int
    n_bench_pairs: int
    layers: int
    width: int
    context: int
    micro_batch: int
    pretrain_steps: int
    stage1_steps: int
    stage2_steps: int
    warmup_steps: int  # of the two-stage trainings
    stage2_decay_fraction: float = 0.0  # their rates' linear cool-down over stage 2's last fraction (0: constant)
    n_audio: int = 150  # speech-corpus stories read by espeak-ng with --audio (smoltolk.world.audio)
    speakers: int = 4  # pseudo-speech voices (smoltolk.world.speech.PseudoSpeech), training and benchmarks alike
    carriers: str = "plain"  # carrier frames of held-out words (smoltolk.world.world.CARRIER_STYLES), a lever


MODELS = DEMO_MODELS  # the demo's models: recipes/demo/<name>.yaml
CLOZE_STORIES = 100  # lexical-cloze stories per split (24 candidates x 6 settings x 2 contexts each)
MIN_GAP_WORDS = 300  # the world's spacing of held-out words in speech: at least the context + 1 (see Split)

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "demo"  # the demo's runs, one recipe each
SIZES_FILE = RECIPES / "sizes.yaml"


def load_sizes(path: Path = SIZES_FILE) -> dict[str, DemoSize]:
    """The demo's sizes from ``recipes/demo/sizes.yaml`` (the one place they are set); ``like: NAME`` starts a
    size from an earlier one."""
    import yaml

    from smoltolk.files import read_text

    if not path.is_file():
        raise ConfigError(f"{path}: the demo's sizes are missing; the demo runs from a clone of the repository "
                          "(pip install -e .), which holds recipes/demo/")
    try:
        raw = yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of size names to their fields")
    sizes: dict[str, DemoSize] = {}
    for name, fields in raw.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{path}: size {name!r}: expected a mapping of fields, got {fields!r}")
        fields = dict(fields)
        like = fields.pop("like", None)
        if like is not None and like not in sizes:
            raise ConfigError(f"{path}: size {name!r}: like {like!r} names no size above it")
        try:
            sizes[name] = DemoSize(**({**dataclasses.asdict(sizes[like]), **fields} if like else fields))
        except TypeError as e:
            known = ", ".join(f.name for f in dataclasses.fields(DemoSize))
            raise ConfigError(f"{path}: size {name!r}: {e} (fields: {known})") from None
    missing = {"quick", "default", "full"} - set(sizes)
    if missing:
        raise ConfigError(f"{path}: sizes {', '.join(sorted(missing))} missing (expected quick, default, full)")
    return sizes


SIZES = load_sizes()


def _datasets(data: Path, modalities: tuple[str, ...], audio: bool = False) -> list[dict]:
    out = []
    if "speech" in modalities:
        out.append({"path": str(data / "speech"), "modality": "speech"})
    if "text" in modalities:
        out.append({"path": str(data / "text"), "modality": "text"})
    if "interleaved" in modalities:
        out.append({"path": str(data / "speech"), "modality": "interleaved"})
    if audio:  # the stories espeak-ng read (--audio): more speech and interleaved data
        out += [{"path": str(data / "audio"), "modality": m} for m in ("speech", "interleaved") if m in modalities]
    return out


def _export(checkpoint: str, target: Path) -> Path:
    """Copy a training checkpoint's model files (not the optimizer) to ``target``."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        src = Path(checkpoint) / name
        if src.is_file():
            shutil.copy2(src, target / name)
    return target


def run_demo(out: str | Path, seed: int = 0, quick: bool = False, progress: bool = True, audio: bool = False,
             full: bool = False, workers: int | None = None, carriers: str | None = None) -> dict:
    """Run the whole demo into ``out``; returns the summary (also written as ``summary.json``).

    ``quick``: the small size that proves the pipeline; ``full``: twice the default's steps (8000 per model).

    ``workers``: processes that train (and evaluate) side by side (default: one per core, up to one per model).

    ``carriers``: how held-out words are heard in speech (default: the size's, "plain" carriers; "neutral":
    in everyday sentences, :data:`~smoltolk.world.world.NEUTRAL_NOUN`; "echo": said twice).

    ``audio``: also read ``n_audio`` speech-corpus stories aloud with espeak-ng, tokenize them with
    log-mel features + k-means (:mod:`smoltolk.world.audio`) and train on them as one more speech corpus.
    """
    t0 = time.time()
    if quick and full:
        raise ConfigError("--quick and --full: choose one size")
    size_name = "quick" if quick else "full" if full else "default"
    size = SIZES[size_name]
    if carriers is not None:
        if carriers not in CARRIER_STYLE_NAMES:
            raise ConfigError(f"carriers {carriers!r}: expected one of {', '.join(CARRIER_STYLE_NAMES)}")
        size = dataclasses.replace(size, carriers=carriers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    if audio:  # fail before any work when espeak-ng is missing
        from smoltolk.world.audio import find_espeak

        find_espeak()

    stages: dict[str, float] = {}
    clock = [time.time()]

    def stage(name: str) -> None:  # the time of the stage that just ended, printed and kept
        now = time.time()
        stages[name] = round(now - clock[0], 1)
        clock[0] = now
        say(f"      ({name}: {stages[name]:.0f} s)")

    say(f"[1/6] generating the mini-world (seed {seed}) and preparing its shards")
    world_dir, world, settings = prepare_world(out, size, seed, progress)
    tok, eos = world_dir / "tokenizer.json", settings.text_eos_id
    audio_stats = _audio_route(world_dir, out, size.n_audio, seed, settings, say, progress) if audio else None
    stage("world and shards")

    say("[2/6] pretraining a tiny text backbone")
    backbone_dir = pretrain_backbone(out / "data", out, size, seed, tok, eos, progress)
    stage("text pretraining")

    n_workers, threads = plan_parallel(len(MODELS), workers=workers)
    say(f"[3-4/6] training {', '.join(MODELS)}: {size.stage1_steps} stage-1 + {size.stage2_steps} stage-2 steps "
        f"each, {n_workers} at a time ({threads} thread(s) each); each model evaluated on held-out and heard "
        "topics once trained")
    models, results = train_and_evaluate(out / "data", out, world_dir, backbone_dir, size, seed, audio, progress,
                                         n_workers, threads, say, stages)
    stage("training and evaluation")
    say("[5/6] analysing SmolTolk's layer weights")
    analysis = _analyze(world_dir, models["smoltolk"], out / "analysis", progress)
    stage("analysis")
    say("[6/6] samples and the report")
    samples = _samples(models["smoltolk"], world_dir, out)
    summary = {"seed": seed, "size_name": size_name, "size": dataclasses.asdict(size),
               "world": {k: world[k] for k in world if k != "notes"},
               "results": results, "segmentation": analysis.get("segmentation", {}),
               "layer_weights": analysis.get("layer_weights", {}), "selector_entropy": _final_entropy(out),
               "samples": samples, "stage_seconds": stages, "seconds": round(time.time() - t0, 1)}
    if audio_stats:
        summary["audio"] = audio_stats
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    from smoltolk.demo_report import render_report

    report = render_report(summary)
    (out / "report.md").write_text(report)
    print(report)
    return summary


def run_seeds(out: str | Path, seeds: int, seed: int = 0, **options) -> dict:
    """``seeds`` runs of the demo (seeds ``seed``, ``seed`` + 1, ...: the world, the backbone and every model
    each), in ``out/seed-<s>``; a seed whose ``summary.json`` is there for this size is kept, so a stopped run
    resumes. Writes ``out/seeds.json`` (every seed's headline numbers) and ``out/report.md`` (the verdicts with
    seed ranges, means and ranges per model, SmolTolk minus the others seed by seed); returns the seeds.json data."""
    from smoltolk.demo_report import size_line
    from smoltolk.demo_summary import CLAIM, METRICS, SPLITS, judge, metric, seed_table, verdict
    from smoltolk.parallel import machine

    out = Path(out)
    size_name = "quick" if options.get("quick") else "full" if options.get("full") else "default"
    summaries = []
    for s in range(seed, seed + seeds):
        done = out / f"seed-{s}" / "summary.json"
        kept = json.loads(done.read_text()) if done.is_file() else None
        carriers = options.get("carriers") or SIZES[size_name].carriers
        if (kept is not None and kept.get("size_name") == size_name and kept.get("seed") == s
                and kept.get("size", {}).get("carriers", "plain") == carriers):
            print(f"seed {s}: kept ({done})")
            summaries.append(kept)
            continue
        print(f"=== seed {s} ({s - seed + 1} of {seeds}) ===")
        summaries.append(run_demo(out / f"seed-{s}", seed=s, **options))
    host = machine()
    data = {"size_name": size_name, "seeds": [s["seed"] for s in summaries], "machine": host,
            "seconds": [s["seconds"] for s in summaries],
            "per_seed": [{"seed": s["seed"], **{split: {m: {name: metric(s["results"][split][m], name)
                                                            for name in METRICS} for m in MODELS}
                                                for split in s["results"]}} for s in summaries],
            "verdicts": {split: {k: v for k, v in judge(summaries, split).items() if k != "differences"}
                         for split in SPLITS}}
    (out / "seeds.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    lines = ["# SmolTolk mini-world demo, " + f"{len(summaries)} seeds", "",
             f"Seeds {', '.join(str(s['seed']) for s in summaries)} of size {size_name} ({size_line(summaries[0])}; "
             f"each seed its own world, backbone and models). Wall time per seed: "
             + ", ".join(f"{s['seconds'] / 60:.1f} min" for s in summaries) + f" on {host}. "
             f"Each seed's full report: seed-<s>/report.md.", "", "## Verdict", "",
             *[f"- {verdict(summaries, split)}" for split in SPLITS], "",
             "## Means and seed ranges", "",
             "Accuracy %, mean (min–max) over seeds; tSC: cross-modal tStoryCloze (chance 50); cloze: the lexical "
             "cloze's verb among 24 (chance 4.2), calibrated against the verb's prior; speech NLL in nats per unit. "
             "The verdict judges " + " and ".join(CLAIM) + " (SmolTolk against each other model, seed by seed).", "",
             *seed_table(summaries)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return data


def prepare_world(out: Path, size: DemoSize, seed: int, progress: bool, tokenizer: str | Path | None = None):
    """The seeded world in ``out/world`` and its training shards in ``out/data/{text,speech}``.
    Returns (world folder, world.json data, the PrepareSettings used). ``tokenizer``: prepare the text
    with this tokenizer.json (a real backbone's) instead of the world's own small BPE."""
    from smoltolk.data.prepare import PrepareSettings, default_text_eos_id, prepare
    from smoltolk.world.build import build_world

    world_dir = out / "world"
    if size.context + 1 > MIN_GAP_WORDS:
        raise ConfigError(f"demo context {size.context}: samples of context + 1 tokens must span at most "
                          f"MIN_GAP_WORDS = {MIN_GAP_WORDS} words for the knowledge split to hold")
    if tokenizer is not None:  # a bad tokenizer fails before anything is written
        from smoltolk.model.hf import load_tokenizer

        load_tokenizer(tokenizer)
        default_text_eos_id(Path(tokenizer))
    world = build_world(world_dir, seed=seed, n_text=size.n_text, n_speech=size.n_speech,
                        n_bench_stories=size.n_bench_stories, n_bench_pairs=size.n_bench_pairs,
                        speakers=size.speakers, min_gap_words=MIN_GAP_WORDS, carriers=size.carriers)
    tok = Path(tokenizer) if tokenizer is not None else world_dir / "tokenizer.json"
    settings = PrepareSettings(str(tok), text_eos_id=default_text_eos_id(tok), shard_size=max(size.n_text // 2, 1),
                               workers=1)
    prepare(world_dir / "text.jsonl", out / "data" / "text", "text", settings, progress=progress)
    # speech as one shard: the samplers then read it cyclically in the order the split was checked in
    prepare(world_dir / "speech.jsonl", out / "data" / "speech", "speech",
            dataclasses.replace(settings, shard_size=world["counts"]["speech_utterances"]), progress=progress)
    return world_dir, world, settings


def validation_tasks(world_dir: Path, size: DemoSize) -> list[str]:
    """What the demo's runs score while they train: the held-out lexical cloze, across modalities."""
    path = world_dir / "bench" / "held_out" / "lexical_cloze.jsonl"
    return [f"tasks.lexical_cloze.path={path}", f"tasks.lexical_cloze.limit={min(size.n_bench_stories, 24)}",
            "tasks.lexical_cloze.settings=[T->S, S->T]"]


def recipe(name: str) -> Path:
    """``recipes/demo/<name>.yaml``: the settings of one of the demo's runs (paths and sizes come as overrides)."""
    path = RECIPES / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: the demo's recipe is missing; the demo runs from a clone of the repository "
                          "(pip install -e .), which holds recipes/demo/")
    return path


def size_settings(name: str, size: DemoSize, vocab_size: int = 512, eos: int = 0) -> list[str]:
    """The overrides ``recipes/demo/<name>.yaml`` takes from a size of ``recipes/demo/sizes.yaml``: context,
    micro-batch, steps, warm-up and stage 2's cool-down, and for the text pretraining the backbone's shape
    (``vocab_size``: its tokenizer's, ``eos``: its end-of-text id)."""
    out = [f"data.context={size.context}", f"schedule.micro_batch={size.micro_batch}"]
    if name == "text-pretrain":
        heads = max(2, size.width // 32)
        shape = {"vocab_size": vocab_size, "hidden_size": size.width, "intermediate_size": size.width * 3,
                 "num_layers": size.layers, "num_heads": heads, "num_kv_heads": max(1, heads // 2),
                 "max_position_embeddings": 4 * size.context, "eos_token_id": eos}
        return [*out, f"schedule.stage2_steps={size.pretrain_steps}",
                *(f"model.backbone.{k}={v}" for k, v in shape.items())]
    return [*out, f"schedule.stage1_steps={size.stage1_steps}", f"schedule.stage2_steps={size.stage2_steps}",
            f"optim.warmup_steps={size.warmup_steps}", f"optim.stage2_decay_fraction={size.stage2_decay_fraction}"]


def _settings(seed: int, out_dir: Path, progress: bool) -> list[str]:
    """Overrides every demo run takes: its seed and output folder."""
    return [f"data.seed={seed}", f"run.seed={seed}", f"run.out_dir={json.dumps(str(out_dir))}",
            f"run.progress={str(progress).lower()}"]


def _run(name: str, settings: list[str]) -> dict:
    from smoltolk.train.trainer import load_train_config, train

    return train(load_train_config(recipe(name), settings))


def pretrain_backbone(data: Path, work: Path, size: DemoSize, seed: int, tok: Path, eos: int, progress: bool) -> Path:
    """A tiny text backbone of ``size`` pretrained on ``data/text`` (``recipes/demo/text-pretrain.yaml``):
    ``work/models/backbone``, a Hugging Face directory (the run itself in ``work/runs/text-pretrain``)."""
    from smoltolk.model.hf import load_tokenizer

    settings = size_settings("text-pretrain", size, load_tokenizer(tok).get_vocab_size(), eos)
    settings += _settings(seed, work / "runs" / "text-pretrain", progress)
    settings += [f"model.tokenizer={json.dumps(str(tok))}", f"data.datasets={json.dumps(_datasets(data, ('text',)))}"]
    return _export(_run("text-pretrain", settings)["checkpoint"], work / "models" / "backbone")


def train_model(data: Path, work: Path, name: str, backbone_dir: Path, size: DemoSize, seed: int,
                audio: bool, progress: bool, validation: list[str] | None = None,
                overrides: list[str] | None = None) -> Path:
    """Two-stage training of one text-speech model (``recipes/demo/<name>.yaml``: baseline, smoltolk,
    smoltolk-no-adapters) from ``backbone_dir`` on the shards in ``data``: ``work/models/<name>`` (the run
    itself in ``work/runs/<name>``). ``validation``: benchmarks scored 4 times during training
    (``validation.eval``), learning curves in its metrics.jsonl. ``overrides``: ``key=value`` settings of
    the training config on top (levers: spans, rates, ...)."""
    total = size.stage1_steps + size.stage2_steps
    settings = size_settings(name, size) + _settings(seed, work / "runs" / name, progress)
    settings += [f"model.backbone_dir={json.dumps(str(backbone_dir))}",  # JSON: paths stay literal
                 f"data.datasets={json.dumps(_datasets(data, ('speech', 'text', 'interleaved'), audio))}",
                 f"validation.every={max(1, total // 4) if validation else 0}",
                 f"validation.eval={json.dumps(validation or [])}"]
    return _export(_run(name, settings + list(overrides or []))["checkpoint"], work / "models" / name)


def _train_job(data: Path, work: Path, name: str, backbone_dir: Path, size: DemoSize, seed: int, audio: bool,
               progress: bool, validation: list[str] | None) -> tuple[Path, float]:
    start = time.time()
    model = train_model(data, work, name, backbone_dir, size, seed, audio, progress, validation=validation)
    return model, round(time.time() - start, 1)


def train_and_evaluate(data: Path, work: Path, world_dir: Path, backbone_dir: Path, size: DemoSize, seed: int,
                       audio: bool, progress: bool, workers: int, threads: int, say=print,
                       seconds: dict | None = None) -> tuple[dict[str, Path], dict]:
    """The demo's three models (:func:`train_model` each), each then scored on both splits of the world
    (``work/eval/<split>``), ``workers`` jobs at a time with ``threads`` threads each: SmolTolk (the longest)
    first, and a model's scoring as soon as it is trained, so a core whose training ends early scores instead
    of waiting. The held-out lexical cloze is scored while SmolTolk trains (its learning curve). Returns
    ({name: model folder}, {split: {name: results}}); each model's training time goes to
    ``seconds["training <name>"]``."""
    from smoltolk.eval.run import write_summary
    from smoltolk.parallel import run_graph
    from smoltolk.world.build import SPLITS

    order = sorted(MODELS, key=lambda name: name != "smoltolk")
    validation = validation_tasks(world_dir, size)
    jobs = [(_train_job, (data, work, name, backbone_dir, size, seed, audio, progress,
                          validation if name == "smoltolk" else None), ()) for name in order]
    scoring = [(name, split) for name in order for split in SPLITS]
    jobs += [(score_split, (world_dir, {name: work / "models" / name}, work / "eval", split, progress, None, (),
                            False), (order.index(name),)) for name, split in scoring]

    def done(i: int, result) -> None:
        if i < len(order):
            say(f"      {order[i]} trained in {result[1]:.0f} s")
            if seconds is not None:
                seconds[f"training {order[i]}"] = result[1]

    results = run_graph(jobs, workers, threads, done)
    models = {name: results[order.index(name)][0] for name in MODELS}
    scored = dict(zip(scoring, results[len(order):], strict=True))
    out = {}
    for split in SPLITS:
        merged = write_summary(work / "eval" / split, split_eval_config(world_dir, split, progress),
                               [scored[name, split] for name in MODELS])
        out[split] = {c["name"]: c["results"] for c in merged["checkpoints"]}
    return models, out


def _audio_route(world_dir: Path, out: Path, n: int, seed: int, settings, say, progress: bool) -> dict:
    """--audio: espeak-ng reads ``n`` speech-corpus stories; log-mel + k-means units, prepared as ``data/audio``."""
    from smoltolk.data.prepare import prepare
    from smoltolk.world.audio import speak_world

    say(f"[1/6] --audio: espeak-ng reads {n} speech-corpus stories; log-mel features + k-means -> units")
    stats = speak_world(world_dir, out / "audio", n, seed=seed, num_units=settings.num_units, progress=progress)
    prepare(stats["manifest"], out / "data" / "audio", "speech", settings, progress=progress)
    return stats


def split_eval_config(world_dir: Path, split: str, progress: bool = False, tasks: tuple[str, ...] | None = None,
                      overrides: tuple[str, ...] = ()):
    """The eval config of one split's benchmarks of a world. ``tasks``: only these (default: every task the world
    wrote); ``overrides``: eval settings on top. The lexical cloze scores its first CLOZE_STORIES stories;
    tStoryCloze is also calibrated."""
    from smoltolk.eval.config import build_eval_config
    from smoltolk.world.build import eval_task_overrides
    from smoltolk.world.diagnostics import CALIBRATION_CONTEXTS

    settings = eval_task_overrides(world_dir / "bench" / split)
    if tasks is not None:
        settings = [o for o in settings if o.startswith(tuple(f"tasks.{t}." for t in tasks))]
    if any(o.startswith("tasks.lexical_cloze.") for o in settings):
        settings.append(f"tasks.lexical_cloze.limit={CLOZE_STORIES}")
    settings.append(f"tasks.tstorycloze_xmodal.calibration_contexts={CALIBRATION_CONTEXTS}")
    return build_eval_config(None, [], [*settings, *overrides], progress=progress)


def score_split(world_dir: Path, models: dict[str, Path], out: Path, split: str, progress: bool = False,
                tasks: tuple[str, ...] | None = None, overrides: tuple[str, ...] = (),
                summary_files: bool = True) -> dict:
    """Models on one split's benchmarks of a world (``out/<split>``, :func:`split_eval_config`): the eval summary
    (:func:`smoltolk.eval.run.evaluate`; ``summary_files`` False: no results.json etc., for runs merged later),
    tStoryCloze split by what tells the endings apart."""
    from smoltolk.eval.run import evaluate
    from smoltolk.world.diagnostics import add_storycloze_cues

    cfg = split_eval_config(world_dir, split, progress, tasks, overrides)
    summary = evaluate([str(m) for m in models.values()], cfg, out / split, summary_files)
    for c in summary["checkpoints"]:  # which pairs a model tells apart: by the pronoun, or by the topic alone
        add_storycloze_cues(c, world_dir / "bench" / split, out / split, cfg.reduction)
    return summary


def evaluate_split(world_dir: Path, models: dict[str, Path], out: Path, split: str, progress: bool = False,
                   tasks: tuple[str, ...] | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Models on one split's benchmarks of a world (``out/<split>``): {model name: results}
    (:func:`score_split`)."""
    summary = score_split(world_dir, models, out, split, progress, tasks, overrides)
    return {c["name"]: c["results"] for c in summary["checkpoints"]}


def _analyze(world_dir: Path, model: Path, out: Path, progress: bool) -> dict:
    from smoltolk.analysis.run import analyze, build_analysis_config

    cfg = build_analysis_config(None, [], speech=str(world_dir / "bench" / "heard" / "speech_dev.jsonl"),
                                segmentation_dev=str(world_dir / "bench" / "heard" / "speech_dev.jsonl"),
                                segmentation_test=str(world_dir / "bench" / "held_out" / "speech_dev.jsonl"),
                                analyses=["layer-weights", "segmentation"], progress=progress)
    results = analyze([str(model)], cfg, out)
    return next(iter(results.values()))


def _final_entropy(out: Path) -> float | None:
    """SmolTolk's selector entropy H(w) (nats, mean over positions) at its last training step."""
    metrics = out / "runs" / "smoltolk" / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    values = [r["entropy"] for r in rows if r.get("entropy") is not None]
    return values[-1] if values else None


def _samples(model_dir: Path, world_dir: Path, out: Path | None = None, n_speech: int = 3) -> list[dict]:
    """Greedy continuations by the model: one in text, ``n_speech`` in speech, the speech read back as the
    world's words (:mod:`smoltolk.world.decode`) and, when espeak-ng is there, said into ``out/samples/*.wav``."""
    import shutil

    from smoltolk.generate import generate
    from smoltolk.model.hf import load_tokenizer
    from smoltolk.model.tslm import TextSpeechLM
    from smoltolk.world.decode import WorldDecoder

    model = TextSpeechLM.from_pretrained(model_dir).eval()
    tok = load_tokenizer(world_dir / "tokenizer.json")
    stories = [json.loads(line)["text"] for line in (world_dir / "text.jsonl").read_text().splitlines()[:n_speech]]
    prompts = [" ".join(story.split()[:12]) for story in stories]
    gen = generate(model, [prompts[0]], tokenizer=tok, to="text", max_new_tokens=24, temperature=0.0)
    samples = [{"prompt": prompts[0], "to": "text", "output": gen.text(tok)}]
    decoder, espeak = WorldDecoder(), shutil.which("espeak-ng") is not None and out is not None
    for i, prompt in enumerate(prompts):
        gen = generate(model, [prompt], tokenizer=tok, to="speech", max_new_tokens=40, temperature=0.0)
        reading = decoder.read(gen.units)
        sample = {"prompt": prompt, "to": "speech", "output": " ".join(map(str, gen.units)),
                  "words": reading.text, "phoneme_edits": reading.edits}
        if espeak and reading.words:
            from smoltolk.world.audio import speak_words

            speak_words(list(reading.words), out / "samples" / f"speech-{i}.wav")
            sample["wav"] = f"samples/speech-{i}.wav"
        samples.append(sample)
    return samples
