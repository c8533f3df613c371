"""Item-aware tokenizer: SentencePiece for text, plus GLM special tokens and item-index tokens.

Vocabulary layout: [0, sp_size) SentencePiece pieces, then the GLM special tokens
(`example.SPECIAL_TOKENS`), then the atomic tokens the item index adds (`<item_7>`, `<a_3>`...).
A wrapped pretrained vocabulary (`Tokenizer.wrap_pretrained`, e.g. the SentencePiece model of
an imported GLM checkpoint) keeps the checkpoint's ids: the specials and item tokens start at
the pretrained embedding's row count, and ids in [sp_size, that count) (the checkpoint's own
special tokens and padding rows) are never produced.

Entities are encoded on their own, never together with surrounding text, so an item always has
the same token sequence wherever it appears: the trie, the masking and the prompts agree.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from recsys_jax.example import SPECIAL_TOKENS, SpecialIds, TokenizedExample

_ATOMIC = re.compile(r"(<[^<>\s]+>|\[MASK\]|\[sMASK\]|\[gMASK\])")

# Roles of prompt segments (see `encode_segments`).
TEXT, ENTITY, TARGET, TARGET_ENTITY = "text", "entity", "target", "target_entity"


class TokenizerError(ValueError):
    pass


def train_sentencepiece(texts: Iterable[str], vocab_size: int = 8000, seed_sentence_size: int = 200_000,
                        model_type: str = "unigram") -> bytes:
    """Train a SentencePiece model in memory.

    Whitespace is a piece *suffix* and no dummy prefix is added, so encoding is exact
    concatenation: segments encoded one by one decode back to the joined text, and a
    separator like ", " is one piece. Digits are split so numeric ids stay compositional;
    byte fallback means nothing is ever <unk>; no Unicode normalisation, so decode(encode(t)) == t
    for every item text (NFKC would fold e.g. fullwidth brackets and break the round trip)."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise TokenizerError("no training text for the tokenizer")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buffer, vocab_size=vocab_size,
        model_type=model_type, byte_fallback=True, split_digits=True, treat_whitespace_as_suffix=True,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity", character_coverage=0.9995,
        input_sentence_size=seed_sentence_size, shuffle_input_sentence=True,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, hard_vocab_limit=False,
        num_threads=2, minloglevel=2)
    return buffer.getvalue()


class Tokenizer:
    def __init__(self, sp_model: bytes, added_tokens: Sequence[str] = (),
                 first_added_id: int | None = None):
        self._sp_bytes = sp_model
        self.sp = spm.SentencePieceProcessor(model_proto=sp_model)
        self.sp_size = self.sp.get_piece_size()
        # Where the specials start: sp_size for our own tokenizer, the pretrained vocabulary
        # size (embedding rows) for a wrapped one.
        self.first_added_id = self.sp_size if first_added_id is None else int(first_added_id)
        if self.first_added_id < self.sp_size:
            raise TokenizerError(f"the pretrained vocabulary ({self.first_added_id} ids) is "
                                 f"smaller than its SentencePiece model ({self.sp_size} pieces)")
        extra = [t for t in added_tokens if t not in SPECIAL_TOKENS]
        if len(set(extra)) != len(extra):
            raise TokenizerError("added tokens contain duplicates")
        bad = [t for t in extra if not _ATOMIC.fullmatch(t)]
        if bad:
            raise TokenizerError(f"added tokens must look like <name> with no spaces: {bad[:3]}")
        self.atomic = list(SPECIAL_TOKENS) + extra
        self._atomic_id = {t: self.first_added_id + k for k, t in enumerate(self.atomic)}
        self.special = SpecialIds(*(self._atomic_id[t] for t in SPECIAL_TOKENS))

    @classmethod
    def wrap_pretrained(cls, sp_model: bytes, pretrained_vocab_size: int,
                        added_tokens: Sequence[str] = ()) -> "Tokenizer":
        """A pretrained SentencePiece vocabulary of `pretrained_vocab_size` ids (the embedding
        rows of its model) with our special and `added_tokens` appended after it; the model's
        embedding grows by `len(SPECIAL_TOKENS) + len(added_tokens)` rows
        (`recsys_jax.model.glm_import.resize_vocabulary`).

        The pretrained model keeps its own normalisation: the exact-concatenation property of
        our own models (`train_sentencepiece`) holds only if it has no dummy prefix; otherwise
        each separately encoded segment starts with a word boundary. Items are always encoded
        on their own, so the trie, masking and prompts still agree."""
        return cls(sp_model, added_tokens, first_added_id=pretrained_vocab_size)

    @property
    def added_tokens(self) -> list[str]:
        """The atomic tokens after the GLM specials (item-index tokens)."""
        return self.atomic[len(SPECIAL_TOKENS):]

    @property
    def sp_model_bytes(self) -> bytes:
        return self._sp_bytes

    @property
    def vocab_size(self) -> int:
        return self.first_added_id + len(self.atomic)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Text to ids; `<...>` atomic tokens are looked up, the rest goes through SentencePiece."""
        ids: list[int] = []
        for part in _ATOMIC.split(text):
            if not part:
                continue
            if _ATOMIC.fullmatch(part):
                if part not in self._atomic_id:
                    raise TokenizerError(f"unknown atomic token {part!r}: it is not in this "
                                         "tokenizer's vocabulary (was the index changed?)")
                ids.append(self._atomic_id[part])
            else:
                ids.extend(self.sp.encode(part))
        return ids

    def encode_segments(self, segments: Sequence[tuple[str, str]], task: str = "") -> TokenizedExample:
        """Encode `(text, role)` segments, each on its own, and record entity/target spans.

        Roles: "text" free text; "entity" an item or attribute value; "target" a free-text answer;
        "target_entity" an answer that is an item.
        """
        ids: list[int] = []
        entities, targets = [], []
        for text, role in segments:
            piece = self.encode(text)
            span = (len(ids), len(ids) + len(piece))
            ids.extend(piece)
            if not piece:
                if role in (TARGET, TARGET_ENTITY):
                    raise TokenizerError(f"empty answer in prompt {task!r}")
                continue
            if role in (ENTITY, TARGET_ENTITY):
                entities.append(span)
            if role in (TARGET, TARGET_ENTITY):
                targets.append(span)
            elif role not in (TEXT, ENTITY):
                raise TokenizerError(f"unknown segment role {role!r}")
        return TokenizedExample(np.asarray(ids, np.int32), entities, targets, [], task)

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Exact inverse of `encode` (whitespace lives inside the pieces)."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            if 0 <= i < self.sp_size:
                run.append(i)
                continue
            if run:
                out.append(self.sp.decode(run))
                run = []
            if self.sp_size <= i < self.first_added_id:  # a pretrained special / padding id
                if not skip_special:
                    out.append(f"<pretrained_{i}>")
                continue
            if not 0 <= i - self.first_added_id < len(self.atomic):
                raise TokenizerError(f"id {i} is outside the vocabulary ({self.vocab_size})")
            token = self.atomic[i - self.first_added_id]
            if not (skip_special and token in SPECIAL_TOKENS):
                out.append(token)
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    # -- persistence ------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "spm.model").write_bytes(self._sp_bytes)
        (directory / "added_tokens.json").write_text(json.dumps(self.added_tokens))
        if self.first_added_id != self.sp_size:  # a wrapped pretrained vocabulary
            (directory / "pretrained_vocab.json").write_text(
                json.dumps({"first_added_id": self.first_added_id}))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        directory = Path(directory)
        if not (directory / "spm.model").exists():
            raise TokenizerError(f"{directory}: no tokenizer (spm.model) found")
        pretrained = directory / "pretrained_vocab.json"
        first = (json.loads(pretrained.read_text())["first_added_id"] if pretrained.exists()
                 else None)
        return cls((directory / "spm.model").read_bytes(),
                   json.loads((directory / "added_tokens.json").read_text()), first)


def entity_token_ids(tokenizer: Tokenizer, index) -> list[tuple[int, ...]]:
    """Token sequence of every catalog item under `index` (the entity pool)."""
    return [tuple(tokenizer.encode(index.spell(i))) for i in range(index.num_items)]


def build_tokenizer(train_texts: Iterable[str], index, vocab_size: int = 8000) -> Tokenizer:
    """Fit SentencePiece on training text (the caller passes only training-side text) and add
    the item index's atomic tokens."""
    return Tokenizer(train_sentencepiece(train_texts, vocab_size), index.added_tokens())
