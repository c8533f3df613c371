"""A train step on an 8-device mesh (data x fsdp x tensor = 2 x 2 x 2) equals the one-device
step; two local jax.distributed processes train the tiny model, agree, and stop together at
one step with one checkpoint when only one of them is sent SIGTERM."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import json
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from recsys_jax import sharding
    from recsys_jax.config import TrainConfig
    from recsys_jax.model import GLM, ModelConfig
    from recsys_jax.training.step import (init_train_state, learning_rate_schedule,
                                          make_optimizer, make_train_step, split_model)

    cfg = ModelConfig(vocab_size=64, num_layers=2, num_heads=4, hidden_size=32,
                      max_positions=64, max_block_positions=64, dropout_rate=0.0,
                      attention_dropout_rate=0.0)
    tcfg = TrainConfig(steps=4, warmup_steps=1, learning_rate=1e-2, grad_accum=2)
    rng = np.random.default_rng(0)
    B, L = 8, 16
    batch = {"tokens": rng.integers(0, 64, (B, L)), "positions": np.tile(np.arange(L), (B, 1)),
             "block_positions": np.zeros((B, L), int), "segment_ids": np.ones((B, L), int),
             "part_a": (np.arange(L) < 10).astype(int)[None].repeat(B, 0),
             "targets": rng.integers(0, 64, (B, L)),
             "loss_mask": (np.arange(L) >= 10).astype(np.float32)[None].repeat(B, 0)}
    batch = {k: np.asarray(v, np.float32 if k == "loss_mask" else np.int32)
             for k, v in batch.items()}

    def run(mesh):
        model = sharding.init_sharded(lambda: GLM(cfg, rngs=nnx.Rngs(0)), mesh)
        graphdef, params, frozen = split_model(model, False)
        tx = make_optimizer(tcfg)
        state_sh = sharding.state_shardings(
            jax.eval_shape(lambda p: init_train_state(p, tx, 0), params), mesh)
        frozen_sh = sharding.state_shardings(frozen, mesh)
        start = [np.asarray(x) for x in jax.tree.leaves(params)]
        state = jax.jit(lambda p: init_train_state(p, tx, 0), out_shardings=state_sh)(params)
        step = jax.jit(make_train_step(graphdef, tx, tcfg.grad_accum, learning_rate_schedule(tcfg)),
                       in_shardings=(state_sh, frozen_sh, sharding.batch_sharding(mesh)),
                       out_shardings=(state_sh, None), donate_argnums=(0,))
        losses = []
        for _ in range(3):
            state, m = step(state, frozen, sharding.shard_batch(batch, mesh))
            losses.append(float(m["loss"]))
        leaves = [np.asarray(x) for x in jax.tree.leaves(state["params"])]
        shards = max(len(x.sharding.device_set) for x in jax.tree.leaves(state["params"]))
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(start, leaves))
        return losses, leaves, shards, moved

    one = run(sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    eight = run(sharding.make_mesh(2, 2, 2))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one[1], eight[1]))
    print(json.dumps({"losses_1": one[0], "losses_8": eight[0], "max_param_diff": diff,
                      "max_param_moved": one[3],
                      "devices_used": eight[2], "n_devices": len(jax.devices())}))
""")


def test_eight_device_step_equals_one_device_step():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["n_devices"] == 8 and out["devices_used"] > 1  # really sharded
    assert out["losses_8"] == pytest.approx(out["losses_1"], rel=1e-5, abs=1e-5)
    assert out["losses_1"][-1] < out["losses_1"][0]
    # Adam divides by sqrt(v), so reduction-order rounding in near-zero gradients grows into
    # update-sized noise on some CPUs; a sharding bug moves parameters by the update itself.
    assert out["max_param_moved"] > 1e-2
    assert out["max_param_diff"] < 1e-2 * out["max_param_moved"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(toy_p5, tmp_path, args):
    """Prepare the toy data once (so two processes do not race to write it), then start
    `recsys_jax.train ARGS` as processes 0 and 1 of a local jax.distributed run."""
    from recsys_jax.data.prepare import prepare

    prepare(
        "p5",
        str(toy_p5),
        name="toy",
        data_dir=str(tmp_path / "data"),
        progress=False,
        log=lambda m: None,
    )
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {
            **os.environ,
            "RECSYS_JAX_COORDINATOR": f"127.0.0.1:{port}",
            "RECSYS_JAX_NUM_PROCESSES": "2",
            "RECSYS_JAX_PROCESS_ID": str(pid),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "JAX_PLATFORMS": "cpu",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "recsys_jax.train", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def test_two_local_processes_train_agree_and_stop_together_on_one_sigterm(
    toy_p5, tmp_path, overrides
):
    """Both hosts train one model (equal parameters and validation), and SIGTERM sent to the
    second host only stops both at one logging step, with one checkpoint, exit status 0."""
    run = tmp_path / "run"
    args = overrides(
        toy_p5,
        tmp_path / "data",
        run,
        steps=100_000,  # never reached: only the signal ends this run
        **{"train.log_every": 5, "train.eval_every": 10, "train.checkpoint_every": 100_000},
    )
    procs = _launch_two(toy_p5, tmp_path, args)
    metrics = Path(run) / "metrics.jsonl"
    deadline = time.monotonic() + 300

    def validated_twice():
        text = metrics.read_text() if metrics.is_file() else ""
        return text.count('"valid_loss"') >= 2

    while not validated_twice():  # step 0 and step 10 validated: training is under way
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.5)
    procs[1].terminate()  # SIGTERM to the second host only
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert summaries[0]["process_count"] == summaries[1]["process_count"] == 2
    assert summaries[0]["params_l2"] == pytest.approx(summaries[1]["params_l2"], rel=1e-6)
    assert [s["stopped_by_signal"] for s in summaries] == ["SIGTERM", "SIGTERM"]
    assert summaries[0]["steps"] == summaries[1]["steps"] < 100_000
    stopped = summaries[0]["steps"]
    assert stopped % 5 == 0  # the hosts agree at a logging step
    assert "stopped at step" in outs[0][1] + outs[0][0]
    steps = sorted(int(d.name) for d in (Path(run) / "checkpoints").iterdir() if d.name.isdigit())
    assert steps == [stopped]
    log = [json.loads(line) for line in metrics.read_text().splitlines()]
    valid = [r["valid_loss"] for r in log if "valid_loss" in r]
    assert valid[1] < valid[0]  # it learns
