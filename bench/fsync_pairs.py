"""1 MiB values with fsync="always" against the disk, op by op.

    python bench/fsync_pairs.py [N] [DIR]

Alternates one ottla `send()` of a 1 MiB value (`fsync="always"`) and one
`os.write` + `os.fsync` of 1 MiB to a file in the same directory, N times
(default 64), and prints the median time of each and their ratio (the disk's
median over ottla's: 1.0 means ottla writes at the disk's fsync'd rate).
Pairing the two op by op keeps a shared disk's drift out of the ratio,
which separate runs of each (even interleaved ones) do not.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import ottla

MiB = 1 << 20


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    where = sys.argv[2] if len(sys.argv) > 2 else None
    value = os.urandom(MiB)
    block = os.urandom(MiB)
    with tempfile.TemporaryDirectory(dir=where) as d:
        ottla.Admin(d).create_topic("t", 1, {"max.message.bytes": 2 * MiB})
        fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with ottla.Producer(d, fsync="always") as p:
                send, clock = p.send, time.perf_counter
                send("t", value).get()  # warm up both paths
                os.write(fd, block)
                os.fsync(fd)
                t_ottla, t_disk = [], []
                for _ in range(n):
                    t0 = clock()
                    send("t", value)
                    t1 = clock()
                    os.write(fd, block)
                    os.fsync(fd)
                    t2 = clock()
                    t_ottla.append(t1 - t0)
                    t_disk.append(t2 - t1)
        finally:
            os.close(fd)
    mo, md = statistics.median(t_ottla), statistics.median(t_disk)
    print(f"ottla {mo * 1e3:.3f} ms/MiB  disk {md * 1e3:.3f} ms/MiB  ratio {md / mo:.3f}")


if __name__ == "__main__":
    main()
