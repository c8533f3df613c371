"""Mesh, logical-axis rules and placement. Multi-device checks run in a subprocess with 8 fake
CPU devices (XLA_FLAGS must be set before jax is imported, so not in this process)."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest
from jax.sharding import PartitionSpec as P

from recsys_jax.sharding import LOGICAL_AXIS_RULES, logical_to_mesh, make_mesh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_with_8_devices(code: str) -> str:
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_rules_map_logical_names_to_mesh_axes():
    assert logical_to_mesh(("vocab", "embed")) == P("tensor", "fsdp")
    assert logical_to_mesh(("embed", "qkv", "heads", "kv")) == P("fsdp", None, "tensor", None)
    assert logical_to_mesh(("batch", None)) == P(("data", "fsdp"), None)
    assert all(isinstance(name, str) for name, _ in LOGICAL_AXIS_RULES)
    with pytest.raises(ValueError, match="no entry in the rules table"):
        logical_to_mesh(("embed", "not_an_axis"))


def test_make_mesh_errors_when_devices_do_not_divide():
    n = jax.device_count()
    mesh = make_mesh()
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.size == n
    with pytest.raises(ValueError, match="devices"):
        make_mesh(data=n + 1)
    with pytest.raises(ValueError, match="do not divide"):
        make_mesh(data=-1, tensor=n + 1)
    with pytest.raises(ValueError, match="at most one -1"):
        make_mesh(data=-1, fsdp=-1)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sharded_forward_on_8_devices_equals_single_device():
    run_with_8_devices("""
        import jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from jax.sharding import NamedSharding, PartitionSpec as P
        from recsys_jax.model import GLM, ModelConfig
        from recsys_jax import sharding

        assert jax.device_count() == 8
        cfg = ModelConfig(vocab_size=96, num_layers=2, num_heads=4, hidden_size=32, mlp_dim=64,
                          max_positions=32, max_block_positions=16)
        make = lambda: GLM(cfg, rngs=nnx.Rngs(0))
        rng = np.random.default_rng(0)
        B, L = 4, 8
        batch = dict(tokens=rng.integers(0, 96, (B, L)).astype(np.int32),
                     positions=np.tile(np.arange(L), (B, 1)).astype(np.int32),
                     block_positions=np.zeros((B, L), np.int32),
                     segment_ids=np.array([[1] * 8, [1] * 5 + [0] * 3, [1] * 4 + [2] * 4,
                                           [1] * 8], np.int32),
                     part_a=np.tile((np.arange(L) < 4).astype(np.int32), (B, 1)))
        model = make()
        expected = model(**{k: jnp.asarray(v) for k, v in batch.items()})

        mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
        sharded = sharding.init_sharded(make, mesh)  # created in place; same values up to fusion
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9),
                     nnx.state(model), nnx.state(sharded))
        emb = sharded.word_embeddings.embedding[...]
        assert emb.sharding.spec == P("tensor", "fsdp"), emb.sharding
        assert emb.addressable_shards[0].data.shape == (48, 16)
        qkv = sharded.layers[0].attention.query_key_value.kernel[...]
        assert qkv.sharding.spec == P("fsdp", None, "tensor", None), qkv.sharding

        graphdef, state = nnx.split(sharded)
        state_sh = sharding.state_shardings(state, mesh)
        batch_sh = sharding.batch_sharding(mesh)
        out_sh = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor"))

        def forward(state, batch):
            return nnx.merge(graphdef, state)(**batch)

        forward = jax.jit(forward, in_shardings=(state_sh, batch_sh), out_shardings=out_sh)
        logits = forward(state, sharding.shard_batch(batch, mesh))
        assert logits.sharding.spec == out_sh.spec
        err = float(jnp.abs(logits - expected).max())
        print("max |sharded - single|", err)
        assert err < 1e-5, err

        moved = sharding.shard_model(make(), mesh)  # placing an existing model
        assert moved.word_embeddings.embedding[...].sharding.spec == P("tensor", "fsdp")
        try:
            sharding.shard_batch({"tokens": np.zeros((6, 8), np.int32)}, mesh)
            raise AssertionError("a batch of 6 rows on 4 data shards must fail")
        except ValueError as e:
            assert "not divisible" in str(e), e
        print("ok")
    """)


@pytest.mark.slow
@pytest.mark.subprocess
def test_glm_10b_shapes_and_shardings_without_allocating():
    run_with_8_devices("""
        import math, jax
        from flax import nnx
        from recsys_jax.model import GLM, MODEL_PRESETS
        from recsys_jax import sharding

        cfg = MODEL_PRESETS["glm_10b"]
        abstract = nnx.eval_shape(lambda: GLM(cfg, rngs=nnx.Rngs(0)))  # no allocation
        params = nnx.state(abstract, nnx.Param)
        count = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
        print(f"glm_10b params: {count / 1e9:.3f}B")
        assert 9.5e9 < count < 10.5e9
        qkv = abstract.layers[47].attention.query_key_value.kernel
        assert qkv.shape == (4096, 3, 64, 64), qkv.shape

        for shape in [dict(tensor=8), dict(fsdp=4, tensor=2), dict(data=2, fsdp=4)]:
            mesh = sharding.make_mesh(data=shape.get("data", 1), fsdp=shape.get("fsdp", 1),
                                      tensor=shape.get("tensor", 1))
            shardings = sharding.state_shardings(params, mesh)
            per_device = 0
            for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings)):
                assert isinstance(s, jax.sharding.NamedSharding), s
                shard = s.shard_shape(x.shape)  # raises if the spec is invalid for the shape
                per_device += math.prod(shard)
            # Large matrices split fsdp x tensor ways; only small vectors/tables replicate.
            ways = mesh.shape["fsdp"] * mesh.shape["tensor"]
            print(shape, f"params per device: {per_device / 1e9:.3f}B")
            assert per_device < 1.02 * count / ways, (shape, per_device)
        print("ok")
    """)
