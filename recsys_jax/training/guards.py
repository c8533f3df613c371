"""What stops a training loop early and safely: divergence (non-finite loss or gradient norm)
and a stop request by signal (SIGTERM from a preempting scheduler, Ctrl-C)."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


class DivergenceGuard:
    """Counts consecutive non-finite steps; `check` names the step once `patience` of them
    run in a row (`train.divergence_patience`)."""

    def __init__(self, patience: int, start_step: int):
        self.patience = patience
        self.checked_step = start_step
        self.bad_steps = 0

    def check(self, steps: list[tuple[int, float, float]]) -> tuple[int, str] | None:
        """(step, loss, grad_norm) records, each counted once -> (step, reason) or None."""
        for step, loss, grad_norm in steps:
            if step <= self.checked_step:
                continue
            self.checked_step = step
            if math.isfinite(loss) and math.isfinite(grad_norm):
                self.bad_steps = 0
                continue
            self.bad_steps += 1
            if self.bad_steps >= self.patience:
                return step, f"training loss {loss}, gradient norm {grad_norm}"
        return None


class StopRequest:
    """A context in which SIGTERM and a first SIGINT only set `signal` (their name): the loop
    stops after the current step with a checkpoint. A second SIGINT acts as before (abort at
    once). Handlers are installed from the main thread only; the previous ones come back on
    exit. With several processes a signal may reach one host only, or hosts at different
    steps: `poll` makes them agree on one step (see there)."""

    NAMES = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self
        # None: a handler set outside Python, which cannot be put back; the default then.
        self._previous = {
            name: signal.getsignal(getattr(signal, name)) or signal.SIG_DFL for name in self.NAMES
        }
        for name, previous in self._previous.items():
            if previous != signal.SIG_IGN:  # e.g. SIGINT of a `nohup ... &` job
                signal.signal(getattr(signal, name), self._handle)
        return self

    def poll(self, step: int, every: int) -> str | None:
        """The stop request to act on after `step`, the same on every process.

        One process: its own signal, at once. Several: every `every` steps (the loop's logging
        steps, where it waits for the devices anyway) the processes all-gather their flags and
        all stop if any was signalled (SIGTERM over SIGINT), so they save one checkpoint at
        one step; a preempting scheduler's grace period covers the wait."""
        if jax.process_count() == 1:
            return self.signal
        if step % every:
            return None
        from jax.experimental import multihost_utils

        code = 0 if self.signal is None else 1 + self.NAMES[::-1].index(self.signal)
        top = int(np.max(multihost_utils.process_allgather(np.int32(code))))
        return None if top == 0 else self.NAMES[::-1][top - 1]

    def _handle(self, signum, frame) -> None:
        # Only a flag: printing here could re-enter a print the main thread is in.
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = name
        if name == "SIGINT":
            signal.signal(signal.SIGINT, self._previous["SIGINT"])

    def __exit__(self, *exc) -> None:
        for name, previous in self._previous.items():
            signal.signal(getattr(signal, name), previous)


@jax.jit
def params_finite(params) -> jax.Array:
    """True when every parameter value is finite (checked before a checkpoint is written)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))


def divergence_message(step: int, reason: str, patience: int, last_checkpoint: Path | None) -> str:
    """What a diverged run tells the user: the step, why, and where to resume from."""
    if last_checkpoint is None:
        where = "no checkpoint was saved; lower train.learning_rate (or set train.grad_clip)"
    else:
        where = (
            f"last good checkpoint: {last_checkpoint} (step {last_checkpoint.name}); lower "
            "train.learning_rate (or set train.grad_clip) and rerun to resume from it"
        )
    return (
        f"training diverged at step {step}: {reason} "
        f"(train.divergence_patience={patience}); {where}"
    )
