"""The command-line tools' shared pieces: counts of at least 1, and expected failures as one
line (exit 2) unless RECSYS_JAX_DEBUG asks for the traceback."""

import argparse

import pytest

from recsys_jax.cli import positive_int, report_error
from recsys_jax.configlib import ConfigError


def _raised():
    try:
        raise ConfigError("train.steps=0 must be >= 1")
    except ConfigError as e:
        return e


def test_an_expected_failure_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("RECSYS_JAX_DEBUG", raising=False)
    assert report_error(_raised()) == 2
    assert capsys.readouterr().err == "error: train.steps=0 must be >= 1\n"


def test_debug_shows_the_traceback_first(capsys, monkeypatch):
    monkeypatch.setenv("RECSYS_JAX_DEBUG", "1")
    assert report_error(_raised()) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "_raised" in err
    assert err.endswith("error: train.steps=0 must be >= 1\n")


def test_positive_int():
    assert positive_int("3") == 3
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
