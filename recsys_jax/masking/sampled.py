"""What the per-record work hands to the batch layout: token ids and the chosen spans.

A `SampledExample` is cheap to make and to send between processes; the Part A / Part B
arrays are built later for a whole batch at once (`masking.layout.lay_out`). All validation
of the spans happens here, so a bad example fails where it was made.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking.config import MASK_KINDS, MaskingConfig
from recsys_jax.masking.spans import Span, check_example, check_spans, clean_cuts, splits_entity


@dataclasses.dataclass(frozen=True)
class SampledExample:
    """`ids` [n] int32; `starts` / `ends` / `mask_ids` [k]: the hidden spans in Part B order
    and the mask token that stands for each in Part A; `entities` [m, 2]: entities numbered
    1..len in Part A when left whole, restarting intra ids in Part B (empty without
    `entity_positions`); `open_end`: no loss on the `<eop>` of the span that ends the text;
    `scored_tail` > 0: only the last `scored_tail` loss positions keep their loss."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    mask_ids: np.ndarray
    entities: np.ndarray
    open_end: bool = False
    scored_tail: int = 0

    @property
    def length(self) -> int:
        return masked_length(len(self.ids), len(self.starts))


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


def sampled_example(
    example: TokenizedExample,
    spans: Sequence[Span],
    kinds: Sequence[str],
    special: SpecialIds,
    cfg: MaskingConfig,
    sampled: bool = False,
) -> SampledExample:
    """`example` with exactly `spans` hidden, Part B in the order given. `sampled`: the spans
    come from `sample_spans`, which validated the example and makes only valid spans
    (tests/test_masking.py checks that), so only the length is checked again."""
    n = len(example.ids) if sampled else check_example(example)
    if len(kinds) != len(spans):
        raise ValueError(f"got {len(spans)} spans but {len(kinds)} mask kinds")
    if not spans:
        raise ValueError(f"example {example.task!r}: nothing to mask (no spans)")
    if not sampled:
        spans = [(int(s), int(e)) for s, e in spans]
        check_spans(spans, n, "masked")
        if cfg.entity_aware:
            _check_whole_entities(example, n, spans)
    _check_length(example, n, len(spans), cfg)
    bounds = _pairs(spans)
    return SampledExample(
        ids=np.asarray(example.ids, dtype=np.int32),
        starts=bounds[:, 0],
        ends=bounds[:, 1],
        mask_ids=np.array([mask_token(k, special) for k in kinds], np.int32),
        entities=_pairs(example.entity_spans if cfg.entity_positions else ()),
        open_end=bool(example.open_end),
    )


def _pairs(spans: Sequence[Span]) -> np.ndarray:
    """[m, 2] int64; fromiter is several times quicker than asarray on a list of tuples."""
    flat = np.fromiter(itertools.chain.from_iterable(spans), np.int64, 2 * len(spans))
    return flat.reshape(-1, 2)


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
