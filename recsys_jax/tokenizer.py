"""Item-aware tokenizer: a text vocabulary, plus GLM special tokens and item-index tokens.

Vocabulary layout: [0, text_size) the text vocabulary (`recsys_jax.text_vocab`: our own
SentencePiece model, or a pretrained checkpoint's), then the GLM special tokens
(`example.SPECIAL_TOKENS`), then the atomic tokens the item index adds (`<item_7>`, `<a_3>`...).
A wrapped pretrained vocabulary (`Tokenizer.wrap_pretrained`) keeps the checkpoint's ids: the
GLM specials it was trained with (its [MASK], <|startofpiece|>, ...) keep their ids, the rest
and the item tokens start at the pretrained embedding's row count, and its other ids beyond
the text vocabulary (unused specials, padding rows) are never produced.

Entities are encoded on their own, never together with surrounding text, so an item always has
the same token sequence wherever it appears: the trie, the masking and the prompts agree.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from recsys_jax.example import SPECIAL_TOKENS, SpecialIds, TokenizedExample
from recsys_jax.text_vocab import (
    SentencePieceText,
    TextVocabError,
    check_special_ids,
    text_from_json,
    text_to_json,
)

_ATOMIC = re.compile(r"(<[^<>\s]+>|\[MASK\]|\[sMASK\]|\[gMASK\])")

_PIECE_MEMO_SIZE = 200_000
# Roles of prompt segments (see `encode_segments`).
TEXT, ENTITY, TARGET, TARGET_ENTITY = "text", "entity", "target", "target_entity"


class TokenizerError(ValueError):
    pass


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int = 8000,
    seed_sentence_size: int = 200_000,
    model_type: str = "unigram",
) -> bytes:
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
        sentence_iterator=iter(texts),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type=model_type,
        byte_fallback=True,
        split_digits=True,
        treat_whitespace_as_suffix=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=0.9995,
        input_sentence_size=seed_sentence_size,
        shuffle_input_sentence=True,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )
    return buffer.getvalue()


class Tokenizer:
    """Text vocabulary + GLM specials + item-index tokens.

    `text`: a `text_vocab` vocabulary (SentencePiece model bytes are taken as one).
    `first_added_id`: where appended tokens start (the text size, or a pretrained embedding's
    row count). `special_ids`: GLM specials the pretrained vocabulary already has ({"[MASK]":
    id, ...}); those keep the checkpoint's trained ids and are not appended."""

    def __init__(
        self,
        text,
        added_tokens: Sequence[str] = (),
        first_added_id: int | None = None,
        special_ids: Mapping[str, int] | None = None,
    ):
        self.text = SentencePieceText(text) if isinstance(text, (bytes, bytearray)) else text
        self.text_size = self.text.size
        self.first_added_id = self.text_size if first_added_id is None else int(first_added_id)
        if self.first_added_id < self.text_size:
            raise TokenizerError(
                f"the pretrained vocabulary ({self.first_added_id} ids) is "
                f"smaller than its text model ({self.text_size} tokens)"
            )
        self.special_ids = {t: int(i) for t, i in (special_ids or {}).items()}
        unknown = set(self.special_ids) - set(SPECIAL_TOKENS)
        if unknown:
            raise TokenizerError(f"special_ids names {sorted(unknown)}; ours are {SPECIAL_TOKENS}")
        try:
            check_special_ids(self.special_ids, self.first_added_id)
        except TextVocabError as e:
            raise TokenizerError(str(e)) from None
        self._added = [t for t in added_tokens if t not in SPECIAL_TOKENS]
        if len(set(self._added)) != len(self._added):
            raise TokenizerError("added tokens contain duplicates")
        bad = [t for t in self._added if not _ATOMIC.fullmatch(t)]
        if bad:
            raise TokenizerError(f"added tokens must look like <name> with no spaces: {bad[:3]}")
        appended = [t for t in SPECIAL_TOKENS if t not in self.special_ids] + self._added
        self._atomic_id = dict(self.special_ids)
        self._atomic_id.update({t: self.first_added_id + k for k, t in enumerate(appended)})
        self._id_atomic = {i: t for t, i in self._atomic_id.items()}
        self.vocab_size = self.first_added_id + len(appended)
        self.special = SpecialIds(*(self._atomic_id[t] for t in SPECIAL_TOKENS))
        self._pieces: dict[str, tuple[int, ...]] = {}  # `_piece` memo

    @classmethod
    def wrap_pretrained(
        cls,
        text,
        pretrained_vocab_size: int,
        added_tokens: Sequence[str] = (),
        special_ids: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """A pretrained text vocabulary whose model has `pretrained_vocab_size` embedding rows,
        with our special tokens that it lacks and `added_tokens` appended after those rows; the
        model's embedding grows by as many rows (`recsys_jax.model.glm_import.resize_vocabulary`).

        The pretrained model keeps its own normalisation: the exact-concatenation property of
        our own models (`train_sentencepiece`) holds only if it adds no dummy prefix (GPT-2
        byte-level BPE adds none); otherwise each separately encoded segment starts with a
        word boundary. Items are always encoded on their own, so the trie, masking and prompts
        still agree."""
        return cls(
            text, added_tokens, first_added_id=pretrained_vocab_size, special_ids=special_ids
        )

    @property
    def added_tokens(self) -> list[str]:
        """The atomic tokens after the GLM specials (item-index tokens)."""
        return list(self._added)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Text to ids: `<...>` atomic tokens are looked up, the rest goes through the text
        vocabulary."""
        ids: list[int] = []
        for part in _ATOMIC.split(text):
            if not part:
                continue
            if _ATOMIC.fullmatch(part):
                if part not in self._atomic_id:
                    raise TokenizerError(
                        f"unknown atomic token {part!r}: it is not in this "
                        "tokenizer's vocabulary (was the index changed?)"
                    )
                ids.append(self._atomic_id[part])
            else:
                ids.extend(self.text.encode(part))
        return ids

    def encode_segments(
        self, segments: Sequence[tuple[str, str]], task: str = ""
    ) -> TokenizedExample:
        """Encode `(text, role)` segments, each on its own, and record entity/target spans.

        Roles: "text" free text; "entity" an item or attribute value; "target" a free-text answer;
        "target_entity" an answer that is an item.
        """
        ids: list[int] = []
        entities, targets = [], []
        pieces = self._pieces
        for text, role in segments:
            piece = pieces.get(text) or self._piece(text)
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

    def _piece(self, text: str) -> tuple[int, ...]:
        """`encode`, remembered: prompts repeat the same item spellings and template words.
        Bounded, so a stream of distinct review texts cannot grow it without end."""
        piece = self._pieces.get(text)
        if piece is None:
            piece = tuple(self.encode(text))
            if len(self._pieces) < _PIECE_MEMO_SIZE:
                self._pieces[text] = piece
        return piece

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Exact inverse of `encode` (whitespace lives inside the pieces)."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            token = self._id_atomic.get(i)
            if token is None and 0 <= i < self.text_size:
                run.append(i)
                continue
            if run:
                out.append(self.text.decode(run))
                run = []
            if token is None:
                if not 0 <= i < self.first_added_id:
                    raise TokenizerError(f"id {i} is outside the vocabulary ({self.vocab_size})")
                if not skip_special:  # a pretrained special / padding row we do not use
                    out.append(f"<pretrained_{i}>")
            elif not (skip_special and token in SPECIAL_TOKENS):
                out.append(token)
        if run:
            out.append(self.text.decode(run))
        return "".join(out)

    # -- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict:
        """Everything needed to rebuild this tokenizer (stored in checkpoints and bundles)."""
        data = {"text": text_to_json(self.text), "added_tokens": self.added_tokens}
        if self.first_added_id != self.text_size:  # a wrapped pretrained vocabulary
            data["first_added_id"] = self.first_added_id
        if self.special_ids:
            data["special_ids"] = self.special_ids
        return data

    @classmethod
    def from_json(cls, data: dict) -> Tokenizer:
        """Inverse of `to_json`; also reads the SentencePiece-only form of older checkpoints
        ({"spm_model": b64, ...})."""
        try:
            text = text_from_json(data.get("text", data))
        except TextVocabError as e:
            raise TokenizerError(str(e)) from None
        return cls(text, data["added_tokens"], data.get("first_added_id"), data.get("special_ids"))

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tokenizer.json").write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        path = Path(directory) / "tokenizer.json"
        if not path.exists():
            raise TokenizerError(f"{directory}: no tokenizer (tokenizer.json) found")
        return cls.from_json(json.loads(path.read_text()))


def entity_token_ids(tokenizer: Tokenizer, index) -> list[tuple[int, ...]]:
    """Token sequence of every catalog item under `index` (the entity pool)."""
    return [tuple(tokenizer.encode(index.spell(i))) for i in range(index.num_items)]


def build_tokenizer(train_texts: Iterable[str], index, vocab_size: int = 8000) -> Tokenizer:
    """Fit SentencePiece on training text (the caller passes only training-side text) and add
    the item index's atomic tokens."""
    return Tokenizer(
        SentencePieceText(train_sentencepiece(train_texts, vocab_size)), index.added_tokens()
    )
