"""``cli._tune_malloc``: a backfill's buffers of megabytes are reused from the heap instead of
mapped, faulted in and unmapped again for every range (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# One range's buffers, twenty times: an eth_getLogs answer (7 MiB), its text, the COPY data
# (3 MiB) and a group of two joined; prints the minor page faults that took.
_PROBE = """
import resource, sys
from indexer import cli
if sys.argv[1] == "tuned":
    cli._tune_malloc()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def ranges():
    for _ in range(20):
        answer = b"x" * (7 << 20)
        text = answer.decode()
        copy = b"y" * (3 << 20)
        group = copy + copy
        del answer, text, copy, group
ranges()
before = faults()
ranges()
print(faults() - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_large_buffers_are_reused_instead_of_faulted_in_again() -> None:
    pages = 20 * (7 + 7 + 3 + 6 << 20) // 4096  # every page of every buffer, faulted in
    assert _faults("default") > pages // 2  # glibc maps and unmaps most of them
    assert _faults("tuned") < pages // 100  # the heap keeps them: a few faults at most
