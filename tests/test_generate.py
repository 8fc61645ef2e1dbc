"""Generation: cached == full recomputation, padded batches, sampling, stops, PAD, streaming,
modality switching, the CLI and the vocoder interface."""

from __future__ import annotations

import json
import warnings
import wave

import numpy as np
import pytest
import torch
from conftest import NUM_UNITS, TEXT_VOCAB, assert_close, model_terms, tiny_backbone, tiny_model

from smoltolk.cli import main
from smoltolk.errors import CheckpointError, ConfigError, InputError
from smoltolk.generate import (
    GenerationConfig,
    Speech,
    Text,
    encode_prompt,
    generate,
    generate_batch,
    render,
    sample_logits,
    stream,
)
from smoltolk.model.cache import Cache
from smoltolk.model.llama import DecoderLayer, LlamaLM, init_weights
from smoltolk.model.tslm import TextSpeechLM
from smoltolk.vocoder import ModuleVocoder, UnitVocoder, load_vocoder, write_wav

EOS = NUM_UNITS  # speech EOS
PAD = NUM_UNITS + 1

# init_std 0.4: a random tiny model whose greedy continuations vary (at 0.02 they repeat one token,
# which would let a broken cache pass)
PROMPTS = {
    "text": [Text((5, 17, 3, 29, 8))],
    "speech": [[4, 9, 9, 13, 2, 0, 7]],
    "mixed-text": [[3, 3, 8], Text((12, 40, 7))],
    "mixed-speech": [Text((1, 2)), [11, 6, 6, 19]],
}
DIRECTIONS = [("text", "text"), ("speech", "speech"), ("text", "speech"), ("speech", "text"),
              ("mixed-text", "speech"), ("mixed-speech", "text")]


def _model(variant: str = "smoltolk", **kw) -> TextSpeechLM:
    return tiny_model(variant, seed=1, init_std=0.4, **kw)


def _greedy(**kw) -> dict:
    return dict(temperature=0.0, stop_at_eos=False, **kw)


def _add_logit(head: torch.nn.Module, index: int, value: float):
    """Add ``value`` to one output logit of ``head`` (a forward hook); returns the hook handle."""
    return head.register_forward_hook(lambda m, i, out: out.index_add(-1, torch.tensor([index]),
                                                                     torch.full((*out.shape[:-1], 1), float(value))))


# ----------------------------------------------------------------------------- cached == full
@pytest.mark.parametrize("variant", ["smoltolk", "baseline"])
@pytest.mark.parametrize("source,to", DIRECTIONS)
def test_cached_greedy_equals_full_recomputation(variant, source, to):
    model = _model(variant)
    prompt = PROMPTS[source]
    cached = generate(model, prompt, to=to, max_new_tokens=20, **_greedy())
    full = generate(model, prompt, to=to, max_new_tokens=20, use_cache=False, **_greedy())
    assert cached.ids == full.ids and len(cached.ids) == 20
    assert all(s == (to == "speech") for s in cached.is_speech)
    assert len(set(cached.ids)) > 3  # a varied continuation, so a broken cache would show
    sampled = dict(to=to, max_new_tokens=20, seed=5, stop_at_eos=False)
    assert generate(model, prompt, **sampled).ids == generate(model, prompt, use_cache=False, **sampled).ids


@pytest.mark.parametrize("variant", ["smoltolk", "baseline", "no-input-adapter"])
@pytest.mark.parametrize("to", ["text", "speech", "either"])
def test_batched_prompts_of_different_lengths_equal_each_prompt_alone(variant, to):
    model = _model(variant)
    prompts = [PROMPTS[k] for k in ("text", "speech", "mixed-text", "mixed-speech")] + [[5]]
    batched = generate_batch(model, prompts, to=to, max_new_tokens=16, **_greedy())
    full = generate_batch(model, prompts, to=to, max_new_tokens=16, use_cache=False, **_greedy())
    for prompt, got, ref in zip(prompts, batched, full, strict=True):
        alone = generate(model, prompt, to=to, max_new_tokens=16, **_greedy())
        assert got.ids == alone.ids == ref.ids
        assert got.is_speech == alone.is_speech


def test_left_padding_with_a_pad_document_equals_the_unpadded_prompt():
    """The rule batching relies on: pads (doc -1) before the prompt (doc 0) change nothing."""
    model = _model()
    ids = torch.tensor([[5, 17, model.swt_id, 4, 9, 9, 13]])
    is_speech = torch.tensor([[False, False, False, True, True, True, True]])
    pad = 3
    padded_ids = torch.cat([torch.zeros(1, pad, dtype=torch.long), ids], 1)
    padded_speech = torch.cat([torch.zeros(1, pad, dtype=torch.bool), is_speech], 1)
    doc = torch.tensor([[-1] * pad + [0] * 7])
    with torch.no_grad():
        alone = model(ids, is_speech)
        c1, c2 = Cache(), Cache()
        padded = model(padded_ids, padded_speech, doc_ids=doc, cache=c1)
        model(ids, is_speech, cache=c2)
        step_ids, step_speech = torch.tensor([[3]]), torch.tensor([[True]])
        s1 = model(step_ids, step_speech, doc_ids=torch.zeros(1, 1, dtype=torch.long), cache=c1)
        s2 = model(step_ids, step_speech, cache=c2)
    terms = model_terms(model, 11)
    assert_close(padded.speech_logits[:, pad:], alone.speech_logits, terms=terms)
    assert_close(padded.text_logits[:, pad:], alone.text_logits, terms=terms)
    assert_close(s1.speech_logits, s2.speech_logits, terms=terms)
    assert_close(s1.text_logits, s2.text_logits, terms=terms)


def test_each_new_token_costs_one_position_in_every_stack():
    model = _model()
    seen: dict[str, list[int]] = {"backbone": [], "input_adapter": [], "output_adapter": []}
    for name, stack in (("backbone", model.backbone.layers), ("input_adapter", model.input_adapter),
                        ("output_adapter", model.output_adapter)):
        assert isinstance(stack[0], DecoderLayer)
        stack[0].register_forward_pre_hook(lambda m, args, name=name: seen[name].append(args[0].shape[1]))
    generate(model, PROMPTS["mixed-speech"], to="speech", max_new_tokens=6, **_greedy())
    prompt_len = len(encode_prompt(model, PROMPTS["mixed-speech"], "speech")[0])
    for name, lengths in seen.items():
        assert lengths == [prompt_len] + [1] * 5, name


# ----------------------------------------------------------------------------- sampling
def test_seeded_sampling_is_reproducible_and_the_seed_matters():
    model = _model()
    prompts = [PROMPTS["text"], PROMPTS["speech"]]
    a = generate_batch(model, prompts, to="either", max_new_tokens=24, seed=7, top_p=0.9, stop_at_eos=False)
    b = generate_batch(model, prompts, to="either", max_new_tokens=24, seed=7, top_p=0.9, stop_at_eos=False)
    c = generate_batch(model, prompts, to="either", max_new_tokens=24, seed=8, top_p=0.9, stop_at_eos=False)
    assert [g.ids for g in a] == [g.ids for g in b]
    assert [g.ids for g in a] != [g.ids for g in c]
    greedy = generate_batch(model, prompts, to="either", max_new_tokens=24, **_greedy())
    assert [g.ids for g in a] != [g.ids for g in greedy]


@pytest.mark.parametrize("to", ["text", "speech"])
def test_top_k_1_equals_greedy(to):
    model = _model()
    greedy = generate(model, PROMPTS["mixed-text"], to=to, max_new_tokens=20, **_greedy())
    top1 = generate(model, PROMPTS["mixed-text"], to=to, max_new_tokens=20, temperature=1.5, top_k=1, seed=3,
                    stop_at_eos=False)
    assert top1.ids == greedy.ids


def test_sample_logits_keeps_only_the_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    assert set(sample_logits(logits, top_k=2, generator=g).tolist()) == {0, 1}
    # nucleus 0.7: {0.5, 0.3} reaches it; 0.85 needs the third token too; the top token always stays
    assert set(sample_logits(logits, top_p=0.7, generator=g).tolist()) == {0, 1}
    assert set(sample_logits(logits, top_p=0.85, generator=g).tolist()) == {0, 1, 2}
    assert set(sample_logits(logits, top_p=0.01, generator=g).tolist()) == {0}
    freq = torch.bincount(sample_logits(logits, generator=g), minlength=4) / 4000
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / 4000).sqrt())  # within 5 binomial standard deviations
    masked = logits.clone()
    masked[:, 0] = float("-inf")
    assert 0 not in sample_logits(masked, temperature=3.0, generator=g).tolist()
    assert sample_logits(masked, temperature=0).unique().tolist() == [1]


def test_bad_generation_settings_are_named():
    for bad in (dict(to="audio"), dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(max_new_tokens=-1)):
        with pytest.raises(ConfigError, match="generation\\."):
            GenerationConfig(**bad)


# ----------------------------------------------------------------------------- stops and PAD
def test_speech_eos_stops_a_row_and_max_new_tokens_stops_the_others():
    model = _model()
    prompts = [PROMPTS["speech"], PROMPTS["text"]]
    # force the speech EOS: row 0 (speech) stops after one token; row 1 (text) runs to the limit
    handle = _add_logit(model.speech_head, EOS, 1e4)
    out = generate_batch(model, prompts, to="either", max_new_tokens=9, seed=0)
    handle.remove()
    assert out[0].ids == [EOS] and out[0].kinds == ["eos"] and out[0].finish_reason == "eos"
    assert len(out[1].ids) == 9 and out[1].finish_reason == "length" and not any(out[1].is_speech)
    # without the forced EOS the speech row runs to the limit too (stop_at_eos=False)
    free = generate(model, PROMPTS["speech"], to="speech", max_new_tokens=11, stop_at_eos=False, temperature=0)
    assert len(free.ids) == 11 and free.finish_reason == "length"


def test_text_eos_stops_text_generation():
    model = _model()
    model.config.backbone.eos_token_id = 2
    handle = _add_logit(model.backbone.lm_head, 2, 1e4)
    out = generate(model, PROMPTS["text"], to="text", max_new_tokens=10, temperature=0)
    assert out.ids == [2] and out.finish_reason == "eos"
    out = generate(model, PROMPTS["text"], to="text", max_new_tokens=10, temperature=0, stop_at_eos=False)
    assert out.ids == [2] * 10 and out.finish_reason == "length"
    handle.remove()
    model.config.backbone.eos_token_id = None
    assert len(generate(model, PROMPTS["text"], to="text", max_new_tokens=10, temperature=0).ids) == 10


@pytest.mark.parametrize("temperature", [0.0, 1.0, 5.0])
def test_the_speech_head_never_emits_pad(temperature):
    model = _model()
    ids = torch.tensor([[4, 9, 9]])
    handle = _add_logit(model.speech_head, PAD, 1e3)
    with torch.no_grad():
        assert model(ids, torch.ones_like(ids, dtype=torch.bool)).speech_logits[0, -1].argmax() == PAD
    out = generate_batch(model, [PROMPTS["speech"], PROMPTS["text"]], to="speech", max_new_tokens=40,
                         temperature=temperature, seed=1, stop_at_eos=False)
    handle.remove()
    for g in out:
        assert PAD not in g.ids and len(g.ids) == 40 and all(g.is_speech)


def test_no_switch_without_a_trained_switch():
    """predict_switch off (the paper): SWT is never sampled, even when its logit dominates."""
    model = _model()
    handle = _add_logit(model.backbone.lm_head, model.swt_id, 1e4)
    out = generate(model, PROMPTS["text"], to="either", max_new_tokens=8, seed=0)
    handle.remove()
    assert model.swt_id not in out.ids and out.kinds == ["token"] * 8


# ----------------------------------------------------------------------------- streaming and prompts
def test_stream_yields_tokens_as_produced_without_leaking_inference_mode():
    model = _model()
    calls = []
    model.backbone.layers[0].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[1]))
    it = stream(model, [PROMPTS["text"], PROMPTS["speech"]], to="speech", max_new_tokens=5, **_greedy())
    assert calls == []  # nothing runs before the first token is asked for
    first = [next(it), next(it)]
    assert len(calls) == 1 and [t.row for t in first] == [0, 1] and all(t.index == 0 for t in first)
    assert not torch.is_inference_mode_enabled()
    rest = list(it)
    assert len(calls) == 5 and len(rest) == 8
    batch = generate_batch(model, [PROMPTS["text"], PROMPTS["speech"]], to="speech", max_new_tokens=5, **_greedy())
    assert [t.id for t in first + rest if t.row == 1] == batch[1].ids


def test_prompt_encoding_joins_modalities_with_swt(tokenizer):
    model = _model()
    swt = model.swt_id
    ids, speech = encode_prompt(model, ["the cat", [3, 4], Text((7,)), Speech((1, EOS))], "text", tokenizer)
    n = len(tokenizer.encode("the cat", add_special_tokens=False).ids)
    assert ids[n:] == [swt, 3, 4, swt, 7, swt, 1, EOS, swt]
    assert speech[n:] == [False, True, True, False, False, False, True, True, False]
    assert encode_prompt(model, [3, 4], "speech") == ([3, 4], [True, True])  # no SWT: already speech
    assert encode_prompt(model, torch.tensor([3, 4]), "either") == ([3, 4], [True, True])
    assert generate(model, "the cat", tokenizer=tokenizer, to="speech", max_new_tokens=3, seed=0).is_speech \
        == [True] * 3


@pytest.mark.parametrize("prompt,match", [
    ("a string", "needs a tokenizer"),
    ([[3, PAD]], "unit 21 is outside"),
    ([Text((TEXT_VOCAB,))], "text id 48 is outside"),  # SWT is not a prompt token
    ([[]], "empty"),
    ([{"x": 1}], "expected a string, Text, Speech"),
])
def test_bad_prompts_give_one_clear_error(prompt, match):
    with pytest.raises(InputError, match=match):
        generate(_model(), prompt, to="text", max_new_tokens=2)


def test_a_bare_backbone_generates_text_and_refuses_speech():
    torch.manual_seed(0)
    lm = LlamaLM(tiny_backbone()).eval()
    init_weights(lm, 0.3)
    prompts = [Text((1, 2, 3, 4, 5)), Text((9, 8))]
    cached = generate_batch(lm, prompts, max_new_tokens=12, **_greedy())
    full = generate_batch(lm, prompts, max_new_tokens=12, use_cache=False, **_greedy())
    assert [g.ids for g in cached] == [g.ids for g in full]
    assert cached[1].ids == generate(lm, prompts[1], max_new_tokens=12, **_greedy()).ids
    with pytest.raises(InputError, match="text-only"):
        generate(lm, [3, 4], max_new_tokens=2)


def test_backbone_greedy_generation_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from smoltolk.model.hf import save_hf_backbone

    torch.manual_seed(0)
    lm = LlamaLM(tiny_backbone(vocab_size=96)).eval()
    init_weights(lm, 0.3)
    save_hf_backbone(lm, tmp_path / "hf")
    ref = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    prompt = [3, 14, 15, 92, 65, 35]
    ours = generate(lm, Text(tuple(prompt)), max_new_tokens=24, **_greedy())
    with torch.no_grad():
        theirs = ref.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                              pad_token_id=0)
    assert ours.ids == theirs[0, len(prompt):].tolist()


# ----------------------------------------------------------------------------- render, CLI, vocoder
@pytest.fixture
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran to the cat"] * 20,
                            trainers.BpeTrainer(vocab_size=40, special_tokens=["<unk>"]))
    assert tok.get_vocab_size() <= TEXT_VOCAB
    return tok


def test_render_text_units_and_switching_outputs(tokenizer):
    from smoltolk.generate import Generation

    ids = tokenizer.encode("the cat", add_special_tokens=False).ids
    text = Generation(ids=ids + [2], is_speech=[False] * (len(ids) + 1), kinds=["token"] * len(ids) + ["eos"])
    assert render(text, tokenizer) == "the cat"
    assert render(Generation(ids=[3, 4, EOS], is_speech=[True] * 3, kinds=["token", "token", "eos"])) == "[3, 4]"
    assert render(Generation(), to="speech") == "[]"
    mixed = Generation(ids=[3, TEXT_VOCAB] + ids, is_speech=[True] + [False] * (len(ids) + 1),
                       kinds=["token", "switch"] + ["token"] * len(ids))
    assert json.loads(render(mixed, tokenizer)) == [{"units": [3]}, {"text": "the cat"}]
    with pytest.raises(InputError, match="tokenizer"):
        render(text)


def _stand_in_vocoder(path, hop: int = 80, script: bool = True):
    """A tiny unit 'vocoder' (a tone per unit) saved as TorchScript or a torch.export program."""

    class Tones(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sample_rate = 8000
            self.hop = hop
            self.freqs = torch.nn.Parameter(torch.linspace(200.0, 2000.0, NUM_UNITS))

        def forward(self, units: torch.Tensor) -> torch.Tensor:
            t = torch.arange(self.hop, dtype=torch.float32) / 8000.0
            return 0.5 * torch.sin(2 * torch.pi * self.freqs[units][:, None] * t[None, :]).flatten()

    if script:
        with warnings.catch_warnings():  # TorchScript's deprecation notice: a DeprecationWarning or, from 2.14, a
            warnings.simplefilter("ignore", DeprecationWarning)  # FutureWarning; older builds say nothing
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(Tones()).save(str(path))
    else:
        n = torch.export.Dim("n", min=1, max=4096)
        torch.export.save(torch.export.export(Tones(), (torch.tensor([1, 2]),), dynamic_shapes=({0: n},)), str(path))
    return path


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_vocoder_interface_with_a_stand_in(tmp_path, fmt):
    path = _stand_in_vocoder(tmp_path / ("voc.pt" if fmt == "torchscript" else "voc.pt2"), script=fmt == "torchscript")
    voc = load_vocoder(path, sample_rate=None if fmt == "torchscript" else 8000)
    assert isinstance(voc, UnitVocoder)
    wav, sr = voc.synthesize([0, 5, 19])
    assert sr == 8000 and wav.shape == (240,) and np.abs(wav).max() <= 0.5 + 1e-6
    out = write_wav(tmp_path / "a" / "out.wav", wav, sr)
    with wave.open(str(out)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth(), f.getnframes()) == (8000, 1, 2, 240)
        back = np.frombuffer(f.readframes(240), dtype="<i2") / 32767
    assert np.abs(back - wav).max() <= 0.5 / 32767 + np.finfo(np.float32).eps  # 16-bit PCM: nearest of 32767 steps
    if fmt == "export":
        with pytest.raises(CheckpointError, match="sample rate"):
            load_vocoder(path)


def test_vocoder_errors_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_vocoder(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.pt: cannot load"):
        load_vocoder(tmp_path / "junk.pt", sample_rate=16000)
    with pytest.raises(CheckpointError, match="expected \\(S,\\)"):
        ModuleVocoder(torch.nn.Unflatten(0, (1, 1, -1)), 16000).synthesize([1, 2])
    with pytest.raises(InputError, match="mono"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 10)), 16000)


@pytest.fixture
def checkpoint(tmp_path, tokenizer):
    tok_file = tmp_path / "tokenizer.json"
    tokenizer.save(str(tok_file))
    _model().save_pretrained(tmp_path / "ckpt", tokenizer_file=tok_file)
    return tmp_path / "ckpt"


def test_save_pretrained_keeps_the_tokenizer(checkpoint):
    from smoltolk.model.hf import load_tokenizer

    before = (checkpoint / "tokenizer.json").read_bytes()
    TextSpeechLM.from_pretrained(checkpoint).save_pretrained(checkpoint)  # re-save without tokenizer_file
    assert (checkpoint / "tokenizer.json").read_bytes() == before
    assert load_tokenizer(checkpoint).decode(load_tokenizer(checkpoint).encode("the cat").ids) == "the cat"
    with pytest.raises(CheckpointError, match="missing"):
        TextSpeechLM.from_pretrained(checkpoint).save_pretrained(checkpoint, tokenizer_file=checkpoint / "no.json")


def test_cli_generate_text_to_speech_and_units_to_text(checkpoint, tmp_path, capsys):
    assert main(["generate", str(checkpoint), "--text", "the cat", "--to", "speech", "--max-new-tokens", "6",
                 "--temperature", "0"]) == 0
    units = json.loads(capsys.readouterr().out)
    model = TextSpeechLM.from_pretrained(checkpoint)
    from smoltolk.model.hf import load_tokenizer

    expected = generate(model, "the cat", tokenizer=load_tokenizer(checkpoint), to="speech", max_new_tokens=6,
                        temperature=0)
    assert units == expected.units and 0 < len(units) <= 6
    (tmp_path / "u.txt").write_text("3 4 5 6")
    assert main(["generate", str(checkpoint), "--units", str(tmp_path / "u.txt"), "--text", "the", "--to", "text",
                 "--max-new-tokens", "5", "--seed", "1", "--out", str(tmp_path / "o.txt")]) == 0
    assert (tmp_path / "o.txt").read_text().endswith("\n")


def test_cli_generate_writes_audio_through_a_vocoder(checkpoint, tmp_path, capsys):
    voc = _stand_in_vocoder(tmp_path / "voc.pt")
    (tmp_path / "u.json").write_text("[1, 2, 3]")
    assert main(["generate", str(checkpoint), "--units", str(tmp_path / "u.json"), "--to", "speech",
                 "--max-new-tokens", "8", "--seed", "0", "--vocoder", str(voc), "--wav", str(tmp_path / "o.wav")]) == 0
    units = json.loads(capsys.readouterr().out)
    with wave.open(str(tmp_path / "o.wav")) as f:
        assert f.getnframes() == 80 * len(units) and f.getframerate() == 8000


def test_cli_generate_reads_world_speech_as_words_and_says_them(checkpoint, tmp_path, capsys):
    import shutil

    from smoltolk.world.decode import WorldDecoder

    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text("{}")
    (tmp_path / "u.json").write_text("[1, 2, 3]")
    argv = ["generate", str(checkpoint), "--units", str(tmp_path / "u.json"), "--to", "speech", "--max-new-tokens",
            "12", "--seed", "0", "--world", str(tmp_path / "world")]
    wav_argv = ["--wav", str(tmp_path / "o.wav")] if shutil.which("espeak-ng") else []
    assert main(argv + wav_argv) == 0
    captured = capsys.readouterr()
    reading = WorldDecoder().read(json.loads(captured.out))
    assert f"speech as words ({reading.edits} phoneme edits from them): {reading.text}" in captured.err
    if wav_argv:
        with wave.open(str(tmp_path / "o.wav")) as f:
            samples = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
            assert f.getframerate() == 16000 and 0.2 * len(reading.words) < len(samples) / 16000
        assert np.abs(samples).max() > 1000  # not silence


def _tone_centroids(features, freqs=(300, 800, 1800, 3500)):
    t = np.arange(16000) / 16000
    return np.stack([features._extract((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)).mean(0)
                     for hz in freqs])


@pytest.mark.parametrize("rate", [25.0, 50.0])
def test_centroid_vocoder_audio_tokenizes_back_to_its_units(rate):
    from smoltolk.data.speech_tokenizer import LogMelFeatures
    from smoltolk.vocoder import CentroidVocoder

    features = LogMelFeatures(frame_rate=rate)
    centroids = _tone_centroids(features)
    units = [0, 1, 2, 3, 2, 0]
    wave_, sr = CentroidVocoder(centroids, features, frames_per_unit=4).synthesize(units + [99])  # 99: no sound
    assert sr == 16000 and abs(len(wave_) - 4 * len(units) * features.hop) <= features.hop
    frames = features._extract(wave_)
    nearest = ((frames[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    expected = np.repeat(units, 4)[:len(nearest)]
    assert (nearest == expected).mean() >= 0.9


def test_cli_generate_writes_log_mel_units_as_audio_without_weights(checkpoint, tmp_path, capsys):
    from smoltolk.data.speech_tokenizer import LogMelFeatures

    centroids = _tone_centroids(LogMelFeatures(frame_rate=25.0), freqs=np.linspace(200, 4000, NUM_UNITS + 1))
    np.save(tmp_path / "bad.npy", centroids)
    argv = ["generate", str(checkpoint), "--units", str(tmp_path / "u.json"), "--to", "speech"]
    (tmp_path / "u.json").write_text("[1, 2, 3]")
    assert main(argv + ["--centroids", str(tmp_path / "bad.npy"), "--wav", str(tmp_path / "x.wav")]) == 2
    assert f"{NUM_UNITS + 1} centroids, but the model has {NUM_UNITS} units" in capsys.readouterr().err
    centroids = centroids[:NUM_UNITS]
    np.save(tmp_path / "c.npy", centroids)  # as many centroids as the tiny model has units
    (tmp_path / "u.json").write_text("[1, 2, 3]")
    assert main(["generate", str(checkpoint), "--units", str(tmp_path / "u.json"), "--to", "speech",
                 "--max-new-tokens", "8", "--seed", "0", "--centroids", str(tmp_path / "c.npy"),
                 "--wav", str(tmp_path / "o.wav")]) == 0
    units = [u for u in json.loads(capsys.readouterr().out) if u < len(centroids)]
    with wave.open(str(tmp_path / "o.wav")) as f:
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
    assert abs(len(samples) - 2 * 640 * len(units)) <= 640 and np.abs(samples).max() > 1000


@pytest.mark.parametrize("argv,match", [
    (["--to", "text"], "give a prompt"),
    (["--units", "nowhere.json", "--to", "speech"], "nowhere.json: missing"),
    (["--text", "x", "--to", "text", "--tokenizer", "none.json"], "none.json: missing"),
    (["--text", "x", "--to", "text", "--wav", "o.wav"], "--wav needs --vocoder"),
    (["--text", "x", "--to", "speech", "--world", "nowhere"], "nowhere: not a mini-world directory"),
    (["--text", "x", "--to", "text", "--top-p", "2"], "--top-p: expected a value > 0 and <= 1"),
])
def test_cli_generate_user_errors_exit_2(checkpoint, capsys, argv, match):
    assert main(["generate", str(checkpoint), *argv]) == 2
    err = capsys.readouterr().err
    assert "smoltolk generate: error:" in err and match in err and "Traceback" not in err


# ----------------------------------------------------------------------------- learned switching
def test_predict_switch_adds_one_speech_row_and_keeps_eos_and_pad():
    from smoltolk.model.config import SpeechConfig

    off, on = _model(), _model(predict_switch=True)
    sp = on.config.speech
    assert SpeechConfig().predict_switch is False  # the paper's setting
    assert (sp.eos_id, sp.pad_id, sp.switch_id) == (NUM_UNITS, NUM_UNITS + 1, NUM_UNITS + 2)
    assert on.speech_vocab_size == NUM_UNITS + 3 == on.speech_embed.weight.shape[0]
    assert on.speech_head.weight is on.speech_embed.weight
    assert off.config.speech.switch_id is None and off.speech_vocab_size == NUM_UNITS + 2
    assert on.text_vocab_size == off.text_vocab_size


def test_predict_switch_scores_swt_in_the_head_of_the_modality_it_ends():
    import torch.nn.functional as F

    from smoltolk.model.tslm import shift_targets

    swt = TEXT_VOCAB
    tokens = torch.tensor([[5, 6, swt, 3, 4, 7, swt, 8, 9, swt, 1, 2, EOS]])
    is_speech = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    batch = shift_targets(tokens, is_speech)
    # inputs 0..11; SWT targets at inputs 1 and 8 (after text) and 5 (after speech)
    for flag, text_pos, speech_pos in [(False, [0, 6, 7], [2, 3, 4, 9, 10, 11]),
                                       (True, [0, 1, 6, 7, 8], [2, 3, 4, 5, 9, 10, 11])]:
        model = _model(predict_switch=flag, entropy_beta=0.0)
        out = model(**batch)
        assert (out.num_text.item(), out.num_speech.item()) == (len(text_pos), len(speech_pos))
        with torch.no_grad():
            full = model(batch["input_ids"], batch["is_speech"])
        labels = batch["labels"][0]
        speech_targets = labels.clone()
        if flag:
            speech_targets[5] = model.config.speech.switch_id
        ce_t = F.cross_entropy(full.text_logits[0, text_pos], labels[text_pos], reduction="sum")
        ce_s = F.cross_entropy(full.speech_logits[0, speech_pos], speech_targets[speech_pos], reduction="sum")
        expected = (ce_t + ce_s) / (len(text_pos) + len(speech_pos))
        assert_close(out.lm_loss.item(), expected.item(), terms=model_terms(model, 12) + 12)


def test_predict_switch_checkpoints_round_trip(tmp_path):
    model = _model(predict_switch=True)
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model"]["speech"]["predict_switch"] is True
    loaded = TextSpeechLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.speech_vocab_size == NUM_UNITS + 3
    for (n, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    meta["model"]["speech"]["predict_switch"] = False
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="speech_embed.weight"):
        TextSpeechLM.from_pretrained(tmp_path / "ckpt")


def test_generation_switches_when_the_switch_logit_dominates():
    model = _model(predict_switch=True)
    switch = model.config.speech.switch_id
    hooks = [_add_logit(model.backbone.lm_head, model.swt_id, 1e4), _add_logit(model.speech_head, switch, 1e4)]
    out = generate(model, PROMPTS["text"], to="either", max_new_tokens=6, **_greedy())
    # switch, then one token in the new modality (never two switches in a row), then switch again
    assert out.kinds == ["switch", "token"] * 3
    assert out.is_speech == [False, True, False, False, False, True]
    assert out.ids[0::2] == [model.swt_id] * 3 and switch not in out.ids
    assert [m for m, _ in out.segments()] == ["speech", "text", "speech"]
    for to in ("text", "speech"):  # an explicit output modality is never left
        fixed = generate(model, PROMPTS["mixed-speech"], to=to, max_new_tokens=6, **_greedy())
        assert fixed.kinds == ["token"] * 6 and all(s == (to == "speech") for s in fixed.is_speech)
    hooks.pop(0).remove()
    hooks.append(_add_logit(model.backbone.lm_head, model.swt_id, -1e4))  # text never switches back
    out = generate(model, PROMPTS["speech"], to="either", max_new_tokens=5, **_greedy())
    assert out.kinds == ["switch"] + ["token"] * 4 and out.is_speech == [False] * 5
    for h in hooks:
        h.remove()


def test_cached_greedy_equals_full_recomputation_with_learned_switching():
    model = _model(predict_switch=True)  # untrained switch rows: this model switches by itself
    prompts = [PROMPTS[k] for k in ("text", "speech", "mixed-text", "mixed-speech")]
    cached = generate_batch(model, prompts, to="either", max_new_tokens=24, **_greedy())
    full = generate_batch(model, prompts, to="either", max_new_tokens=24, use_cache=False, **_greedy())
    switches = {"to speech": 0, "to text": 0}
    for prompt, c, f in zip(prompts, cached, full, strict=True):
        assert c.ids == f.ids and c.kinds == f.kinds
        assert c.ids == generate(model, prompt, to="either", max_new_tokens=24, **_greedy()).ids
        for i, kind in enumerate(c.kinds):
            if kind == "switch" and i + 1 < len(c.kinds):
                switches["to speech" if c.is_speech[i + 1] else "to text"] += 1
    assert min(switches.values()) > 0


def test_a_one_document_prefill_uses_the_causal_kernel_and_decodes_the_same(monkeypatch):
    import torch.nn.functional as F

    from smoltolk.model.cache import Cache

    model = _model("baseline")  # no input adapter: the backbone's segments are the documents
    ids = torch.randint(0, 20, (1, 12))
    is_speech = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        full = model(ids, is_speech).speech_logits
    masks = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: masks.append(kw.get("attn_mask")) or real(*a, **kw))
    cache = Cache()
    with torch.no_grad():
        first = model(ids[:, :8], is_speech[:, :8], cache=cache).speech_logits
        rest = model(ids[:, 8:], is_speech[:, 8:], cache=cache).speech_logits
    layers = len(model.backbone.layers)
    assert all(m is None for m in masks[:layers]) and all(m is not None for m in masks[layers:])
    assert_close(torch.cat([first, rest], 1), full, terms=model_terms(model, 12))
