"""Recommend from a trained checkpoint: the Python API and `python -m recsys_jax.recommend`.

    rec = Recommender.from_checkpoint("runs/default")
    rec.recommend(history=["B004756YJA", "OPI Red Shatter Crackle Nail Polish E55 New"], k=10)
    -> [(item_id, title, score), ...]

Histories and candidates are dataset item ids (as in the data files) or exact titles.
Sequential recommendation decodes over the trie of the whole catalog; direct recommendation
ranks the given candidates by exact log-likelihood (or generates over their trie).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from flax import nnx

from recsys_jax import configlib
from recsys_jax.config import Config
from recsys_jax.data.prepared import load_prepared
from recsys_jax.data.schema import DataError, UnknownItemError
from recsys_jax.decoding import trie as trie_lib
from recsys_jax.decoding.beam_search import beam_search
from recsys_jax.decoding.inputs import ITEM_SEQUENCE, DecoderInputs, history_prompts
from recsys_jax.decoding.scoring import pad_candidates, score_candidates
from recsys_jax.model import GLM, fold_item_features
from recsys_jax.model.config import ModelConfig
from recsys_jax.prompts.templates import get_template
from recsys_jax.tokenizer import entity_token_ids
from recsys_jax.training.assets import RunAssets
from recsys_jax.training.checkpointing import (RunCheckpoints, assign_params, find_checkpoint,
                                                read_params)

# Templates without a user slot: an API history has no user id the model was trained on.
DEFAULT_TEMPLATES = {"sequential": "2-4", "direct": "5-7"}


def default_templates(data_cfg) -> dict[str, str]:
    """The prompts a trained model is asked with: the bare item sequence when it was trained
    on it (the `item_sequence` family), else the templates above."""
    if data_cfg.family_weights.get("item_sequence", 0) > 0:
        return {"sequential": ITEM_SEQUENCE, "direct": ITEM_SEQUENCE}
    return dict(DEFAULT_TEMPLATES)


def load_checkpoint(path: str | Path, data_dir: Optional[str] = None):
    """-> (Config, GLM model with the saved parameters, RunAssets, step); the model is for
    inference (`data.item_features` folded into its embedding rows)."""
    run_dir, step = find_checkpoint(path)
    ckpt = RunCheckpoints(run_dir, async_save=False)
    saved_cfg = ckpt.restore_json(step, "config")
    assets_json = ckpt.restore_json(step, "assets")
    ckpt.close()
    model_cfg = configlib.from_dict(ModelConfig, saved_cfg.pop("model"))
    cfg = configlib.from_dict(Config, saved_cfg)
    cfg = dataclasses.replace(cfg, model=model_cfg)
    prepared = load_prepared(data_dir or cfg.data.data_dir, cfg.data.dataset)
    assets = RunAssets.from_json(prepared, assets_json)
    model = GLM(model_cfg, rngs=nnx.Rngs(0))
    assign_params(model, read_params(run_dir, step))
    # Inference only: item-feature rows stored folded, not recomputed at every decode step.
    model = fold_item_features(model)
    return cfg, model, assets, step


class Recommender:
    def __init__(self, cfg: Config, model: GLM, assets: RunAssets, beam: int = 20,
                 length_penalty: float = 0.0):
        self.cfg = cfg
        self.assets = assets
        self.catalog = assets.prepared.catalog
        self.tokenizer = assets.tokenizer
        self.special = self.tokenizer.special
        self.masking = dataclasses.replace(cfg.masking, max_length=cfg.data.seq_len + 2)
        self.factory = assets.prompt_factory(cfg.data)
        self.graphdef, self.state = nnx.split(model)
        self.pool = entity_token_ids(self.tokenizer, assets.index)
        self.trie = trie_lib.catalog_trie(self.pool, self.tokenizer.vocab_size).device_put()
        self.beam = beam
        self.length_penalty = length_penalty
        self.templates = default_templates(cfg.data)
        titles: dict[str, list[int]] = {}
        for i, t in enumerate(self.catalog.titles):
            titles.setdefault(t, []).append(i)
        self._by_title = titles

    @classmethod
    def from_checkpoint(cls, path, data_dir: Optional[str] = None, **kwargs) -> "Recommender":
        cfg, model, assets, _ = load_checkpoint(path, data_dir)
        return cls(cfg, model, assets, **kwargs)

    # -- input checking ------------------------------------------------------------------------

    def resolve(self, ref) -> int:
        """A dataset item id or an exact title -> internal item index."""
        ref = str(ref)
        try:
            return self.catalog.index_of(ref)
        except UnknownItemError:
            pass
        hits = self._by_title.get(ref)
        if hits and len(hits) == 1:
            return hits[0]
        if hits:
            ids = [self.catalog.item_ids[i] for i in hits]
            raise UnknownItemError(f"title {ref!r} names {len(hits)} items; give the item id "
                                   f"instead (one of {ids})")
        raise UnknownItemError(f"unknown item {ref!r}: not a dataset item id or an exact title "
                               f"of the {len(self.catalog)}-item catalog")

    def _check_k(self, k: int, available: int) -> None:
        if not 1 <= k <= available:
            raise ValueError(f"k={k} must be between 1 and {available} (the number of items "
                             "that can be recommended)")

    # -- recommending ----------------------------------------------------------------------------

    def recommend(self, history: Sequence, k: int = 10, task: str = "sequential",
                  candidates: Optional[Sequence] = None, exclude_history: bool = True,
                  method: str = "score") -> list[tuple[str, str, float]]:
        return self.recommend_batch([history], k, task,
                                    None if candidates is None else [candidates],
                                    exclude_history, method)[0]

    def recommend_batch(self, histories: Sequence[Sequence], k: int = 10,
                        task: str = "sequential", candidates=None, exclude_history: bool = True,
                        method: str = "score") -> list[list[tuple[str, str, float]]]:
        if task not in DEFAULT_TEMPLATES:
            raise ValueError(f"task must be 'sequential' or 'direct', got {task!r}")
        hist = [[self.resolve(x) for x in h] for h in histories]
        if any(len(h) == 0 for h in hist):
            raise ValueError("empty history: give at least one item the user interacted with")
        if task == "direct":
            if candidates is None or len(candidates) != len(hist):
                raise ValueError("task='direct' needs one candidate list per history")
            cands = [[self.resolve(x) for x in c] for c in candidates]
            return self._direct(hist, cands, k, method)
        self._check_k(k, len(self.catalog) - (max(map(len, hist)) if exclude_history else 0))
        return self._sequential(hist, k, exclude_history)

    def prompts(self, hist, template_id, candidates=None, users=None) -> DecoderInputs:
        """Decoder inputs for histories (internal ids): [B, L] arrays, L the power-of-two
        bucket of the longest prompt up to seq_len. `template_id` is a template id or
        `ITEM_SEQUENCE`; `users` (internal ids) fill the {user} slot of templates that have one."""
        template = template_id if template_id == ITEM_SEQUENCE else get_template(template_id)
        return history_prompts(self.factory, template, hist, self.special,
                               self.masking, self.cfg.data.seq_len, candidates, users,
                               bucket=True)

    def search(self, inputs: DecoderInputs, trie, roots, exclude, k: int):
        """Trie-constrained beam search from `inputs`: (items [B, k], scores [B, k])."""
        items, scores = beam_search(
            self.graphdef, self.state, inputs.prompt, inputs.mask_pos, trie, roots, exclude,
            beam=max(self.beam, k), top_k=k, eop=self.special.eop, sop=self.special.sop,
            length_penalty=self.length_penalty, start=inputs.start)
        return np.asarray(items), np.asarray(scores)

    def _sequential(self, hist, k, exclude_history):
        inputs = self.prompts(hist, self.templates["sequential"])
        width = max(len(h) for h in hist) if exclude_history else 1
        exclude = np.full((len(hist), width), -1, np.int32)
        if exclude_history:
            for row, h in enumerate(hist):
                exclude[row, :len(h)] = h
        items, scores = self.search(inputs, self.trie, np.zeros(len(hist), np.int32), exclude, k)
        return [self._rows(i, s) for i, s in zip(items, scores)]

    def _direct(self, hist, cands, k, method):
        for c in cands:
            self._check_k(k, len(set(c)))
        width = max(len(c) for c in cands)
        padded = np.full((len(cands), width), -1, np.int32)
        for row, c in enumerate(cands):
            padded[row, :len(c)] = c
        if method not in ("score", "generate"):
            raise ValueError(f"method must be 'score' or 'generate', got {method!r}")
        inputs = self.prompts(hist, self.templates["direct"], cands)
        # A continued item sequence has no answer span to score: rank over the candidates'
        # trie instead (exact for one-token items).
        if method == "generate" or inputs.continues_sequence:
            tries = trie_lib.candidate_tries(self.pool, padded, self.tokenizer.vocab_size)
            items, scores = self.search(inputs, tries.device_put(),
                                      np.arange(len(hist), dtype=np.int32),
                                      np.full((len(hist), 1), -1, np.int32), k)
            return [self._rows(i, s) for i, s in zip(items, scores)]
        tokens, lens = pad_candidates(self.pool, padded)
        scores = np.asarray(score_candidates(self.graphdef, self.state, inputs.prompt,
                                             inputs.mask_pos, tokens, lens,
                                             sop=self.special.sop, eop=self.special.eop))
        out = []
        for row in range(len(hist)):
            order = np.argsort(-scores[row], kind="stable")[:k]
            out.append(self._rows(padded[row, order], scores[row, order]))
        return out

    def _rows(self, items, scores):
        return [(self.catalog.item_ids[i], self.catalog.titles[i], float(s))
                for i, s in zip(items, scores) if i >= 0]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_jax.recommend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run dir or checkpoint step dir")
    parser.add_argument("--history", nargs="+", required=True, help="item ids or exact titles")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--task", choices=["sequential", "direct"], default="sequential")
    parser.add_argument("--candidates", nargs="+", help="direct task: candidate item ids/titles")
    parser.add_argument("--method", choices=["score", "generate"], default="score")
    parser.add_argument("--keep-history", action="store_true",
                        help="sequential: allow items already in the history")
    parser.add_argument("--data-dir", help="where the prepared dataset lives (default: as trained)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        rec = Recommender.from_checkpoint(args.checkpoint, args.data_dir)
        rows = rec.recommend(args.history, k=args.k, task=args.task,
                             candidates=args.candidates, exclude_history=not args.keep_history,
                             method=args.method)
    except (UnknownItemError, DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"item_id": i, "title": t, "score": s} for i, t, s in rows]))
        return 0
    width = max(len(t) for _, t, _ in rows) if rows else 5
    print(f"{'rank':>4}  {'item_id':<12} {'score':>9}  title")
    for r, (item, title, score) in enumerate(rows, 1):
        print(f"{r:>4}  {item:<12} {score:>9.3f}  {title[:width]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
