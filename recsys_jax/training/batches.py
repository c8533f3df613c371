"""Prepared records -> tokenized task examples -> sampled spans -> laid-out static-shape batches.

Training draws from two record kinds in one Grain stream: users' training sequences and
training-split interaction rows. Their share follows the family weights; an "epoch" of the
stream visits every record of both kinds at least once (the smaller kind repeats).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys_jax.data.loader import make_train_iterator
from recsys_jax.example import SpecialIds
from recsys_jax.masking import MaskingConfig, SampledExample, pack_batch, pad_batch, sample_example
from recsys_jax.prompts.mixture import TrainingMixture
from recsys_jax.prompts.templates import get_template

SEQUENCE_RECORD, ROW_RECORD = 0, 1


class MixtureSource:
    """Random-access view over sequence records and row records with a fixed share of each."""

    def __init__(
        self,
        sequences: Sequence[tuple[int, np.ndarray]],
        rows: dict | None,
        sequence_weight: float,
        row_weight: float,
    ):
        self.sequences = [(u, s) for u, s in sequences if len(s) >= 2]
        self.rows = rows if rows is not None and row_weight > 0 else None
        n_seq = len(self.sequences) if sequence_weight > 0 else 0
        n_row = len(self.rows["user"]) if self.rows is not None else 0
        if n_seq + n_row == 0:
            raise ValueError(
                "no training records: every sequence is shorter than 2 items and "
                "there are no rating rows"
            )
        total_w = (sequence_weight if n_seq else 0) + (row_weight if n_row else 0)
        shares = [
            (n_seq, sequence_weight / total_w if n_seq else 0.0),
            (n_row, row_weight / total_w if n_row else 0.0),
        ]
        epoch = max(n / p for n, p in shares if n)
        self.n_seq_virtual = int(round(epoch * shares[0][1])) if n_seq else 0
        self.n_row_virtual = int(round(epoch * shares[1][1])) if n_row else 0

    def __len__(self) -> int:
        return self.n_seq_virtual + self.n_row_virtual

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < self.n_seq_virtual:
            user, items = self.sequences[index % len(self.sequences)]
            return {"kind": SEQUENCE_RECORD, "user": int(user), "items": items}
        r = (index - self.n_seq_virtual) % len(self.rows["user"])
        return {
            "kind": ROW_RECORD,
            "user": int(self.rows["user"][r]),
            "item": int(self.rows["item"][r]),
            "rating": float(self.rows["rating"][r]),
            "review": self.rows["review"][r],
            "summary": self.rows["summary"][r],
        }


@dataclasses.dataclass
class Batcher:
    """Turns records into sampled examples (prompt + spans, per record) and lists of those into
    fixed [rows, seq_len] batches (the Part A / Part B layout, for the whole batch at once)."""

    mixture: TrainingMixture
    special: SpecialIds
    masking: MaskingConfig
    seq_len: int
    rows: int  # batch rows on this process
    pack: bool

    def transform(self, record: dict, rng: np.random.Generator) -> SampledExample:
        if record["kind"] == SEQUENCE_RECORD:
            example = self.mixture.from_sequence(record["user"], record["items"], rng)
        else:
            example = self.mixture.from_row(
                record["user"],
                record["item"],
                record["rating"],
                record["review"],
                record["summary"],
                rng,
            )
        return sample_example(example, self.special, self.masking, rng)

    def collate(self, examples: Sequence[SampledExample]) -> dict:
        if self.pack:
            batch, leftover = pack_batch(examples, self.rows, self.seq_len, self.special)
            used = len(examples) - len(leftover)
        else:
            batch, used = pad_batch(examples, self.seq_len, self.special, self.rows), len(examples)
        batch["num_examples"] = np.asarray(used, np.int32)
        return batch

    def examples_per_batch(self, sample_lengths: Sequence[int]) -> int:
        """Packing: enough examples to fill the rows on average (the rest wait a batch)."""
        if not self.pack:
            return self.rows
        mean = max(1.0, float(np.mean(sample_lengths)))
        return max(self.rows, int(self.rows * self.seq_len / mean))


def measure_lengths(
    batcher: Batcher, source: MixtureSource, n: int = 64, seed: int = 0
) -> list[int]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(source), size=min(n, len(source)), replace=False)
    return [batcher.transform(source[int(i)], rng).length for i in picks]


def train_iterator(
    batcher: Batcher,
    source: MixtureSource,
    seed: int,
    shard_index: int,
    shard_count: int,
    workers: int = 0,
):
    per_batch = batcher.examples_per_batch(measure_lengths(batcher, source, seed=seed))
    return make_train_iterator(
        source,
        batcher.transform,
        per_batch,
        seed=seed,
        batch_fn=batcher.collate,
        shard_index=shard_index,
        shard_count=shard_count,
        workers=workers,
    )


def validation_batches(
    batcher: Batcher, cases, rating_rows: dict | None, limit: int, seed: int
) -> list[dict]:
    """Fixed validation examples: next-item prompt 2-3 on validation cases (and rating prompt
    1-6 on validation rows when the data has ratings), masked with a fixed seed, padded.

    Only the answer is hidden, as at evaluation: extra entity masks would make the validation
    loss depend on the training masking, so runs that differ in it could not be compared.
    A model trained on the bare item sequence is validated on it (history + answer), with
    loss only on the answer's tokens whatever its objective.
    """
    factory = batcher.mixture.factory
    masking = dataclasses.replace(batcher.masking, extra_entity_mask_prob=0.0)
    rng = np.random.default_rng(seed)
    examples = []
    template = get_template("2-3")
    bare = "item_sequence" in batcher.mixture.seq_families
    for k in range(min(limit, len(cases))):
        user, history, target = int(cases.users[k]), cases.histories[k], int(cases.targets[k])
        if len(history) == 0:
            continue
        if bare:
            ex = factory.item_sequence(list(history) + [target], training=True)
            examples.append(
                _answer_loss_only(
                    sample_example(ex, batcher.special, masking, rng), ex.entity_spans[-1]
                )
            )
            continue
        ex = factory.fit_history(
            lambda h, n: factory.sequence_prompt(template, user, h, target, rng), history
        )
        examples.append(sample_example(ex, batcher.special, masking, rng))
    if rating_rows is not None and len(rating_rows["user"]):
        rating = get_template("1-6")
        for r in range(min(limit, len(rating_rows["user"]))):
            prompt = factory.row_prompt(
                rating,
                int(rating_rows["user"][r]),
                int(rating_rows["item"][r]),
                float(rating_rows["rating"][r]),
                rating_rows["review"][r],
                rating_rows["summary"][r],
                rng,
            )
            examples.append(sample_example(factory.encode(prompt), batcher.special, masking, rng))
    return [
        pad_batch(examples[i : i + batcher.rows], batcher.seq_len, batcher.special, batcher.rows)
        for i in range(0, len(examples), batcher.rows)
    ]


def _answer_loss_only(example: SampledExample, answer: tuple[int, int]) -> SampledExample:
    """A causal item sequence scores every item: keep the loss on the answer's tokens only,
    its last `len(answer)` scored positions (an open end scores no `<eop>`). An infilled one
    already hides only the answer."""
    if not example.open_end:
        return example
    return dataclasses.replace(example, scored_tail=answer[1] - answer[0])


def model_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The arrays the compiled step takes (drops bookkeeping such as `num_examples`)."""
    return {k: v for k, v in batch.items() if k != "num_examples"}
