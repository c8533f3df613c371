"""The deterministic core: given the spans, lay out Part A / Part B and the 2D positions.

Worked example (the paper's, docs/design.md, RecSysLLM's three changes): x1..x7, entity
e1 = x1 x2 x3 and x5 masked, x6 x7 an unmasked entity:

    tokens           [M] x4 [M] x6 x7 | <sop> x1 x2 x3 | <sop> x5
    positions         0  1   2   3  4 |   0    0  0  0 |   2    2
    block_positions   0  0   0   1  2 |   1    2  3  4 |   1    2
    targets           -  -   -   -  - |  x1   x2 x3 <eop> | x5 <eop>

`lay_out` does this for many examples in one pass of array operations (a batch costs about
what one example does in a loop); a single example is a batch of one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking.config import MaskingConfig
from recsys_jax.masking.sampled import SampledExample, sampled_example
from recsys_jax.masking.spans import Span, concat_ranges

FIELDS = ("tokens", "positions", "block_positions", "part_a", "targets", "loss_mask")


def empty_fields(shape, special: SpecialIds) -> dict[str, np.ndarray]:
    """Padding everywhere: pad tokens and targets, zeros elsewhere, float32 loss mask."""
    out = {k: np.zeros(shape, dtype=np.float32 if k == "loss_mask" else np.int32) for k in FIELDS}
    out["tokens"][...] = special.pad
    out["targets"][...] = special.pad
    return out


def lay_out(
    examples: Sequence[SampledExample],
    dest: np.ndarray,
    out: dict[str, np.ndarray],
    special: SpecialIds,
) -> None:
    """Writes example i's layout (Part A, then Part B) into the 1-D arrays `out[FIELDS]` from
    index `dest[i]` on. `out` must hold padding (`empty_fields`): cells that padding already
    gets right (Part A targets and loss, Part B's part_a) are not written."""
    if not examples:
        return
    src = _Sources(examples)
    dest = np.asarray(dest, np.int64)
    hidden = src.hidden()
    keep = ~hidden
    keep[src.gs] = True  # a span's first token becomes its mask token
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    base = kept_before[src.ex_start]
    len_a = kept_before[src.ex_start + src.n] - base

    # Part A: the text with each span replaced by its mask token, in text order.
    tokens = src.ids.copy()
    tokens[src.gs] = src.mask_ids
    block = src.part_a_intra(hidden)
    block[src.gs] = 0
    sel = np.flatnonzero(keep)
    sel_ex = np.repeat(np.arange(len(examples)), len_a)
    pos = kept_before[sel] - base[sel_ex]
    at = dest[sel_ex] + pos
    out["tokens"][at] = tokens[sel]
    out["positions"][at] = pos
    out["block_positions"][at] = block[sel]
    out["part_a"][at] = 1

    # Part B: each span as <sop> t1..tk -> t1..tk <eop>, in the order given, at the position
    # of its mask token in Part A.
    span_len = src.ge - src.gs
    j = concat_ranges(np.zeros_like(span_len), span_len + 1)[1]  # slot inside its span
    slot = np.arange(len(j))
    span = np.repeat(np.arange(len(span_len)), span_len + 1)
    token = src.gs[span] + j  # the token each slot predicts (j < span length)
    is_sop, is_eop = j == 0, j == span_len[span]
    ex = src.span_ex[span]
    out_b = dest[ex] + len_a[ex] + slot - src.ex_slot_start(span_len)[ex]
    out["tokens"][out_b] = np.where(is_sop, special.sop, src.ids[token - 1])
    out["targets"][out_b] = np.where(is_eop, special.eop, src.ids[np.minimum(token, src.N - 1)])
    out["positions"][out_b] = (kept_before[src.gs] - base[src.span_ex])[span]
    restart = is_sop | src.part_b_restarts(span, j)
    out["block_positions"][out_b] = slot - np.maximum.accumulate(np.where(restart, slot, 0)) + 1
    out["loss_mask"][out_b] = src.part_b_loss(span, ex, is_eop)


class _Sources:
    """The examples' ids and spans concatenated, span and entity bounds as global indices."""

    def __init__(self, examples: Sequence[SampledExample]):
        count = len(examples)
        self.examples = examples
        self.n = np.fromiter((len(x.ids) for x in examples), np.int64, count)
        self.ex_start = np.cumsum(self.n) - self.n
        self.ids = np.concatenate([x.ids for x in examples])
        self.N = len(self.ids)
        k = np.fromiter((len(x.starts) for x in examples), np.int64, count)
        self.span_ex = np.repeat(np.arange(count), k)
        offset = self.ex_start[self.span_ex]
        self.gs = np.concatenate([x.starts for x in examples]) + offset
        self.ge = np.concatenate([x.ends for x in examples]) + offset
        self.mask_ids = np.concatenate([x.mask_ids for x in examples])
        m = np.fromiter((len(x.entities) for x in examples), np.int64, count)
        ent = np.concatenate([x.entities for x in examples]) + np.repeat(self.ex_start, m)[:, None]
        self.es, self.ee = ent[:, 0], ent[:, 1]

    def hidden(self) -> np.ndarray:
        """Per token: inside a span (spans never overlap, so starts and ends are distinct)."""
        cover = np.zeros(self.N + 1, np.int64)
        cover[self.gs] += 1
        cover[self.ge] -= 1
        return np.cumsum(cover[: self.N]) > 0

    def part_a_intra(self, hidden: np.ndarray) -> np.ndarray:
        """1..len inside every entity left whole in Part A; 0 for free tokens. An entity a span
        only partly hides (possible only without entity_aware) no longer reads as that entity,
        so its surviving tokens count as free."""
        intra = np.zeros(self.N, np.int32)
        if len(self.es):
            hidden_before = np.concatenate([[0], np.cumsum(hidden)])
            whole = hidden_before[self.ee] == hidden_before[self.es]
            at, inner = concat_ranges(self.es[whole], (self.ee - self.es)[whole])
            intra[at] = inner + 1
        return intra

    def part_b_restarts(self, span: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Per Part B slot: a token that starts a new entity of its span (not the first after
        `<sop>`), where RecSysLLM's dynamic positions restart the intra id at 1."""
        restart = np.zeros(len(j), bool)
        if len(self.es):
            span_len = self.ge - self.gs
            span_of = np.full(self.N, -1, np.int64)
            at, _ = concat_ranges(self.gs, span_len)
            span_of[at] = np.repeat(np.arange(len(self.gs)), span_len)
            s = span_of[self.es]
            inside = (s >= 0) & (self.ee <= self.ge[s]) & (self.es > self.gs[s])
            slot_start = np.cumsum(span_len + 1) - (span_len + 1)
            restart[slot_start[s[inside]] + self.es[inside] - self.gs[s[inside]] + 1] = True
        return restart

    def part_b_loss(self, span: np.ndarray, ex: np.ndarray, is_eop: np.ndarray) -> np.ndarray:
        """1 on Part B, except an open end's final `<eop>` (the text was cut, it did not end)
        and, for examples with `scored_tail`, all but their last scored positions."""
        open_end = np.fromiter((x.open_end for x in self.examples), bool, len(self.examples))
        ends_text = self.ge == (self.ex_start + self.n)[self.span_ex]
        loss = np.ones(len(span), np.float32)
        loss[is_eop & open_end[ex] & ends_text[span]] = 0.0
        for i, x in enumerate(self.examples):
            if x.scored_tail:
                scored = np.flatnonzero((ex == i) & (loss > 0))
                loss[scored[: max(0, len(scored) - x.scored_tail)]] = 0.0
        return loss

    def ex_slot_start(self, span_len: np.ndarray) -> np.ndarray:
        """Per example: index of its first Part B slot among all examples' slots."""
        slots = np.bincount(self.span_ex, span_len + 1, minlength=len(self.n)).astype(np.int64)
        return np.cumsum(slots) - slots


def lay_out_one(example: SampledExample, special: SpecialIds) -> dict[str, np.ndarray]:
    """One example's 1-D arrays of length len(Part A) + len(Part B)."""
    out = empty_fields(example.length, special)
    lay_out([example], np.zeros(1, np.int64), out, special)
    return out


def mask_spans(
    example: TokenizedExample,
    spans: Sequence[Span],
    kinds: Sequence[str],
    special: SpecialIds,
    cfg: MaskingConfig,
) -> dict[str, np.ndarray]:
    """Masks exactly `spans`; Part B holds them in the order given (the caller decides order).

    Returns 1-D arrays of length len(Part A) + len(Part B): tokens, positions,
    block_positions, part_a (1 in Part A), targets (<pad> where unused), loss_mask (float32,
    1 on Part B only).
    """
    return lay_out_one(sampled_example(example, spans, kinds, special, cfg), special)


def part_b_intra_ids(length: int, entity_starts: Sequence[int]) -> np.ndarray:
    """Intra (block position) ids of one Part B span `<sop> t0..t(k-1)`: [k+1] ints.

    `<sop>` is 1 and each token counts on from the one before, except that a token starting
    a *new* entity (not the first after `<sop>`) restarts at 1 — the rule the decoder's
    dynamic positions follow token by token (docs/design.md, RecSysLLM's three changes). A span
    holding one entity is simply 1..k+1.
    """
    starts = sorted({int(t) for t in entity_starts if 0 <= int(t) < length})
    bounds = np.asarray(starts + [length], np.int64)
    example = SampledExample(
        ids=np.zeros(length, np.int32),
        starts=np.zeros(1, np.int64),
        ends=np.full(1, length, np.int64),
        mask_ids=np.zeros(1, np.int32),
        entities=np.stack([bounds[:-1], bounds[1:]], axis=1),
    )
    special = SpecialIds(0, 0, 0, 0, 0, 0)
    return lay_out_one(example, special)["block_positions"][-(length + 1) :]
