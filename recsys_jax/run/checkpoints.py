"""Orbax checkpoints of a run: model + optimizer state, step, RNG, data-iterator state, the
resolved config and the tokenizer/index assets, so one checkpoint directory is self-contained.

Kept: the `keep` most recent steps plus the best by validation loss. Saving is asynchronous;
`wait()` before reading a checkpoint back or exiting.

Each finished step gets `<step>/checksums.json` (sha256 and size of every file in the step);
`verify_checkpoint` checks it before a step is used. Steps written before checksums existed
have none and are used unverified.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as keep_policy

from recsys_jax.data.schema import DataError
from recsys_jax.run.checksums import sha256_file

ITEMS = ("state", "data_iter", "config", "assets", "meta")
CHECKSUMS = "checksums.json"


class CheckpointError(DataError):
    """A checkpoint step is incomplete or damaged; the message names the file."""


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
        self.async_save = async_save
        self._unsummed: list[int] = []  # saved steps still without checksums.json

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

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
        # Orbax waits for the previous save here anyway; finishing it first lets its checksums
        # be written while nothing else touches the checkpoint directory.
        self._finish()
        saved = self.manager.save(
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
        if saved:
            self._unsummed.append(step)
        if not self.async_save:
            self._finish()

    def _finish(self) -> None:
        """Wait for the pending save, then write checksums for every finished step lacking one."""
        self.manager.wait_until_finished()
        for step in self._unsummed:
            step_dir = self.directory / str(step)
            # A step already dropped by the keep policy has nothing left to checksum.
            if jax.process_index() == 0 and step_dir.is_dir():
                write_checksums(step_dir)
        self._unsummed = []

    def restore(self, step: int, abstract_state: Any) -> dict:
        """`abstract_state`: a pytree of jax.ShapeDtypeStruct with shardings (the target layout).
        Raises CheckpointError when an item is missing or Orbax cannot read it."""
        step_dir = _items_present(self.directory.parent, step, ITEMS)
        with _unreadable_as_error(step_dir):
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
        step_dir = _items_present(self.directory.parent, step, (name,))
        with _unreadable_as_error(step_dir / name):
            return self.manager.restore(
                step, args=ocp.args.Composite(**{name: ocp.args.JsonRestore()})
            )[name]

    def set_aside(self, step: int) -> Path:
        """Rename a damaged step to `<step>.damaged` (kept for inspection, invisible to Orbax),
        so that training can save that step number again; -> the new path."""
        step_dir = self.directory / str(step)
        dest = self.directory / f"{step}.damaged"
        if jax.process_index() == 0:
            n = 1
            while dest.exists():
                n += 1
                dest = self.directory / f"{step}.damaged{n}"
            step_dir.rename(dest)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"recsys_jax set aside checkpoint {step}")
        self.manager.reload()
        return dest

    def wait(self) -> None:
        self._finish()

    def close(self) -> None:
        self._finish()
        self.manager.close()


def write_checksums(step_dir: Path) -> None:
    """`step_dir/checksums.json`: relative path -> sha256 and size of every file in the step."""
    files = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(step_dir).as_posix()
        if not rel.startswith(CHECKSUMS):
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    # Written under another name and renamed: a half-written listing is never read as one.
    tmp = step_dir / f"{CHECKSUMS}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    tmp.replace(step_dir / CHECKSUMS)


def verify_checkpoint(run_dir: str | Path, step: int) -> None:
    """Check every file of a checkpoint step against its checksums.json; raises CheckpointError
    naming the first file (or item folder) that is missing, truncated or altered. A step
    without checksums.json (older versions) passes unchecked."""
    step_dir = Path(run_dir) / "checkpoints" / str(step)
    if not step_dir.is_dir():
        raise CheckpointError(f"{step_dir}: no such checkpoint step")
    listing = step_dir / CHECKSUMS
    if not listing.is_file():
        return
    try:
        files = json.loads(listing.read_text())["files"]
        wanted = {rel: (int(f["bytes"]), str(f["sha256"])) for rel, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{listing} is corrupted ({e}); cannot verify the step") from None
    for rel, (size, digest) in wanted.items():
        path = step_dir / rel
        if not path.is_file():
            top = step_dir / rel.split("/")[0]
            raise CheckpointError(
                f"{top if not top.exists() else path} is missing from checkpoint step {step}"
            )
        if path.stat().st_size != size:
            raise CheckpointError(
                f"{path} is truncated or altered: {path.stat().st_size} bytes, "
                f"{CHECKSUMS} says {size} (checkpoint step {step})"
            )
        if sha256_file(path) != digest:
            raise CheckpointError(
                f"{path} is corrupted: its sha256 differs from {CHECKSUMS} (checkpoint step {step})"
            )


def newest_intact_step(ckpt: RunCheckpoints, warn=print, check=None) -> int | None:
    """The newest step that passes `verify_checkpoint` (and `check(step)`, which raises
    CheckpointError for what it cannot read), or None. Each damaged newer step gets one
    warning line naming the file and is set aside, so the run can save those steps again."""
    for step in reversed(ckpt.all_steps()):
        try:
            verify_checkpoint(ckpt.directory.parent, step)
            if check is not None:
                check(step)
            return step
        except CheckpointError as e:
            dest = ckpt.set_aside(step)
            warn(f"[resume] warning: checkpoint step {step} is damaged ({e}); moved to {dest.name}")
    return None


def _items_present(run_dir: Path, step: int, names) -> Path:
    """-> the step dir, after checking each item folder exists (a checkpoint without checksums
    otherwise fails deep inside Orbax)."""
    step_dir = Path(run_dir) / "checkpoints" / str(step)
    for name in names:
        if not (step_dir / name).is_dir():
            raise CheckpointError(f"{step_dir / name} is missing from checkpoint step {step}")
    return step_dir


class _unreadable_as_error:
    """Orbax / TensorStore failures while reading `where` -> one-line CheckpointError."""

    def __init__(self, where: Path):
        self.where = where

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, CheckpointError) or not _is_read_failure(error):
            return False
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(
            f"{self.where} cannot be read ({type(error).__name__}: {first})"
        ) from error


def read_params(run_dir: str | Path, step: int) -> dict:
    """Every saved parameter of a checkpoint (trained and frozen) as one nested dict of host
    arrays, read without a target structure."""
    step_dir = _items_present(Path(run_dir), step, ("state",))
    manager = ocp.CheckpointManager(Path(run_dir, "checkpoints").resolve(), item_names=("state",))
    try:
        with _unreadable_as_error(step_dir / "state"):
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    finally:
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


# TensorStore reports unreadable data as a ValueError carrying a status code; a target that
# does not fit (another shape or tree) is a plain ValueError too, and is not damage.
_DAMAGE_MARKS = re.compile(r"DATA_LOSS|NOT_FOUND|OUT_OF_RANGE|FAILED_PRECONDITION|Error reading")


def _is_read_failure(error: BaseException) -> bool:
    if isinstance(error, (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError)):
        return True
    return isinstance(error, ValueError) and bool(_DAMAGE_MARKS.search(str(error)))
