"""Shared test helpers: tiny random configurations and Hugging Face directories made in-test."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from smoltolk.model.config import ABLATIONS, BASELINE, BackboneConfig, ModelConfig, SpeechConfig
from smoltolk.model.tslm import TextSpeechLM

TEXT_VOCAB = 48
NUM_UNITS = 20

VARIANTS = {"smoltolk": {}, "baseline": BASELINE, **ABLATIONS}

# ---------------------------------------------------------------------------------------------------
# Floating-point comparisons. Two computations of the same quantity in another order (a cached vs a
# full pass, packed vs separate documents, ours vs transformers, another CPU, thread count or torch
# build) differ by rounding alone: each result accumulates about `terms` rounded operations, so the
# difference grows like eps * sqrt(terms) relative to the magnitude of the values. We allow SLACK
# times that, relative to the largest |expected| (errors scale with the magnitudes summed, not with
# each element). A wrong mask, a dropped position or a misplaced norm moves results by a percent or
# more of that scale, hundreds of times this tolerance (issue 16's closing note lists the checks).
# ---------------------------------------------------------------------------------------------------

SLACK = 16


def decoder_terms(num_layers: int, hidden: int, intermediate: int, seq: int) -> int:
    """Rounded operations accumulated into one output of a decoder stack: per layer, the attention
    sums over ``seq`` positions and the projections over ``hidden`` and ``intermediate`` features."""
    return num_layers * (hidden + intermediate + seq)


def model_terms(model, seq: int) -> int:
    """``decoder_terms`` of a ``LlamaLM`` or a ``TextSpeechLM`` (adapter layers included)."""
    backbone = getattr(model, "backbone", model)
    cfg = backbone.config
    layers = cfg.num_layers
    speech = getattr(getattr(model, "config", None), "speech", None)
    if speech is not None:
        layers += speech.input_adapter_layers + speech.output_adapter_layers
    return decoder_terms(layers, cfg.hidden_size, cfg.intermediate_size, seq)


def tolerance(expected, terms: int, dtype: torch.dtype | None = None) -> float:
    """The absolute tolerance for ``expected`` (tensor, array or number) after ``terms`` operations."""
    expected = torch.as_tensor(expected)
    dtype = dtype or (expected.dtype if expected.is_floating_point() else torch.float32)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    return SLACK * torch.finfo(dtype).eps * math.sqrt(max(terms, 1)) * max(scale, torch.finfo(dtype).tiny)


def assert_close(actual, expected, *, terms: int, dtype: torch.dtype | None = None, msg: str | None = None) -> None:
    """``actual`` equals ``expected`` up to the rounding of ``terms`` operations in ``dtype`` (default:
    the tensors' own; float32 for Python numbers and lists, which come from float32 models here)."""
    expected_t = torch.as_tensor(expected, dtype=dtype if dtype is not None else None)
    if not expected_t.is_floating_point():
        expected_t = expected_t.to(dtype or torch.float32)
    if not isinstance(actual, torch.Tensor):
        actual = torch.as_tensor(np.asarray(actual), dtype=expected_t.dtype)
    actual_t = actual.to(expected_t.dtype)
    atol = tolerance(expected_t, terms, dtype)
    torch.testing.assert_close(actual_t, expected_t, rtol=0.0, atol=atol, msg=msg)


def differs(actual, expected, *, terms: int) -> bool:
    """Whether ``actual`` differs from ``expected`` by more than rounding explains (beyond the tolerance,
    itself SLACK x the expected rounding), e.g. with and without a mask that should matter."""
    expected_t = torch.as_tensor(expected).float()
    diff = (torch.as_tensor(actual).float() - expected_t).abs().max().item()
    return diff > tolerance(expected_t, terms)


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
