"""A tokenized training/evaluation example: token ids plus the spans the masking needs.

This is the hand-off between the tokenizer (text -> ids) and the masking (ids -> GLM batch).
Spans are half-open token ranges `(start, end)` into `ids`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# GLM special tokens, in the order they are appended to the text vocabulary.
PAD, MASK, SMASK, GMASK, SOP, EOP = "<pad>", "[MASK]", "[sMASK]", "[gMASK]", "<sop>", "<eop>"
SPECIAL_TOKENS = (PAD, MASK, SMASK, GMASK, SOP, EOP)


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    pad: int
    mask: int
    smask: int
    gmask: int
    sop: int
    eop: int


@dataclasses.dataclass
class TokenizedExample:
    """`ids`: the whole text (prompt and answer) as token ids, no special tokens.

    entity_spans: every entity (an item, an attribute value); an entity is masked whole or not
        at all, and numbered 1..len inside Part A when left unmasked.
    target_spans: the answer(s) a task prompt asks for; always masked, always in Part B.
        Each target span is also an entity span when the answer is an item.
    sentence_spans: sentences, for [sMASK]; empty when the text has none worth masking.
    open_end: the text is a cut of an ongoing sequence (the item-sequence family), so its last
        target span is not followed by an end: no `<eop>` is learned after it.
    """

    ids: np.ndarray
    entity_spans: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    target_spans: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    sentence_spans: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    task: str = ""  # template id, e.g. "2-3"; "" for free text
    open_end: bool = False
