"""Which spans to mask, and with which mask token (docs/design.md: GLM, RecSysLLM's three changes).

Task examples mask their answer(s), plus optional extra entities. Free-text examples pick one
GLM objective: [MASK] short spans, [sMASK] whole sentences, or one [gMASK] span at the end.
With `entity_aware` every span covers each entity it touches whole; without it the spans are
GLM's, blind to entity boundaries (ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys_jax.example import TokenizedExample
from recsys_jax.masking.config import MASK_KINDS, MaskingConfig
from recsys_jax.masking.sampled import max_spans_that_fit
from recsys_jax.masking.spans import (
    Span,
    check_example,
    clean_cuts,
    entity_index,
    outside,
    overlaps_any,
    snap_to_entities,
)


def target_mask_kind(example: TokenizedExample, target: Span) -> str:
    """[gMASK] for free-text answers that end the text (generation), else [MASK].

    Prompt code and decoding must use the same rule, so it lives here as one function.
    """
    ends_text = target[1] == len(example.ids)
    is_free_text = not overlaps_any(target, example.entity_spans)
    return "gmask" if ends_text and is_free_text else "mask"


def sample_spans(
    example: TokenizedExample, cfg: MaskingConfig, rng: np.random.Generator
) -> tuple[list[Span], list[str]]:
    """Spans to mask, sorted by start, and the mask kind of each."""
    n = check_example(example)
    entities = _as_tuples(example.entity_spans)
    if example.target_spans:
        return _task_spans(example, entities, cfg, rng)
    kind = MASK_KINDS[rng.choice(len(MASK_KINDS), p=np.asarray(cfg.kind_probs, float))]
    # Free text that nearly fills max_length hides fewer spans rather than overflowing it.
    max_spans = max_spans_that_fit(n, cfg.max_length)
    if kind == "smask" and example.sentence_spans:
        spans = _sentence_spans(
            n, entities, _as_tuples(example.sentence_spans), max_spans, cfg, rng
        )
    elif kind == "gmask":
        spans = [_generation_span(n, entities, example.sentence_spans, cfg, rng)]
    else:  # [MASK]; also [sMASK]'s fallback when the text has no sentences
        kind = "mask"
        spans = _short_spans(n, entities, _budget(n, cfg), max_spans, cfg, rng)
    spans = sorted(spans)
    return spans, [kind] * len(spans)


def _as_tuples(spans) -> list[Span]:
    return [(int(s), int(e)) for s, e in spans]


def _budget(n: int, cfg: MaskingConfig) -> int:
    """Tokens to hide: ~mask_ratio of the text, at least one."""
    return max(1, int(round(cfg.mask_ratio * n)))


def _task_spans(example, entities, cfg, rng):
    targets = sorted(_as_tuples(example.target_spans))
    kinds = {t: target_mask_kind(example, t) for t in targets}
    # One uniform draw per entity outside the targets, in order (all at once: same stream).
    others = outside(entities, targets)
    draws = rng.random(len(others)).tolist()
    extra = [ent for ent, u in zip(others, draws) if u < cfg.extra_entity_mask_prob]
    # A rare draw (many extra masks over a long history) must not overflow max_length: keep a
    # random subset that fits. Draws that fit use no further randomness, so they are unchanged.
    room = max(0, max_spans_that_fit(len(example.ids), cfg.max_length) - len(targets))
    if len(extra) > room:
        keep = np.sort(rng.choice(len(extra), size=room, replace=False))
        extra = [extra[i] for i in keep]
    if cfg.entity_aware:
        spans = extra
    else:  # same number of extra masks, but GLM-style spans anchored inside each entity
        spans = _anchored_spans(len(example.ids), extra, targets, cfg, rng)
    spans = sorted(list(targets) + spans)
    return spans, [kinds.get(s, "mask") for s in spans]


def _short_spans(
    n: int,
    entities: Sequence[Span],
    budget: int,
    max_spans: int,
    cfg: MaskingConfig,
    rng: np.random.Generator,
) -> list[Span]:
    """GLM [MASK] spans until `budget` tokens are hidden (or `max_spans` spans are made).

    Pick an uncovered unit uniformly (a whole entity, or a free token); an entity is masked
    whole, a free token starts a Poisson-length run that stops at any entity or masked token.
    """
    bounds = list(entities) if cfg.entity_aware else []
    owner = entity_index(n, bounds)
    # Tokens where an uncovered unit starts: free tokens and entity starts.
    unit_start = clean_cuts(n, bounds)[:n]
    spans: list[Span] = []
    hidden = 0
    while hidden < budget and len(spans) < max_spans and unit_start.any():
        starts = np.flatnonzero(unit_start)
        start = int(starts[rng.integers(len(starts))])
        if owner[start] >= 0:
            span = bounds[owner[start]]
        else:
            length = max(1, int(rng.poisson(cfg.poisson_lambda)))
            end = start + 1
            while end < n and end - start < length and owner[end] < 0 and unit_start[end]:
                end += 1
            span = (start, end)
        unit_start[span[0] : span[1]] = False
        hidden += span[1] - span[0]
        spans.append(span)
    return spans


def _anchored_spans(n, anchors, taken, cfg, rng) -> list[Span]:
    """Ablation: one Poisson-length span from a random token of each anchor entity, free to
    run past the entity's end (it only stops at a target or an earlier span)."""
    covered = np.zeros(n, dtype=bool)
    for s, e in taken:
        covered[s:e] = True
    spans = []
    for s, e in anchors:
        start = int(rng.integers(s, e))
        if covered[start]:
            continue
        length = max(1, int(rng.poisson(cfg.poisson_lambda)))
        end = start
        while end < n and end - start < length and not covered[end]:
            end += 1
        covered[start:end] = True
        spans.append((start, end))
    return spans


def _sentence_spans(n, entities, sentences, max_spans, cfg, rng) -> list[Span]:
    """[sMASK]: whole sentences in random order until ~mask_ratio of tokens are hidden
    (or `max_spans` sentences are)."""
    budget = _budget(n, cfg)
    spans: list[Span] = []
    hidden = 0
    for i in rng.permutation(len(sentences)):
        span = sentences[i]
        if cfg.entity_aware:  # a sentence cut inside an entity takes the whole entity
            span = snap_to_entities(span, entities)
        if overlaps_any(span, spans):
            continue
        spans.append(span)
        hidden += span[1] - span[0]
        if hidden >= budget or len(spans) == max_spans:
            break
    return spans


def _generation_span(n, entities, sentences, cfg, rng) -> Span:
    """[gMASK]: one span from a start point to the end, 50-100% of the text.

    Entity-aware starts are entity or sentence starts when the range has any, else any cut
    that does not split an entity; if none lies in range, the nearest clean cut is used.
    """
    lo = n - int(np.floor(cfg.gmask_max * n))  # earliest start
    hi = n - max(1, int(np.ceil(cfg.gmask_min * n)))  # latest start
    lo, hi = max(0, min(lo, hi)), max(0, hi)
    if not cfg.entity_aware:
        return int(rng.integers(lo, hi + 1)), n
    cuts = clean_cuts(n, entities)
    cuts[n] = False  # the span must hide at least one token
    preferred = {s for s, _ in entities} | {s for s, _ in sentences}
    in_range = [p for p in range(lo, hi + 1) if cuts[p]]
    candidates = [p for p in in_range if p in preferred] or in_range
    if not candidates:
        clean = np.flatnonzero(cuts)  # never empty: 0 is always a clean cut
        candidates = [int(clean[np.argmin(np.minimum(abs(clean - lo), abs(clean - hi)))])]
    return int(candidates[rng.integers(len(candidates))]), n
