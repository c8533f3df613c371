"""scripts/profile_step.py: the HLO join, the phase names and the per-step sums."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "profile_step.py"


@pytest.fixture(scope="module")
def profile_step():
    spec = importlib.util.spec_from_file_location("profile_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hlo_ops_names_kinds_and_sources(profile_step):
    @jax.named_scope("mlp")
    def mlp(x, w):
        return jnp.tanh(x @ w)

    def loss(w, x):
        return jnp.sum(mlp(x, w).T * 2.0)

    text = jax.jit(jax.grad(loss)).lower(jnp.ones((64, 32)), jnp.ones((16, 64))).compile()
    ops = profile_step.hlo_ops(text.as_text())
    kinds = {op["kind"] for op in ops.values()}
    assert "matmul" in kinds and "elementwise" in kinds
    matmuls = [op["source"] for op in ops.values() if op["kind"] == "matmul"]
    assert any("mlp" in s and "transpose(" in s for s in matmuls)  # the weight gradient
    assert any("mlp" in s and "transpose(" not in s for s in matmuls)  # the forward product


@pytest.mark.parametrize(
    "source, phase, sublayer",
    [
        ("jit(step)/jvp(mlp)/dot_general", "forward", "mlp"),
        ("jit(step)/transpose(jvp(attention))/dot_general", "backward", "attention"),
        ("jit(step)/jvp(output_layer)/while/body/add", "output layer", "output layer"),
        ("jit(step)/optimizer/mul", "optimizer", "optimizer"),
        ("jit(step)/jvp()/add", "forward", "other"),
        ("jit(step)/transpose(jvp())/add_any", "backward", "other"),
        ("jit(step)/reduce_sum", "other", "other"),
        ("jit(step)/jvp(mlp_head)/add", "forward", "other"),  # a scope name, not a prefix
    ],
)
def test_phase_and_sublayer_from_the_name_stack(profile_step, source, phase, sublayer):
    assert profile_step.phase(source) == phase
    assert profile_step.sublayer(source) == sublayer


def test_summarize_sums_busy_idle_and_charges_gaps(profile_step):
    ops = {
        "dot.1": {"kind": "matmul", "pooled": False, "source": "jit(step)/jvp(mlp)/dot_general"},
        "add.2": {
            "kind": "elementwise",
            "pooled": False,
            "source": "jit(step)/transpose(jvp())/add",
        },
        "while.3": {"kind": "while", "pooled": False, "source": "jit(step)/while"},
        "dot.4": {"kind": "matmul", "pooled": True, "source": "jit(step)/jvp(mlp)/dot_general"},
    }

    def event(name, ts, dur):
        return {"ph": "X", "name": name, "ts": ts, "dur": dur}

    # Two steps of 200 us. Step 1: dot.1 0-40 and add 20-50 side by side, idle 50-70 (charged
    # to the add, the op that ended last), dot.1 70-90, the pooled dot.4 90-95 whose work runs
    # on while the add 95-110 goes on, idle 110-150 (charged to dot.4), dot.1 150-160, idle
    # 160-200 (to dot.4 still: its work may go on). Step 2: the same 1000 us later. A while
    # (its body's ops are counted instead) and an event that is no op of the module are left
    # out.
    events = []
    for base in (0, 1000):
        events += [
            event("dot.1", base, 40),
            event("add.2", base + 20, 30),
            event("dot.1", base + 70, 20),
            event("dot.4", base + 90, 5),
            event("add.2", base + 95, 15),
            event("dot.1", base + 150, 10),
            event("while.3", base, 200),
            event("ThunkExecutor::Execute", base, 200),
        ]
    summary = profile_step.summarize(events, [(0, 200), (1000, 1200)], ops)
    per_op = summary.pop("_per_op")
    assert summary["step_s"] == pytest.approx(200e-6)
    assert summary["op_s"] == pytest.approx(120e-6)
    assert summary["busy_s"] == pytest.approx(100e-6)
    assert summary["idle_s"] == pytest.approx(100e-6)
    assert summary["ops_per_step"] == 6
    assert summary["kinds_s"] == {
        "matmul": pytest.approx(75e-6),
        "elementwise": pytest.approx(45e-6),
    }
    idle_after = {name: t["idle_after_s"] / 2 for name, t in per_op.items()}
    assert idle_after == pytest.approx({"add.2": 20e-6, "dot.4": 80e-6, "dot.1": 0.0})
    assert summary["phases_s"]["backward"]["idle_after"] == pytest.approx(20e-6)
    assert summary["sublayers_s"]["mlp"] == pytest.approx({"matmul": 75e-6, "idle_after": 80e-6})
    top = profile_step.top_ops(per_op, ops, 2, 1)
    assert top[0]["op"] == "dot.4"  # ranked by its time plus the idle charged to it
    assert (top[0]["ms"], top[0]["idle_after_ms"]) == pytest.approx((0.005, 0.08))


@pytest.mark.subprocess
def test_profiles_a_tiny_train_step_end_to_end():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny", "--batch", "2", "--seq-len", "32"]
        + ["--vocab", "256", "--steps", "2", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < result["busy_s"] <= result["step_s"]
    assert result["kinds_s"]["matmul"] > 0
    assert {"forward", "backward", "output layer", "optimizer"} <= set(result["phases_s"])
    assert {"attention", "mlp", "output layer"} <= set(result["sublayers_s"])
    assert len(result["top"]) == 3
