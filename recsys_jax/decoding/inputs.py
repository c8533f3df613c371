"""Decoder inputs built by the training masking, so inference sees exactly what training saw.

A prompt (no answer) gets a one-token placeholder answer appended as its target entity; the
masking replaces it by the same mask token as in training and lays out Part A with the same
2D positions. Part A is the decoder's prompt; Part B is generated. A causal item sequence
(`causal_sample`) is the exception: its history is already an open Part B span, which
decoding continues. A batch of prompts is laid out in one pass (`decoder_inputs`), as
training lays out a batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking import MaskingConfig, SampledExample, target_mask_kind
from recsys_jax.masking.batching import MODEL_INPUTS
from recsys_jax.masking.layout import empty_fields, lay_out
from recsys_jax.masking.sampled import sampled_example

PROMPT_KEYS = MODEL_INPUTS
# A masked layout's per-token inputs (segment ids come from stacking).
LAYOUT_KEYS = tuple(k for k in MODEL_INPUTS if k != "segment_ids")
# The pseudo template id of the bare item sequence (the item_sequence training family).
ITEM_SEQUENCE = "items"
# Names of `DecoderInputs.start`'s arrays where they travel as named inputs (exported bundles).
START_KEYS = ("start_token", "start_intra", "item_intra")


@dataclasses.dataclass
class DecoderInputs:
    """What beam search and scoring start from: prompts [B, L] (Part A, and for a causal
    item sequence also the Part B tokens of the history), the mask position of every row
    [B], and `start` = (first token, its intra id, intra id of the first generated item
    token), each [B] — None means the usual `<sop>` at intra 1, items from intra 2."""

    prompt: dict
    mask_pos: np.ndarray
    start: tuple | None = None

    @property
    def continues_sequence(self) -> bool:
        """True when generation continues the history's own span (no `<eop>` is scored)."""
        return self.start is not None


def with_answer_slot(
    example: TokenizedExample, special: SpecialIds, answer_is_item: bool = True
) -> tuple[TokenizedExample, tuple[int, int]]:
    n = len(example.ids)
    slot = (n, n + 1)
    ids = np.append(np.asarray(example.ids, np.int32), special.pad)
    entities = list(example.entity_spans) + ([slot] if answer_is_item else [])
    return dataclasses.replace(example, ids=ids, entity_spans=entities, target_spans=[slot]), slot


def answer_sample(
    example: TokenizedExample, special: SpecialIds, cfg: MaskingConfig, answer_is_item: bool = True
) -> SampledExample:
    """`example` with a one-token answer slot appended and masked as training masks a target:
    its Part A (ending in the answer's mask token) is the decoder's prompt."""
    full, slot = with_answer_slot(example, special, answer_is_item)
    kind = target_mask_kind(full, slot)
    cfg = dataclasses.replace(cfg, max_length=max(cfg.max_length, len(full.ids) + 2))
    return sampled_example(full, [slot], [kind], special, cfg)


def causal_sample(example: TokenizedExample, special: SpecialIds, cfg: MaskingConfig):
    """A bare item sequence laid out as causal training lays it out: one span over the whole
    history (`[MASK] <sop> i1 .. in`), which decoding continues."""
    n = len(example.ids)
    cfg = dataclasses.replace(cfg, max_length=max(cfg.max_length, n + 2))
    return sampled_example(example, [(0, n)], ["mask"], special, cfg)


def bucket_width(longest: int, length: int) -> int:
    """The smallest power of two (at least 16) that holds `longest` tokens, capped at `length`:
    short prompts skip most of the padding's compute, at a few compiled shapes."""
    return min(length, max(16, 1 << (longest - 1).bit_length()))


def decoder_inputs(
    samples: Sequence[SampledExample],
    special: SpecialIds,
    length: int,
    *,
    causal: bool = False,
    dynamic_positions: bool = False,
    bucket: bool = False,
) -> DecoderInputs:
    """Decoder inputs of masked prompts (`answer_sample`s, or `causal_sample`s with `causal`),
    laid out together by the training layout and right-padded to [B, length] (or the bucket
    of the longest prompt, `bucket_width`) with segment-0 padding.

    Answer prompts are their Part A. A causal sequence's prompt is all of its layout but the
    last token, which is fed as the first decode step so that the step's logits predict the
    next item; that token's intra id continues the span (GLM) or, with `dynamic_positions`,
    the next item restarts at 1."""
    if not samples:
        raise ValueError("no prompts to lay out")
    sizes = np.fromiter((s.length for s in samples), np.int64, len(samples))
    first = np.cumsum(sizes) - sizes
    flat = empty_fields(int(sizes.sum()), special)
    lay_out(samples, first, flat, special)
    if causal:
        keep = sizes - 1
        last = first + keep  # the first decode step; it sits at the span's mask position
        intra = flat["block_positions"][last]
        item_intra = np.ones_like(intra) if dynamic_positions else intra + 1
        start = (flat["tokens"][last], intra, item_intra)
    else:
        keep = np.add.reduceat(flat["part_a"], first).astype(np.int64)  # Part A comes first
        last = first + keep - 1  # the answer's mask token
        start = None
    mask_pos = flat["positions"][last]
    longest = int(keep.max())
    width = bucket_width(longest, length) if bucket else length
    if longest > width:
        raise ValueError(f"prompt of {longest} tokens exceeds the decoding length {length}")
    cols = np.arange(width)
    filled = cols[None, :] < keep[:, None]
    at = np.where(filled, first[:, None] + cols[None, :], 0)
    prompt = {
        k: np.where(filled, flat[k][at], special.pad if k == "tokens" else 0).astype(np.int32)
        for k in LAYOUT_KEYS
    }
    prompt["segment_ids"] = filled.astype(np.int32)
    as_int = lambda a: np.asarray(a, np.int32)
    return DecoderInputs(
        prompt, as_int(mask_pos), None if start is None else tuple(map(as_int, start))
    )


def history_prompts(
    factory,
    template,
    histories: Sequence[Sequence[int]],
    special: SpecialIds,
    masking: MaskingConfig,
    length: int,
    candidates=None,
    users=None,
    bucket: bool = False,
) -> DecoderInputs:
    """Decoder inputs for item histories (internal ids) under one template (a
    `prompts.templates.Template`, or `ITEM_SEQUENCE` for the bare item sequence): [B, length]
    arrays, or bucketed (`bucket_width`). The one prompt path of the checkpoint
    `Recommender` and the exported bundle, so both decode the same tokens. `factory` is a
    `prompts.builders.PromptFactory`; `users` (internal ids) fill the {user} slot of templates
    that have one; the bare item sequence lists no candidates (direct ranks over their trie)."""
    if template == ITEM_SEQUENCE:
        examples = [factory.item_sequence(h, training=False) for h in histories]
        if factory.cfg.sequence_objective == "causal":
            samples = [causal_sample(e, special, masking) for e in examples]
            return decoder_inputs(
                samples,
                special,
                length,
                causal=True,
                dynamic_positions=masking.entity_positions,
                bucket=bucket,
            )
        samples = [answer_sample(e, special, masking) for e in examples]
        return decoder_inputs(samples, special, length, bucket=bucket)
    rng = np.random.default_rng(0)
    samples = []
    for row, history in enumerate(histories):
        cands = None if candidates is None else candidates[row]
        user = 0 if users is None else int(users[row])
        example = factory.fit_history(
            lambda hh, n: factory.sequence_prompt(template, user, hh, None, rng, candidates=cands),
            history,
        )
        samples.append(answer_sample(example, special, masking))
    return decoder_inputs(samples, special, length, bucket=bucket)
