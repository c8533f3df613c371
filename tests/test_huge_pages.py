"""recsys_jax/huge_pages.py: when the CLI restarts itself with glibc's hugetlb tunable."""

import os
import subprocess
import sys

import pytest

from recsys_jax import huge_pages


@pytest.mark.parametrize(
    "environ, mode, glibc, expected",
    [
        ({}, "madvise", (2, 36), "glibc.malloc.hugetlb=1"),
        (  # the user's own tunables are kept
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
            "madvise",
            (2, 35),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
        ),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "madvise", (2, 36), None),  # restarted
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36), None),  # user's say
        ({"RECSYS_JAX_HUGE_PAGES": "0"}, "madvise", (2, 36), None),  # turned off
        ({}, "always", (2, 36), None),  # every large block gets huge pages already
        ({}, "never", (2, 36), None),  # none can
        ({}, None, (2, 36), None),  # no transparent huge pages at all
        ({}, "madvise", (2, 34), None),  # glibc without the tunable
        ({}, "madvise", None, None),  # another C library
    ],
)
def test_restarts_only_where_the_tunable_helps(environ, mode, glibc, expected):
    assert huge_pages.tuned_tunables(environ, mode, glibc) == expected


def test_reads_this_machines_settings():
    assert huge_pages.thp_mode() in (None, "always", "madvise", "never")
    version = huge_pages.glibc_version()
    assert version is None or (len(version) == 2 and version >= (2, 0))


@pytest.mark.subprocess
def test_restart_reruns_the_same_command_once_with_the_tunable():
    # The machine's THP mode, C library and platform are passed in: the restart happens on any
    # machine (elsewhere than Linux with glibc the variable is just set, and unread).
    code = (
        "import os, sys; from recsys_jax import huge_pages; "
        "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], flush=True); "
        "huge_pages.restart_with_huge_pages('madvise', (2, 36), 'linux')"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RECSYS_JAX_HUGE_PAGES")
    }
    result = subprocess.run(
        [sys.executable, "-c", code, "a", "b=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "None ['a', 'b=1']",
        "glibc.malloc.hugetlb=1 ['a', 'b=1']",
    ]
    assert result.stderr.count("[speed] restarting with GLIBC_TUNABLES=glibc.malloc.hugetlb=1") == 1
