"""The device mesh, the one logical-axis rules table, and placing state and batches on the mesh.

Parameters name their dimensions logically ("vocab", "embed", "heads", ...; see
`recsys_jax.model`); `LOGICAL_AXIS_RULES` maps those names onto the mesh axes
("data", "fsdp", "tensor") — the MaxText / t5x pattern. Change parallelism by changing the mesh
shape (or this table), never the model.

Mesh axis type: `Auto` for all three axes. The model is written without sharding-in-types
annotations; with `Auto` the compiler propagates shardings from the `jax.jit`
`in_shardings`/`out_shardings` given here. The types are passed explicitly because
`jax.make_mesh`'s default has been changing between JAX releases. `Explicit` axes would make
ops such as the embedding gather over a vocab-sharded table demand an explicit `out_sharding`
at every call site.

Usage (one process or many — each process passes its own rows to `shard_batch`):
    mesh = make_mesh(data=-1, fsdp=2, tensor=2)
    model = init_sharded(lambda: GLM(cfg, rngs=nnx.Rngs(0)), mesh)   # or shard_model(model, mesh)
    batch = shard_batch(batch, mesh)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both: FSDP is data parallelism too

# logical name -> mesh axis (or axes, or None = replicated). Every name a parameter or batch
# uses must appear here: an unknown name is an error, not silently replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("qkv", None),  # the q/k/v selector of the fused projection
    ("kv", None),  # head_dim
    ("positions", None),  # rows of the (small) position tables
    ("norm", None),
    ("lora_rank", None),
    ("item_features", None),  # width of the pretrained item vectors (model.item_feature_dim)
)


def maybe_initialize_distributed() -> None:
    """Multi-host: initialise jax.distributed when the environment asks for it.

    Explicit: RECSYS_JAX_COORDINATOR=host:port, RECSYS_JAX_NUM_PROCESSES, RECSYS_JAX_PROCESS_ID.
    Managed clusters (TPU pods, SLURM, ...): RECSYS_JAX_DISTRIBUTED=auto lets JAX detect them.
    """
    if getattr(maybe_initialize_distributed, "done", False):
        return
    if os.environ.get("RECSYS_JAX_COORDINATOR"):
        jax.distributed.initialize(
            coordinator_address=os.environ["RECSYS_JAX_COORDINATOR"],
            num_processes=int(os.environ["RECSYS_JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["RECSYS_JAX_PROCESS_ID"]),
        )
    elif os.environ.get("RECSYS_JAX_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
    maybe_initialize_distributed.done = True


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, *, devices=None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all). One size may be -1."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1 or any(size == 0 or size < -1 for size in sizes.values()):
        raise ValueError(f"mesh sizes must be >= 1, with at most one -1; got {sizes}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if len(devices) % fixed:
            raise ValueError(
                f"mesh {sizes}: {len(devices)} devices do not divide into "
                f"groups of {fixed} (the product of the fixed axis sizes)"
            )
        sizes[free[0]] = len(devices) // fixed
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(
            f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x "
            f"tensor={sizes['tensor']} = {math.prod(sizes.values())} devices, but "
            f"there are {len(devices)}; set one axis to -1 to fill the rest"
        )
    return jax.make_mesh(
        tuple(sizes[a] for a in MESH_AXES),
        MESH_AXES,
        axis_types=(AxisType.Auto,) * len(MESH_AXES),
        devices=devices,
    )


def logical_to_mesh(
    names, shape=None, mesh: Mesh | None = None, rules=LOGICAL_AXIS_RULES
) -> PartitionSpec:
    """PartitionSpec for a tensor whose dims are named `names` (None = replicated dim).

    With `mesh` and `shape`, a mesh axis is dropped (that dim replicated over it) when its size
    does not divide the dim, or when an earlier dim already uses it: every parameter then gets
    a valid sharding on any mesh (e.g. 4 heads on tensor=8, or an odd vocabulary size).
    """
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(names):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise ValueError(
                f"logical axis {name!r} has no entry in the rules table (known: {sorted(table)})"
            )
        axes = table[name]
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        kept, split = [], 1
        for axis in axes:
            size = mesh.shape[axis] if mesh is not None else 1
            if axis in used or (mesh is not None and size == 1):
                continue
            if shape is not None and mesh is not None and shape[i] % (split * size):
                continue
            kept.append(axis)
            split *= size
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def _variable_sharding(path, var, mesh, rules):
    names = var.get_metadata().get("out_sharding")
    shape = getattr(var, "shape", ())
    if not names:
        return var.replace(NamedSharding(mesh, PartitionSpec()))
    if len(names) != len(shape):
        raise ValueError(
            f"{jax.tree_util.keystr(path)}: logical names {names} do not match shape {shape}"
        )
    return var.replace(NamedSharding(mesh, logical_to_mesh(names, shape, mesh, rules)))


def state_shardings(state: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """The NamedSharding tree of an NNX state (or module), shaped like `nnx.state(...)`.

    Works on real or abstract (`nnx.eval_shape`) state and on any pytree that holds such
    state (optimizer state, a train-state dict): variables without logical names and plain
    arrays (step counters, RNG keys) are replicated. Use the result as
    `jax.jit` in/out_shardings or with `jax.device_put`.
    """
    if isinstance(state, nnx.Module):
        state = nnx.state(state)
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(path, leaf):
        if isinstance(leaf, nnx.Variable):
            return _variable_sharding(path, leaf, mesh, rules)
        return replicated  # plain arrays in a train-state tree: step, RNG key, counters

    return jax.tree_util.tree_map_with_path(
        one, state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


def shard_model(model: nnx.Module, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> nnx.Module:
    """Moves an existing model's state onto `mesh` in place (and returns it)."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh, rules)))
    return model


def init_sharded(
    make_model: Callable[[], nnx.Module], mesh: Mesh, rules=LOGICAL_AXIS_RULES
) -> nnx.Module:
    """Builds `make_model()` with every parameter created directly in its shard.

    For models that do not fit one device: initialisation runs under `jax.jit` with
    `out_shardings`, so no full copy of a parameter ever exists.
    """
    graphdef, abstract_state = nnx.split(nnx.eval_shape(make_model))
    shardings = state_shardings(abstract_state, mesh, rules)
    init = jax.jit(lambda: nnx.state(make_model()), out_shardings=shardings)
    return nnx.merge(graphdef, init())


def batch_sharding(mesh: Mesh, ndim: int = 2, rules=LOGICAL_AXIS_RULES) -> NamedSharding:
    """Rows split over ("data", "fsdp"), other dims replicated."""
    names = ("batch",) + (None,) * (ndim - 1)
    return NamedSharding(mesh, logical_to_mesh(names, None, mesh, rules))


def shard_batch(batch: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """Places a pytree of host arrays (this process's rows) as global arrays split by row.

    The global batch is the concatenation of every process's rows, so with several processes
    each one passes only its own shard of the data.
    """

    def place(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, x.ndim, rules)
        rows, ways = x.shape[0] * jax.process_count(), _ways(sharding, 0)
        if rows % ways:
            raise ValueError(
                f"global batch size {rows} is not divisible by the {ways} data "
                f"shards of mesh {dict(mesh.shape)} (data x fsdp)"
            )
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(place, batch)


def _ways(sharding: NamedSharding, dim: int) -> int:
    axes = sharding.spec[dim] if dim < len(sharding.spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    return math.prod(sharding.mesh.shape[a] for a in axes)
