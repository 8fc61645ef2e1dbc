"""The decoder on its own: packed documents, positions, KV cache, bad ids."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, differs, model_terms, tiny_backbone

from smoltolk.errors import InputError
from smoltolk.model.cache import Cache, document_positions
from smoltolk.model.llama import LlamaLM, init_weights


def _lm(seed=0, **kw) -> LlamaLM:
    torch.manual_seed(seed)
    lm = LlamaLM(tiny_backbone(**kw))
    init_weights(lm, 0.2)
    return lm.eval()


def test_document_positions_restart_and_continue():
    doc = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert document_positions(doc).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]
    cont = document_positions(torch.tensor([[2, 2, 3]]), prev_doc=torch.tensor([2]), prev_pos=torch.tensor([4]))
    assert cont.tolist() == [[5, 6, 0]]


def test_packed_documents_equal_separate_runs():
    lm = _lm()
    a, b = torch.randint(0, 48, (1, 7)), torch.randint(0, 48, (1, 9))
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        out = lm(packed, doc_ids=doc).text_logits
        sep = torch.cat([lm(a).text_logits, lm(b).text_logits], 1)
        unmasked = lm(packed).text_logits
    assert_close(out, sep, terms=model_terms(lm, 16))
    assert differs(unmasked[:, 7:], sep[:, 7:], terms=model_terms(lm, 16))  # without doc ids the documents do mix


def test_cached_decoding_with_documents_equals_full_forward():
    lm = _lm(tie_word_embeddings=True)
    ids = torch.randint(0, 48, (2, 20))
    doc = torch.tensor([[0] * 8 + [1] * 12, [3] * 3 + [4] * 17])
    with torch.no_grad():
        full = lm(ids, doc_ids=doc).text_logits
        cache, parts = Cache(), []
        for s, e in [(0, 5), (5, 8), (8, 9), (9, 16), (16, 20)]:
            parts.append(lm(ids[:, s:e], doc_ids=doc[:, s:e], cache=cache).text_logits)
    assert_close(torch.cat(parts, 1), full, terms=model_terms(lm, 20))
    assert cache.stacks["backbone"].length == 20


def test_cache_grows_past_its_first_capacity():
    lm = _lm()
    ids = torch.randint(0, 48, (1, 150))
    with torch.no_grad():
        full = lm(ids).text_logits
        cache = Cache()
        parts = [lm(ids[:, :3], cache=cache).text_logits]
        parts += [lm(ids[:, t:t + 1], cache=cache).text_logits for t in range(3, 150)]
    assert_close(torch.cat(parts, 1), full, terms=model_terms(lm, 150))


def test_future_tokens_never_change_the_past():
    lm = _lm()
    ids = torch.randint(0, 48, (2, 16))
    changed = ids.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 48
    with torch.no_grad():
        oa, ob = lm(ids, return_hidden_states=True), lm(changed, return_hidden_states=True)
    a, b, ha, hb = oa.text_logits, ob.text_logits, oa.hidden_states, ob.hidden_states
    assert len(ha) == len(lm.layers) + 1  # the embeddings, then each layer's output
    assert torch.equal(a[:, :9], b[:, :9])
    assert all(torch.equal(x[:, :9], y[:, :9]) for x, y in zip(ha, hb, strict=True))
    assert not torch.equal(a[:, 9:], b[:, 9:])


def test_out_of_range_ids_are_named():
    lm = _lm()
    ids = torch.zeros(1, 5, dtype=torch.long)
    ids[0, 3] = 48
    with pytest.raises(InputError, match=r"id 48 at position \(0, 3\) is outside \[0, 48\)"):
        lm(ids)


def test_a_reappearing_document_id_is_still_a_new_document():
    lm = _lm()
    ids = torch.randint(0, 48, (1, 12))
    with torch.no_grad():
        reused = lm(ids, doc_ids=torch.tensor([[0] * 4 + [1] * 4 + [0] * 4])).text_logits
        third = lm(ids[:, 8:]).text_logits
    assert_close(reused[:, 8:], third, terms=model_terms(lm, 12))


def test_a_cached_call_without_doc_ids_continues_the_current_document():
    lm = _lm()
    prompt = torch.randint(0, 48, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1)
    doc = torch.tensor([[0] * 3 + [1] * 7])  # left padding as its own document
    nxt = torch.randint(0, 48, (1, 1))
    with torch.no_grad():
        ref = lm(torch.cat([prompt, nxt], 1)).text_logits[:, -1]
        cache = Cache()
        lm(padded, doc_ids=doc, cache=cache)
        step = lm(nxt, cache=cache).text_logits[:, -1]
    assert_close(step, ref, terms=model_terms(lm, 10))


@pytest.mark.parametrize("case", ["doc-shape", "pos-shape", "empty", "cache-batch"])
def test_bad_shapes_are_named(case):
    lm = _lm()
    ids = torch.randint(0, 48, (2, 5))
    if case == "doc-shape":
        call, match = lambda: lm(ids, doc_ids=torch.zeros(5, dtype=torch.long)), r"doc_ids: expected shape \(2, 5\)"
    elif case == "pos-shape":
        call, match = lambda: lm(ids, position_ids=torch.arange(5)), r"position_ids: expected shape \(2, 5\)"
    elif case == "empty":
        call, match = lambda: lm(ids[:, :0]), "empty sequence"
    else:
        cache = Cache()
        lm(ids, cache=cache)
        call, match = lambda: lm(ids[:1, :1], cache=cache), "cache holds a batch of 2 sequences, this call has 1"
    with pytest.raises(InputError, match=match):
        call()


def test_rope_base_change_is_exported(tmp_path):
    from smoltolk.model.hf import load_hf_backbone, save_hf_backbone

    lm = _lm()
    lm.set_rope_theta(100000.0)
    ids = torch.randint(0, 48, (1, 9))
    out = save_hf_backbone(lm, tmp_path / "export")
    with torch.no_grad():
        assert_close(load_hf_backbone(out)(ids).text_logits, lm(ids).text_logits, terms=model_terms(lm, 9))


def test_forward_gives_the_text_speech_models_output_type():
    """One return type for both model types: logits, head inputs, hidden states and the loss in an LMOutput."""
    import torch.nn.functional as F

    from smoltolk.model.tslm import shift_targets

    lm = _lm()
    ids = torch.randint(0, 48, (2, 9))
    with torch.no_grad():
        full = lm(ids, return_head_inputs=True)
        last = lm(ids, logits="last")
        trained = lm(**shift_targets(ids, torch.zeros_like(ids, dtype=torch.bool)))
    assert full.text_logits.shape == (2, 9, 48) and full.speech_logits is None
    assert_close(last.text_logits, full.text_logits[:, -1:], terms=model_terms(lm, 9))
    assert torch.equal(lm.lm_head(full.text_head_input), full.text_logits)
    assert trained.text_logits is None  # "auto" with labels: the loss only
    expected = F.cross_entropy(full.text_logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert_close(trained.loss, expected, terms=model_terms(lm, 9))
    assert int(trained.num_text) == 16
    with pytest.raises(InputError, match="logits: expected 'auto', 'all', 'last' or 'none', got 'first'"):
        lm(ids, logits="first")
