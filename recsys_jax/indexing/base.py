"""The common interface of every item index (docs/design.md, item indices).

An item index decides how an item is written in a prompt: its title, a random number, one new
token, or a short code of new tokens. Every index maps both ways without collisions:
`item_of(spell(i)) == i` for every catalog item `i`, and `spell` is injective.

Indices are fit on training data only (docs/design.md, leakage rules): `train_sequences` are the
training parts of the leave-one-out split and never contain a user's validation or test item.
Nothing about an index may depend on the dataset's own ids or on the internal item numbering (which
follows first appearance in the data and so carries an ordering signal).
"""

from __future__ import annotations

import abc
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from recsys_jax.data.schema import DataError, UnknownItemError

FORMAT_VERSION = 1


class ItemIndex(abc.ABC):
    """Item index <-> text. Items are internal item indices 0..num_items-1."""

    kind: ClassVar[str]

    @property
    @abc.abstractmethod
    def num_items(self) -> int:
        """How many items the index spells."""

    @abc.abstractmethod
    def spell(self, item: int) -> str:
        """The item's text for prompts."""

    @abc.abstractmethod
    def item_of(self, text: str) -> int:
        """The item that `text` spells; raises UnknownItemError if none does."""

    @abc.abstractmethod
    def added_tokens(self) -> list[str]:
        """New atomic vocabulary symbols (`<...>`, no spaces) the tokenizer must add."""

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]:
        """Kind-specific JSON-serialisable state."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, state: dict[str, Any]) -> ItemIndex:
        """Rebuild from `_state()`."""

    # -- shared behaviour ------------------------------------------------------------------

    def spell_all(self) -> list[str]:
        """`spell(i)` for every item, in item order."""
        return [self.spell(i) for i in range(self.num_items)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable; `load_index(state_dict())` spells every item identically."""
        return {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "num_items": self.num_items,
            **self._state(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ItemIndex:
        if state.get("kind") != cls.kind:
            raise ValueError(
                f"state_dict is for item index kind {state.get('kind')!r}, "
                f"not {cls.kind!r}; use recsys_jax.indexing.load_index"
            )
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"item index state format_version {state.get('format_version')!r} "
                f"is not supported (expected {FORMAT_VERSION})"
            )
        index = cls._from_state(state)
        if index.num_items != state.get("num_items"):
            raise ValueError(
                f"{cls.kind} state_dict is inconsistent: num_items "
                f"{state.get('num_items')} but {index.num_items} items stored"
            )
        return index

    def _check_item(self, item: int) -> int:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            raise TypeError(f"item must be an internal item index (int), got {item!r}")
        if not 0 <= item < self.num_items:
            raise UnknownItemError(
                f"item index {int(item)} is out of range: this {self.kind} "
                f"index has items 0..{self.num_items - 1}"
            )
        return int(item)

    def _unknown(self, text: str, hint: str = "") -> UnknownItemError:
        shown = text if len(text) <= 120 else text[:117] + "..."
        message = (
            f"{shown!r} does not spell any item of this {self.kind} index ({self.num_items} items)"
        )
        return UnknownItemError(message + (f"; {hint}" if hint else ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_items={self.num_items})"


def seeded_rng(seed: int, kind: str) -> np.random.Generator:
    """A generator per (seed, kind): two kinds built with the same seed do not share numbers."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(kind.encode())]))


def check_train_sequences(
    train_sequences: Sequence[Sequence[int]], num_items: int
) -> list[np.ndarray]:
    """Validate training sequences (internal item indices) and return them as int arrays."""
    out = []
    for k, seq in enumerate(train_sequences):
        arr = np.asarray(seq, dtype=np.int64).reshape(-1)
        bad = arr[(arr < 0) | (arr >= num_items)]
        if bad.size:
            raise DataError(
                f"training sequence {k} holds item index {int(bad[0])} outside the "
                f"catalog's 0..{num_items - 1}"
            )
        out.append(arr)
    return out


class NumberedIndex(ItemIndex):
    """An index that gives each item a number from a seeded random permutation of 1..n.

    The number is independent of the dataset's ids, the internal item order and the
    interactions; subclasses decide how a number is written.
    """

    def __init__(self, numbers):
        """`numbers[i]` is item i's number; together they are a permutation of 1..n."""
        self._numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        n = len(self._numbers)
        if n and not np.array_equal(np.sort(self._numbers), np.arange(1, n + 1)):
            raise ValueError(f"{self.kind} numbers must be a permutation of 1..{n}")
        self._item_of_number = np.empty(n + 1, np.int64)
        self._item_of_number[self._numbers] = np.arange(n)

    @classmethod
    def fit(cls, catalog, train_sequences, seed: int = 0) -> NumberedIndex:
        check_train_sequences(train_sequences, len(catalog))
        return cls(seeded_rng(seed, cls.kind).permutation(len(catalog)) + 1)

    @property
    def num_items(self) -> int:
        return len(self._numbers)

    @property
    def numbers(self) -> np.ndarray:
        """Item i's number at position i (a copy)."""
        return self._numbers.copy()

    def _number_of(self, item: int) -> int:
        return int(self._numbers[self._check_item(item)])

    def _item_of_number_or_none(self, number: int) -> int | None:
        return int(self._item_of_number[number]) if 1 <= number <= self.num_items else None

    def _state(self) -> dict[str, Any]:
        return {"numbers": self._numbers.tolist()}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> NumberedIndex:
        return cls(state["numbers"])
