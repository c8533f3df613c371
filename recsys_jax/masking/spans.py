"""Span geometry: half-open token ranges, which entity owns a token, where a cut is clean.

Pure helpers shared by the samplers and the layout; no randomness here.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from recsys_jax.example import TokenizedExample

Span = tuple[int, int]


def check_spans(spans: Sequence[Span], n: int, what: str) -> list[Span]:
    """In-range, non-empty, non-overlapping spans, sorted by start; ValueError otherwise."""
    out = sorted((int(s), int(e)) for s, e in spans)
    for s, e in out:
        if not 0 <= s < e <= n:
            raise ValueError(f"{what} span ({s}, {e}) is empty or outside the {n} token ids")
    for (s0, e0), (s1, e1) in zip(out, out[1:]):
        if s1 < e0:
            raise ValueError(f"{what} spans ({s0}, {e0}) and ({s1}, {e1}) overlap")
    return out


def check_example(example: TokenizedExample) -> int:
    """Validates the spans the masking relies on; returns the number of ids."""
    n = len(example.ids)
    if n == 0:
        raise ValueError(f"example {example.task!r} has no token ids to mask")
    check_spans(example.entity_spans, n, "entity")
    check_spans(example.target_spans, n, "target")
    check_spans(example.sentence_spans, n, "sentence")
    return n


def entity_index(n: int, entities: Sequence[Span]) -> np.ndarray:
    """Per token: index of the entity it belongs to, -1 for free tokens."""
    owner = np.full(n, -1, dtype=np.int64)
    for k, (s, e) in enumerate(entities):
        owner[s:e] = k
    return owner


def clean_cuts(n: int, entities: Sequence[Span]) -> np.ndarray:
    """cuts[p] is True when a boundary before token p (0..n) does not fall inside an entity."""
    cuts = np.ones(n + 1, dtype=bool)
    for s, e in entities:
        cuts[s + 1 : e] = False
    return cuts


def splits_entity(span: Span, entities: Sequence[Span]) -> Span | None:
    """The first entity that `span` covers only partly, or None."""
    s, e = span
    for es, ee in entities:
        overlaps = s < ee and es < e
        if overlaps and not (s <= es and ee <= e):
            return (es, ee)
    return None


def snap_to_entities(span: Span, entities: Sequence[Span]) -> Span:
    """Widens `span` until it covers every entity it touches whole."""
    s, e = span
    for es, ee in entities:
        if s < ee and es < e:
            s, e = min(s, es), max(e, ee)
    return s, e


def overlaps_any(span: Span, others: Sequence[Span]) -> bool:
    s, e = span
    return any(s < oe and os < e for os, oe in others)


def outside(spans: Sequence[Span], others: Sequence[Span]) -> list[Span]:
    """The spans (in their order) that overlap none of `others` (sorted, non-overlapping):
    `[x for x in spans if not overlaps_any(x, others)]` with a binary search per span."""
    ends = [e for _, e in others]
    kept = []
    for s, e in spans:
        j = bisect.bisect_right(ends, s)  # the first of `others` that ends after s
        if j == len(others) or others[j][0] >= e:
            kept.append((s, e))
    return kept


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All of `range(s, s + l)` back to back, as (indices, offset of each inside its range):
    the array form of a loop over spans."""
    lengths = np.asarray(lengths, np.int64)
    first = np.cumsum(lengths) - lengths  # where each range begins in the output
    inner = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(first, lengths)
    return np.repeat(np.asarray(starts, np.int64), lengths) + inner, inner
