"""The training run: set up data, assets, model and mesh; train, validate, checkpoint, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx
from tqdm.auto import tqdm

from recsys_jax import configlib, sharding
from recsys_jax.config import Config
from recsys_jax.evaluation.validation import RankingValidator
from recsys_jax.model import GLM
from recsys_jax.model.glm_import import resize_vocabulary
from recsys_jax.model.lora import BASE_PARAMS
from recsys_jax.prompts.mixture import TrainingMixture, active_families
from recsys_jax.run.assets import RunAssets, fit_assets, item_feature_table, open_prepared
from recsys_jax.run.checkpoints import (
    CheckpointError,
    RunCheckpoints,
    assign_params,
    find_checkpoint,
    newest_intact_step,
    read_params,
    verify_checkpoint,
)
from recsys_jax.training import TrainingDiverged
from recsys_jax.training import batches as batches_lib
from recsys_jax.training.guards import (
    DivergenceGuard,
    StopRequest,
    divergence_message,
    params_finite,
)
from recsys_jax.training.loss import logits_cap_advice
from recsys_jax.training.run_log import RunLog, StepWindow, plot_losses, train_seconds_so_far
from recsys_jax.training.step import (
    count_params,
    init_train_state,
    learning_rate_schedule,
    make_eval_step,
    make_optimizer,
    make_train_step,
    split_model,
)


class Trainer:
    def __init__(self, cfg: Config, log=None):
        sharding.maybe_initialize_distributed()
        self.is_main = jax.process_index() == 0
        self.log = log or (lambda msg: print(msg, flush=True) if self.is_main else None)
        self.cfg = cfg
        # Settings that cannot work fail here, before anything is read or written.
        self.mesh = _make_mesh(cfg)
        self.run_dir = Path(cfg.train.run_dir)
        if cfg.train.init_from and not (self.run_dir / "checkpoints").is_dir():
            _init_checkpoint(cfg.train.init_from)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = RunCheckpoints(
            self.run_dir, cfg.train.keep_checkpoints, cfg.train.async_checkpoint
        )
        self._resume_json: dict = {}
        self.start_step = self._newest_intact_step()
        if self.start_step > cfg.train.steps:
            # Resuming would train nothing and rewrite summary.json and config.yaml.
            self.checkpoints.close()
            raise configlib.ConfigError(
                f"{self.run_dir} already holds step {self.start_step} > train.steps="
                f"{cfg.train.steps}; nothing to do: raise train.steps to continue, or use a "
                "new train.run_dir"
            )
        saved_assets = None
        self.init_from = None
        self.pretrained_import = False
        if cfg.train.init_from and not self.start_step:
            self.init_from = _init_checkpoint(cfg.train.init_from)
            verify_checkpoint(*self.init_from)
            self.log(
                f"[init] parameters from {self.init_from[0]} step {self.init_from[1]}; "
                "its tokenizer and item index are reused"
            )
            saved_assets = RunCheckpoints(self.init_from[0]).restore_json(
                self.init_from[1], "assets"
            )
            # An imported pretrained model (recsys_jax.convert) has no index yet: its
            # vocabulary is wrapped with our tokens and its embedding grows to match.
            self.pretrained_import = "index" not in saved_assets
        if self.start_step:
            self.log(f"[resume] found checkpoint at step {self.start_step} in {self.run_dir}")
            self._check_same_config(self._resume_json["config"])
            saved_assets = self._resume_json["assets"]

        prepared = self.prepared = open_prepared(cfg.data, self.log)
        self.assets: RunAssets = fit_assets(prepared, cfg.data, saved_assets, self.log)
        self.item_features = (
            item_feature_table(self.assets, prepared.catalog, cfg.data.item_features)
            if cfg.data.item_features
            else None
        )
        self.model_cfg = dataclasses.replace(
            cfg.model,
            vocab_size=self.assets.tokenizer.vocab_size,
            item_feature_dim=0 if self.item_features is None else self.item_features.shape[1],
        )
        self.masking_cfg = dataclasses.replace(cfg.masking, max_length=cfg.data.seq_len)
        self.ranker = None  # built at the first validation that ranks
        self._build_data(prepared)
        self._build_model()

    # -- setup ---------------------------------------------------------------------------------

    def _newest_intact_step(self) -> int:
        """The newest checkpoint that verifies and whose config and assets read back (kept in
        `_resume_json`); damaged newer ones are reported and set aside. 0: start fresh."""

        def read_json(step: int) -> None:
            self._resume_json = {
                name: self.checkpoints.restore_json(step, name) for name in ("config", "assets")
            }

        return newest_intact_step(self.checkpoints, self.log, read_json) or 0

    def resolved_config(self) -> dict:
        out = configlib.to_dict(self.cfg)
        out["model"] = configlib.to_dict(self.model_cfg)
        return out

    def _check_same_config(self, saved: dict) -> None:
        now = configlib.to_dict(self.cfg)
        for section in ("model", "data", "masking", "mesh"):
            for key, value in now[section].items():
                if section == "model" and key == "vocab_size":
                    continue
                if saved.get(section, {}).get(key) != value:
                    self.log(
                        f"[resume] warning: {section}.{key} was "
                        f"{saved.get(section, {}).get(key)!r} in the checkpoint, now {value!r}"
                    )

    def _build_data(self, prepared) -> None:
        cfg = self.cfg
        families = active_families(
            cfg.data.family_weights, prepared.has_ratings, prepared.has_reviews, self.log
        )
        factory = self.assets.prompt_factory(cfg.data)
        mixture = TrainingMixture(factory, families)
        processes = jax.process_count()
        if cfg.train.batch_size % processes:
            raise configlib.ConfigError(
                f"train.batch_size={cfg.train.batch_size} must divide over {processes} processes"
            )
        self.batcher = batches_lib.Batcher(
            mixture,
            self.assets.tokenizer.special,
            self.masking_cfg,
            cfg.data.seq_len,
            cfg.train.batch_size // processes,
            cfg.data.pack,
        )
        rows = prepared.rating_rows("rating_train") if prepared.has_ratings else None
        sequences = list(zip(prepared.train_users().tolist(), prepared.train_sequences()))
        self.source = batches_lib.MixtureSource(
            sequences, rows, mixture.sequence_weight, mixture.row_weight
        )
        self.train_iter = batches_lib.train_iterator(
            self.batcher,
            self.source,
            cfg.data.seed,
            jax.process_index(),
            processes,
            cfg.data.workers,
        )
        valid_rows = prepared.rating_rows("rating_validation") if prepared.has_ratings else None
        self.valid_batches = batches_lib.validation_batches(
            self.batcher,
            prepared.validation_cases(),
            valid_rows,
            cfg.data.valid_users,
            cfg.data.seed + 1,
        )
        self.valid_cases = prepared.validation_cases()
        self.log(
            f"[data] {prepared.name}: {len(self.source):,} training records per epoch, "
            f"families {families}, {len(self.valid_batches)} validation batches"
        )

    def _build_model(self) -> None:
        cfg = self.cfg
        model = sharding.init_sharded(
            lambda: GLM(self.model_cfg, rngs=nnx.Rngs(cfg.train.seed)), self.mesh
        )
        if self.init_from is not None:
            saved = read_params(*self.init_from)
            if self.pretrained_import:
                saved = resize_vocabulary(saved, self.model_cfg.vocab_size, cfg.train.seed)
            assign_params(model, saved, BASE_PARAMS)
        if self.item_features is not None:
            # Item rows start as the projection of their pretrained vectors alone (a resumed
            # run overwrites them; set anyway in case every checkpoint proves unreadable).
            emb = model.word_embeddings
            emb.features[...] = jnp.asarray(self.item_features, jnp.float32)
            is_item = jnp.asarray(self.item_features.any(axis=1))[:, None]
            emb.embedding[...] = jnp.where(is_item, 0.0, emb.embedding[...])
        self.graphdef, params, self.frozen = split_model(model, cfg.train.lora_only)
        self.tx = make_optimizer(cfg.train)
        self.state_shardings = sharding.state_shardings(
            jax.eval_shape(lambda p: init_train_state(p, self.tx, cfg.train.seed), params),
            self.mesh,
        )
        self.frozen_shardings = frozen_shardings = sharding.state_shardings(self.frozen, self.mesh)
        self.frozen = jax.device_put(self.frozen, frozen_shardings)
        init = jax.jit(
            lambda p: init_train_state(p, self.tx, cfg.train.seed),
            out_shardings=self.state_shardings,
        )
        self.state = init(params)
        self.log(
            f"[model] {count_params(params):,} trainable / "
            f"{count_params(params) + count_params(self.frozen):,} parameters; mesh "
            f"{dict(self.mesh.shape)}"
        )
        while self.start_step:
            try:
                self._restore(self.start_step)
                break
            except CheckpointError as e:
                # Unreadable despite its checksums (or written without them): fall back too.
                dest = self.checkpoints.set_aside(self.start_step)
                self.log(
                    f"[resume] warning: checkpoint step {self.start_step} is damaged ({e}); "
                    f"moved to {dest.name}"
                )
                self.start_step = self._newest_intact_step()
                if self.start_step:
                    self.log(f"[resume] resuming from step {self.start_step} instead")
        batch_sh = sharding.batch_sharding(self.mesh)
        self.train_step = jax.jit(
            make_train_step(
                self.graphdef,
                self.tx,
                cfg.train.grad_accum,
                learning_rate_schedule(cfg.train),
                cfg.train.logits_fraction,
            ),
            in_shardings=(self.state_shardings, frozen_shardings, batch_sh),
            out_shardings=(self.state_shardings, None),
            donate_argnums=(0,),
        )
        self.eval_step = jax.jit(make_eval_step(self.graphdef, cfg.train.logits_fraction))

    def _restore(self, step: int) -> None:
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            {"train": self.state, "frozen": self.frozen},
            {"train": self.state_shardings, "frozen": self.frozen_shardings},
        )
        restored = self.checkpoints.restore(step, abstract)
        self.state, self.frozen = restored["state"]["train"], restored["state"]["frozen"]
        self.train_iter.set_state(restored["data_iter"])

    def _out_of_time(self, loop_start: float) -> bool:
        limit = self.cfg.train.time_limit_minutes
        if limit is None:
            return False
        out = time.perf_counter() - loop_start > 60 * limit
        if jax.process_count() > 1:  # every host must stop at the same step
            from jax.experimental import multihost_utils

            out = bool(multihost_utils.broadcast_one_to_all(np.asarray(out)))
        return out

    # -- loop ----------------------------------------------------------------------------------

    def validate(self) -> dict:
        """{"valid_loss"} (target-token cross-entropy), plus "valid_HR@k" / "valid_NDCG@k"
        of full ranking when `train.valid_ranking_users` asks for it."""
        total = count = 0.0
        for batch in self.valid_batches:
            s, c, _ = self.eval_step(
                self.state["params"], self.frozen, sharding.shard_batch(batch, self.mesh)
            )
            total += float(s)
            count += float(c)
        out = {"valid_loss": total / max(count, 1.0)}
        if self.cfg.train.valid_ranking_users:
            model = nnx.merge(self.graphdef, self.state["params"], self.frozen)
            if self.ranker is None:
                self.ranker = RankingValidator(
                    self.cfg,
                    model,
                    self.assets,
                    self.valid_cases,
                    self.cfg.train.valid_ranking_users,
                )
            ranked = self.ranker(model)
            out.update({f"valid_{k}": v for k, v in ranked.items() if k != "num_cases"})
        return out

    def save(self, step: int, valid: dict | None) -> None:
        meta = {
            "step": step,
            "time": time.time(),
            "jax": jax.__version__,
            "valid_loss": None if valid is None else valid["valid_loss"],
        }
        # Frozen parameters (the base model of a LoRA run) are saved too: a checkpoint is
        # self-contained for evaluation and export.
        self.checkpoints.save(
            step,
            {"train": self.state, "frozen": self.frozen},
            self.train_iter.get_state(),
            self.resolved_config(),
            self.assets.to_json(),
            meta,
            valid,
        )

    def _check_logits_cap(self, target_tokens: list[float]) -> None:
        shares = np.asarray(target_tokens) / (self.cfg.train.batch_size * self.cfg.data.seq_len)
        advice = logits_cap_advice(shares, self.cfg.train.logits_fraction)
        if advice:
            self.log(advice)

    def _diverged(self, bar, step: int, reason: str) -> TrainingDiverged:
        """Stop the run's workers and pending saves; the error to raise."""
        bar.close()
        self.train_iter.close()
        self.checkpoints.wait()
        last = self.checkpoints.latest_step()
        self.checkpoints.close()
        last_dir = None if last is None else self.run_dir / "checkpoints" / str(last)
        return TrainingDiverged(divergence_message(step, reason, self.guard.patience, last_dir))

    def run(self) -> dict:
        with StopRequest() as self.stop:
            return self._run()

    def _run(self) -> dict:
        cfg = self.cfg.train
        self.guard = DivergenceGuard(cfg.divergence_patience, self.start_step)
        if self.is_main:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.resolved_config()))
        runlog = RunLog(self.run_dir, self.start_step) if self.is_main else None
        write = runlog.write if runlog else (lambda r: None)
        earlier_seconds = train_seconds_so_far(runlog.records()) if runlog else 0.0
        last_valid = None
        if self.start_step == 0 and self.valid_batches:
            last_valid = self.validate()
            write({"step": 0, **last_valid, "train_seconds": 0.0})
            self.log(f"[valid] step 0: {_valid_text(last_valid)}")
        bar = tqdm(
            total=cfg.steps,
            initial=self.start_step,
            disable=not self.is_main,
            desc="train",
            dynamic_ncols=True,
        )
        window = StepWindow()
        loop_start, stopped_at, valid_seconds = time.perf_counter(), None, 0.0
        stopped_by = None  # "time_limit", "SIGTERM" or "SIGINT"
        for step in range(self.start_step + 1, cfg.steps + 1):
            fetch_start = time.perf_counter()
            batch = next(self.train_iter)
            input_seconds = time.perf_counter() - fetch_start
            self.state, metrics = self.train_step(
                self.state,
                self.frozen,
                sharding.shard_batch(batches_lib.model_batch(batch), self.mesh),
            )
            tokens = int(np.count_nonzero(batch["segment_ids"])) * jax.process_count()
            window.add(step, metrics, int(batch["num_examples"]), tokens, input_seconds)
            bar.update(1)
            stopping = self.stop.poll(step, cfg.log_every)  # read once per step
            if step % cfg.log_every == 0 or step == cfg.steps or stopping:
                first_window = step == self.start_step + len(window)
                records = window.flush()
                for record in records:
                    write(record)
                bad = self.guard.check([(r["step"], r["loss"], r["grad_norm"]) for r in records])
                if bad:
                    raise self._diverged(bar, *bad)
                last = records[-1]
                bar.set_postfix(
                    loss=f"{last['loss']:.3f}",
                    tok_s=f"{last['tokens_per_s']:.0f}",
                    input=f"{last['input_share']:.0%}",
                )
                if first_window:
                    self._check_logits_cap([r["target_tokens"] for r in records])
            out_of_time = step % cfg.log_every == 0 and self._out_of_time(loop_start)
            valid = None
            do_valid = self.valid_batches and (
                step % cfg.eval_every == 0 or step == cfg.steps or out_of_time
            )
            do_save = (
                step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time or stopping
            )
            if (do_valid or do_save) and len(window):
                # Never validate or save a diverged model: check the steps not logged yet.
                bad = self.guard.check(window.health())
                if bad:
                    raise self._diverged(bar, *bad)
            if do_valid:
                valid_start = time.perf_counter()
                valid = last_valid = self.validate()
                valid_seconds += time.perf_counter() - valid_start
                # Training time so far, validation excluded: the x axis of learning curves.
                write(
                    {
                        "step": step,
                        **valid,
                        "train_seconds": round(
                            earlier_seconds + time.perf_counter() - loop_start - valid_seconds, 1
                        ),
                    }
                )
                bar.write(f"[valid] step {step}: {_valid_text(valid)}") if self.is_main else None
                if cfg.plot and runlog:
                    plot_losses(runlog.records(), self.run_dir / "loss.png")
                bad_valid = {k: v for k, v in valid.items() if not math.isfinite(v)}
                if bad_valid:
                    # Not saved: a non-finite metric must never become the best checkpoint.
                    raise self._diverged(bar, step, f"validation {bad_valid}")
            if do_save and self.guard.bad_steps:
                # Within train.divergence_patience: a non-finite step's weights are not kept.
                self.log(f"[diverge] step {step} is not finite; its checkpoint is skipped")
            elif do_save:
                # A finite loss is computed before the step's update, which can still overflow.
                if not params_finite(self.state["params"]):
                    raise self._diverged(bar, step, "non-finite weights after the update")
                self.save(step, valid)
            if stopping:
                stopped_at, stopped_by = step, stopping
                saved = (
                    "checkpoint not saved (non-finite step)"
                    if self.guard.bad_steps
                    else "checkpoint saved"
                )
                self.log(f"stopped at step {step}; {saved}; run the same command to resume")
                break
            if out_of_time:
                stopped_at, stopped_by = step, "time_limit"
                if self.is_main:
                    bar.write(
                        f"[time] train.time_limit_minutes={cfg.time_limit_minutes} "
                        f"reached at step {step}; checkpoint saved, rerun to resume"
                    )
                break
        bar.close()
        self.train_iter.close()  # stops worker processes (data.workers) and frees their buffers
        self.checkpoints.wait()
        summary = self._summary(stopped_at or cfg.steps, stopped_by, last_valid)
        self.checkpoints.close()
        if cfg.plot and runlog:
            plot_losses(runlog.records(), self.run_dir / "loss.png")
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _summary(self, steps: int, stopped_by: str | None, last_valid: dict | None) -> dict:
        params_l2 = jnp.sqrt(
            sum(
                jnp.sum(jnp.square(x.astype(jnp.float32)))
                for x in jax.tree.leaves(self.state["params"])
            )
        )
        return {
            "run_dir": str(self.run_dir),
            "steps": steps,
            "stopped_by_time_limit": stopped_by == "time_limit",
            "stopped_by_signal": stopped_by if stopped_by in ("SIGTERM", "SIGINT") else None,
            "valid_loss": None if last_valid is None else last_valid["valid_loss"],
            "valid": last_valid,
            "best_step": self.checkpoints.best_step(),
            "params_l2": float(params_l2),
            "process_count": jax.process_count(),
        }


def _make_mesh(cfg: Config):
    try:
        return sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    except ValueError as e:  # sizes the devices cannot fill; the message counts the devices
        raise configlib.ConfigError(
            f"{e} (config keys mesh.data, mesh.fsdp, mesh.tensor)"
        ) from None


def _init_checkpoint(path: str):
    """`train.init_from` -> (run dir, step)."""
    try:
        return find_checkpoint(path)
    except FileNotFoundError as e:
        raise configlib.ConfigError(f"train.init_from: {e}") from None


def _valid_text(valid: dict) -> str:
    text = f"loss {valid['valid_loss']:.4f}"
    if "valid_NDCG@10" in valid:
        text += f", HR@10 {valid['valid_HR@10']:.4f}, NDCG@10 {valid['valid_NDCG@10']:.4f}"
    return text
