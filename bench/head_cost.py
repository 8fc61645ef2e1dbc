"""The heads' share of a paper-shape training step: where smoltolk's baseline and the resized ``transformers``
model differ (``bench/paper_shapes.py`` measures the whole step).

Both run the same decoder layers; they differ in the output: ``transformers`` scores every position against
the joint vocabulary (49,152 + 503 rows) and takes one cross-entropy; smoltolk scores text positions against
the text vocabulary and speech positions against the 502 speech rows (+ SWT column handling), two
cross-entropies. This times forward + backward of that part alone, on the hidden states of one interleaved-shaped
row (as ``paper_shapes``), median of ``--repeats`` in alternating order::

    .venv/bin/python bench/head_cost.py --context 1024      # one JSON object to stdout
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import SHAPES, UNITS, batch_for


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from smoltolk.model.outputs import cross_entropy_sum

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = SHAPES["paper"]
    d, v = shape["hidden_size"], shape["vocab_size"]
    ids, is_speech = batch_for(args.context, 1, v)
    joint = torch.where(is_speech, ids + v + 1, ids)[0, 1:]  # targets, as paper_shapes' transformers contender
    speech_t = is_speech[0, 1:]
    text_w = torch.nn.Parameter(torch.randn(v + 1, d) * 0.02)  # the text vocabulary and SWT (masked, as the model)
    joint_w = torch.nn.Parameter(torch.randn(v + UNITS + 3, d) * 0.02)
    speech_w = torch.nn.Parameter(torch.randn(UNITS + 2, d) * 0.02)
    hidden = torch.randn(args.context, d, requires_grad=True)

    def transformers_head():
        return F.cross_entropy(hidden @ joint_w.T, joint)

    def smoltolk_head():  # text positions x text vocabulary, speech positions x speech rows: the model's loss function
        text_loss = cross_entropy_sum(hidden[~speech_t] @ text_w.T, ids[0, 1:][~speech_t], masked=v)
        speech_loss = cross_entropy_sum(hidden[speech_t] @ speech_w.T, ids[0, 1:][speech_t])
        return (text_loss + speech_loss) / args.context

    heads = {"transformers": transformers_head, "smoltolk": smoltolk_head}
    times: dict[str, list[float]] = {k: [] for k in heads}
    for r in range(args.repeats + 1):  # the first round warms up
        for name in (list(heads) if r % 2 else list(heads)[::-1]):
            start = time.perf_counter()
            heads[name]().backward()
            elapsed = time.perf_counter() - start
            for t in (hidden, text_w, joint_w, speech_w):
                t.grad = None
            if r:
                times[name].append(elapsed)
    med = {k: statistics.median(x) for k, x in times.items()}
    print(json.dumps({"context": args.context, "threads": args.threads, "text_positions": int((~speech_t).sum()),
                      "head_seconds": {k: round(x, 3) for k, x in med.items()},
                      "difference_seconds": round(med["transformers"] - med["smoltolk"], 3)}, indent=2))


if __name__ == "__main__":
    main()
