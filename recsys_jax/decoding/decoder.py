"""The inference core: one object that owns a trained model and everything decoding needs.

    decoder = Decoder.from_checkpoint("runs/default")
    inputs = decoder.prompts([[3, 17, 42]], ITEM_SEQUENCE)       # internal item ids
    items, scores = decoder.beam(inputs, k=10, exclude=[[3, 17, 42]])
    scores = decoder.score(inputs, candidates=[[5, 9, 11]])      # exact log P per candidate
    texts = decoder.generate(prompt, mask_pos, max_new=24)      # free text (explanations)

A `Decoder` holds the model (as graphdef + state), the tokenizer, the item index's token
spellings and their catalog trie, the masking that lays prompts out as training did, and the
decoding shapes. `recommend.Recommender`, the evaluators, training-time validation and
`export` all decode through it; nothing else calls the jitted beam search, scorer or generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from recsys_jax.decoding import trie as trie_lib
from recsys_jax.decoding.beam_search import beam_search
from recsys_jax.decoding.generate import generate_text
from recsys_jax.decoding.inputs import (
    ITEM_SEQUENCE,
    PROMPT_KEYS,
    START_KEYS,
    DecoderInputs,
    answer_sample,
    decoder_inputs,
    history_prompts,
)
from recsys_jax.decoding.scoring import pad_candidates, score_candidates
from recsys_jax.prompts.templates import get_template
from recsys_jax.run.restore import load_checkpoint
from recsys_jax.tokenizer import entity_token_ids

# Templates without a user slot: an API history has no user id the model was trained on.
DEFAULT_TEMPLATES = {"sequential": "2-4", "direct": "5-7"}


def default_templates(data_cfg) -> dict[str, str]:
    """The prompts a trained model is asked with: the bare item sequence when it was trained
    on it (the `item_sequence` family), else the templates above."""
    if data_cfg.family_weights.get("item_sequence", 0) > 0:
        return {"sequential": ITEM_SEQUENCE, "direct": ITEM_SEQUENCE}
    return dict(DEFAULT_TEMPLATES)


def id_matrix(rows: Sequence[Sequence[int]], width: int | None = None) -> np.ndarray:
    """Ragged item-id rows -> [B, width] int32, -1 padded (width: the longest row, at least 1)."""
    width = width or max(1, max((len(r) for r in rows), default=1))
    out = np.full((len(rows), width), -1, np.int32)
    for i, r in enumerate(rows):
        r = list(r)[:width]
        out[i, : len(r)] = r
    return out


class Decoder:
    def __init__(self, cfg, model, assets, *, beam: int = 20, length_penalty: float = 0.0):
        self.cfg = cfg
        self.assets = assets
        self.catalog = assets.prepared.catalog
        self.tokenizer = assets.tokenizer
        self.special = self.tokenizer.special
        self.masking = dataclasses.replace(cfg.masking, max_length=cfg.data.seq_len + 2)
        self.factory = assets.prompt_factory(cfg.data)
        self.templates = default_templates(cfg.data)
        self.pool = entity_token_ids(self.tokenizer, assets.index)  # item -> its token ids
        self.trie = trie_lib.catalog_trie(self.pool, self.tokenizer.vocab_size).device_put()
        self.beam_width = beam
        self.length_penalty = length_penalty
        self.set_model(model)

    @classmethod
    def from_checkpoint(cls, path: str | Path, data_dir: str | None = None, **kwargs) -> Decoder:
        cfg, model, assets, _ = load_checkpoint(path, data_dir)
        return cls(cfg, model, assets, **kwargs)

    def set_model(self, model) -> None:
        """Decode with `model`'s current weights (training-time validation swaps them in)."""
        self.graphdef, self.state = nnx.split(model)

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    # -- prompts --------------------------------------------------------------------------------

    def prompts(
        self, histories: Sequence[Sequence[int]], template_id: str, candidates=None, users=None
    ) -> DecoderInputs:
        """Decoder inputs for histories (internal ids): [B, L] arrays, L the power-of-two
        bucket of the longest prompt up to seq_len. `template_id` is a template id or
        `ITEM_SEQUENCE`; `users` (internal ids) fill the {user} slot of templates that have one."""
        template = template_id if template_id == ITEM_SEQUENCE else get_template(template_id)
        return history_prompts(
            self.factory,
            template,
            histories,
            self.special,
            self.masking,
            self.cfg.data.seq_len,
            candidates,
            users,
            bucket=True,
        )

    def answer_prompts(self, examples, answer_is_item: bool = False) -> DecoderInputs:
        """Encoded prompts without their answers (`TokenizedExample`s) -> Part A inputs that
        end in the answer's mask, bucketed like `prompts`."""
        samples = [answer_sample(e, self.special, self.masking, answer_is_item) for e in examples]
        return decoder_inputs(samples, self.special, self.cfg.data.seq_len, bucket=True)

    # -- decoding -------------------------------------------------------------------------------

    def beam(
        self, inputs: DecoderInputs, k: int, exclude=None, candidates=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Trie-constrained beam search -> (items [B, k] internal ids, -1 where fewer exist;
        scores [B, k] summed log-probabilities). Over the whole catalog, or with `candidates`
        ([B, N] ids, -1 padded) over each row's own candidates. `exclude` ([B, H] ids, -1
        padded, or ragged rows) are never returned and never take a beam slot."""
        batch = len(inputs.mask_pos)
        if candidates is None:
            trie, roots = self.trie, np.zeros(batch, np.int32)
        else:
            trie = trie_lib.candidate_tries(
                self.pool, id_matrix(candidates), self.tokenizer.vocab_size
            ).device_put()
            roots = np.arange(batch, dtype=np.int32)
        exclude = (
            np.full((batch, 1), -1, np.int32)
            if exclude is None
            else exclude
            if isinstance(exclude, np.ndarray)
            else id_matrix(exclude)
        )
        items, scores = beam_search(
            self.graphdef,
            self.state,
            inputs.prompt,
            inputs.mask_pos,
            trie,
            roots,
            exclude,
            beam=max(self.beam_width, k),
            top_k=k,
            eop=self.special.eop,
            sop=self.special.sop,
            length_penalty=self.length_penalty,
            start=inputs.start,
        )
        return np.asarray(items), np.asarray(scores)

    def score(
        self, inputs: DecoderInputs, candidates=None, answers: Sequence[str] | None = None
    ) -> np.ndarray:
        """Exact log P(answer tokens, <eop> | prompt), [B, N]: of each row's candidate items
        (`candidates` [B, N] ids, -1 padded: -inf), or of the same text `answers` for every row."""
        if inputs.continues_sequence:
            raise ValueError(
                "scoring needs an answer span; a model asked with the causal item "
                "sequence ranks candidates with beam search ('generate')"
            )
        if answers is not None:
            pool = [self.tokenizer.encode(a) for a in answers]
            choices = np.tile(np.arange(len(pool)), (len(inputs.mask_pos), 1))
        else:
            pool, choices = self.pool, id_matrix(candidates)
        tokens, lens = pad_candidates(pool, choices)
        return np.asarray(
            score_candidates(
                self.graphdef,
                self.state,
                inputs.prompt,
                inputs.mask_pos,
                tokens,
                lens,
                sop=self.special.sop,
                eop=self.special.eop,
            )
        )

    def generate(
        self, inputs: DecoderInputs, max_new: int, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        """Free text answers (no trie), greedy unless `temperature` > 0."""
        s = self.special
        out, lengths = generate_text(
            self.graphdef,
            self.state,
            inputs.prompt,
            inputs.mask_pos,
            jax.random.key(seed),
            max_new=max_new,
            eop=s.eop,
            sop=s.sop,
            temperature=temperature,
            banned=(s.pad, s.mask, s.smask, s.gmask, s.sop),
        )
        out, lengths = np.asarray(out), np.asarray(lengths)
        return [self.tokenizer.decode(out[r, : lengths[r]]).strip() for r in range(len(out))]

    # -- export ---------------------------------------------------------------------------------

    def beam_program(self, model, k: int):
        """The sequential recommender as a pure function for `jax.export`:
        -> (f, names, values) with f(weights, trie_arrays, inputs) -> (items [b, k], scores
        [b, k]); `names`/`values` are `model`'s flat parameter names and arrays, in state
        order. `inputs` holds PROMPT_KEYS, "mask_pos", "exclude" and, for a causal
        item-sequence model, START_KEYS. Weights and trie are arguments, not constants, so the
        program stays small whatever the model size."""
        import jax.numpy as jnp

        graphdef, state = nnx.split(model)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
        names = [
            jax.tree_util.keystr(p, simple=True, separator=".").removesuffix(".value")
            for p, _ in leaves
        ]
        fanout, max_depth = self.trie.fanout, self.trie.max_depth
        continues = self.continues_sequence
        beam, s, penalty = max(self.beam_width, k), self.special, self.length_penalty

        def recommend(weights, trie_arrays, inputs):
            # Stored weights may be bf16; parameters are float32 by the model's contract.
            params = jax.tree.unflatten(treedef, [weights[n].astype(jnp.float32) for n in names])
            trie = trie_lib.Trie(**trie_arrays, fanout=fanout, max_depth=max_depth)
            batch = inputs["tokens"].shape[0]
            return beam_search(
                graphdef,
                params,
                {key: inputs[key] for key in PROMPT_KEYS},
                inputs["mask_pos"],
                trie,
                jnp.zeros((batch,), jnp.int32),
                inputs["exclude"],
                beam=beam,
                top_k=k,
                eop=s.eop,
                sop=s.sop,
                length_penalty=penalty,
                start=tuple(inputs[key] for key in START_KEYS) if continues else None,
            )

        return recommend, names, [np.asarray(v) for _, v in leaves]

    @property
    def continues_sequence(self) -> bool:
        """True when the sequential prompt is the causal item sequence (decoding continues
        the history's own span)."""
        return (
            self.templates["sequential"] == ITEM_SEQUENCE
            and self.cfg.data.sequence_objective == "causal"
        )
