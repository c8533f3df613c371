"""Orbax checkpoints of a run: model + optimizer state, step, RNG, data-iterator state, the
resolved config and the tokenizer/index assets, so one checkpoint directory is self-contained.

Kept: the `keep` most recent steps plus the best by validation loss. Saving is asynchronous;
`wait()` before reading a checkpoint back or exiting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as keep_policy

ITEMS = ("state", "data_iter", "config", "assets", "meta")


def selection_metric(metrics: dict) -> float:
    """Larger is better: validation NDCG@10 when logged, else minus the validation loss."""
    if "valid_NDCG@10" in metrics:
        return float(metrics["valid_NDCG@10"])
    return -float(metrics["valid_loss"])


def _manager(directory: Path, keep: int, async_save: bool) -> ocp.CheckpointManager:
    policy = keep_policy.AnyPreservationPolicy(
        [
            keep_policy.LatestN(n=keep),
            # BestN keeps the largest metric values: validation NDCG@10 when the run ranks,
            # else the negated loss.
            keep_policy.BestN(
                get_metric_fn=selection_metric, n=1, keep_checkpoints_without_metrics=False
            ),
        ]
    )
    # best_fn is what best_step() ranks by; without it Orbax reports the latest step.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=selection_metric,
        best_mode="max",
        enable_async_checkpointing=async_save,
        create=True,
    )
    return ocp.CheckpointManager(directory.resolve(), options=options, item_names=ITEMS)


class RunCheckpoints:
    def __init__(self, run_dir: str | Path, keep: int = 3, async_save: bool = True):
        self.directory = Path(run_dir) / "checkpoints"
        self.manager = _manager(self.directory, keep, async_save)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(
        self,
        step: int,
        state: Any,
        data_iter: dict,
        config: dict,
        assets: dict,
        meta: dict,
        valid: dict | None = None,
    ) -> None:
        """`valid`: the step's validation metrics ({"valid_loss", optionally
        "valid_NDCG@10"}), or None when the step was not validated."""
        metrics = None if valid is None else {k: float(v) for k, v in valid.items()}
        self.manager.save(
            step,
            metrics=metrics,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iter=ocp.args.JsonSave(data_iter),
                config=ocp.args.JsonSave(config),
                assets=ocp.args.JsonSave(assets),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def restore(self, step: int, abstract_state: Any) -> dict:
        """`abstract_state`: a pytree of jax.ShapeDtypeStruct with shardings (the target layout)."""
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data_iter=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
                assets=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return {name: out[name] for name in ITEMS}

    def restore_json(self, step: int, name: str) -> Any:
        return self.manager.restore(
            step, args=ocp.args.Composite(**{name: ocp.args.JsonRestore()})
        )[name]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def read_params(run_dir: str | Path, step: int) -> dict:
    """Every saved parameter of a checkpoint (trained and frozen) as one nested dict of host
    arrays, read without a target structure."""
    manager = ocp.CheckpointManager(Path(run_dir, "checkpoints").resolve(), item_names=("state",))
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    return _merge_trees(state["state"]["frozen"], state["state"]["train"]["params"])


def _merge_trees(a, b):
    if not isinstance(a, dict) or not isinstance(b, dict) or "value" in a or "value" in b:
        return b if b is not None else a
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_trees(a.get(k), v) if k in a else v
    return out


def assign_params(model, saved: dict, which=nnx.Param) -> None:
    """Set the parameters of `model` selected by `which` from a saved tree (`read_params`),
    checking every name and shape; raises naming what is missing or mis-shaped."""
    state = nnx.state(model, which)
    missing, mismatched = [], []
    for path, var in nnx.to_flat_state(state):
        node = saved
        for key in path:
            node = node.get(str(key)) if isinstance(node, dict) else None
            if node is None:
                break
        value = node.get("value") if isinstance(node, dict) else node
        name = ".".join(map(str, path))
        if value is None:
            missing.append(name)
        elif tuple(value.shape) != tuple(var.get_value().shape):
            mismatched.append(
                f"{name}: saved {tuple(value.shape)} vs model {tuple(var.get_value().shape)}"
            )
        else:
            var.set_value(_place_like(value, var.get_value()))
    if missing or mismatched:
        raise ValueError(
            f"checkpoint parameters do not fit this model: missing {missing[:5]}, "
            f"shape mismatches {mismatched[:5]}"
        )
    nnx.update(model, state)


def _place_like(value, current: jax.Array) -> jax.Array:
    """`value` as an array with `current`'s dtype and sharding, each device getting only its
    shard: a large model (GLM-10B) never has a whole copy of a parameter on one device."""
    value = np.asarray(value).astype(current.dtype)
    sharding = getattr(current, "sharding", None)
    if sharding is None:
        return jnp.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def find_checkpoint(path: str | Path) -> tuple[Path, int]:
    """Accept a run dir, its `checkpoints/` dir, or one step dir; return (run_dir, step).

    A run dir (or its checkpoints/) means the run's best checkpoint by validation, as its
    finished run recorded it in summary.json, else its latest."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if path.name.isdigit() and path.parent.name == "checkpoints":
        return path.parent.parent, int(path.name)
    if path.name == "checkpoints" and path.is_dir():
        steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())
        best = _recorded_best(path.parent)
        if best in steps:
            return path.parent, best
        if steps:
            return path.parent, steps[-1]
    raise FileNotFoundError(
        f"{path}: no checkpoint found (expected a run directory with "
        "checkpoints/<step>/ written by recsys_jax.train)"
    )


def _recorded_best(run_dir: Path) -> int | None:
    try:
        best = json.loads((run_dir / "summary.json").read_text()).get("best_step")
    except (OSError, ValueError, AttributeError):
        return None
    return best if isinstance(best, int) else None
