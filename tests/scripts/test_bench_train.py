"""scripts/bench_train.py: its JSON report and its command line."""

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_train.py"
REPORTED = (
    "tokens_per_s",
    "forward_s",
    "backward_s",
    "optimizer_s",
    "compile_s",
    "flops_per_s",
    "peak_flops_per_s",
    "peak_fraction",
)


def test_help_describes_the_script_in_whole_sentences():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    ).stdout
    description = " ".join(out.split("options:")[0].split("\n\n")[1].split())
    assert description.startswith("Training-step speed") and description.endswith("peak.")


def test_report_on_a_preset_is_one_consistent_json_object():
    args = "--model tiny --batch 4 --seq-len 32 --vocab 500 --steps 1".split()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in REPORTED:
        assert report[key] is not None and report[key] >= 0, key
    assert (report["batch"], report["seq_len"]) == (4, 32)
    assert report["tokens_per_s"] == pytest.approx(4 * 32 / report["step_s"], rel=0.01)
    assert report["backward_s"] == pytest.approx(
        max(report["step_s"] - report["forward_s"] - report["optimizer_s"], 0.0), abs=2e-4
    )
    assert report["flops_per_step"] > 0 and report["peak_flops_per_s"] > 0
    assert report["peak_fraction"] == pytest.approx(
        report["flops_per_s"] / report["peak_flops_per_s"], rel=0.01
    )
