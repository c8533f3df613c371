"""Sentence embeddings from a BERT folder: tokenize, run the encoder, mean-pool, L2-normalise.

    encoder = TextEncoder(bundled_minilm_path())
    vectors = encoder.encode(["OPI Nail Lacquer", "Argan hair oil"])   # [2, 384] float32

It reproduces a sentence-transformers model of the usual shape (Transformer -> mean Pooling
-> optional Normalize, as listed in the folder's `modules.json`) without PyTorch:
- tokenizer.json through the `tokenizers` package, truncated to `max_seq_length`
  (sentence_bert_config.json, else the encoder's position count);
- each text goes to a length bucket (16, 24, 32, 48, 64, ... pieces); texts of one bucket are
  batched and padded to the bucket's length and to the bucket's fixed row count (fewer rows
  for longer buckets), so the jitted forward compiles once per bucket and a text's result
  does not depend on the other texts;
- mean pooling over real tokens only ([CLS] and [SEP] included, padding excluded), then
  L2 normalisation when the folder's modules.json ends in a Normalize module.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from recsys_jax.encoders.bert import BertEncoder, load_bert

MIN_BUCKET = 16


def _read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.is_file() else default


def sentence_settings(folder: Path) -> dict:
    """max_seq_length, do_lower_case and normalize from the sentence-transformers files.

    A folder without modules.json is a bare Hugging Face model: mean pooling, no normalisation.
    """
    sbert = _read_json(folder / "sentence_bert_config.json", {})
    settings = {
        "max_seq_length": sbert.get("max_seq_length"),
        "do_lower_case": bool(sbert.get("do_lower_case", False)),
        "normalize": False,
    }
    for module in _read_json(folder / "modules.json", []):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Normalize":
            settings["normalize"] = True
        elif kind == "Pooling":
            pooling = _read_json(folder / module.get("path", "") / "config.json", {})
            modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
            if modes and modes != ["pooling_mode_mean_tokens"]:
                raise ValueError(f"{folder}: pooling {modes} is not supported (mean pooling only)")
        elif kind != "Transformer":
            raise ValueError(
                f"{folder}/modules.json: module {module.get('type')!r} is not "
                f"supported (Transformer, mean Pooling and Normalize are)"
            )
    return settings


def length_bucket(length: int, max_length: int) -> int:
    """The padded length for a batch whose longest text has `length` tokens: 16, 24, 32, 48,
    64, 96, ... (powers of two and 1.5x between), capped at `max_length`. Few shapes (one
    compile each), at most a third of a batch wasted on padding."""
    bucket = MIN_BUCKET
    while bucket < length:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return min(bucket, max_length)


@functools.partial(jax.jit, static_argnums=(0, 4))  # one compile per (model, shape) for all
def _pooled(graphdef, state, ids, mask, normalize: bool):
    """Mean of the last hidden states over real tokens, [B, H] float32."""
    model: BertEncoder = nnx.merge(graphdef, state)
    hidden = model(ids, mask)
    weights = mask.astype(hidden.dtype)[..., None]
    pooled = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    if normalize:
        pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


class TextEncoder:
    """Texts -> [n, hidden] float32 sentence embeddings with a local BERT folder's weights."""

    def __init__(self, folder, *, max_seq_length: int | None = None):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.model = load_bert(self.folder)
        tokenizer_path = self.folder / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise FileNotFoundError(
                f"{tokenizer_path} not found (a fast-tokenizer file from "
                f"the `tokenizers` package is required)"
            )
        settings = sentence_settings(self.folder)
        positions = self.model.cfg.max_positions
        self.max_seq_length = min(
            int(max_seq_length or settings["max_seq_length"] or positions), positions
        )
        self.lowercase = settings["do_lower_case"]
        self.normalize = settings["normalize"]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()  # we pad per bucket
        self.tokenizer.enable_truncation(self.max_seq_length)
        self._graphdef, self._state = nnx.split(self.model)

    @property
    def dim(self) -> int:
        return self.model.cfg.hidden_size

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        texts = [str(t).lower() if self.lowercase else str(t) for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def embed_ids(self, tokens, mask) -> np.ndarray:
        """Pooled embeddings [B, hidden] of padded token ids [B, L] with mask [B, L] (1 = real)."""
        return np.asarray(
            _pooled(
                self._graphdef,
                self._state,
                jnp.asarray(tokens, jnp.int32),
                jnp.asarray(mask, jnp.int32),
                self.normalize,
            )
        )

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        max_batch_tokens: int = 4096,
        progress: bool = False,
    ) -> np.ndarray:
        """[len(texts), hidden] float32, row i for texts[i].

        A batch holds at most `batch_size` texts and `max_batch_tokens` padded tokens (long
        buckets take fewer rows), so a bucket with few long texts wastes little compute.
        """
        ids = self.token_ids(texts)
        out = np.zeros((len(ids), self.dim), np.float32)
        # Each text is padded to its OWN length bucket (a batch never mixes buckets), so its
        # padded shape, and with it its float result, does not depend on the other texts.
        buckets = np.array([length_bucket(len(x), self.max_seq_length) for x in ids], np.int64)
        with tqdm(total=len(ids), desc="embedding texts", unit="text", disable=not progress) as bar:
            for length in np.unique(buckets).tolist():
                members = np.flatnonzero(buckets == length)
                size = max(1, min(batch_size, max_batch_tokens // length))  # one per bucket
                for start in range(0, len(members), size):
                    rows = members[start : start + size]
                    tokens = np.zeros((size, length), np.int32)  # full rows: one shape
                    mask = np.zeros((size, length), np.int32)
                    for k, r in enumerate(rows):
                        tokens[k, : len(ids[r])] = ids[r]
                        mask[k, : len(ids[r])] = 1
                    out[rows] = self.embed_ids(tokens, mask)[: len(rows)]
                    bar.update(len(rows))
        return out
