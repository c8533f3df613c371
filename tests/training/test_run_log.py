import json
import math

import jax.numpy as jnp
import pytest

from recsys_jax.training.run_log import RunLog, StepWindow, plot_losses, read_records


def test_resume_drops_a_torn_last_line_with_a_warning(tmp_path):
    log = RunLog(tmp_path)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step})
    with log.path.open("a") as f:
        f.write('{"loss": 0.2, "st')  # killed mid-write
    warnings = []
    resumed = RunLog(tmp_path, resume_step=2, warn=warnings.append)
    assert [r["step"] for r in resumed.records()] == [1, 2]
    assert len(warnings) == 1 and "torn last line" in warnings[0]
    # Readers of a live (or killed) run see the same records.
    with log.path.open("a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in read_records(log.path, warn=lambda m: None)] == [1, 2]


def test_a_bad_line_before_the_last_is_still_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_records(tmp_path / "metrics.jsonl")


def test_non_finite_values_are_written_as_null(tmp_path):
    log = RunLog(tmp_path)
    log.write({"step": 1, "loss": math.nan, "grad_norm": math.inf, "x": [-math.inf, 1.5]})
    log.write({"step": 2, "loss": 0.5, "valid_loss": math.nan})
    for line in log.path.read_text().splitlines():
        # Standard JSON: a strict parser (no NaN / Infinity literals) reads every line.
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}"))
        assert json.dumps(record, allow_nan=False)
    first, second = log.records()
    assert first == {"step": 1, "loss": None, "grad_norm": None, "x": [None, 1.5]}
    assert second["valid_loss"] is None
    plot_losses(log.records(), tmp_path / "loss.png")  # nulls are skipped, not plotted
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_a_resumed_run_counts_training_time_on_from_the_earlier_part():
    from recsys_jax.training.run_log import train_seconds_so_far

    records = [
        {"step": 0, "train_seconds": 0.0},
        {"step": 5, "loss": 1.0},
        {"step": 10, "train_seconds": 42.5},
        {"step": 12, "train_seconds": None},
    ]
    assert train_seconds_so_far(records) == 42.5
    assert train_seconds_so_far([]) == 0.0


def test_a_step_window_logs_each_step_and_the_windows_throughput_on_its_last():
    window = StepWindow()
    for step in (7, 8, 9):
        metrics = {"loss": jnp.float32(step / 10), "grad_norm": jnp.float32(1.0)}
        window.add(step, metrics, examples=4, tokens=100, input_seconds=1e6)
    assert [s for s, _, _ in window.health()] == [7, 8, 9]
    records = window.flush()
    assert [(r["step"], r["examples"]) for r in records] == [(7, 4), (8, 4), (9, 4)]
    assert records[1]["loss"] == pytest.approx(0.8)
    assert "tokens_per_s" not in records[0] and records[-1]["tokens_per_s"] > 0
    assert records[-1]["input_share"] == 1.0  # waiting longer than the window is capped
    assert len(window) == 0 and window.tokens == 0  # a new window starts
