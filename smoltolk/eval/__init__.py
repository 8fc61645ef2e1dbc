"""Zero-shot evaluation: a batched likelihood scorer, benchmarks in their public layouts, reports.

See :mod:`smoltolk.eval.scorer` (the engine), :mod:`smoltolk.eval.tasks` (benchmarks and their
file layouts), :mod:`smoltolk.eval.units` (speech units of benchmark audio) and
:mod:`smoltolk.eval.run` (``smoltolk eval``).
"""

from smoltolk.eval.scorer import Item, ItemScore, LikelihoodScorer, Segment, continuation_item, speech_item, text_item

__all__ = ["Item", "ItemScore", "LikelihoodScorer", "Segment", "continuation_item", "speech_item", "text_item"]
