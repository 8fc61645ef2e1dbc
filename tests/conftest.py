"""Shared test helpers: tiny random configurations and Hugging Face directories made in-test."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smoltolk.model.config import ABLATIONS, BASELINE, BackboneConfig, ModelConfig, SpeechConfig
from smoltolk.model.tslm import TextSpeechLM

TEXT_VOCAB = 48
NUM_UNITS = 20

VARIANTS = {"smoltolk": {}, "baseline": BASELINE, **ABLATIONS}


def tiny_backbone(**kw) -> BackboneConfig:
    base = dict(vocab_size=TEXT_VOCAB, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                num_kv_heads=2, tie_word_embeddings=False, rope_theta=10000.0)
    base.update(kw)
    return BackboneConfig(**base)


def tiny_model(variant: str = "smoltolk", seed: int = 0, backbone: BackboneConfig | None = None,
               **speech_kw) -> TextSpeechLM:
    torch.manual_seed(seed)
    speech = dataclasses.replace(SpeechConfig(num_units=NUM_UNITS, entropy_beta=0.01), **VARIANTS[variant])
    speech = dataclasses.replace(speech, **speech_kw)
    return TextSpeechLM(ModelConfig(backbone or tiny_backbone(), speech)).eval()


def mixed_batch(b: int = 2, t: int = 24, seed: int = 0, swt: int = TEXT_VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, is_speech) with text and speech runs of varying length (different per row)."""
    g = torch.Generator().manual_seed(seed)
    is_speech = torch.zeros(b, t, dtype=torch.bool)
    for row in range(b):
        pos, speech = 0, bool(row % 2)
        while pos < t:
            n = int(torch.randint(2, 7, (1,), generator=g))
            is_speech[row, pos:pos + n] = speech
            pos, speech = pos + n, not speech
    ids = torch.where(is_speech, torch.randint(0, NUM_UNITS, (b, t), generator=g),
                      torch.randint(0, swt, (b, t), generator=g))
    return ids, is_speech


@pytest.fixture
def hf_llama_dir(tmp_path):
    """Factory: save a tiny random transformers LlamaForCausalLM and return (dir, hf_model)."""
    transformers = pytest.importorskip("transformers")

    def make(name: str = "hf", shard: str | None = None, seed: int = 0, **kw):
        torch.manual_seed(seed)
        cfg = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                   tie_word_embeddings=False, max_position_embeddings=256)
        cfg.update(kw)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()
        with torch.no_grad():  # non-trivial norm weights, so a missed norm shows up
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.uniform_(0.5, 1.5)
        path = tmp_path / name
        model.save_pretrained(path, **({"max_shard_size": shard} if shard else {}))
        return path, model

    return make


@pytest.fixture(scope="session")
def bpe_tokenizer_file(tmp_path_factory):
    """A byte-level BPE tokenizer.json trained in milliseconds on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the cat sat on the mat", "a dog ran to the cat", "once upon a time there was a little fox",
              "Hello, world! The quick brown fox jumps over the lazy dog."] * 10
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path
