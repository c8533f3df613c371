"""The deterministic core: given the spans, lay out Part A / Part B and the 2D positions.

Worked example (the paper's, docs/design.md, RecSysLLM's three changes): x1..x7, entity
e1 = x1 x2 x3 and x5 masked, x6 x7 an unmasked entity:

    tokens           [M] x4 [M] x6 x7 | <sop> x1 x2 x3 | <sop> x5
    positions         0  1   2   3  4 |   0    0  0  0 |   2    2
    block_positions   0  0   0   1  2 |   1    2  3  4 |   1    2
    targets           -  -   -   -  - |  x1   x2 x3 <eop> | x5 <eop>
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking.config import MASK_KINDS, MaskingConfig
from recsys_jax.masking.spans import Span, check_example, check_spans, clean_cuts, splits_entity

FIELDS = ("tokens", "positions", "block_positions", "part_a", "targets", "loss_mask")


def mask_token(kind: str, special: SpecialIds) -> int:
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    return getattr(special, kind)


def masked_length(n: int, num_spans: int) -> int:
    """Each span leaves one mask token in Part A and adds <sop>/<eop> around it in Part B."""
    return n + 2 * num_spans


def max_spans_that_fit(n: int, max_length: int) -> int:
    """The most spans an n-token text can hide within max_length (at least one: a text too
    long even for that is caught by the length check)."""
    return max(1, (max_length - masked_length(n, 0)) // (masked_length(0, 1)))


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
    n = check_example(example)
    ids = np.asarray(example.ids, dtype=np.int32)
    spans = [(int(s), int(e)) for s, e in spans]
    if len(kinds) != len(spans):
        raise ValueError(f"got {len(spans)} spans but {len(kinds)} mask kinds")
    check_spans(spans, n, "masked")
    if not spans:
        raise ValueError(f"example {example.task!r}: nothing to mask (no spans)")
    if cfg.entity_aware:
        _check_whole_entities(example, n, spans)
    _check_length(example, n, len(spans), cfg)
    part_a = _part_a(ids, spans, kinds, special, example.entity_spans, cfg)
    part_b = _part_b(
        ids,
        spans,
        part_a.pop("mask_index"),
        special,
        example.entity_spans if cfg.entity_positions else [],
        example.open_end,
    )
    return {k: np.concatenate([part_a[k], part_b[k]]) for k in FIELDS}


def _check_whole_entities(example, n, spans):
    cuts = clean_cuts(n, example.entity_spans)
    for span in spans:
        if not (cuts[span[0]] and cuts[span[1]]):  # a span end falls inside an entity
            raise ValueError(
                f"example {example.task!r}: masked span {span} splits entity "
                f"{splits_entity(span, example.entity_spans)}; an entity is "
                f"masked whole or not at all"
            )


def _check_length(example, n, num_spans, cfg):
    total = masked_length(n, num_spans)
    if total > cfg.max_length:
        raise ValueError(
            f"example {example.task!r} is {total} tokens once masked ({n} ids + 2 x {num_spans} "
            f"spans for the mask and <sop>/<eop> tokens) > max_length {cfg.max_length}; shorten "
            f"the history/prompt or raise max_length"
        )


def _intra_ids(n: int, entities: Sequence[Span], spans: Sequence[Span]) -> np.ndarray:
    """1..len inside every entity left whole in Part A; 0 for free tokens.

    An entity a span only partly hides (possible only without entity_aware) no longer reads as
    that entity, so its surviving tokens count as free.
    """
    hidden = np.zeros(n, dtype=bool)
    for s, e in spans:
        hidden[s:e] = True
    intra = np.zeros(n, dtype=np.int32)
    for s, e in entities:
        if not hidden[s:e].any():
            intra[s:e] = np.arange(1, e - s + 1)
    return intra


def _part_a(ids, spans, kinds, special, entities, cfg) -> dict[str, np.ndarray]:
    """The text with each span replaced by one mask token, in text order."""
    intra = _intra_ids(len(ids), entities, spans) if cfg.entity_positions else np.zeros_like(ids)
    keep = np.ones(len(ids), dtype=bool)
    for s, e in spans:
        keep[s:e] = False
    tokens, block = ids.copy(), intra.copy()
    for s, _ in spans:  # the span's first token becomes its mask token
        keep[s] = True
    for (s, _), kind in zip(spans, kinds):
        tokens[s], block[s] = mask_token(kind, special), 0
    # Where each span's mask token lands in Part A: its Part B tokens take that position.
    mask_index = np.cumsum(keep)[[s for s, _ in spans]] - 1
    length = int(keep.sum())
    return {
        "tokens": tokens[keep],
        "positions": np.arange(length, dtype=np.int32),
        "block_positions": block[keep],
        "part_a": np.ones(length, dtype=np.int32),
        "targets": np.full(length, special.pad, dtype=np.int32),
        "loss_mask": np.zeros(length, dtype=np.float32),
        "mask_index": mask_index.astype(np.int32),
    }


def part_b_intra_ids(length: int, entity_starts: Sequence[int]) -> np.ndarray:
    """Intra (block position) ids of one Part B span `<sop> t0..t(k-1)`: [k+1] ints.

    `<sop>` is 1 and each token counts on from the one before, except that a token starting
    a *new* entity (not the first after `<sop>`) restarts at 1 — the rule the decoder's
    dynamic positions follow token by token (docs/design.md, RecSysLLM's three changes). A span
    holding one entity is simply 1..k+1.
    """
    ids = np.empty(length + 1, dtype=np.int32)
    ids[0] = 1
    starts = set(int(t) for t in entity_starts)
    for t in range(length):
        ids[t + 1] = 1 if (t in starts and t > 0) else ids[t] + 1
    return ids


def _part_b(ids, spans, mask_index, special, entities, open_end) -> dict[str, np.ndarray]:
    """Each span as <sop> t1..tk -> t1..tk <eop>, in the order given.

    Intra ids restart at every entity of a multi-entity span (RecSysLLM's dynamic positions)
    unless `entities` is empty (GLM: 1..k+1 along the span). With `open_end` the span that
    ends the text carries no loss on its `<eop>`: the text was cut, it did not end."""
    pieces = {k: [] for k in FIELDS}
    for (s, e), pos in zip(spans, mask_index):
        k = e - s
        pieces["tokens"].append(np.concatenate([[special.sop], ids[s:e]]))
        pieces["targets"].append(np.concatenate([ids[s:e], [special.eop]]))
        pieces["positions"].append(np.full(k + 1, pos))
        starts = [es - s for es, ee in entities if s <= es and ee <= e]
        pieces["block_positions"].append(part_b_intra_ids(k, starts))
    length = sum(len(t) for t in pieces["tokens"])
    out = {k: np.concatenate(v).astype(np.int32) for k, v in pieces.items() if v}
    out["part_a"] = np.zeros(length, dtype=np.int32)
    out["loss_mask"] = np.ones(length, dtype=np.float32)
    if open_end:
        ends = np.cumsum([len(t) for t in pieces["tokens"]]) - 1
        last = [k for k, (_, e) in enumerate(spans) if e == len(ids)]
        out["loss_mask"][ends[last]] = 0.0
    return out
