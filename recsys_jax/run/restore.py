"""Load a saved checkpoint as a model ready to decode (the config it was trained with, its
weights, and its assets), for recommend / evaluate / export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flax import nnx

from recsys_jax import configlib
from recsys_jax.config import Config
from recsys_jax.data.prepared import load_prepared
from recsys_jax.model import GLM, fold_item_features
from recsys_jax.model.config import ModelConfig
from recsys_jax.run.assets import RunAssets
from recsys_jax.run.checkpoints import (
    RunCheckpoints,
    assign_params,
    find_checkpoint,
    read_params,
    verify_checkpoint,
)


def load_checkpoint(path: str | Path, data_dir: str | None = None):
    """-> (Config, GLM model with the saved parameters, RunAssets, step); the model is for
    inference (`data.item_features` folded into its embedding rows). `path`: a run dir (its
    best checkpoint) or one step dir; `data_dir`: where the prepared dataset lives, if not
    where training read it. Raises CheckpointError (a DataError) naming a damaged file."""
    run_dir, step = find_checkpoint(path)
    verify_checkpoint(run_dir, step)
    ckpt = RunCheckpoints(run_dir, async_save=False)
    try:
        saved_cfg = ckpt.restore_json(step, "config")
        assets_json = ckpt.restore_json(step, "assets")
    finally:
        ckpt.close()
    model_cfg = configlib.from_dict(ModelConfig, saved_cfg.pop("model"))
    cfg = dataclasses.replace(configlib.from_dict(Config, saved_cfg), model=model_cfg)
    prepared = load_prepared(data_dir or cfg.data.data_dir, cfg.data.dataset)
    assets = RunAssets.from_json(prepared, assets_json)
    model = GLM(model_cfg, rngs=nnx.Rngs(0))
    assign_params(model, read_params(run_dir, step))
    # Inference only: item-feature rows stored folded, not recomputed at every decode step.
    return cfg, fold_item_features(model), assets, step
