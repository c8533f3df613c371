import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from recsys_jax import configlib
from recsys_jax.config import load_config
from recsys_jax.train import main as train_main
from recsys_jax.training.trainer import Trainer

pytestmark = pytest.mark.slow


def _target_tokens(run_dir):
    recs = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["target_tokens"]) for r in recs if "target_tokens" in r]


def _losses(run_dir):
    recs = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return (
        [(r["step"], r["loss"]) for r in recs if "loss" in r],
        [(r["step"], r["valid_loss"]) for r in recs if "valid_loss" in r],
    )


def test_training_writes_a_run_directory_and_learns(toy_p5, tmp_path, overrides):
    cfg = load_config(
        None,
        overrides(
            toy_p5,
            tmp_path / "data",
            tmp_path / "run",
            steps=30,
            **{"train.eval_every": 15, "train.plot": True},
        ),
    )
    summary = Trainer(cfg, log=lambda m: None).run()
    run = tmp_path / "run"
    assert (run / "config.yaml").exists() and (run / "loss.png").stat().st_size > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit())[-1] == "30"
    train, valid = _losses(run)
    assert [s for s, _ in train] == list(range(1, 31))
    assert valid[0][0] == 0 and valid[-1][0] == 30
    assert valid[-1][1] < valid[0][1] - 0.5  # validation loss clearly below step 0
    assert summary["valid_loss"] == pytest.approx(valid[-1][1])


def test_grad_accumulation_gives_the_same_first_step(toy_p5, tmp_path, overrides):
    first = {}
    for accum in (1, 4):
        cfg = load_config(
            None,
            overrides(
                toy_p5,
                tmp_path / "data",
                tmp_path / f"run{accum}",
                steps=2,
                **{
                    "train.grad_accum": accum,
                    "model.dropout_rate": 0.0,
                    "model.attention_dropout_rate": 0.0,
                },
            ),
        )
        Trainer(cfg, log=lambda m: None).run()
        first[accum] = _losses(tmp_path / f"run{accum}")[0]
    for (s1, l1), (s4, l4) in zip(first[1], first[4]):
        assert s1 == s4 and l1 == pytest.approx(l4, rel=1e-5, abs=1e-5)


@pytest.mark.subprocess
def test_killed_run_resumes_with_the_identical_loss_sequence(toy_p5, tmp_path, overrides):
    """Train 9 steps uninterrupted; separately start the same run, SIGKILL it after its step-6
    checkpoint, restart it: the logged losses of both runs are identical."""
    data_dir = tmp_path / "data"
    straight = tmp_path / "straight"
    cfg = load_config(
        None, overrides(toy_p5, data_dir, straight, steps=9, **{"train.async_checkpoint": False})
    )
    Trainer(cfg, log=lambda m: None).run()
    expected_train, expected_valid = _losses(straight)

    killed = tmp_path / "killed"
    args = overrides(toy_p5, data_dir, killed, steps=9, **{"train.async_checkpoint": False})
    cmd = [sys.executable, "-m", "recsys_jax.train", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    metrics = killed / "metrics.jsonl"
    while time.time() < deadline:
        if (
            (killed / "checkpoints" / "6").exists()
            and metrics.exists()
            and any(json.loads(l).get("step") == 7 for l in metrics.read_text().splitlines() if l)
        ):
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()  # it really died mid-way

    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[resume] found checkpoint at step 6" in result.stdout
    got_train, got_valid = _losses(killed)
    assert [s for s, _ in got_train] == list(range(1, 10))
    for got, expected in ((got_train, expected_train), (got_valid, expected_valid)):
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)


@pytest.mark.subprocess
def test_bad_config_on_the_command_line_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "recsys_jax.train", "train.stepz=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "unknown config key 'train.stepz'" in result.stderr


def test_lora_run_from_a_checkpoint_trains_only_adapters(toy_p5, tmp_path, overrides):
    """LoRA fine-tuning from a trained base: base weights stay bit-identical, adapters move."""
    import numpy as np
    from flax import nnx

    from recsys_jax.run.checkpoints import read_params

    base_run = tmp_path / "base"
    Trainer(
        load_config(None, overrides(toy_p5, tmp_path / "data", base_run, steps=3)),
        log=lambda m: None,
    ).run()
    lora_run = tmp_path / "lora"
    cfg = load_config(
        None,
        overrides(
            toy_p5,
            tmp_path / "data",
            lora_run,
            steps=3,
            **{"train.init_from": str(base_run), "train.lora_only": True, "model.lora_rank": 4},
        ),
    )
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.run()
    base = read_params(base_run, 3)
    tuned = read_params(lora_run, 3)

    def leaves(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict) and "value" not in v:
                yield from leaves(v, prefix + str(k) + ".")
            else:
                yield prefix + str(k), np.asarray(v["value"] if isinstance(v, dict) else v)

    tuned_leaves = dict(leaves(tuned))
    trained = dict(leaves(nnx.to_pure_dict(trainer.state["params"])))
    assert trained and all("lora" in name for name in trained)  # only adapters were trained
    for name, value in leaves(base):
        assert np.array_equal(tuned_leaves[name], value), name  # bit-identical base weights
    b_mats = [v for n, v in tuned_leaves.items() if "lora" in n and n.endswith("b")]
    assert b_mats and any(np.abs(b).max() > 0 for b in b_mats)  # B starts at 0, so it moved


def test_time_limit_stops_with_a_checkpoint_that_resumes(toy_p5, tmp_path, overrides):
    base = overrides(
        toy_p5,
        tmp_path / "data",
        tmp_path / "run",
        steps=1000,
        **{"train.log_every": 2, "train.eval_every": 1000},
    )
    summary = Trainer(
        load_config(None, base + ["train.time_limit_minutes=0.0001"]), log=lambda m: None
    ).run()
    assert summary["stopped_by_time_limit"] and summary["steps"] == 2
    train, valid = _losses(tmp_path / "run")
    assert [s for s, _ in train] == [1, 2] and valid[-1][0] == 2  # validated at the stop
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()
    resumed = Trainer(load_config(None, base), log=lambda m: None)
    assert resumed.start_step == 2


class _SlowBatches:
    """A training iterator that takes `delay` seconds per batch (an input-bound run)."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def __next__(self):
        time.sleep(self.delay)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def close(self):
        self.inner.close()


def test_speed_diagnostics_report_a_low_logits_fraction_and_an_input_bound_loop(
    toy_p5, tmp_path, overrides
):
    said = []
    cfg = load_config(
        None,
        overrides(
            toy_p5,
            tmp_path / "data",
            tmp_path / "run",
            steps=4,
            **{"train.logits_fraction": 0.01, "train.log_every": 2, "train.eval_every": 100},
        ),
    )
    trainer = Trainer(cfg, log=said.append)
    trainer.train_iter = _SlowBatches(trainer.train_iter, delay=0.5)
    trainer.run()
    (message,) = [m for m in said if m.startswith("[speed]")]
    assert "train.logits_fraction=0.01 " in message
    shares = [t / (8 * 96) for _, t in _target_tokens(tmp_path / "run")]
    suggested = float(re.search(r"logits_fraction=([0-9.]+) would", message).group(1))
    assert max(shares) < suggested <= 1
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    windows = [(r["step"], r["input_share"]) for r in recs if "input_share" in r]
    assert [s for s, _ in windows] == [2, 4]
    # The second window has no compile: waiting 0.5 s per batch dominates a tiny model's step.
    assert 0.5 < windows[1][1] <= 1.0


def test_item_features_initialise_item_rows_through_a_learned_projection(
    toy_p5, tmp_path, overrides
):
    """data.item_features: frozen pretrained vectors sit on the item-token rows, item rows start
    as their projection alone, training moves the projection but never the vectors, and the
    checkpoint carries them (evaluation needs no encoder)."""
    import numpy as np
    from flax import nnx

    from recsys_jax.data.prepared import load_prepared
    from recsys_jax.run.checkpoints import read_params

    base = overrides(toy_p5, tmp_path / "data", tmp_path / "run", steps=3)
    probe = Trainer(load_config(None, base + ["data.index=item_token"]), log=lambda m: None)
    catalog = load_prepared(tmp_path / "data", probe.cfg.data.dataset).catalog
    vectors = np.random.default_rng(0).normal(size=(len(catalog), 12)).astype(np.float32)
    np.save(tmp_path / "items.npy", vectors)
    cfg = load_config(
        None, base + ["data.index=item_token", f"data.item_features={tmp_path / 'items.npy'}"]
    )
    trainer = Trainer(cfg, log=lambda m: None)
    row = trainer.assets.tokenizer.encode(trainer.assets.index.spell(5))[0]
    features = trainer.frozen["word_embeddings"]["features"][...]
    np.testing.assert_array_equal(np.asarray(features[row]), vectors[5])
    start = trainer.state["params"]
    assert not np.asarray(start["word_embeddings"]["embedding"][...][row]).any()
    before = np.asarray(start["word_embeddings"]["projection"][...]).copy()
    trainer.run()
    saved = read_params(tmp_path / "run", 3)["word_embeddings"]
    value = lambda node: np.asarray(node["value"] if isinstance(node, dict) else node)
    np.testing.assert_array_equal(value(saved["features"])[row], vectors[5])
    assert not np.allclose(value(saved["projection"]), before)
    from recsys_jax.recommend import Recommender

    recommender = Recommender.from_checkpoint(tmp_path / "run", beam=4)
    # The served model holds E + F @ W folded into plain rows; no encoder is needed.
    served = nnx.merge(recommender.decoder.graphdef, recommender.decoder.state)
    assert not hasattr(served.word_embeddings, "features")
    expected = value(saved["embedding"])[row] + vectors[5] @ value(saved["projection"])
    np.testing.assert_allclose(
        np.asarray(served.word_embeddings.embedding[...][row]), expected, rtol=1e-5, atol=1e-6
    )
    assert len(recommender.recommend(catalog.item_ids[:2], k=3)) == 3

    with pytest.raises(Exception, match="item_features needs data.index=item_token"):
        load_config(None, base + ["data.item_features=encoder"])


def test_item_sequence_run_ranks_validation_users_and_keeps_the_best_by_ndcg(toy_items_run):
    """A causal item-sequence run logs full-ranking validation HR/NDCG@10 at every
    validation (with training time excluding validation), learns the toy pattern, and keeps
    the checkpoint with the best validation NDCG@10."""
    run, _ = toy_items_run
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in recs if "valid_loss" in r]
    assert [r["step"] for r in valid] == [0, 20, 40]
    assert all("valid_NDCG@10" in r and "valid_HR@10" in r for r in valid)
    seconds = [r["train_seconds"] for r in valid]
    assert seconds == sorted(seconds) and seconds[0] == 0.0
    assert valid[-1]["valid_NDCG@10"] > valid[0]["valid_NDCG@10"] + 0.1
    summary = json.loads((run / "summary.json").read_text())
    best = max(valid[1:], key=lambda r: r["valid_NDCG@10"])["step"]
    assert summary["best_step"] == best
    assert summary["valid"]["valid_NDCG@10"] == pytest.approx(valid[-1]["valid_NDCG@10"])


def test_divergence_stops_with_the_last_good_checkpoint_and_saves_nothing_after(
    toy_p5, tmp_path, overrides, capsys
):
    """A huge learning rate blows the weights up within a few steps: the run stops (exit code
    2) naming the step and the last good checkpoint, with no checkpoint from that step on."""
    from recsys_jax import train

    run = tmp_path / "run"
    args = overrides(
        toy_p5,
        tmp_path / "data",
        run,
        steps=8,
        **{
            "train.learning_rate": 1e30,
            "train.grad_clip": "null",
            "train.log_every": 4,  # the non-finite step is caught before a save, not at a log
            "train.checkpoint_every": 1,
            "train.eval_every": 1000,
            "train.async_checkpoint": False,
        },
    )
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert train.main(args) == 2
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    err = capsys.readouterr().err
    match = re.search(
        r"training diverged at step (\d+): training loss .*last good checkpoint: "
        r"\S+ \(step (\d+)\)",
        err,
    )
    assert match, err
    bad, good = int(match[1]), int(match[2])
    assert good == bad - 1
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] == good
    assert not (run / "summary.json").exists()
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["step"] <= bad for r in records)


def _wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended first: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the run")


def _logged_steps(run_dir, running=True):
    """Steps with a training record; while the run is going its last line may be torn."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    records = [json.loads(l) for l in (lines[:-1] if running else lines)]
    return [r["step"] for r in records if "loss" in r]


@pytest.mark.subprocess
def test_sigterm_and_sigint_stop_with_a_checkpoint_that_the_same_command_resumes(
    toy_p5, tmp_path, overrides
):
    """SIGTERM: the run finishes its step, saves, says so in one line and exits 0; the same
    command resumes from there, and a Ctrl-C (SIGINT) stops that one the same way, exit 130."""
    run = tmp_path / "run"
    args = overrides(
        toy_p5,
        tmp_path / "data",
        run,
        steps=100_000,
        **{"train.eval_every": 100_000, "train.checkpoint_every": 100_000},
    )
    # The child restores a terminal's SIGINT first (see below), then runs the CLI.
    launcher = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = ['recsys_jax.train', *sys.argv[1:]]; "
        "runpy.run_module('recsys_jax.train', run_name='__main__')"
    )
    cmd = [sys.executable, "-c", launcher, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pattern = r"stopped at step (\d+); checkpoint saved; run the same command to resume"
    stops = []
    for sig, code in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        before = max(stops, default=0)
        # A terminal's default SIGINT, even when the tests run as a background job (which
        # inherits SIGINT ignored, and an ignored SIGINT is left ignored by design).
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: any(s > before for s in _logged_steps(run)), proc)
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == code, err[-2000:]
        lines = re.findall(pattern, out)
        assert len(lines) == 1, out
        stops.append(int(lines[0]))
        assert stops[-1] > before and (run / "checkpoints" / lines[0]).is_dir()
        # Every step up to the stop is logged once, so a resumed run continues the log.
        assert _logged_steps(run, running=False) == list(range(1, stops[-1] + 1))
    assert f"[resume] found checkpoint at step {stops[0]}" in out


def _files(folder: Path) -> dict:
    return {
        p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_rerun_past_train_steps_changes_nothing(toy_p5, toy_run, tmp_path, overrides, capsys):
    """The toy run holds step 4; asking for 2 steps would train nothing and rewrite
    summary.json and config.yaml: exit 2 (an error) and leave every file as it was."""
    run = tmp_path / "run"
    shutil.copytree(toy_run[0], run)
    before = _files(run)
    assert train_main(overrides(toy_p5, toy_run[1], run, steps=2)) == 2
    err = capsys.readouterr().err
    assert f"error: {run} already holds step 4 > train.steps=2; nothing to do" in err
    assert "raise train.steps to continue, or use a new train.run_dir" in err
    assert _files(run) == before


def test_mesh_larger_than_the_devices_fails_before_setup(toy_p5, tmp_path, overrides):
    n = jax.device_count()
    cfg = load_config(
        None, overrides(toy_p5, tmp_path / "data", tmp_path / "run", **{"mesh.data": n + 1})
    )
    with pytest.raises(configlib.ConfigError, match=f"but there are {n}"):
        Trainer(cfg, log=lambda m: None)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_missing_init_from_fails_before_setup(toy_p5, tmp_path, overrides):
    cfg = load_config(
        None,
        overrides(
            toy_p5, tmp_path / "data", tmp_path / "run", **{"train.init_from": tmp_path / "nope"}
        ),
    )
    with pytest.raises(configlib.ConfigError, match="train.init_from: .*nope: no checkpoint found"):
        Trainer(cfg, log=lambda m: None)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
