"""Key/value caches for incremental decoding, and the masks built from segment ids.

Every decoder stack (backbone, input adapter, output adapter) attends under one rule:
query ``i`` may see key ``j`` iff ``j <= i`` on the sequence timeline **and** both carry the
same *segment id*. The backbone and the output adapter use document ids as segments (packed
documents never see each other); the input adapter uses one id per contiguous speech run and
a unique id per text position (so a text position sees only itself). A cache keeps each
stack's keys, values and the segment id of every cached position, so the same rule holds
when decoding one token at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor


def attention_mask(q_seg: Tensor, k_seg: Tensor, past: int = 0) -> Tensor:
    """Boolean mask (B, 1, Tq, Tk), True where attention is allowed.

    q_seg: (B, Tq) segment ids of the queries, at timeline indices past..past+Tq-1.
    k_seg: (B, Tk) segment ids of the keys, at timeline indices 0..Tk-1.
    """
    tq, tk = q_seg.shape[1], k_seg.shape[1]
    qi = torch.arange(past, past + tq, device=q_seg.device)
    kj = torch.arange(tk, device=q_seg.device)
    causal = kj[None, :] <= qi[:, None]  # (Tq, Tk)
    same = q_seg[:, :, None] == k_seg[:, None, :]  # (B, Tq, Tk)
    return (causal & same)[:, None]


def run_starts(flag: Tensor, doc: Tensor, prev_flag: Tensor | None, prev_doc: Tensor | None) -> Tensor:
    """(B, T) True where a run of equal ``doc`` starts, or where ``flag`` switches on.

    With ``flag`` all-true this marks document starts; with ``flag = is_speech`` it marks the
    first position of every contiguous speech run. ``prev_*`` (B,) describe the position just
    before this chunk (from a cache); None means the chunk starts the sequence.
    """
    b = flag.shape[0]
    if prev_flag is None:
        prev_flag = torch.zeros(b, dtype=torch.bool, device=flag.device)
        prev_doc = torch.full((b,), -1, dtype=doc.dtype, device=doc.device)
    before_flag = torch.cat([prev_flag[:, None], flag[:, :-1]], dim=1)
    before_doc = torch.cat([prev_doc[:, None], doc[:, :-1]], dim=1)
    return flag & ~(before_flag & (before_doc == doc))


def document_positions(doc: Tensor, prev_doc: Tensor | None = None, prev_pos: Tensor | None = None) -> Tensor:
    """Position ids (B, T) that restart at 0 at every document start; continue ``prev_pos`` (B,)
    when the chunk's first document continues the cached one."""
    b, t = doc.shape
    idx = torch.arange(t, device=doc.device).expand(b, t)
    ones = torch.ones_like(doc, dtype=torch.bool)
    starts = run_starts(ones, doc, None if prev_doc is None else torch.ones_like(prev_doc, dtype=torch.bool), prev_doc)
    last_start = torch.cummax(torch.where(starts, idx, torch.full_like(idx, -1)), dim=1).values
    if prev_pos is None:
        return idx - last_start.clamp(min=0)
    return torch.where(last_start >= 0, idx - last_start, prev_pos[:, None] + 1 + idx)


def speech_run_segments(is_speech: Tensor, doc: Tensor, past: int,
                        prev: dict[str, Tensor] | None) -> tuple[Tensor, Tensor]:
    """Segment ids (B, T) for the input adapter, and the running speech-run counter (B, T).

    Speech positions get the id of their contiguous speech run (never crossing a document
    boundary); text positions get a unique negative id, so they attend only to themselves.
    """
    starts = run_starts(is_speech, doc, None if prev is None else prev["is_speech"],
                        None if prev is None else prev["doc"])
    base = torch.zeros_like(doc[:, 0]) if prev is None else prev["run"]
    run = base[:, None] + torch.cumsum(starts.long(), dim=1)
    timeline = torch.arange(past, past + doc.shape[1], device=doc.device)
    seg = torch.where(is_speech, run, -(timeline + 1)[None, :].expand_as(run))
    return seg, run


class KVCache:
    """Keys and values of one decoder stack, in buffers grown by doubling (amortised O(1)
    appends), plus the segment id of every cached position."""

    def __init__(self, num_layers: int) -> None:
        self.k: list[Tensor | None] = [None] * num_layers
        self.v: list[Tensor | None] = [None] * num_layers
        self.seg: Tensor | None = None  # (B, capacity)
        self.length = 0

    def begin(self, seg_new: Tensor) -> Tensor:
        """Register the segment ids (B, T) of the chunk about to be processed; returns the
        segment ids of all keys the chunk will see (B, length + T)."""
        t = seg_new.shape[1]
        need = self.length + t
        if self.seg is None:
            self.seg = seg_new.new_empty((seg_new.shape[0], max(need, 64)))
        elif self.seg.shape[0] != seg_new.shape[0]:
            raise ValueError(f"cache holds batch size {self.seg.shape[0]}, got {seg_new.shape[0]}")
        self.seg = _grow(self.seg, need, dim=1)
        self.seg[:, self.length:need] = seg_new
        return self.seg[:, :need]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this chunk's k, v (B, H, T, D) for ``layer``; returns all keys and values so far."""
        t = k.shape[2]
        need = self.length + t
        kb, vb = self.k[layer], self.v[layer]
        if kb is None:
            cap = self.seg.shape[1] if self.seg is not None else need
            kb = k.new_empty((*k.shape[:2], max(cap, need), k.shape[3]))
            vb = v.new_empty((*v.shape[:2], max(cap, need), v.shape[3]))
        kb, vb = _grow(kb, need, dim=2), _grow(vb, need, dim=2)
        kb[:, :, self.length:need] = k
        vb[:, :, self.length:need] = v
        self.k[layer], self.v[layer] = kb, vb
        return kb[:, :, :need], vb[:, :, :need]

    def commit(self, t: int) -> None:
        self.length += t

    def select(self, rows: Tensor, reserve: int = 0) -> KVCache:
        """A new cache holding rows ``rows`` (B',) of this one (a row may repeat), in buffers of
        ``length + reserve`` positions: a following chunk of up to ``reserve`` positions appends
        in place (no doubling, no second copy of the cached rows)."""
        out = KVCache(len(self.k))
        n = self.length
        out.k = [_take(k, rows, n, reserve, dim=2) for k in self.k]
        out.v = [_take(v, rows, n, reserve, dim=2) for v in self.v]
        out.seg = _take(self.seg, rows, n, reserve, dim=1)
        out.length = n
        return out


def _take(buf: Tensor | None, rows: Tensor, n: int, reserve: int, dim: int) -> Tensor | None:
    """Rows ``rows`` of ``buf``'s first ``n`` positions (along ``dim``), copied straight into a
    new buffer with ``reserve`` more positions."""
    if buf is None:
        return None
    shape = list(buf.shape)
    shape[0], shape[dim] = rows.shape[0], n + reserve
    out = buf.new_empty(shape)
    torch.index_select(buf.narrow(dim, 0, n), 0, rows, out=out.narrow(dim, 0, n))
    return out


def _grow(buf: Tensor, need: int, dim: int) -> Tensor:
    cap = buf.shape[dim]
    if need <= cap:
        return buf
    shape = list(buf.shape)
    shape[dim] = max(need, 2 * cap)
    out = buf.new_empty(shape)
    out.narrow(dim, 0, cap).copy_(buf)
    return out


class Cache:
    """Everything incremental decoding needs: one :class:`KVCache` per decoder stack, and the
    state of the last processed position (document, segment, position id, modality, speech run).

    For inference (under ``torch.no_grad()``): the buffers are written in place, so autograd
    cannot differentiate through more than one cached call. One cache serves one batch.
    """

    def __init__(self) -> None:
        self.stacks: dict[str, KVCache] = {}
        self.last: dict[str, Tensor] | None = None
        self.length = 0

    def select(self, rows: Tensor, reserve: int = 0) -> Cache:
        """A new cache holding rows ``rows`` (B',) of this one, e.g. ``[0, 0, 1]`` to continue the
        first cached sequence in two ways and the second in one (rows may repeat). ``reserve``:
        room for that many more positions in every stack (the width of the chunk to come), so
        continuing never reallocates. This cache is left as it was."""
        out = Cache()
        out.stacks = {name: kv.select(rows, reserve) for name, kv in self.stacks.items()}
        out.last = None if self.last is None else {k: v[rows] for k, v in self.last.items()}
        out.length = self.length
        return out

    def stack(self, name: str, num_layers: int) -> KVCache:
        if name not in self.stacks:
            self.stacks[name] = KVCache(num_layers)
        return self.stacks[name]
