"""Decoder inputs built by the training masking, so inference sees exactly what training saw.

A prompt (no answer) gets a one-token placeholder answer appended as its target entity; the
masking replaces it by the same mask token as in training and lays out Part A with the same
2D positions. Part A is the decoder's prompt; Part B is generated. A causal item sequence
(`item_sequence_prompt`) is the exception: its history is already an open Part B span, which
decoding continues.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking import MaskingConfig, mask_spans, target_mask_kind
from recsys_jax.masking.batching import MODEL_INPUTS

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


def part_a_prompt(
    example: TokenizedExample, special: SpecialIds, cfg: MaskingConfig, answer_is_item: bool = True
) -> tuple[dict[str, np.ndarray], int]:
    """Part A arrays (1-D) of `example` with its answer masked, and the mask's position."""
    full, slot = with_answer_slot(example, special, answer_is_item)
    kind = target_mask_kind(full, slot)
    cfg = dataclasses.replace(cfg, max_length=max(cfg.max_length, len(full.ids) + 2))
    out = mask_spans(full, [slot], [kind], special, cfg)
    a = out["part_a"] == 1
    prompt = {k: out[k][a] for k in LAYOUT_KEYS}
    mask_pos = int(prompt["positions"][-1])
    return prompt, mask_pos


def stack_prompts(
    prompts: Sequence[dict], length: int, special: SpecialIds, bucket: bool = False
) -> dict:
    """Right-pad 1-D Part A prompts to [B, length] with segment 0 padding. With `bucket`, the
    width is the smallest power of two (at least 16) that holds the longest prompt, capped at
    `length`: short prompts skip most of the padding's compute, at a few compiled shapes."""
    batch = len(prompts)
    if bucket:
        longest = max(len(p["tokens"]) for p in prompts)
        length = min(length, max(16, 1 << (longest - 1).bit_length()))
    out = {
        "tokens": np.full((batch, length), special.pad, np.int32),
        "positions": np.zeros((batch, length), np.int32),
        "block_positions": np.zeros((batch, length), np.int32),
        "segment_ids": np.zeros((batch, length), np.int32),
        "part_a": np.zeros((batch, length), np.int32),
    }
    for row, p in enumerate(prompts):
        n = len(p["tokens"])
        if n > length:
            raise ValueError(f"prompt of {n} tokens exceeds the decoding length {length}")
        for k in LAYOUT_KEYS:
            out[k][row, :n] = p[k]
        out["segment_ids"][row, :n] = 1
    return out


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
    arrays, or bucketed as in `stack_prompts`. The one prompt path of the checkpoint
    `Recommender` and the exported bundle, so both decode the same tokens. `factory` is a
    `prompts.builders.PromptFactory`; `users` (internal ids) fill the {user} slot of templates
    that have one; the bare item sequence lists no candidates (direct ranks over their trie)."""
    rng = np.random.default_rng(0)
    out, starts = [], []
    for row, history in enumerate(histories):
        if template == ITEM_SEQUENCE:
            example = factory.item_sequence(history, training=False)
            prompt, mask_pos, start = item_sequence_prompt(
                example, factory.cfg.sequence_objective, special, masking
            )
            out.append((prompt, mask_pos))
            starts.append(start)
            continue
        cands = None if candidates is None else candidates[row]
        user = 0 if users is None else int(users[row])
        example = factory.fit_history(
            lambda hh, n: factory.sequence_prompt(template, user, hh, None, rng, candidates=cands),
            history,
        )
        out.append(part_a_prompt(example, special, masking))
    start = None
    if starts and starts[0] is not None:
        start = tuple(np.array(col, np.int32) for col in zip(*starts))
    return DecoderInputs(
        stack_prompts([p for p, _ in out], length, special, bucket),
        np.array([m for _, m in out], np.int32),
        start,
    )


def item_sequence_prompt(
    example: TokenizedExample, objective: str, special: SpecialIds, cfg: MaskingConfig
) -> tuple[dict, int, tuple[int, int, int] | None]:
    """Decoder input of a bare item sequence (`PromptFactory.item_sequence`, no targets).

    infill: the history + an answer mask, as any prompt. causal: the layout training used,
    one span over the whole history (`[MASK] <sop> i1 .. in`); the prompt is all of it but
    the last token, which is fed as the first decode step, so the step's logits predict the
    next item. Its intra id continues the span (GLM) or restarts per item (dynamic positions).
    """
    if objective != "causal":
        prompt, mask_pos = part_a_prompt(example, special, cfg)
        return prompt, mask_pos, None
    n = len(example.ids)
    cfg = dataclasses.replace(cfg, max_length=max(cfg.max_length, n + 2))
    out = mask_spans(example, [(0, n)], ["mask"], special, cfg)
    prompt = {k: out[k][:-1] for k in LAYOUT_KEYS}
    last_intra = int(out["block_positions"][-1])
    item_intra = 1 if cfg.entity_positions else last_intra + 1
    return prompt, int(out["positions"][-1]), (int(out["tokens"][-1]), last_intra, item_intra)
