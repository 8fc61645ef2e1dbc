"""A run of about a minute on a laptop CPU that shows the model working end to end, through the
same pieces a real run uses.

It makes the synthetic prepared corpus of ``smoltolk synth-data`` (a small BPE tokenizer, a text
corpus and pseudo-speech in which each word has a fixed pronunciation), writes a tiny random text
LM as a Hugging Face directory, then trains SmolTolk and the vocabulary-expansion baseline from it
with the real two-stage trainer (``smoltolk.train``; a smaller, shorter cousin of ``recipes/tiny.yaml``),
checks that cached decoding equals the full forward and that the saved model reloads exactly, and
prints the losses. (It proves the machinery, not the paper's claim: that is the mini-world demo's job.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from smoltolk.config import to_dict
from smoltolk.model.cache import Cache
from smoltolk.model.config import BASELINE, SpeechConfig

MODELS = {"smoltolk": {}, "baseline": BASELINE}  # speech-config switches


def _settings(data: dict[str, str], backbone: Path, out: Path, name: str, steps: int, seed: int) -> list[str]:
    """The training config: a tiny SmolTolk or baseline on synth-data's corpus (context 128, micro-batch 8,
    a tenth of the steps in stage 1), for the real trainer."""
    stage1 = max(1, steps // 10)
    datasets = json.dumps([{"path": data["speech"], "modality": "speech"}, {"path": data["text"], "modality": "text"},
                           {"path": data["speech"], "modality": "interleaved"}])  # JSON: paths stay literal
    speech = json.dumps(to_dict(SpeechConfig(**MODELS[name])))
    return [f"model.backbone_dir={json.dumps(str(backbone))}", f"model.speech={speech}", "data.context=128",
            f"data.datasets={datasets}", "optim.lr=3e-3", f"optim.warmup_steps={max(1, stage1 // 2)}",
            f"schedule.stage1_steps={stage1}", f"schedule.stage2_steps={steps - stage1}", "schedule.micro_batch=8",
            f"run.out_dir={json.dumps(str(out / 'runs' / name))}", "run.checkpoint_every=0", "run.precision=fp32",
            "run.resume=never", f"run.seed={seed}"]


@torch.no_grad()
def _check(checkpoint: Path, target: Path, probe: dict[str, torch.Tensor]) -> dict:
    """Cached decoding vs one full pass (relative to the largest logit); the model saved to ``target``
    reloads exactly."""
    from smoltolk.model.tslm import TextSpeechLM

    model = TextSpeechLM.from_pretrained(checkpoint).eval()
    ids, sp = probe["tokens"][:, :128], probe["is_speech"][:, :128]
    full = model(ids, sp)
    cache, parts = Cache(), []
    for t in range(0, ids.shape[1], 16):
        parts.append(model(ids[:, t:t + 16], sp[:, t:t + 16], cache=cache))
    diff = 0.0
    for key in ("text_logits", "speech_logits"):
        cached, whole = torch.cat([getattr(p, key) for p in parts], 1), getattr(full, key)
        real = torch.isfinite(whole)  # SWT's text column is -inf in both
        if not torch.equal(real, torch.isfinite(cached)):
            return {"cached_vs_full_rel_diff": float("inf"), "reload_exact": False}
        diff = max(diff, float((cached - whole)[real].abs().max() / whole[real].abs().max()))
    model.save_pretrained(target, tokenizer_file=checkpoint / "tokenizer.json")
    again = TextSpeechLM.from_pretrained(target).eval()
    return {"cached_vs_full_rel_diff": diff, "reload_exact": bool(torch.equal(again(ids, sp).speech_logits,
                                                                               full.speech_logits)),
            "speech_params": sum(p.numel() for p in model.speech_parameters().values()), "model": str(target)}


def tiny_run(out: Path, steps: int = 150, seed: int = 0) -> dict:
    """Run the whole tiny pipeline into ``out``; returns (and writes) a summary."""
    from smoltolk.data.sampler import BatchSampler, DataConfig, DatasetConfig, Mixture
    from smoltolk.data.synthetic import make_synthetic_corpus
    from smoltolk.model.hf import load_tokenizer, save_hf_backbone
    from smoltolk.model.llama import LlamaLM, init_weights
    from smoltolk.presets import preset
    from smoltolk.train.trainer import load_train_config, train

    t0 = time.time()
    out = Path(out)
    data = make_synthetic_corpus(out / "data", n_utterances=200, n_documents=200, seed=seed)
    print(f"wrote a synthetic prepared corpus (smoltolk synth-data): {out / 'data'}")
    torch.manual_seed(seed)
    cfg = preset("tiny").backbone
    cfg.vocab_size = load_tokenizer(data["tokenizer"]).get_vocab_size()
    backbone = LlamaLM(cfg)
    init_weights(backbone, 0.02)
    save_hf_backbone(backbone, out / "backbone", tokenizer_file=data["tokenizer"])
    print(f"wrote a tiny random text LM as a Hugging Face directory: {out / 'backbone'}")

    summary: dict = {"steps": steps, "seed": seed, "models": {}}
    for name in MODELS:
        result = train(load_train_config(None, _settings(data, out / "backbone", out, name, steps, seed)))
        rows = [json.loads(line) for line in (out / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        summary["models"][name] = {"first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
                                   "text_loss": rows[-1].get("text_loss"), "speech_loss": rows[-1].get("speech_loss"),
                                   "checkpoint": result["checkpoint"]}
    # a probe batch of interleaved text and speech, drawn as the trainer draws them
    mixture = Mixture(DataConfig(datasets=[DatasetConfig(path=data["speech"], modality="interleaved")],
                                 modality_weights={"interleaved": 1.0}, context=128, seed=seed + 1),
                      swt_id=cfg.vocab_size, speech_eos_id=SpeechConfig().eos_id, num_units=SpeechConfig().num_units)
    probe = next(BatchSampler(mixture, micro_batch=2))
    for name, result in summary["models"].items():
        result.update(_check(Path(result["checkpoint"]), out / name, probe))
    summary["seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, out)
    return summary


def _print_summary(summary: dict, out: Path) -> None:
    print(f"\n{'model':<10}{'loss start':>11}{'loss end':>10}{'text':>8}{'speech':>8}{'cached vs full':>16}")
    for name, r in summary["models"].items():
        print(f"{name:<10}{r['first_loss']:>11.3f}{r['last_loss']:>10.3f}{r['text_loss'] or float('nan'):>8.3f}"
              f"{r['speech_loss'] or float('nan'):>8.3f}{r['cached_vs_full_rel_diff']:>16.1e}")
    print("(training losses in nats per token, the last step's per modality; 'cached vs full': the largest "
          "difference between decoding step by step with the KV caches and one full pass, relative to the largest "
          "logit: rounding alone, about 1e-6)")
    exact = all(r["reload_exact"] for r in summary["models"].values())
    print(f"saved models reload exactly: {exact}; {summary['seconds']} s; summary in {out / 'summary.json'}")
