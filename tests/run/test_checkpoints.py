"""RunCheckpoints: the best checkpoint is the best by validation, not the latest; checksums
catch a damaged checkpoint before it is used, and resuming falls back past it."""

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import pytest

from recsys_jax.recommend import main as recommend_main
from recsys_jax.run.checkpoints import (
    CHECKSUMS,
    CheckpointError,
    RunCheckpoints,
    newest_intact_step,
    read_params,
    verify_checkpoint,
)


def _save(ckpt, step, valid):
    ckpt.save(
        step, {"w": jnp.full((2,), float(step))}, {"it": step}, {"c": 1}, {"a": 1}, {"m": 1}, valid
    )


def test_best_step_is_the_best_validated_not_the_latest(tmp_path):
    ckpt = RunCheckpoints(tmp_path, keep=2, async_save=False)
    _save(ckpt, 1, {"valid_loss": 3.0, "valid_NDCG@10": 0.10})
    _save(ckpt, 2, {"valid_loss": 2.9, "valid_NDCG@10": 0.30})
    _save(ckpt, 3, {"valid_loss": 2.8, "valid_NDCG@10": 0.20})
    _save(ckpt, 4, None)  # a checkpoint that was not validated
    _save(ckpt, 5, {"valid_loss": 2.7, "valid_NDCG@10": 0.25})
    ckpt.wait()
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 5
    assert 2 in ckpt.manager.all_steps()  # kept although older than the latest two
    ckpt.close()
    reopened = RunCheckpoints(tmp_path, keep=2, async_save=False)
    assert reopened.best_step() == 2
    reopened.close()


def test_without_ranking_the_lowest_validation_loss_is_best(tmp_path):
    ckpt = RunCheckpoints(tmp_path, keep=1, async_save=False)
    for step, loss in [(1, 3.0), (2, 2.5), (3, 2.7)]:
        _save(ckpt, step, {"valid_loss": loss})
    ckpt.wait()
    assert ckpt.best_step() == 2
    ckpt.close()


# -- damaged checkpoints ---------------------------------------------------------------------


def _largest_file(step_dir: Path, under: str = "state") -> Path:
    return max(
        (p for p in (step_dir / under).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )


def _saved_run(tmp_path, steps=(1, 2), async_save=True):
    ckpt = RunCheckpoints(tmp_path, keep=3, async_save=async_save)
    for step in steps:
        ckpt.save(step, {"w": jnp.arange(64.0) + step}, {"it": step}, {"c": 1}, {"a": 1}, {"m": 1})
    ckpt.close()
    return tmp_path / "checkpoints"


def test_every_finished_step_gets_checksums_that_verify(tmp_path):
    ckpts = _saved_run(tmp_path, steps=(1, 2, 3))
    for step in (1, 2, 3):
        listed = json.loads((ckpts / str(step) / CHECKSUMS).read_text())["files"]
        assert "state/_METADATA" in listed and "config/metadata" in listed
        verify_checkpoint(tmp_path, step)


def test_truncated_newest_step_is_named_and_resume_falls_back_to_the_previous(tmp_path):
    ckpts = _saved_run(tmp_path)
    damaged = _largest_file(ckpts / "2")
    damaged.write_bytes(damaged.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="truncated") as e:
        verify_checkpoint(tmp_path, 2)
    assert str(damaged) in str(e.value)

    ckpt = RunCheckpoints(tmp_path, keep=3, async_save=False)
    warnings = []
    assert newest_intact_step(ckpt, warnings.append) == 1
    assert len(warnings) == 1 and "step 2" in warnings[0] and damaged.name in warnings[0]
    # Set aside, not deleted; the run can save step 2 again.
    assert ckpt.all_steps() == [1] and (ckpts / "2.damaged").is_dir()
    ckpt.save(2, {"w": jnp.zeros(64)}, {"it": 2}, {"c": 1}, {"a": 1}, {"m": 1})
    ckpt.close()
    verify_checkpoint(tmp_path, 2)


def test_no_intact_step_means_a_fresh_start(tmp_path):
    ckpts = _saved_run(tmp_path, steps=(1,))
    shutil.rmtree(ckpts / "1" / "state")
    ckpt = RunCheckpoints(tmp_path, keep=3, async_save=False)
    assert newest_intact_step(ckpt, lambda line: None) is None
    ckpt.close()


def test_a_flipped_byte_is_a_checksum_mismatch_naming_the_file(tmp_path):
    ckpts = _saved_run(tmp_path, steps=(1,), async_save=False)
    damaged = _largest_file(ckpts / "1")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 differs") as e:
        verify_checkpoint(tmp_path, 1)
    assert str(damaged) in str(e.value)


def test_a_deleted_item_folder_is_named_with_or_without_checksums(tmp_path):
    ckpts = _saved_run(tmp_path, steps=(1,))
    shutil.rmtree(ckpts / "1" / "state")
    with pytest.raises(CheckpointError, match="state is missing"):
        verify_checkpoint(tmp_path, 1)
    # A checkpoint from before checksums: accepted unverified, but reading it names the item.
    (ckpts / "1" / CHECKSUMS).unlink()
    verify_checkpoint(tmp_path, 1)
    with pytest.raises(CheckpointError, match="state is missing"):
        read_params(tmp_path, 1)


def test_a_truncated_json_item_without_checksums_is_one_error_naming_it(tmp_path):
    ckpts = _saved_run(tmp_path, steps=(1,))
    (ckpts / "1" / CHECKSUMS).unlink()
    (ckpts / "1" / "config" / "metadata").write_text('{"c"')
    ckpt = RunCheckpoints(tmp_path, async_save=False)
    with pytest.raises(CheckpointError, match="config cannot be read") as e:
        ckpt.restore_json(1, "config")
    ckpt.close()
    assert "\n" not in str(e.value)


def _damaged_copy(toy_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(toy_run[0], run_dir)
    return run_dir


@pytest.mark.slow
def test_recommend_refuses_a_damaged_checkpoint_in_one_line(toy_run, tmp_path, capsys):
    run_dir = _damaged_copy(toy_run, tmp_path)
    damaged = _largest_file(run_dir / "checkpoints" / "4")
    damaged.write_bytes(damaged.read_bytes()[:-1])
    argv = ["--checkpoint", str(run_dir), "--history", "1", "--data-dir", str(toy_run[1])]
    assert recommend_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(damaged) in err

    shutil.rmtree(run_dir / "checkpoints" / "4" / "state")
    assert recommend_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(run_dir / "checkpoints" / "4" / "state") in err


@pytest.mark.slow
def test_resume_sets_a_damaged_checkpoint_aside_and_starts_fresh(
    toy_run, toy_p5, tmp_path, overrides
):
    from recsys_jax.config import load_config
    from recsys_jax.training.trainer import Trainer

    run_dir = _damaged_copy(toy_run, tmp_path)
    damaged = _largest_file(run_dir / "checkpoints" / "4")
    data = bytearray(damaged.read_bytes())
    data[0] ^= 0x01
    damaged.write_bytes(bytes(data))
    extra = {"train.eval_every": 4, "train.checkpoint_every": 4}
    cfg = load_config(None, overrides(toy_p5, toy_run[1], run_dir, steps=4, **extra))
    lines = []
    Trainer(cfg, log=lines.append).run()
    warnings = [line for line in lines if "is damaged" in line]
    assert len(warnings) == 1 and "step 4" in warnings[0] and damaged.name in warnings[0]
    assert (run_dir / "checkpoints" / "4.damaged").is_dir()
    verify_checkpoint(run_dir, 4)  # trained again from scratch and saved
