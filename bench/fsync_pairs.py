"""1 MiB values with fsync="always" against the disk, op by op.

    python bench/fsync_pairs.py [N] [DIR]

Alternates one ottla `send()` of a 1 MiB value (`fsync="always"`) and one
`os.write` + `os.fsync` of 1 MiB to a file in the same directory, N times
(default 64), and prints the median time of each and their ratio (the disk's
median over ottla's: 1.0 means ottla writes at the disk's fsync'd rate).
Pairing the two op by op keeps a shared disk's drift out of the ratio,
which separate runs of each (even interleaved ones) do not.

A third op per round writes 1 MiB + fsync to a second file whose blocks are
reserved ahead with `fallocate(FALLOC_FL_KEEP_SIZE)` in 8 MiB steps, as
ottla's active segment is (see `LogSegment::preallocate`): the disk's
fsync'd rate for an appender that preallocates, printed as a second ratio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import ottla

MiB = 1 << 20
STEP = 8 * MiB
FALLOC_FL_KEEP_SIZE = 1


def fallocate_keep_size() -> Any:
    """libc's fallocate, or None where it is missing (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        f = libc.fallocate
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return f


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    where = sys.argv[2] if len(sys.argv) > 2 else None
    value = os.urandom(MiB)
    block = os.urandom(MiB)
    with tempfile.TemporaryDirectory(dir=where) as d:
        ottla.Admin(d, create=True).create_topic("t", 1, {"max.message.bytes": 2 * MiB})
        fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fd2 = os.open(os.path.join(d, "g"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        falloc = fallocate_keep_size()
        reserved = 0
        written = 0
        try:
            with ottla.Producer(d, fsync="always") as p:
                send, clock = p.send, time.perf_counter
                send("t", value).get()  # warm up both paths
                os.write(fd, block)
                os.fsync(fd)
                t_ottla, t_disk, t_pre = [], [], []
                for _ in range(n):
                    t0 = clock()
                    send("t", value)
                    t1 = clock()
                    os.write(fd, block)
                    os.fsync(fd)
                    t2 = clock()
                    if (
                        falloc is not None
                        and written + MiB > reserved
                        and falloc(fd2, FALLOC_FL_KEEP_SIZE, written, MiB + STEP) == 0
                    ):
                        reserved = written + MiB + STEP
                    os.write(fd2, block)
                    os.fsync(fd2)
                    written += MiB
                    t3 = clock()
                    t_ottla.append(t1 - t0)
                    t_disk.append(t2 - t1)
                    t_pre.append(t3 - t2)
        finally:
            os.close(fd)
            os.close(fd2)
    mo, md, mp = (statistics.median(t) for t in (t_ottla, t_disk, t_pre))
    print(
        f"ottla {mo * 1e3:.3f} ms/MiB  disk {md * 1e3:.3f} ms/MiB  ratio {md / mo:.3f}"
        f"  | disk preallocated {mp * 1e3:.3f} ms/MiB  ratio {mp / mo:.3f}"
    )


if __name__ == "__main__":
    main()
