"""Validation ranking during training: full-ranking HR/NDCG of the model being trained.

The same decoder and protocol as `recsys_jax.evaluate` (trie-constrained beam search over the
whole catalog, the user's history excluded), on the validation split: history = the training
part, target = the validation item. It picks the best checkpoint and draws the learning curve;
the test split is never read here.
"""

from __future__ import annotations

from recsys_jax.decoding.decoder import Decoder
from recsys_jax.decoding.inputs import ITEM_SEQUENCE
from recsys_jax.evaluation import metrics as M
from recsys_jax.evaluation.ranking import sequential_ranking


def validation_template(data_cfg) -> str:
    """The prompt validation ranks with: the bare item sequence when the model is trained on
    it, else the seen sequential template 2-3."""
    return ITEM_SEQUENCE if data_cfg.family_weights.get("item_sequence", 0) > 0 else "2-3"


class RankingValidator:
    """`validator(graphdef, params, frozen) -> {"HR@5", "NDCG@5", "HR@10", "NDCG@10", ...}`
    over the first `users` validation cases (all of them with users < 0)."""

    def __init__(
        self, cfg, model, assets, cases, users: int, batch_size: int = 256, beam: int = 20
    ):
        n = len(cases) if users < 0 else min(users, len(cases))
        self.cases = type(cases)(cases.users[:n], cases.histories[:n], cases.targets[:n], None)
        self.decoder = Decoder(cfg, model, assets, beam=beam)
        self.template = validation_template(cfg.data)
        self.batch_size = min(batch_size, n)

    def __call__(self, model) -> dict:
        self.decoder.set_model(model)
        ranked = sequential_ranking(
            self.decoder, self.cases, self.template, self.batch_size, 10, True, "validation ranking"
        )
        return M.ranking_metrics(self.cases.targets, ranked)
