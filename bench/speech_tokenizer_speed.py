"""Speech tokenizer speed on this machine: real-time factor (processing seconds / audio seconds).

Measures three feature extractors, each followed by 500-centroid k-means and run-length collapse:
a tiny random HuBERT (layer-norm conv stack, padded batches), a HuBERT-base-sized random HuBERT
(768 wide, 12 layers, the standard group-norm conv stack at 50 Hz, one utterance at a time, layer
11), and the weights-free LogMel baseline. Random weights: the speed is that of the real models.
Prints JSON. Not a test; about a minute on 2 CPU cores.

    .venv/bin/python bench/speech_tokenizer_speed.py [--seconds 30] [--utterance-seconds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from smoltolk.data.audio import SAMPLE_RATE
from smoltolk.data.speech_tokenizer import HubertFeatures, KMeansQuantizer, LogMelFeatures, SpeechTokenizer


def make_hubert(directory: Path, **config) -> Path:
    import transformers

    torch.manual_seed(0)
    transformers.HubertModel(transformers.HubertConfig(**config)).save_pretrained(directory)
    return directory


def measure(tokenizer: SpeechTokenizer, waves: list[np.ndarray], repeats: int) -> dict:
    audio_s = sum(len(w) for w in waves) / SAMPLE_RATE
    tokenizer.encode_batch(waves[:1])  # warm-up
    feature_s, total_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        feats = tokenizer.features.batch(waves)
        t1 = time.perf_counter()
        for f in feats:
            tokenizer.collapsed(tokenizer.quantizer(f))
        t2 = time.perf_counter()
        feature_s.append(t1 - t0)
        total_s.append(t2 - t0)
    return {"audio_seconds": round(audio_s, 2), "frame_rate": tokenizer.frame_rate, "dim": tokenizer.features.dim,
            "rtf_features": round(min(feature_s) / audio_s, 5), "rtf_total": round(min(total_s) / audio_s, 5),
            "x_real_time": round(audio_s / min(total_s), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per extractor (default: 30)")
    parser.add_argument("--utterance-seconds", type=float, default=5.0, help="length of each utterance")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats; the fastest counts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable numbers on a shared CPU; 0 = torch's choice)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n = int(args.utterance_seconds * SAMPLE_RATE)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(max(1, round(args.seconds
                                                                                       / args.utterance_seconds)))]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = make_hubert(Path(tmp) / "tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=37, conv_dim=(32,) * 7, feat_extract_norm="layer",
                           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
        base = make_hubert(Path(tmp) / "base")  # transformers' HubertConfig defaults are HuBERT-base
        extractors = {"hubert_tiny_layer2": HubertFeatures(tiny, layer=2),
                      "hubert_base_layer11": HubertFeatures(base, layer=11),
                      "logmel_80": LogMelFeatures()}
        for name, features in extractors.items():
            centroids = rng.standard_normal((500, features.dim)).astype(np.float32)
            tokenizer = SpeechTokenizer(features, KMeansQuantizer(centroids))
            results[name] = {**measure(tokenizer, waves, args.repeats),
                             "batched": getattr(features, "pads_safely", False)}
            if isinstance(features, HubertFeatures):
                kept = sum(p.numel() for p in features.model.parameters())  # layers above `layer` are dropped
                results[name]["parameters_M_up_to_layer"] = round(kept / 1e6, 2)
    print(json.dumps({"machine": {"cpu": platform.processor() or platform.machine(),
                                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
                      "k": 500, "utterance_seconds": args.utterance_seconds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
