"""The mini-world: a seeded story world with a knowledge split, pseudo-speech and benchmarks.

- :mod:`smoltolk.world.world`: places (topics), objects, actions and their rules; stories with a
  latent state; hard-negative endings; grammatical minimal pairs; the heard / held-out split.
- :mod:`smoltolk.world.speech`: words -> phonemes (CMU dictionary, letter-to-sound fallback) ->
  speech units with exact word alignments.
- :mod:`smoltolk.world.build`: :func:`build_world` writes the corpora, tokenizer, benchmarks in the
  layouts ``smoltolk eval`` reads, and ``world.json``.
"""
