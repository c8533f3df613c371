"""XLA:CPU's per-call buffers on transparent huge pages: a restart with glibc's `hugetlb` tunable.

A compiled call on the CPU (a train step) takes one temporary buffer for all its intermediate
values from `malloc` when it starts and frees it when it ends: 116 MB for the Beauty 4 x 256
step, 1.9 GB for `small`. glibc serves a block that large from a fresh `mmap` every time, so
each step faults its whole buffer in again, 4 KiB at a time (32k page faults per 4 x 256 step,
490k per `small` step; on a 2-core VM ~20 % of the step, docs/results.md, training speed).
With the tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks the kernel for
transparent huge pages on such blocks, so a fault maps 2 MiB: ~40x fewer faults. Steps whose
buffers are small do not change.

glibc reads tunables once, when a process starts, so `restart_with_huge_pages` re-runs the
current command (`os.execv`, same arguments and environment) with the tunable added. It does
so only where it helps: Linux with glibc >= 2.35 and the kernel's transparent huge pages in
`madvise` mode (with `always` every block gets them anyway; with `never` none can). The
training CLI and the speed scripts call it first thing; `RECSYS_JAX_HUGE_PAGES=0` turns it off.
"""

from __future__ import annotations

import os
import re
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "RECSYS_JAX_HUGE_PAGES"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), None if unknown."""
    try:
        with open(_THP_MODE) as f:
            match = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return match.group(1) if match else None


def glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None


def tuned_tunables(environ, mode: str | None, glibc: tuple[int, int] | None) -> str | None:
    """The GLIBC_TUNABLES value to restart with, or None when a restart would not help (or was
    done already, or is turned off)."""
    current = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT) == "0" or "glibc.malloc.hugetlb" in current:
        return None
    if mode != "madvise" or glibc is None or glibc < (2, 35):
        return None
    return f"{current}:{TUNABLE}" if current else TUNABLE


def restart_with_huge_pages(
    mode: str | None = None, glibc: tuple[int, int] | None = None, platform: str | None = None
):
    """Re-run this process with `TUNABLE` set, where it helps (see the module docstring);
    returns without doing anything otherwise. `mode`, `glibc` and `platform` default to this
    machine's."""
    if (platform or sys.platform) != "linux":
        return
    tunables = tuned_tunables(os.environ, mode or thp_mode(), glibc or glibc_version())
    if tunables is None:
        return
    print(
        f"[speed] restarting with GLIBC_TUNABLES={tunables}: XLA's per-step buffers on huge "
        f"pages ({OPT_OUT}=0 turns this off)",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os.environ["GLIBC_TUNABLES"] = tunables
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
