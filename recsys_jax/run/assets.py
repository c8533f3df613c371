"""What a run fits before training, from training data only: the item index and the tokenizer.

Both are saved in every checkpoint (`assets`) so a checkpoint decodes on its own; a resumed run
reloads them instead of refitting.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recsys_jax.configlib import ConfigError
from recsys_jax.data.prepared import PreparedData, load_prepared
from recsys_jax.data.schema import DataError
from recsys_jax.indexing import build_index, check_index_options, load_index
from recsys_jax.prompts.builders import PromptConfig, PromptFactory, user_name
from recsys_jax.prompts.templates import TEMPLATES
from recsys_jax.text_vocab import text_from_json
from recsys_jax.tokenizer import Tokenizer, build_tokenizer


def open_prepared(data_cfg, log=print) -> PreparedData:
    """Load the prepared dataset, preparing it first when it is the embedded default."""
    try:
        return load_prepared(data_cfg.data_dir, data_cfg.dataset)
    except DataError:
        if data_cfg.format == "embedded" or data_cfg.path is not None:
            from recsys_jax.data.prepare import prepare

            log(f"[data] preparing {data_cfg.dataset} into {data_cfg.data_dir} (first run)")
            prepare(
                data_cfg.format,
                data_cfg.path,
                data_dir=data_cfg.data_dir,
                name=None if data_cfg.format == "embedded" else data_cfg.dataset,
                seed=data_cfg.seed,
                log=log,
            )
            return load_prepared(data_cfg.data_dir, data_cfg.dataset)
        raise


def tokenizer_corpus(prepared: PreparedData, train_sequences, limit_users: int = 2000) -> list[str]:
    """Training-side text only: items seen in training sequences or training rating rows,
    training reviews, the prompt templates, and user names."""
    catalog = prepared.catalog
    items = set(np.concatenate(train_sequences).tolist()) if len(train_sequences) else set()
    texts = [t.text for t in TEMPLATES.values()]
    if prepared.has_ratings:
        rows = prepared.rating_rows("rating_train")
        items |= set(rows["item"].tolist())
        texts += [r for r in rows["review"] if r] + [s for s in rows["summary"] if s]
    for i in sorted(items):
        texts.append(catalog.titles[i])
        if catalog.attributes[i]:
            texts.append(", ".join(catalog.attributes[i]))
    texts += [user_name(u) for u in range(min(limit_users, prepared.num_users))]
    return texts


@dataclasses.dataclass
class RunAssets:
    prepared: PreparedData
    index: object
    tokenizer: Tokenizer

    def to_json(self) -> dict:
        return {"index": self.index.state_dict(), "tokenizer": self.tokenizer.to_json()}

    @classmethod
    def from_json(cls, prepared: PreparedData, data: dict) -> RunAssets:
        if "index" not in data:
            raise DataError(
                "this checkpoint has no item index (an imported pretrained model, "
                "`recsys_jax.convert`): fine-tune it first with "
                "`python -m recsys_jax.train ... train.init_from=<it>`"
            )
        return cls(prepared, load_index(data["index"]), Tokenizer.from_json(data["tokenizer"]))

    def prompt_factory(self, data_cfg) -> PromptFactory:
        known = [set() for _ in range(self.prepared.num_users)]
        for cases in (self.prepared.test_cases(),):
            for user, history, target in zip(cases.users, cases.histories, cases.targets):
                known[int(user)] = set(history.tolist()) | {int(target)}
        if self.prepared.has_ratings:
            for split in ("rating_train", "rating_validation", "rating_test"):
                rows = self.prepared.rating_rows(split)
                for u, i in zip(rows["user"].tolist(), rows["item"].tolist()):
                    known[u].add(i)
        cfg = PromptConfig(
            max_length=data_cfg.seq_len,
            max_history=data_cfg.max_history,
            train_candidates=data_cfg.train_candidates,
            sequence_objective=data_cfg.sequence_objective,
            window_ends=data_cfg.window_ends,
        )
        return PromptFactory(self.tokenizer, self.index, self.prepared.num_items, known, cfg)


def fit_assets(prepared: PreparedData, data_cfg, saved: dict | None = None, log=print) -> RunAssets:
    """The saved assets of a checkpoint, or new ones fit on training data. Saved assets
    without an index are a pretrained vocabulary (`recsys_jax.convert`): the index is fit and
    the pretrained tokenizer wrapped with its tokens (`pretrained_vocabulary`)."""
    if saved is not None and "index" in saved:
        return RunAssets.from_json(prepared, saved)
    train_sequences = prepared.train_sequences()
    log(f"[assets] fitting the {data_cfg.index} index on training sequences")
    try:  # options for another index kind are a config problem: say so without a traceback
        check_index_options(data_cfg.index, data_cfg.index_options)
    except ValueError as e:
        raise ConfigError(f"data.index={data_cfg.index}: {e}") from e
    index = build_index(
        data_cfg.index,
        prepared.catalog,
        train_sequences,
        seed=data_cfg.seed,
        **data_cfg.index_options,
    )
    if saved is not None:
        text, rows, special_ids = pretrained_vocabulary(saved)
        tokenizer = Tokenizer.wrap_pretrained(text, rows, index.added_tokens(), special_ids)
        log(
            f"[assets] wrapped the pretrained {text.kind} vocabulary ({rows} ids; reusing its "
            f"{', '.join(special_ids) or 'no'} special tokens) with "
            f"{tokenizer.vocab_size - rows} new special and item tokens"
        )
        return RunAssets(prepared, index, tokenizer)
    log(f"[assets] training the SentencePiece tokenizer ({data_cfg.vocab_size} pieces)")
    tokenizer = build_tokenizer(
        tokenizer_corpus(prepared, train_sequences), index, data_cfg.vocab_size
    )
    return RunAssets(prepared, index, tokenizer)


def pretrained_vocabulary(saved: dict) -> tuple[object, int, dict[str, int]]:
    """(text vocabulary, embedding rows, our special token -> its pretrained id) of an
    imported checkpoint's assets (`recsys_jax.convert`)."""
    tok = saved.get("pretrained_tokenizer")
    if tok is None:
        raise DataError(
            "the imported checkpoint has no tokenizer: rerun `python -m "
            "recsys_jax.convert` with --tokenizer (tokenizer.json, vocab.json, or "
            "a SentencePiece .model)"
        )
    return (
        text_from_json(tok.get("text", tok)),
        int(tok["vocab_size"]),
        dict(tok.get("special_ids", {})),
    )


def item_feature_table(assets: RunAssets, catalog, source: str) -> np.ndarray:
    """[vocab_size, dim] float32: item i's pretrained vector on the row of its `<item_i>` token,
    zeros elsewhere (`data.item_features`: "encoder" or a .npy path)."""
    from recsys_jax.encoders.item_embeddings import item_embeddings, load_item_vectors

    vectors = (
        item_embeddings(catalog, "encoder", progress=True)
        if source == "encoder"
        else load_item_vectors(source, len(catalog))
    )
    table = np.zeros((assets.tokenizer.vocab_size, vectors.shape[1]), np.float32)
    for item in range(len(catalog)):
        ids = assets.tokenizer.encode(assets.index.spell(item))
        if len(ids) != 1:
            raise ConfigError(
                f"data.item_features: item {catalog.item_ids[item]} is spelled "
                f"with {len(ids)} tokens; it needs data.index=item_token"
            )
        table[ids[0]] = vectors[item]
    return table
