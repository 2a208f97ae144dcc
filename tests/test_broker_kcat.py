"""kcat (librdkafka's command-line client) against ottla.Broker.

kcat has no admin commands; topic creation is covered by its auto-creating
produce and deletion by the other clients' suites. Its metadata listing
(-L) is checked here."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import ottla

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed")


def kcat(b: ottla.Broker, *args: str, stdin: bytes = b"", timeout: float = 30) -> str:
    assert KCAT is not None
    p = subprocess.run(
        [KCAT, "-b", b.bootstrap_servers, *args], input=stdin, capture_output=True, timeout=timeout
    )
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


def produce(b: ottla.Broker, topic: str, lines: list[str], *extra: str) -> None:
    kcat(b, "-P", "-t", topic, "-K:", *extra, stdin=("\n".join(lines) + "\n").encode())


def consume_all(b: ottla.Broker, topic: str, fmt: str = "%k|%s|%h|%o\\n") -> list[str]:
    return kcat(
        b, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", fmt.replace("\\n", "\n")
    ).splitlines()


def test_keys_and_headers_round_trip(broker: ottla.Broker, data_dir: Path) -> None:
    produce(broker, "kh", [f"key-{i}:value-{i}" for i in range(10)], "-H", "trace=abc", "-H", "n=1")
    got = consume_all(broker, "kh")
    assert got == [f"key-{i}|value-{i}|trace=abc,n=1|{i}" for i in range(10)]
    with ottla.Consumer(
        data_dir, "kh", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        recs = list(ec)
    assert [(r.key, r.value) for r in recs] == [(b"key-%d" % i, b"value-%d" % i) for i in range(10)]
    assert dict(recs[0].headers) == {"trace": b"abc", "n": b"1"}


def test_metadata_listing(broker: ottla.Broker) -> None:
    ottla.Admin(broker.path).create_topic("listed", partitions=3)
    md = json.loads(kcat(broker, "-L", "-J"))
    assert [b["id"] for b in md["brokers"]] == [0]
    [t] = [t for t in md["topics"] if t["topic"] == "listed"]
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    assert all(p["leader"] == 0 for p in t["partitions"])


class GroupMember:
    """A `kcat -G` balanced consumer whose current assignment is tracked
    from its stderr."""

    ASSIGNED = re.compile(r"rebalanced \(memberid [^)]*\): assigned: (.*)$")

    def __init__(self, b: ottla.Broker, group: str, topic: str) -> None:
        assert KCAT is not None
        self.proc = subprocess.Popen(
            [
                KCAT,
                "-b",
                b.bootstrap_servers,
                "-G",
                group,
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
                "-o",
                "beginning",
                topic,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.assigned: set[int] = set()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            m = self.ASSIGNED.search(line)
            with self._lock:
                if m:
                    self.assigned = {int(x) for x in re.findall(r"\[(\d+)\]", m.group(1))}
                elif "revoked" in line:
                    self.assigned = set()

    def partitions(self) -> set[int]:
        with self._lock:
            return set(self.assigned)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # kcat leaves the group on the way out
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


def wait_balanced(members: list[GroupMember], each: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ps = [m.partitions() for m in members]
        if all(len(p) == each for p in ps) and set().union(*ps) == set(range(6)):
            return
        assert time.monotonic() < deadline, ps
        time.sleep(0.1)


def test_group_of_three_over_six_partitions_takes_over_on_leave(broker: ottla.Broker) -> None:
    ottla.Admin(broker.path).create_topic("six", partitions=6)
    group = "kg-" + uuid.uuid4().hex[:6]
    members = [GroupMember(broker, group, "six") for _ in range(3)]
    try:
        wait_balanced(members, 2)
        members.pop().stop()
        wait_balanced(members, 3)
    finally:
        for m in members:
            m.stop()


def test_commit_restart_resume(broker: ottla.Broker) -> None:
    produce(broker, "resume", [f"k:{i}" for i in range(5)])
    # Not "-o beginning": kcat would assign that offset explicitly every time.
    args = [
        "-G",
        "resumers",
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "-q",
        "-f",
        "%s\n",
        "resume",
    ]
    assert kcat(broker, *args).split() == ["0", "1", "2", "3", "4"]
    produce(broker, "resume", [f"k:{i}" for i in range(5, 8)])
    # Restarted with the same group: resumes from the committed offset.
    assert kcat(broker, *args).split() == ["5", "6", "7"]
    with ottla.Consumer(broker.path, group_id="resumers") as ec:
        assert ec.committed(ottla.TopicPartition("resume", 0)) == 8


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec(broker: ottla.Broker, data_dir: Path, codec: str) -> None:
    topic = "z-" + codec
    lines = [f"k{i}:{codec}-{i}-" + "x" * 100 for i in range(100)]
    produce(broker, topic, lines, "-z", codec)
    got = consume_all(broker, topic, "%s\\n")
    assert got == [line.split(":", 1)[1] for line in lines]
    with ottla.Consumer(
        data_dir, topic, auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value.decode() for r in ec] == got


def test_idempotent_producer(broker: ottla.Broker) -> None:
    produce(broker, "idem", [f"k{i % 3}:{i}" for i in range(200)], "-X", "enable.idempotence=true")
    got = consume_all(broker, "idem", "%s\\n")
    assert sorted(map(int, got)) == list(range(200))


def test_a_line_without_a_key_is_refused_on_a_compacted_topic(
    broker: ottla.Broker, data_dir: Path
) -> None:
    assert KCAT is not None
    ottla.Admin(data_dir).create_topic("kc-compacted", config={"cleanup.policy": "compact"})
    p = subprocess.run(
        [KCAT, "-b", broker.bootstrap_servers, "-P", "-t", "kc-compacted"],
        input=b"no key\n",
        capture_output=True,
        timeout=30,
    )
    assert p.returncode != 0
    assert "Broker failed to validate record" in p.stderr.decode(), p.stderr.decode()
    produce(broker, "kc-compacted", ["k:keyed"])
    assert consume_all(broker, "kc-compacted") == ["k|keyed||0"]
