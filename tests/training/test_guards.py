"""DivergenceGuard counts consecutive non-finite steps; StopRequest turns signals into a flag."""

import os
import signal
import time

import pytest

from recsys_jax.training.guards import DivergenceGuard, StopRequest


def test_divergence_patience_counts_consecutive_non_finite_steps():
    nan, inf = float("nan"), float("inf")
    steps = [(1, 1.0, 1.0), (2, nan, 1.0), (3, 1.0, 1.0), (4, 2.0, inf), (5, nan, nan)]
    assert DivergenceGuard(1, 0).check(steps) == (2, "training loss nan, gradient norm 1.0")
    two = DivergenceGuard(2, 0)
    assert two.check(steps[:4]) is None and two.bad_steps == 1
    assert two.check(steps[:4]) is None  # steps already seen are not recounted
    assert two.check(steps)[0] == 5
    assert DivergenceGuard(1, 3).check(steps[:3]) is None  # a resumed run skips old steps


@pytest.fixture()
def terminal_sigint():
    """A terminal's Ctrl-C handler, even when the tests run as a background job (which
    inherits SIGINT ignored; StopRequest leaves an ignored SIGINT ignored by design)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_sigint_aborts_at_once_and_handlers_come_back(terminal_sigint):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # the handler runs between bytecodes of the main thread
            assert stop.signal == "SIGINT"
            os.kill(os.getpid(), signal.SIGINT)  # the handler from before: KeyboardInterrupt
            time.sleep(1)
            pytest.fail("a second SIGINT did not abort")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_sigterm_sets_the_flag_and_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert stop.signal == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before
