"""The likelihood scorer against log-probs computed by hand from a tiny model's logits."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import NUM_UNITS, TEXT_VOCAB, assert_close, model_terms, tiny_model

from smoltolk.errors import CheckpointError, ConfigError, InputError
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
    assert_close(score.logprob, expected, terms=model_terms(model, 7))
    assert_close(score.mean, expected / 6, terms=model_terms(model, 7))
    assert score.value("sum") == score.logprob and score.value("mean") == score.mean


def test_text_to_speech_continuation_scores_only_the_ending():
    model = tiny_model()
    item = continuation_item(Segment("text", (5, 9, 2)), Segment("speech", (4, 8, 12)))
    score = LikelihoodScorer(model, text_bos=1).score([item])[0]
    ids = [1, 5, 9, 2, SWT, 4, 8, 12]
    speech = [False] * 5 + [True] * 3
    assert score.num_tokens == 3
    assert_close(score.logprob, by_hand(model, ids, speech, [5, 6, 7]), terms=model_terms(model, len(ids)))


def test_speech_to_text_continuation_uses_the_text_head():
    model = tiny_model()
    item = continuation_item(Segment("speech", (4, 8, 12, 2)), Segment("text", (30, 31)))
    score = LikelihoodScorer(model).score([item])[0]
    ids = [EOS, 4, 8, 12, 2, SWT, 30, 31]
    speech = [True] * 5 + [False] * 3
    assert score.num_tokens == 2
    assert_close(score.logprob, by_hand(model, ids, speech, [6, 7]), terms=model_terms(model, len(ids)))


def test_whole_mixed_sequence_never_scores_bos_or_swt():
    model = tiny_model()
    item = Item((Segment("text", (5, 9)), Segment("speech", (4, 8)), Segment("text", (11,))), score_from=0)
    score = LikelihoodScorer(model, text_bos=None).score([item])[0]
    ids = [5, 9, SWT, 4, 8, SWT, 11]
    speech = [False, False, False, True, True, False, False]
    assert score.num_tokens == 4  # 9, 4, 8, 11 (5 has no context, SWTs are never targets)
    assert_close(score.logprob, by_hand(model, ids, speech, [1, 3, 4, 6]), terms=model_terms(model, len(ids)))


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
@pytest.mark.parametrize("share", [True, False])
def test_batched_equals_one_at_a_time(variant, layout, share):
    model = tiny_model(variant)
    items = random_items(40) + sharing_items(seed=1)  # items alone and in shared-prefix groups
    alone = LikelihoodScorer(model, batch_tokens=1, share_prefixes=False, text_bos=3).score(items)
    scorer = LikelihoodScorer(model, batch_tokens=300, layout=layout, pack_length=64, text_bos=3,
                              share_prefixes=share)
    groups, single = scorer.shared_groups([scorer.build(it) for it in items])
    assert len(groups) >= 8 and len(single) >= 40  # with share=True both paths run
    batched = scorer.score(items)
    assert [s.num_tokens for s in alone] == [s.num_tokens for s in batched]
    assert_close([b.logprob for b in batched], [a.logprob for a in alone], terms=model_terms(model, 64))


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
        logits = backbone(torch.tensor([ids])).text_logits
    expected = sum(torch.log_softmax(logits[0, t - 1].double(), -1)[ids[t]].item() for t in range(1, 5))
    assert_close(score.logprob, expected, terms=model_terms(model, len(ids)))
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


# ----------------------------------------------------------------- shared prefixes
def units(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.randrange(NUM_UNITS) for _ in range(n))


def words(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.randrange(TEXT_VOCAB) for _ in range(n))


def sharing_items(seed: int = 0) -> list[Item]:
    """Benchmark-shaped tuples that share prefixes, mixed with items that share nothing."""
    rng = random.Random(seed)
    items = []
    for k in range(4):
        context = units(rng, rng.randint(10, 30))
        # speech-only stories scored whole; the shared prefix ends inside the speech run
        items += [speech_item(context + units(rng, rng.randint(3, 9))) for _ in range(2 if k % 2 else 4)]
        text = words(rng, rng.randint(10, 20))
        items += [text_item(text + words(rng, rng.randint(2, 6))) for _ in range(2)]  # text-only
        items += [continuation_item(Segment("text", text), Segment("speech", units(rng, rng.randint(3, 8))))
                  for _ in range(4 if k % 2 else 2)]  # T->S: the shared prefix ends at the SWT
        items += [continuation_item(Segment("speech", context), Segment("text", words(rng, rng.randint(2, 5))))
                  for _ in range(2)]  # S->T
        items.append(speech_item(units(rng, rng.randint(5, 40))))  # shares nothing
    story = units(rng, 25)
    items += [speech_item(story), speech_item(story)]  # exact duplicates
    items += [speech_item(story[:12]), speech_item(story[:12] + units(rng, 6))]  # one is a prefix of the other
    mixed = (Segment("text", words(rng, 9)), Segment("speech", units(rng, 6)))
    items += [Item((*mixed, Segment("text", words(rng, 3))), 0) for _ in range(2)]  # text, speech, text
    rng.shuffle(items)
    return items


def test_shared_groups_are_exact_prefixes_that_save_the_most_positions():
    scorer = LikelihoodScorer(tiny_model(), min_shared=3, text_bos=1)
    seqs = [[5, 6, 7, 8, 9], [5, 6, 7, 8, 2], [5, 6, 7, 1], [5, 6, 7, 3], [5, 6, 9], [3, 3], [4, 4, 4, 4],
            [4, 4, 4, 4]]
    built = [scorer.build(text_item(s)) for s in seqs]
    groups, alone = scorer.shared_groups(built)
    # sorted (BOS 1 first): [3 3] [4 4 4 4] x2 [5 6 7 1] [5 6 7 3] [5 6 7 8 2] [5 6 7 8 9] [5 6 9]
    # the four 5 6 7 share 4 positions: one group saves 3 x 3, more than two pairs (3 + 4);
    # [5 6 9] shares 3 >= min_shared with them, but joining (4 x 2) would save less than 3 x 3
    assert sorted((g.shared, sorted(g.members)) for g in groups) == [(4, [0, 1, 2, 3]), (5, [6, 7])]
    assert sorted(alone) == [4, 5]
    for g in groups:  # exact: every member agrees with the first on the shared positions
        first = built[g.members[0]]
        for i in g.members:
            assert built[i].window(0, g.shared) == first.window(0, g.shared)
    text_only = LikelihoodScorer(tiny_model(), min_shared=3, text_bos=1)
    same_ids = [text_item([5, 6, 7]), continuation_item(Segment("text", (5, 6)), Segment("text", (7,)))]
    groups, _ = text_only.shared_groups([text_only.build(it) for it in same_ids])
    assert groups == []  # same ids, but one scores 5 and 6 and the other does not: nothing shared
    with pytest.raises(ConfigError, match="min_shared"):
        LikelihoodScorer(tiny_model(), min_shared=1)


def test_shared_groups_keep_a_tight_cluster_apart_from_a_loose_neighbour():
    # a pair sharing 12 positions, then four sharing 40 that share only 10 with the pair: growing
    # one group greedily (6 sharing 10 saves 45) loses to two groups (11 + 3 x 39)
    scorer = LikelihoodScorer(tiny_model(), min_shared=8, text_bos=1)
    root = list(range(10, 19))  # BOS + 9 ids: 10 positions
    pair = [root + [20, 21, 22 + k, 30] for k in range(2)]
    cluster = [root + [25] + [j % 37 + 2 for j in range(29)] + [40 + k] for k in range(4)]
    groups, alone = scorer.shared_groups([scorer.build(text_item(s)) for s in pair + cluster])
    assert sorted((g.shared, sorted(g.members)) for g in groups) == [(12, [0, 1]), (40, [2, 3, 4, 5])]
    assert alone == []


def _positions_run(model, scorer, items):
    """Positions the model runs (rows x width of every forward) while ``scorer`` scores ``items``."""
    positions = []
    hook = model.register_forward_pre_hook(lambda _, args: positions.append(args[0].numel()))
    try:
        scores = scorer.score(items)
    finally:
        hook.remove()
    return sum(positions), scores


def test_a_story_context_runs_once_for_all_its_endings():
    model = tiny_model()
    rng = random.Random(3)
    context = tuple(rng.randrange(1, NUM_UNITS) for _ in range(30))
    # endings 1 and 2 share their first unit; 3 and 4 start with units no other ending starts with
    endings = [(0, 5, 6, 7, 8), (0, 9, 10, 11, 12), (13, 1, 2, 3, 4), (14, 1, 2, 3, 5)]
    items = [speech_item(context + e) for e in endings]
    scorer = LikelihoodScorer(model, text_bos=3)
    groups, alone = scorer.shared_groups([scorer.build(it) for it in items])
    assert [(g.shared, sorted(g.members)) for g in groups] == [(31, [0, 1, 2, 3])] and alone == []  # BOS + 30
    run, shared = _positions_run(model, scorer, items)
    assert run == 30 + 4 * 5  # the context (but its last position) once, then each ending's 5 inputs
    alone = LikelihoodScorer(model, batch_tokens=1, share_prefixes=False, text_bos=3).score(items)
    assert_close([s.logprob for s in shared], [a.logprob for a in alone], terms=model_terms(model, 64))
    # a duplicated ending and another ending: one group, the context runs once
    items = [speech_item(context + endings[0]), speech_item(context + endings[0]), speech_item(context + endings[2])]
    groups, alone = scorer.shared_groups([scorer.build(it) for it in items])
    assert [(g.shared, sorted(g.members)) for g in groups] == [(31, [0, 1, 2])] and alone == []
    run, shared = _positions_run(model, scorer, items)
    assert run == 30 + 3 * 5
    alone = LikelihoodScorer(model, batch_tokens=1, share_prefixes=False, text_bos=3).score(items)
    assert_close([s.logprob for s in shared], [a.logprob for a in alone], terms=model_terms(model, 64))


@pytest.mark.parametrize("variant", ["smoltolk", "baseline"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("batch_tokens", [1, 90, 4096])
def test_shared_prefixes_score_as_items_alone(variant, layout, batch_tokens):
    model = tiny_model(variant)
    items = sharing_items()
    alone = LikelihoodScorer(model, batch_tokens=1, share_prefixes=False, text_bos=3).score(items)
    scorer = LikelihoodScorer(model, batch_tokens=batch_tokens, layout=layout, pack_length=64, text_bos=3)
    groups, _ = scorer.shared_groups([scorer.build(it) for it in items])
    assert {len(g.members) for g in groups} == {2, 4} and len(groups) >= 16  # the sharing path does run
    shared = scorer.score(items)
    assert [s.num_tokens for s in shared] == [s.num_tokens for s in alone]
    assert_close([s.logprob for s in shared], [a.logprob for a in alone], terms=model_terms(model, 64))


def test_shared_prefix_scores_match_hand_computed_log_probs():
    model = tiny_model()
    context = Segment("text", (5, 9, 2, 7, 7, 30, 11, 4))
    endings = [(4, 8, 12), (4, 8, 13, 1)]  # the endings share their first two units as well
    items = [continuation_item(context, Segment("speech", e)) for e in endings]
    scorer = LikelihoodScorer(model, text_bos=1, min_shared=8)
    groups, _ = scorer.shared_groups([scorer.build(it) for it in items])
    assert [g.shared for g in groups] == [12]  # BOS, 8 text, SWT, 4, 8
    scores = scorer.score(items)
    for ending, score in zip(endings, scores):
        ids = [1, *context.ids, SWT, *ending]
        speech = [False] * 10 + [True] * len(ending)
        assert score.num_tokens == len(ending)
        expected = by_hand(model, ids, speech, range(10, len(ids)))
        assert_close(score.logprob, expected, terms=model_terms(model, len(ids)))


def test_shared_prefixes_do_less_work():
    model = tiny_model()
    items = sharing_items()
    positions = []
    hook = model.register_forward_pre_hook(lambda _, args: positions.append(args[0].numel()))
    try:
        LikelihoodScorer(model, share_prefixes=False, text_bos=3).score(items)
        LikelihoodScorer(model, text_bos=3).score(items)
    finally:
        hook.remove()
    assert len(positions) >= 3  # one batch without sharing; prefixes, then suffixes with it
    alone, shared = positions[0], sum(positions[1:])
    assert shared < 0.7 * alone


def test_text_backbone_shares_prefixes():
    backbone: LlamaLM = tiny_model().backbone
    rng = random.Random(1)
    contexts = [words(rng, 12) for _ in range(3)]
    items = [text_item(c + words(rng, rng.randint(1, 5))) for c in contexts for _ in range(3)]
    items.append(text_item(contexts[0]))  # a prefix of three others
    alone = LikelihoodScorer(backbone, batch_tokens=1, share_prefixes=False, text_bos=0).score(items)
    shared = LikelihoodScorer(backbone, batch_tokens=40, text_bos=0).score(items)
    assert [s.num_tokens for s in shared] == [s.num_tokens for s in alone]
    assert_close([s.logprob for s in shared], [a.logprob for a in alone], terms=model_terms(backbone, 64))


def test_items_without_targets_score_nothing():
    scores = LikelihoodScorer(tiny_model(), text_bos=None).score([text_item([4]), text_item([4])])
    assert [(s.logprob, s.num_tokens) for s in scores] == [(0.0, 0), (0.0, 0)]


def test_eval_config_shares_prefixes_unless_told_not_to():
    from smoltolk.eval.config import build_eval_config

    assert build_eval_config().share_prefixes is True
    assert build_eval_config(overrides=["share_prefixes=false"]).share_prefixes is False


def test_auto_text_bos_is_the_document_separator_when_the_tokenizer_has_one(bpe_tokenizer_file):
    from tokenizers import Tokenizer

    from smoltolk.eval.run import resolve_text_bos

    model = tiny_model()
    model.config.backbone.bos_token_id, model.config.backbone.eos_token_id = 5, 6  # e.g. an Instruct model's
    tok = Tokenizer.from_file(str(bpe_tokenizer_file))
    assert resolve_text_bos(model, "auto", tok) == tok.token_to_id("<|endoftext|>") == 0
    assert resolve_text_bos(model, "auto") == 5  # no tokenizer: bos_token_id
    model.config.backbone.bos_token_id = None
    assert resolve_text_bos(model, "auto") == 6  # else eos_token_id
    assert resolve_text_bos(model, "none", tok) is None and resolve_text_bos(model, "7", tok) == 7
