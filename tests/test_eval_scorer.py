"""The likelihood scorer against log-probs computed by hand from a tiny model's logits."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import NUM_UNITS, TEXT_VOCAB, tiny_model

from smoltolk.errors import CheckpointError, InputError
from smoltolk.eval.scorer import (
    Item,
    LikelihoodScorer,
    Segment,
    choice_score,
    continuation_item,
    pair_score,
    speech_item,
    text_item,
)
from smoltolk.model.llama import LlamaLM

EOS = NUM_UNITS  # the speech EOS, used as BOS of speech items
SWT = TEXT_VOCAB


def by_hand(model, ids, speech, scored_positions):
    """Sum of log p(token t | < t) over ``scored_positions``, each in the head of its own modality."""
    ids_t = torch.tensor([ids])
    speech_t = torch.tensor([speech])
    with torch.no_grad():
        out = model(ids_t, speech_t, logits="all")
    total = 0.0
    for t in scored_positions:
        logits = out.speech_logits if speech[t] else out.text_logits
        total += torch.log_softmax(logits[0, t - 1].double(), -1)[ids[t]].item()
    return total


def test_speech_item_scored_whole_after_the_speech_eos():
    model = tiny_model()
    units = [3, 7, 7, 1, 19, 0]
    score = LikelihoodScorer(model).score([speech_item(units)])[0]
    expected = by_hand(model, [EOS, *units], [True] * 7, range(1, 7))
    assert score.num_tokens == 6
    assert score.logprob == pytest.approx(expected, abs=1e-5)
    assert score.mean == pytest.approx(expected / 6, abs=1e-6)
    assert score.value("sum") == score.logprob and score.value("mean") == score.mean


def test_text_to_speech_continuation_scores_only_the_ending():
    model = tiny_model()
    item = continuation_item(Segment("text", (5, 9, 2)), Segment("speech", (4, 8, 12)))
    score = LikelihoodScorer(model, text_bos=1).score([item])[0]
    ids = [1, 5, 9, 2, SWT, 4, 8, 12]
    speech = [False] * 5 + [True] * 3
    assert score.num_tokens == 3
    assert score.logprob == pytest.approx(by_hand(model, ids, speech, [5, 6, 7]), abs=1e-5)


def test_speech_to_text_continuation_uses_the_text_head():
    model = tiny_model()
    item = continuation_item(Segment("speech", (4, 8, 12, 2)), Segment("text", (30, 31)))
    score = LikelihoodScorer(model).score([item])[0]
    ids = [EOS, 4, 8, 12, 2, SWT, 30, 31]
    speech = [True] * 5 + [False] * 3
    assert score.num_tokens == 2
    assert score.logprob == pytest.approx(by_hand(model, ids, speech, [6, 7]), abs=1e-5)


def test_whole_mixed_sequence_never_scores_bos_or_swt():
    model = tiny_model()
    item = Item((Segment("text", (5, 9)), Segment("speech", (4, 8)), Segment("text", (11,))), score_from=0)
    score = LikelihoodScorer(model, text_bos=None).score([item])[0]
    ids = [5, 9, SWT, 4, 8, SWT, 11]
    speech = [False, False, False, True, True, False, False]
    assert score.num_tokens == 4  # 9, 4, 8, 11 (5 has no context, SWTs are never targets)
    assert score.logprob == pytest.approx(by_hand(model, ids, speech, [1, 3, 4, 6]), abs=1e-5)


def test_same_modality_segments_join_without_swt():
    scorer = LikelihoodScorer(tiny_model(), text_bos=0)
    built = scorer.build(continuation_item(Segment("text", (5, 6)), Segment("text", (7,))))
    assert built.ids == [0, 5, 6, 7] and built.scored == [False, False, False, True]


def random_items(n: int, seed: int = 0) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        length = rng.randint(2, 40)
        units = tuple(rng.randrange(NUM_UNITS) for _ in range(length))
        text = tuple(rng.randrange(TEXT_VOCAB) for _ in range(length))
        kind = i % 4
        if kind == 0:
            items.append(speech_item(units))
        elif kind == 1:
            items.append(text_item(text))
        elif kind == 2:
            items.append(continuation_item(Segment("text", text), Segment("speech", units[:5])))
        else:
            items.append(continuation_item(Segment("speech", units), Segment("text", text[:4])))
    return items


@pytest.mark.parametrize("variant", ["smoltolk", "baseline"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_batched_equals_one_at_a_time(variant, layout):
    model = tiny_model(variant)
    items = random_items(40)
    alone = LikelihoodScorer(model, batch_tokens=1, text_bos=3).score(items)
    batched = LikelihoodScorer(model, batch_tokens=300, layout=layout, pack_length=64, text_bos=3).score(items)
    assert [s.num_tokens for s in alone] == [s.num_tokens for s in batched]
    for a, b in zip(alone, batched):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)


def test_batches_respect_the_token_budget():
    scorer = LikelihoodScorer(tiny_model(), batch_tokens=100)
    lengths = [10, 50, 30, 30, 5, 120]
    batches = scorer._batches(lengths)
    assert sorted(i for b in batches for row in b for i in row) == list(range(6))
    for b in batches:
        assert len(b) * max(lengths[r[0]] for r in b) <= 100 or len(b) == 1
    packed = LikelihoodScorer(tiny_model(), batch_tokens=256, layout="packed", pack_length=64)._batches(lengths)
    for b in packed:
        for row in b:
            assert sum(lengths[i] for i in row) <= 120  # rows hold max(pack_length, longest item)


def test_text_backbone_scores_text_and_refuses_speech():
    torch.manual_seed(0)
    model = tiny_model()
    backbone: LlamaLM = model.backbone  # a plain LlamaLM (its vocabulary includes the SWT row; fine here)
    ids = [2, 17, 5, 40, 11]
    score = LikelihoodScorer(backbone, text_bos=None).score([text_item(ids)])[0]
    with torch.no_grad():
        logits = backbone(torch.tensor([ids]))
    expected = sum(torch.log_softmax(logits[0, t - 1].double(), -1)[ids[t]].item() for t in range(1, 5))
    assert score.logprob == pytest.approx(expected, abs=1e-5)
    with pytest.raises(CheckpointError, match="no speech modules"):
        LikelihoodScorer(backbone).score([speech_item([1, 2])])


def test_out_of_range_ids_are_named():
    scorer = LikelihoodScorer(tiny_model())
    with pytest.raises(InputError, match=r"item 'u1'.*speech units must be in \[0, 20\)"):
        scorer.score([speech_item([1, NUM_UNITS], name="u1")])
    with pytest.raises(InputError, match="empty"):
        continuation_item(Segment("text", (1,)), Segment("speech", ()))


def test_ties_count_half():
    assert pair_score(-1.0, -2.0) == 1.0 and pair_score(-2.0, -1.0) == 0.0 and pair_score(-1.0, -1.0) == 0.5
    assert choice_score([-1.0, -1.0, -3.0, -4.0], 0) == 0.5
    assert choice_score([-1.0, -2.0, -1.0, -1.0], 2) == pytest.approx(1 / 3)
    assert choice_score([-1.0, -2.0], 1) == 0.0
