"""`random_id` index (leak-free P5): each item gets a number from a seeded random permutation of
1..n, written as digits ("4821").

P5 numbered items by first appearance along user sequences, test items included, so the number
leaked the answer (docs/design.md, leakage rules). Here the number is drawn at random: it is
independent of the dataset's ids, of the internal item order and of the interactions.
"""

from __future__ import annotations

from recsys_jax.indexing.base import NumberedIndex


class RandomIdIndex(NumberedIndex):
    kind = "random_id"

    def spell(self, item: int) -> str:
        return str(self._number_of(item))

    def item_of(self, text: str) -> int:
        key = str(text).strip()
        # Only the canonical spelling: ASCII digits, no sign, no leading zero.
        if key.isascii() and key.isdigit() and not key.startswith("0"):
            item = self._item_of_number_or_none(int(key))
            if item is not None:
                return item
        raise self._unknown(
            text, f"random ids are the numbers 1..{self.num_items} written as digits"
        )

    def added_tokens(self) -> list[str]:
        return []
