"""What the command-line tools share: argument types and the one-line error report."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

DEBUG_ENV = "RECSYS_JAX_DEBUG"


def report_error(error: BaseException) -> int:
    """Print an expected failure (bad config, data, checkpoint, bundle) as one line on stderr
    and return the exit status 2; with RECSYS_JAX_DEBUG=1 the traceback comes first."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(error)
    print(f"error: {error}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (sizes and counts, where 0 or a negative
    number would mean nothing or something surprising)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
