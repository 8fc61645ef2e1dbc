"""The text-speech model: causality, adapter masks, pooling, loss, caches, ablations, bad ids."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    NUM_UNITS,
    TEXT_VOCAB,
    VARIANTS,
    assert_close,
    differs,
    mixed_batch,
    model_terms,
    tiny_backbone,
    tiny_model,
)

from smoltolk.errors import InputError
from smoltolk.model.cache import Cache
from smoltolk.model.tslm import IGNORE, shift_targets


def _outputs(model, ids, is_speech, **kw):
    with torch.no_grad():
        out = model(ids, is_speech, return_layer_weights=True, **kw)
    tensors = {"text": out.text_logits, "speech": out.speech_logits}
    if out.layer_weights is not None:
        tensors["w"] = out.layer_weights
    return tensors


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_future_tokens_never_change_past_outputs(variant):
    model = tiny_model(variant)
    ids, is_speech = mixed_batch(2, 24)
    base = _outputs(model, ids, is_speech)
    for t in (5, 11, 17):
        for flip_modality in (False, True):
            ids2, sp2 = ids.clone(), is_speech.clone()
            if flip_modality:
                sp2[:, t] = ~sp2[:, t]
                ids2[:, t] = 3
            else:
                ids2[:, t] = torch.where(sp2[:, t], (ids2[:, t] + 1) % NUM_UNITS, (ids2[:, t] + 1) % TEXT_VOCAB)
            new = _outputs(model, ids2, sp2)
            for name in base:
                if flip_modality and len(model.input_adapter):  # one more or fewer speech position: the input
                    # adapter's gathered rows change shape, so kernels may round the same sums differently
                    assert_close(new[name][:, :t], base[name][:, :t], terms=model_terms(model, 24), msg=name)
                else:
                    assert torch.equal(base[name][:, :t], new[name][:, :t]), (variant, name, t)
            assert differs(new["speech"][:, t:], base["speech"][:, t:], terms=model_terms(model, 24))


def test_input_adapter_sees_only_earlier_positions_of_its_own_speech_run():
    model = tiny_model("smoltolk")
    captured = []  # what the backbone receives: the input adapter's output at speech positions
    model.backbone.layers[0].register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    #                             runs:  text  | speech A      | text | speech B      | text
    is_speech = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    run = torch.tensor([[-1, -1, 0, 0, 0, 0, -1, -1, 1, 1, 1, -1]])
    ids = torch.where(is_speech, torch.arange(12) % NUM_UNITS, torch.arange(12) + 10)
    with torch.no_grad():
        model(ids, is_speech)
        base = captured.pop()
        for j in range(12):
            ids2 = ids.clone()
            ids2[0, j] = (ids2[0, j] + 7) % (NUM_UNITS if is_speech[0, j] else TEXT_VOCAB)
            model(ids2, is_speech)
            new = captured.pop()
            for i in range(12):
                if not is_speech[0, i]:
                    continue
                changed = not torch.equal(base[0, i], new[0, i])
                should_change = bool(is_speech[0, j]) and run[0, j] == run[0, i] and j <= i
                assert changed == should_change, (i, j)


def test_input_adapter_runs_never_cross_documents():
    model = tiny_model("smoltolk")
    ids = torch.randint(0, NUM_UNITS, (1, 16))
    is_speech = torch.ones(1, 16, dtype=torch.bool)  # one long speech run, split by a document boundary at 9
    doc = torch.tensor([[0] * 9 + [1] * 7])
    with torch.no_grad():
        packed = model(ids, is_speech, doc_ids=doc).speech_logits
        second = model(ids[:, 9:], is_speech[:, 9:]).speech_logits
    assert_close(packed[:, 9:], second, terms=model_terms(model, 16))


def test_text_positions_keep_their_embedding_through_the_input_adapter():
    model = tiny_model("smoltolk")
    captured = []
    model.backbone.layers[0].register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    ids, is_speech = mixed_batch(2, 20)
    with torch.no_grad():
        model(ids, is_speech)
        z = model.embed(ids, is_speech)
    x = captured[0]
    assert torch.equal(x[~is_speech], z[~is_speech])
    assert differs(x[is_speech], z[is_speech], terms=model_terms(model, 20))


@pytest.mark.parametrize("variant", ["smoltolk", "no-input-adapter", "no-residual"])
def test_pooling_weights_are_a_distribution(variant):
    model = tiny_model(variant)
    ids, is_speech = mixed_batch(2, 20)
    with torch.no_grad():
        w = model(ids, is_speech, return_layer_weights=True).layer_weights
    assert w.shape == (2, 20, 3)
    assert torch.all(w >= 0)
    assert_close(w.sum(-1), torch.ones(2, 20), terms=3)


def test_entropy_bonus_on_a_hand_computed_case():
    model = tiny_model("smoltolk", entropy_beta=0.5)
    with torch.no_grad():
        model.layer_selector.weight.zero_()
        model.layer_selector.bias.copy_(torch.log(torch.tensor([1.0, 2.0, 1.0])))  # w = (1/4, 1/2, 1/4)
    ids, is_speech = mixed_batch(2, 21)
    batch = shift_targets(ids, is_speech)
    out = model(**batch, return_layer_weights=True)
    assert_close(out.layer_weights, torch.tensor([0.25, 0.5, 0.25]).expand(2, 20, 3), terms=3)
    expected_h = 1.5 * math.log(2)  # -(2 * 1/4 ln 1/4 + 1/2 ln 1/2)
    assert_close(out.entropy.item(), expected_h, terms=2 * 20 * 3)  # a mean over 40 positions of 3 terms
    assert_close(out.loss.item(), out.lm_loss.item() - 0.5 * expected_h, terms=2 * 20 * 3)


def test_entropy_bonus_is_a_mean_over_speech_targets_only():
    model = tiny_model("smoltolk", entropy_beta=0.5)
    with torch.no_grad():
        model.layer_selector.weight.normal_(0, 1.0)  # weights that vary by position
    ids, is_speech = mixed_batch(2, 21)
    batch = shift_targets(ids, is_speech)
    out = model(**batch, return_layer_weights=True)
    w = out.layer_weights.double()
    h = -(w * w.log()).sum(-1)  # (B, T)
    speech_targets = (batch["labels"] != IGNORE) & batch["labels_is_speech"]
    expected = h[speech_targets].mean().item()
    terms = model_terms(model, 21) + 2 * 20 * 3
    assert_close(out.entropy.item(), expected, terms=terms)
    assert differs(out.entropy.item(), h.mean().item(), terms=terms)  # not the mean over every position
    assert_close(out.loss.item(), out.lm_loss.item() - 0.5 * expected, terms=terms)
    # a batch without speech targets: no bonus, and the selector learns nothing from it
    text = torch.randint(0, TEXT_VOCAB, (2, 21))
    out = model(**shift_targets(text, torch.zeros_like(text, dtype=torch.bool)))
    assert out.entropy.item() == 0.0 and out.loss.item() == out.lm_loss.item()
    out.loss.backward()
    grad = model.layer_selector.weight.grad
    assert grad is None or not grad.any()


@pytest.mark.parametrize("residual, out_layers", [(False, 0), (True, 0), (False, 2), (True, 2)])
@pytest.mark.parametrize("variant", ["smoltolk", "no-dynamic-pooling", "no-layer-pooling"])
def test_speech_path_computes_what_the_paper_says(variant, residual, out_layers):
    """speech logits = head(A_out(pool(c_1..c_L) + z)), with z the embedding *before* the input adapter."""
    model = tiny_model(variant, residual=residual, output_adapter_layers=out_layers)
    ids, is_speech = mixed_batch(1, 10)
    with torch.no_grad():
        out = model(ids, is_speech, return_layer_weights=True)
        z = model.embed(ids, is_speech)
        cos, sin = model.backbone.rotary(torch.arange(10)[None], z.dtype)
        a = z
        for layer in model.input_adapter:
            a = layer(a, cos, sin, _run_mask(is_speech))
        x = torch.where(is_speech[..., None], a, z)
        hs = model.backbone(None, inputs_embeds=x, return_hidden_states=True).hidden_states[1:]
        if variant == "no-layer-pooling":
            c = hs[-1]
        else:
            phi = torch.softmax(model.phi, 0)
            c = sum(phi[i] * h for i, h in enumerate(hs))
            if variant == "smoltolk":
                w = torch.softmax(model.layer_selector(c), -1)
                c = sum(w[..., i:i + 1] * h for i, h in enumerate(hs))
        if residual:
            c = c + z
        for layer in model.output_adapter:
            c = layer(c, cos, sin, None)  # plain causal over the whole sequence
        expected = model.speech_head(c)
    assert_close(out.speech_logits, expected, terms=model_terms(model, ids.shape[1]))


def _run_mask(is_speech):
    """Reference input-adapter mask built with Python loops (the obvious, slow way)."""
    t = is_speech.shape[1]
    m = torch.zeros(1, 1, t, t, dtype=torch.bool)
    for i in range(t):
        m[0, 0, i, i] = True
        if not is_speech[0, i]:
            continue
        j = i - 1
        while j >= 0 and is_speech[0, j]:
            m[0, 0, i, j] = True
            j -= 1
    return m


def test_loss_is_token_weighted_and_skips_switch_pad_and_document_boundaries():
    model = tiny_model("smoltolk")
    model.config.speech.entropy_beta = 0.0
    ids, is_speech = mixed_batch(2, 25)
    swt, pad = model.swt_id, model.config.speech.pad_id
    ids[0, 4], is_speech[0, 4] = swt, False
    ids[1, 6], is_speech[1, 6] = pad, True
    doc = torch.tensor([[0] * 12 + [1] * 13, [0] * 25])
    batch = shift_targets(ids, is_speech, doc)
    assert batch["labels"][0, 11] == IGNORE  # predicting the next document's first token
    out = model(**batch)
    with torch.no_grad():
        full = model(batch["input_ids"], batch["is_speech"], doc_ids=batch["doc_ids"])
    labels, lsp = batch["labels"], batch["labels_is_speech"]
    text_pos = (labels != IGNORE) & ~lsp & (labels != swt)
    speech_pos = (labels != IGNORE) & lsp & (labels != pad)
    ce_t = F.cross_entropy(full.text_logits[text_pos], labels[text_pos], reduction="sum")
    ce_s = F.cross_entropy(full.speech_logits[speech_pos], labels[speech_pos], reduction="sum")
    n_t, n_s = int(text_pos.sum()), int(speech_pos.sum())
    assert out.num_text.item() == n_t and out.num_speech.item() == n_s
    assert n_t + n_s == 2 * 24 - 1 - 2  # one boundary target, one SWT target, one PAD target dropped
    terms = model_terms(model, 25) + 2 * 25  # the forward, then sums over the batch's targets
    assert_close(out.lm_loss.item(), ((ce_t + ce_s) / (n_t + n_s)).item(), terms=terms)
    assert_close(out.text_loss.item(), (ce_t / n_t).item(), terms=terms)
    assert_close(out.speech_loss.item(), (ce_s / n_s).item(), terms=terms)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_decoding_equals_the_full_forward(variant):
    model = tiny_model(variant)
    ids, is_speech = mixed_batch(2, 30, seed=3)
    doc = torch.tensor([[0] * 13 + [1] * 17, [0] * 30])
    full = _outputs(model, ids, is_speech, doc_ids=doc)
    # chunk edges fall inside speech runs, inside text runs, on switches and on the document boundary
    cache, parts = Cache(), []
    edges = [0, 4, 5, 6, 7, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 26, 27, 28, 29, 30]
    for s, e in zip(edges[:-1], edges[1:], strict=True):
        parts.append(_outputs(model, ids[:, s:e], is_speech[:, s:e], doc_ids=doc[:, s:e], cache=cache))
    for name in full:
        assert_close(torch.cat([p[name] for p in parts], 1), full[name], terms=model_terms(model, 30), msg=name)


@pytest.mark.parametrize("variant", ["smoltolk", "baseline"])
def test_a_selected_cache_continues_each_row_as_the_full_forward(variant):
    model = tiny_model(variant)
    ids, is_speech = mixed_batch(3, 26, seed=5)
    cut = 7  # inside a speech run in rows 0 and 2, inside a text run in row 1
    cache = Cache()
    _outputs(model, ids[:2, :cut], is_speech[:2, :cut], cache=cache)
    rows = torch.tensor([1, 0, 0])  # cached row 1 once, row 0 twice (the second with row 2's suffix)
    suffix_ids = torch.cat([ids[1:2, cut:], ids[0:1, cut:], ids[2:3, cut:]])
    suffix_speech = torch.cat([is_speech[1:2, cut:], is_speech[0:1, cut:], is_speech[2:3, cut:]])
    got = _outputs(model, suffix_ids, suffix_speech, cache=cache.select(rows))
    full = _outputs(model, torch.cat([ids[rows, :cut], suffix_ids], 1),
                    torch.cat([is_speech[rows, :cut], suffix_speech], 1))
    for name in full:
        assert_close(got[name], full[name][:, cut:], terms=model_terms(model, 26), msg=name)
    # selecting copies: after the selected rows ran on, the source cache still continues its own rows
    own = _outputs(model, ids[:2, cut:], is_speech[:2, cut:], cache=cache)
    full = _outputs(model, ids[:2], is_speech[:2])
    for name in full:
        assert_close(own[name], full[name][:, cut:], terms=model_terms(model, 26), msg=name)


@pytest.mark.parametrize("variant", ["smoltolk", "baseline"])
def test_a_selected_cache_reserves_room_for_the_next_chunk(variant):
    model = tiny_model(variant)
    ids, is_speech = mixed_batch(2, 26, seed=5)
    cut = 7
    cache = Cache()
    _outputs(model, ids[:, :cut], is_speech[:, :cut], cache=cache)
    rows = torch.tensor([1, 0, 1])
    k = ids.shape[1] - cut
    selected = cache.select(rows, reserve=k)

    def buffers(c):
        return [t for kv in c.stacks.values() for t in (*kv.k, *kv.v, kv.seg)]

    before = buffers(selected)
    assert len(before) > 3 and all(t.shape[0] == 3 for t in before)
    assert {kv.seg.shape[1] for kv in selected.stacks.values()} == {cut + k}  # capacity: length + reserve
    got = _outputs(model, ids[rows, cut:], is_speech[rows, cut:], cache=selected)
    assert [t.data_ptr() for t in buffers(selected)] == [t.data_ptr() for t in before]  # appended in place
    assert selected.length == cut + k
    full = _outputs(model, ids[rows], is_speech[rows])
    for name in full:
        assert_close(got[name], full[name][:, cut:], terms=model_terms(model, 26), msg=name)


@pytest.mark.parametrize("variant", ["smoltolk", "baseline"])
def test_head_inputs_are_what_the_heads_map_to_logits(variant):
    model = tiny_model(variant)
    ids, is_speech = mixed_batch(2, 20, seed=1)
    with torch.no_grad():
        plain = model(ids, is_speech, logits="all")
        out = model(ids, is_speech, logits="none", return_head_inputs=True)
        assert plain.text_head_input is None and plain.speech_head_input is None
        assert out.text_logits is None and out.text_head_input.shape == (2, 20, 32)
        assert torch.equal(model.text_head(out.text_head_input), plain.text_logits)
        assert torch.equal(model.speech_head(out.speech_head_input), plain.speech_logits)
        text = model.backbone(ids.masked_fill(is_speech, 0), logits="all", return_head_inputs=True)
        assert torch.equal(model.backbone.lm_head(text.text_head_input), text.text_logits)


def test_one_token_at_a_time_text_then_speech():
    model = tiny_model("smoltolk")
    is_speech = torch.tensor([[False] * 6 + [True] * 10])
    ids = torch.where(is_speech, torch.arange(16) % NUM_UNITS, torch.arange(16))
    full = _outputs(model, ids, is_speech)
    cache = Cache()
    steps = [_outputs(model, ids[:, t:t + 1], is_speech[:, t:t + 1], cache=cache) for t in range(16)]
    for name in full:
        assert_close(torch.cat([s[name] for s in steps], 1), full[name], terms=model_terms(model, 16), msg=name)


def test_rope_base_override_reaches_backbone_and_adapters():
    model = tiny_model("smoltolk")
    assert model.backbone.rotary.theta == 100000.0
    expected = 1.0 / (100000.0 ** (torch.arange(0, 8, 2).float() / 8))
    assert_close(model.backbone.rotary.inv_freq, expected, terms=4)
    kept = tiny_model("smoltolk", rope_theta=None)
    assert kept.backbone.rotary.theta == 10000.0
    kept.load_state_dict(model.state_dict())
    seen = {}
    for name, m in (("fast", model), ("kept", kept)):
        m.input_adapter[0].register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, o))
    ids = (torch.arange(12) % NUM_UNITS)[None]
    is_speech = torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():  # same weights and inputs, so only the RoPE base can tell the adapters apart
        model(ids, is_speech)
        kept(ids, is_speech)
    terms = model_terms(model, 12)
    assert differs(seen["fast"][0, 1:], seen["kept"][0, 1:], terms=terms)
    assert_close(seen["fast"][0, 0], seen["kept"][0, 0], terms=terms)  # position 0: no rotation either way


def test_a_bf16_backbone_gets_bf16_speech_modules():
    from smoltolk.model.llama import LlamaLM
    from smoltolk.model.tslm import TextSpeechLM

    lm = LlamaLM(tiny_backbone()).to(torch.bfloat16)
    model = TextSpeechLM.from_backbone(lm)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids, is_speech = mixed_batch(1, 8)
    with torch.no_grad():
        assert model(ids, is_speech).speech_logits.dtype == torch.bfloat16


EXPECTED_PARAMS = {  # which parameter groups each variant has
    "smoltolk": {"input_adapter", "output_adapter", "phi", "layer_selector"},
    "baseline": set(),
    "no-dynamic-pooling": {"input_adapter", "output_adapter", "phi"},
    "no-layer-pooling": {"input_adapter", "output_adapter"},
    "no-input-adapter": {"output_adapter", "phi", "layer_selector"},
    "no-output-adapter": {"input_adapter", "phi", "layer_selector"},
    "no-adapters": {"phi", "layer_selector"},
    "no-residual": {"input_adapter", "output_adapter", "phi", "layer_selector"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_switch_removes_exactly_its_parameters(variant):
    model = tiny_model(variant)
    groups = {n.split(".")[0] for n in model.speech_parameters()} - {"speech_embed"}
    assert groups == EXPECTED_PARAMS[variant]
    full = tiny_model("smoltolk")
    layer = sum(p.numel() for p in full.input_adapter[0].parameters())
    removed = (sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in model.parameters()))
    expected = {"smoltolk": 0, "no-residual": 0, "no-input-adapter": 2 * layer, "no-output-adapter": 2 * layer,
                "no-adapters": 4 * layer, "no-layer-pooling": 3 + 3 * 32 + 3, "no-dynamic-pooling": 3 * 32 + 3,
                "baseline": 4 * layer + 3 + 3 * 32 + 3}[variant]
    assert removed == expected


def test_switch_token_and_speech_vocabulary():
    model = tiny_model("smoltolk")
    assert model.swt_id == TEXT_VOCAB and model.text_vocab_size == TEXT_VOCAB + 1
    assert model.speech_vocab_size == NUM_UNITS + 2
    assert model.config.speech.eos_id == NUM_UNITS and model.config.speech.pad_id == NUM_UNITS + 1
    assert model.speech_head.weight is model.speech_embed.weight
    assert model.backbone.lm_head.weight.shape[0] == TEXT_VOCAB + 1
    tied = tiny_model("smoltolk", backbone=tiny_backbone(tie_word_embeddings=True))
    assert tied.backbone.lm_head.weight is tied.backbone.embed_tokens.weight


def test_wrapping_a_backbone_keeps_its_text_behaviour():
    from smoltolk.model.llama import LlamaLM, init_weights
    from smoltolk.model.tslm import TextSpeechLM

    torch.manual_seed(0)
    lm = LlamaLM(tiny_backbone())
    init_weights(lm, 0.2)
    ids = torch.randint(0, TEXT_VOCAB, (1, 10))
    with torch.no_grad():
        before = lm(ids).text_logits
    model = TextSpeechLM.from_backbone(lm, TextSpeechLM.__init__.__globals__["SpeechConfig"](rope_theta=None))
    with torch.no_grad():
        after = model(ids, torch.zeros_like(ids, dtype=torch.bool)).text_logits
    assert_close(after[..., :TEXT_VOCAB], before, terms=model_terms(lm, 10))
    # SWT is never a text target: its column is out of the text softmax, so text log-probs are the backbone's
    assert torch.all(after[..., TEXT_VOCAB] == float("-inf"))
    assert_close(after.log_softmax(-1)[..., :TEXT_VOCAB], before.log_softmax(-1), terms=model_terms(lm, 10))


def test_the_switch_stays_in_the_text_softmax_when_it_is_predicted():
    model = tiny_model("smoltolk", predict_switch=True)
    ids, is_speech = mixed_batch(1, 12)
    with torch.no_grad():
        logits = model(ids, is_speech).text_logits
    assert torch.isfinite(logits[..., model.swt_id]).all()
    assert torch.equal(logits, model.backbone.lm_head(model(ids, is_speech, return_head_inputs=True).text_head_input))


@pytest.mark.parametrize("case", ["text-too-large", "speech-too-large", "negative", "speech-in-text",
                                  "bad-mask", "label-out-of-range", "logits-mode"])
def test_bad_ids_give_one_clear_error(case):
    model = tiny_model("smoltolk")
    ids, is_speech = mixed_batch(1, 12)
    kwargs = {}
    text_pos = int((~is_speech[0]).nonzero()[0])
    speech_pos = int(is_speech[0].nonzero()[0])
    if case == "text-too-large":
        ids[0, text_pos], match = TEXT_VOCAB + 1, rf"text id {TEXT_VOCAB + 1} at position \(0, {text_pos}\)"
    elif case == "speech-too-large":
        ids[0, speech_pos], match = NUM_UNITS + 2, rf"speech positions\): id {NUM_UNITS + 2} at position"
    elif case == "negative":
        ids[0, speech_pos], match = -1, rf"speech positions\): id -1 at position \(0, {speech_pos}\)"
    elif case == "speech-in-text":
        ids[0, text_pos], match = TEXT_VOCAB + 1 + 7, "speech id in a text position"
    elif case == "bad-mask":
        is_speech, match = is_speech.long(), "is_speech: expected a bool tensor"
    elif case == "logits-mode":
        kwargs, match = {"logits": "LAST"}, "logits: expected 'auto', 'all', 'last' or 'none'"
    else:
        batch = shift_targets(ids, is_speech)
        batch["labels"][0, 2] = 10_000
        ids, is_speech = batch.pop("input_ids"), batch.pop("is_speech")
        kwargs, match = batch, "labels"
    with pytest.raises(InputError, match=match):
        model(ids, is_speech, **kwargs)


def _grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("options", [{"loss_chunk": 7}, {"checkpoint_layers": True},
                                     {"checkpoint_layers": True, "loss_chunk": 5}])
@pytest.mark.parametrize("variant", ["smoltolk", "baseline"])
def test_memory_options_keep_the_loss_and_gradients(variant, options):
    model = tiny_model(variant, **({"entropy_beta": 0.1} if variant == "smoltolk" else {})).train()
    ids, is_speech = mixed_batch(2, 33, seed=3)
    batch = shift_targets(ids, is_speech)
    loss, grads = _grads(model, batch)
    model.set_memory_options(**options)
    loss2, grads2 = _grads(model, batch)
    terms = model_terms(model, 33) + 2 * 32
    assert_close(loss2, loss, terms=terms)
    assert grads2.keys() == grads.keys()
    for name in grads:
        assert_close(grads2[name], grads[name], terms=terms, msg=name)


def test_chunked_head_loss_never_holds_all_logits_and_text_lm_agrees():
    from smoltolk.model.llama import LlamaLM
    from smoltolk.model.outputs import head_cross_entropy_sum

    shapes = []
    head = torch.nn.Linear(8, 50, bias=False)
    head.register_forward_hook(lambda m, i, o: shapes.append(o.shape[0]))
    h, t = torch.randn(23, 8, requires_grad=True), torch.randint(0, 50, (23,))
    whole = head_cross_entropy_sum(head, h, t)
    pieces = head_cross_entropy_sum(head, h, t, chunk=10)
    assert shapes == [23, 10, 10, 3]
    pieces.backward()
    assert sorted(shapes[4:]) == [3, 10, 10]  # the backward pass made each piece's logits again (last first)
    assert_close(pieces.item(), whole.item(), terms=23 * 50)
    lm = LlamaLM(tiny_backbone()).train()  # the text LM's loss goes through the same function
    ids = torch.randint(0, TEXT_VOCAB, (2, 17))
    batch = shift_targets(ids, torch.zeros_like(ids, dtype=torch.bool))
    loss, grads = _grads(lm, batch)
    lm.set_memory_options(checkpoint_layers=True, loss_chunk=4)
    loss2, grads2 = _grads(lm, batch)
    assert_close(loss2, loss, terms=model_terms(lm, 17))
    for name in grads:
        assert_close(grads2[name], grads[name], terms=model_terms(lm, 17), msg=name)


@pytest.mark.parametrize("case", ["mixed", "starts-with-speech", "ends-with-speech", "packed", "text-only"])
def test_input_adapter_over_speech_positions_only_equals_running_it_everywhere(case):
    model = tiny_model("smoltolk").train()
    ids, is_speech = mixed_batch(3, 30, seed=5)
    doc = None
    if case == "starts-with-speech":
        is_speech[:, :4] = True
    elif case == "ends-with-speech":
        is_speech[:, -5:] = True
    elif case == "packed":
        doc = torch.tensor([[0] * 11 + [1] * 19, [0] * 30, [0] * 5 + [1] * 5 + [2] * 20])
    elif case == "text-only":
        is_speech[:] = False
    ids = torch.where(is_speech, ids % NUM_UNITS, ids)
    batch = shift_targets(ids, is_speech, doc)
    terms = model_terms(model, 30)
    loss, grads = _grads(model, batch)
    with torch.no_grad():
        fast = model(batch["input_ids"], batch["is_speech"], doc_ids=batch.get("doc_ids"))
    model.adapter_speech_only = False  # the reference: the adapter over every position, masked
    loss_ref, grads_ref = _grads(model, batch)
    with torch.no_grad():
        ref = model(batch["input_ids"], batch["is_speech"], doc_ids=batch.get("doc_ids"))
    assert_close(fast.speech_logits, ref.speech_logits, terms=terms)
    assert_close(fast.text_logits, ref.text_logits, terms=terms)
    assert_close(loss, loss_ref, terms=terms)
    for name in grads_ref:
        assert_close(grads[name], grads_ref[name], terms=terms, msg=name)


@pytest.mark.parametrize("case", ["one-text-row", "packed", "all-text", "all-speech-rows"])
def test_output_adapter_over_speech_rows_only_equals_running_it_on_every_row(case):
    model = tiny_model("smoltolk").train()
    with torch.no_grad():  # a non-zero entropy bonus, so that its gradient is compared too
        model.config.speech.entropy_beta = 0.05
    ids, is_speech = mixed_batch(4, 24, seed=9)
    doc = None
    if case in ("one-text-row", "packed"):
        is_speech[1] = False  # a text row: no speech target, the output adapter skips it
    if case == "packed":
        doc = torch.tensor([[0] * 10 + [1] * 14, [0] * 24, [0] * 6 + [1] * 18, [0] * 24])
    elif case == "all-text":
        is_speech[:] = False
    elif case == "all-speech-rows":
        is_speech[:, 3:9] = True
    ids = torch.where(is_speech, ids % NUM_UNITS, ids)
    batch = shift_targets(ids, is_speech, doc)
    rows = model._speech_rows(batch["labels"], batch["labels_is_speech"], batch["is_speech"]).tolist()
    assert rows == {"one-text-row": [0, 2, 3], "packed": [0, 2, 3], "all-text": [0],
                    "all-speech-rows": [0, 1, 2, 3]}[case]
    loss, grads = _grads(model, batch)
    model.speech_rows_only = False  # the reference: the output adapter over every row
    loss_ref, grads_ref = _grads(model, batch)
    terms = model_terms(model, 24)
    assert_close(loss, loss_ref, terms=terms)
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert_close(grads[name], grads_ref[name], terms=terms, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [None, 3])
def test_cross_entropy_sum_equals_autograd_cross_entropy_with_an_inf_column(dtype, masked):
    from smoltolk.model.outputs import cross_entropy_sum

    torch.manual_seed(0)
    w = torch.randn(40, 8)
    h = torch.randn(11, 8).to(dtype)
    t = torch.randint(0, 40, (11,))
    t[t == 3] = 4  # the masked column is never a target (as SWT)
    h1, w1, h2, w2 = (x.clone().requires_grad_() for x in (h, w.to(dtype), h, w.to(dtype)))
    ours = cross_entropy_sum(h1 @ w1.T, t, masked)
    logits = h2 @ w2.T
    if masked is not None:
        logits = logits.index_fill(-1, torch.tensor([masked]), float("-inf"))
    ref = torch.nn.functional.cross_entropy(logits.float(), t, reduction="sum")
    assert ours.dtype == torch.float32
    tol = {} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(ours, ref, **tol)
    (2 * ours).backward()
    (2 * ref).backward()
    for a, b in ((h1, h2), (w1, w2)):
        assert a.grad.dtype == b.grad.dtype == dtype
        torch.testing.assert_close(a.grad, b.grad, **tol)
    if masked is not None:  # the masked row of the head gets no gradient at all
        assert torch.equal(w1.grad[masked], torch.zeros(8, dtype=dtype))
    with pytest.raises(InputError, match=r"expected logits \(N, V\) and targets \(N,\)"):
        cross_entropy_sum(torch.randn(2, 3, 4), t)
