"""``ottla serve``: a Kafka-protocol broker over a data directory."""

from __future__ import annotations

import sys
import time

import ottla
from ottla.cli._util import CliError, UsageError, data_dir

# `ottla serve` is started and waited for (by people, scripts and test
# suites): its path imports neither argparse nor typing. main() hands a
# plain command line to parse_fast(); anything it does not fully
# understand goes through the argparse parser built by add_parser().
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from types import FrameType
    from typing import Any

EPILOG = """\
The broker listens on 127.0.0.1 unless told otherwise, and prints
"listening on HOST:PORT" on stdout once it accepts connections (port 0 picks
a free port). SIGINT (Ctrl-C) or SIGTERM stop it cleanly: connections are
closed, the port and the directory released, and the exit status is 0.

examples:
  ottla serve --data ./ottla-data
  ottla serve --data ./ottla-data --listen 127.0.0.1:0 --num-partitions 3
  ottla serve --listen 0.0.0.0:9092 --no-auto-create-topics

a three-node cluster on one machine (one line per node; see the README):
  ottla serve ./n1 --node-id 1 --listen 127.0.0.1:9092 \\
      --controller-listen 127.0.0.1:9192 \\
      --controller-quorum-voters 1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194 \\
      --default-replication-factor 3 --min-insync-replicas 2
security (docs/security.md):
  Without --listener the broker has one PLAINTEXT listener: no encryption and
  no authentication, anyone who reaches the port can read, write and delete
  every topic. Listening on anything but loopback that way, the broker says
  so loudly on stderr at every start. For other machines, use SASL_SSL:
  ottla users add alice
  ottla serve --listener SASL_SSL://0.0.0.0:9094 --ssl-certfile server.pem \\
      --ssl-keyfile server.key --advertised-listener SASL_SSL://kafka.example:9094
  ottla serve --listener PLAINTEXT://127.0.0.1:9092 --listener SSL://0.0.0.0:9093 \\
      --ssl-certfile server.pem --ssl-keyfile server.key --ssl-cafile ca.pem \\
      --ssl-client-auth required
"""


def add_parser(sub: Any) -> None:
    import argparse

    p = sub.add_parser(
        "serve",
        help="serve a data directory over the Kafka protocol",
        description="Run a Kafka-protocol broker over a data directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dir", nargs="?", default=None, metavar="DIR", help="data directory (same as --data)"
    )
    p.add_argument(
        "--data", "-d", metavar="DIR", help="data directory (default: $OTTLA_DATA or ./ottla-data)"
    )
    p.add_argument(
        "--listen",
        "-l",
        default="127.0.0.1:9092",
        type=_listen_arg,
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:9092; port 0 = any free port)",
    )
    p.add_argument(
        "--no-auto-create-topics",
        action="store_true",
        help="refuse unknown topics instead of creating them",
    )
    p.add_argument(
        "--num-partitions",
        type=int,
        default=1,
        metavar="N",
        help="partitions of auto-created topics (default 1)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=104857600,
        metavar="BYTES",
        help="largest request accepted (default 104857600)",
    )
    p.add_argument(
        "--queued-max-request-bytes",
        type=int,
        default=524288000,
        metavar="BYTES",
        help="request bytes read or handled at once across all connections; connections "
        "wait without reading beyond it (queued.max.request.bytes; at least "
        "--max-request-bytes, -1 = no bound; default 524288000)",
    )
    p.add_argument(
        "--fetch-max-bytes",
        type=int,
        default=57671680,
        metavar="BYTES",
        help="record bytes in one Fetch response, whatever the client asks "
        "(fetch.max.bytes; default 57671680)",
    )
    p.add_argument(
        "--fsync",
        choices=["never", "interval", "always"],
        default="never",
        help="when appended records are fsynced (default never: the page cache)",
    )
    p.add_argument(
        "--retention-check-interval-ms",
        type=int,
        default=300000,
        metavar="MS",
        help="how often segments past their retention are deleted "
        "(log.retention.check.interval.ms; default 300000)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="the most client connections open at once (max.connections); one past it "
        "is closed when accepted (default: a quarter of the open-file limit, ulimit -n)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=None,
        metavar="N",
        help="the most connections open at once from one client address "
        "(max.connections.per.ip; default: no limit of its own)",
    )
    p.add_argument(
        "--max-open-files",
        type=int,
        default=None,
        metavar="N",
        help="descriptors kept open for partition files; the least recently used are "
        "closed past it and reopened on demand (default: half the open-file limit)",
    )
    p.add_argument(
        "--group-initial-rebalance-delay-ms",
        type=int,
        default=0,
        metavar="MS",
        help="how long the first rebalance of an empty consumer group waits for more "
        "members (group.initial.rebalance.delay.ms; default: 0, at once)",
    )
    p.add_argument(
        "--group-consumer-heartbeat-interval-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="how often members of consumer-protocol groups (group.protocol=consumer, "
        "KIP-848) heartbeat (group.consumer.heartbeat.interval.ms; default: 1000)",
    )
    p.add_argument(
        "--group-consumer-session-timeout-ms",
        type=int,
        default=45000,
        metavar="MS",
        help="how long a consumer-protocol member may go without a heartbeat before it "
        "is fenced (group.consumer.session.timeout.ms; default: 45000)",
    )
    # The broker's rack (issue 13, rack-aware assignment).
    p.add_argument(
        "--broker-rack",
        default=None,
        metavar="RACK",
        help="the broker's rack (broker.rack), reported by Metadata and DescribeCluster "
        "and matched against consumers' client.rack by the consumer-protocol assignors "
        "(default: none)",
    )
    # KIP-848's online migration between classic and consumer groups.
    p.add_argument(
        "--group-consumer-migration-policy",
        default="bidirectional",
        choices=list(_MIGRATION),
        type=str.lower,
        metavar="POLICY",
        help="which conversions between classic and consumer-protocol groups the "
        "coordinator makes (group.consumer.migration.policy): bidirectional, upgrade, "
        "downgrade or disabled (default: bidirectional)",
    )
    cluster = p.add_argument_group(
        "cluster", "a node of a replicated cluster (docs/design/replication.md)"
    )
    cluster.add_argument(
        "--node-id", type=int, default=None, metavar="N", help="this node's id (node.id)"
    )
    cluster.add_argument(
        "--controller-listen",
        default=None,
        metavar="HOST:PORT",
        help="the controller listener: the metadata quorum and the brokers' requests to it",
    )
    cluster.add_argument(
        "--controller-quorum-voters",
        default=None,
        metavar="ID@HOST:PORT,...",
        help="the metadata quorum's voters (controller.quorum.voters); a node id not among "
        "them is a broker-only node",
    )
    for flag, default, what in _CLUSTER_INTS:
        cluster.add_argument(
            flag, type=int, default=default, metavar="N", help=f"{what} (default {default})"
        )
    # Security (issue 18).
    sec = p.add_argument_group("security (docs/security.md)")
    sec.add_argument(
        "--listener",
        action="append",
        type=_listener_arg,
        metavar="NAME://HOST:PORT",
        help="a listener (repeatable; Kafka's listeners): NAME is PLAINTEXT, SSL, "
        "SASL_PLAINTEXT or SASL_SSL; replaces --listen",
    )
    sec.add_argument(
        "--advertised-listener",
        action="append",
        metavar="[NAME://]HOST:PORT",
        help="the address clients are told for a listener (repeatable; Kafka's "
        "advertised.listeners); without NAME://, for the first listener",
    )
    sec.add_argument(
        "--ssl-certfile", metavar="PEM", help="server certificate chain (SSL, SASL_SSL)"
    )
    sec.add_argument("--ssl-keyfile", metavar="PEM", help="server private key")
    sec.add_argument(
        "--ssl-cafile", metavar="PEM", help="CA certificates client certificates must chain to"
    )
    sec.add_argument(
        "--ssl-client-auth",
        choices=["none", "requested", "required"],
        default="none",
        help="ask TLS clients for a certificate (ssl.client.auth; default none); its "
        "subject becomes the principal",
    )
    sec.add_argument(
        "--sasl-enabled-mechanisms",
        metavar="LIST",
        help="comma-separated SASL mechanisms (sasl.enabled.mechanisms; default "
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512; OAUTHBEARER accepts unsecured tokens: tests only)",
    )
    sec.add_argument(
        "--connections-max-reauth-ms",
        type=int,
        default=0,
        metavar="MS",
        help="SASL session lifetime before clients must re-authenticate "
        "(connections.max.reauth.ms, KIP-368; default 0: none)",
    )
    sec.add_argument(
        "--authorizer",
        choices=["none", "standard"],
        default="none",
        help="check ACLs (authorizer.class.name): standard is Kafka's StandardAuthorizer over "
        "the directory's ACLs (ottla acls); default none: everything allowed",
    )
    sec.add_argument(
        "--super-users",
        metavar="LIST",
        help="principals allowed everything, separated by ';' (super.users), e.g. 'User:admin'",
    )
    sec.add_argument(
        "--allow-everyone-if-no-acl-found",
        action="store_true",
        help="allow what no ACL names a resource for (allow.everyone.if.no.acl.found; "
        "default off, as in Kafka)",
    )
    # Security between the nodes of a cluster (docs/security.md, "Brokers of a cluster").
    sec.add_argument(
        "--inter-broker-listener-name",
        metavar="NAME",
        help="the listener other nodes' replica fetchers connect to (inter.broker.listener.name; "
        "default the first listener); SSL ones present this node's certificate",
    )
    sec.add_argument(
        "--inter-broker-sasl-mechanism",
        choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
        help="how this node authenticates to a SASL inter-broker listener",
    )
    sec.add_argument("--inter-broker-sasl-username", metavar="USER")
    sec.add_argument(
        "--inter-broker-sasl-password",
        metavar="PASSWORD",
        help="visible to other local users in the process list: prefer the file",
    )
    sec.add_argument(
        "--inter-broker-sasl-password-file",
        metavar="FILE",
        help="a file whose first line is the inter-broker SASL password",
    )
    sec.add_argument(
        "--controller-listener-security-protocol",
        choices=["PLAINTEXT", "SSL"],
        default="PLAINTEXT",
        help="SSL: the controller listener and the nodes' connections to it use mutual TLS "
        "with the --ssl-* files (a peer without a certificate from --ssl-cafile is dropped); "
        "default PLAINTEXT: keep it on a private address",
    )
    p.set_defaults(func=cmd_serve)


# The cluster's integer settings: (flag, default, help).
_CLUSTER_INTS = (
    (
        "--default-replication-factor",
        1,
        "replicas of topics created without a replication factor (default.replication.factor)",
    ),
    (
        "--min-insync-replicas",
        1,
        "min.insync.replicas of topics created without one",
    ),
    (
        "--replica-lag-time-max-ms",
        10000,
        "a follower this far behind leaves the in-sync set (replica.lag.time.max.ms)",
    ),
    (
        "--broker-heartbeat-interval-ms",
        200,
        "how often the node heartbeats to the active controller (broker.heartbeat.interval.ms)",
    ),
    (
        "--broker-session-timeout-ms",
        1000,
        "a node silent this long is fenced and its leaderships move (broker.session.timeout.ms)",
    ),
    (
        "--controller-quorum-election-timeout-ms",
        250,
        "a voter hearing no active controller for this to twice this starts an election "
        "(controller.quorum.election.timeout.ms)",
    ),
    (
        "--offsets-topic-replication-factor",
        3,
        "replicas of __consumer_offsets, made on first use, fewer if fewer brokers are up "
        "(offsets.topic.replication.factor)",
    ),
)


class ServeOptions:
    """What ``ottla serve`` was asked, with argparse's defaults."""

    def __init__(self) -> None:
        self.data: str | None = None
        self.dir: str | None = None  # the positional DIR (``data`` wins)
        self.listen: tuple[str, int] = ("127.0.0.1", 9092)
        self.no_auto_create_topics = False
        self.num_partitions = 1
        self.max_request_bytes = 104857600
        self.queued_max_request_bytes = 524288000
        self.fetch_max_bytes = 57671680
        self.fsync = "never"
        self.retention_check_interval_ms = 300000
        self.max_connections: int | None = None
        self.max_connections_per_ip: int | None = None
        self.max_open_files: int | None = None
        self.group_initial_rebalance_delay_ms = 0
        self.group_consumer_heartbeat_interval_ms = 1000
        self.group_consumer_session_timeout_ms = 45000
        self.broker_rack: str | None = None
        self.group_consumer_migration_policy = "bidirectional"
        self.node_id: int | None = None
        self.controller_listen: str | None = None
        self.controller_quorum_voters: str | None = None
        self.default_replication_factor = 1
        self.min_insync_replicas = 1
        self.replica_lag_time_max_ms = 10000
        self.broker_heartbeat_interval_ms = 200
        self.broker_session_timeout_ms = 1000
        self.controller_quorum_election_timeout_ms = 250
        self.offsets_topic_replication_factor = 3
        # Security (issue 18).
        self.listener: list[str] | None = None
        self.advertised_listener: list[str] | None = None
        self.ssl_certfile: str | None = None
        self.ssl_keyfile: str | None = None
        self.ssl_cafile: str | None = None
        self.ssl_client_auth = "none"
        self.sasl_enabled_mechanisms: str | None = None
        self.connections_max_reauth_ms = 0
        self.authorizer = "none"
        self.super_users: str | None = None
        self.allow_everyone_if_no_acl_found = False
        self.inter_broker_listener_name: str | None = None
        self.inter_broker_sasl_mechanism: str | None = None
        self.inter_broker_sasl_username: str | None = None
        self.inter_broker_sasl_password: str | None = None
        self.inter_broker_sasl_password_file: str | None = None
        self.controller_listener_security_protocol = "PLAINTEXT"

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> ServeOptions:
        o = cls()
        for name in vars(o):
            setattr(o, name, getattr(ns, name))
        if o.data is None:
            o.data = o.dir
        return o


_INT_OPTIONS = {
    "--num-partitions": "num_partitions",
    "--max-request-bytes": "max_request_bytes",
    "--queued-max-request-bytes": "queued_max_request_bytes",
    "--fetch-max-bytes": "fetch_max_bytes",
    "--retention-check-interval-ms": "retention_check_interval_ms",
    "--max-connections": "max_connections",
    "--max-connections-per-ip": "max_connections_per_ip",
    "--max-open-files": "max_open_files",
    "--group-initial-rebalance-delay-ms": "group_initial_rebalance_delay_ms",
    "--group-consumer-heartbeat-interval-ms": "group_consumer_heartbeat_interval_ms",
    "--group-consumer-session-timeout-ms": "group_consumer_session_timeout_ms",
    "--node-id": "node_id",
    "--default-replication-factor": "default_replication_factor",
    "--min-insync-replicas": "min_insync_replicas",
    "--replica-lag-time-max-ms": "replica_lag_time_max_ms",
    "--broker-heartbeat-interval-ms": "broker_heartbeat_interval_ms",
    "--broker-session-timeout-ms": "broker_session_timeout_ms",
    "--controller-quorum-election-timeout-ms": "controller_quorum_election_timeout_ms",
    "--offsets-topic-replication-factor": "offsets_topic_replication_factor",
}
_STR_OPTIONS = {
    "--controller-listen": "controller_listen",
    "--controller-quorum-voters": "controller_quorum_voters",
}
_FSYNC = ("never", "interval", "always")
_MIGRATION = ("bidirectional", "upgrade", "downgrade", "disabled")


def parse_fast(words: list[str]) -> ServeOptions | None:
    """The options of a plain ``serve`` command line (``--name VALUE``,
    ``--name=VALUE``, ``-d DIR``, ``-l HOST:PORT``), read exactly as
    argparse reads them, or None for anything else (``--help``, an unknown,
    abbreviated or malformed option, a bad value): the caller then parses
    with argparse, which answers as it always has."""
    o = ServeOptions()
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--no-auto-create-topics":
            o.no_auto_create_topics = True
            continue
        if not word.startswith("-") and o.dir is None:
            # The positional DIR: the directory unless --data names one.
            o.dir = word
            if o.data is None:
                o.data = word
            continue
        name, eq, value = word.partition("=")
        if eq:
            if not name.startswith("--"):
                return None
        else:
            if i >= len(words):
                return None
            value = words[i]
            i += 1
            # argparse takes a word starting with "-" as a value only if
            # it looks like a negative number.
            if value.startswith("-") and not value[1:].isdigit():
                return None
        if name in ("--data", "-d"):
            o.data = value
        elif name in ("--listen", "-l"):
            listen = parse_listen(value)
            if listen is None:
                return None
            o.listen = listen
        elif name == "--fsync" and value in _FSYNC:
            o.fsync = value
        elif name == "--broker-rack":
            o.broker_rack = value
        elif name == "--group-consumer-migration-policy" and value.lower() in _MIGRATION:
            o.group_consumer_migration_policy = value.lower()
        elif name == "--advertised-listener":
            o.advertised_listener = [*(o.advertised_listener or []), value]
        elif name in _STR_OPTIONS:
            setattr(o, _STR_OPTIONS[name], value)
        elif name in _INT_OPTIONS:
            try:
                setattr(o, _INT_OPTIONS[name], int(value))
            except ValueError:
                return None
        else:
            return None
    return o


def parse_listen(text: str) -> tuple[str, int] | None:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT``; None if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def _listen_arg(text: str) -> tuple[str, int]:
    """argparse type for ``--listen``."""
    listen = parse_listen(text)
    if listen is None:
        import argparse

        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return listen


def _listener_arg(text: str) -> str:
    """argparse type for ``--listener``: ``NAME://HOST:PORT``."""
    name, sep, addr = text.partition("://")
    if not sep or name.upper() not in LISTENER_NAMES or parse_listen(addr) is None:
        import argparse

        raise argparse.ArgumentTypeError(
            f"expected NAME://HOST:PORT with NAME one of {', '.join(LISTENER_NAMES)}, got {text!r}"
        )
    return text


LISTENER_NAMES = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def security_kwargs(args: ServeOptions) -> dict[str, Any]:
    """The ``ottla.Broker`` keywords of the security flags."""
    kwargs: dict[str, Any] = {}
    listeners = list(args.listener or [])
    advertised = []
    for a in args.advertised_listener or []:
        if "://" not in a:
            # HOST:PORT alone: the first listener's.
            first = listeners[0].partition("://")[0] if listeners else "PLAINTEXT"
            a = f"{first}://{a}"
        advertised.append(a)
    if advertised and not listeners:
        host, port = args.listen
        listeners = [
            f"PLAINTEXT://[{host}]:{port}" if ":" in host else f"PLAINTEXT://{host}:{port}"
        ]
    if listeners:
        kwargs["listeners"] = listeners
    if advertised:
        kwargs["advertised_listeners"] = advertised
    if args.ssl_certfile or args.ssl_keyfile:
        kwargs["ssl_certfile"] = args.ssl_certfile
        kwargs["ssl_keyfile"] = args.ssl_keyfile
    if args.ssl_cafile:
        kwargs["ssl_cafile"] = args.ssl_cafile
    if args.ssl_client_auth != "none":
        kwargs["ssl_client_auth"] = args.ssl_client_auth
    if args.sasl_enabled_mechanisms:
        kwargs["sasl_enabled_mechanisms"] = [
            m.strip() for m in args.sasl_enabled_mechanisms.split(",") if m.strip()
        ]
    if args.connections_max_reauth_ms:
        kwargs["connections_max_reauth_ms"] = args.connections_max_reauth_ms
    if args.authorizer != "none":
        kwargs["authorizer"] = args.authorizer
        if args.super_users:
            kwargs["super_users"] = [u for u in args.super_users.split(";") if u.strip()]
        if args.allow_everyone_if_no_acl_found:
            kwargs["allow_everyone_if_no_acl_found"] = True
    if args.inter_broker_listener_name:
        kwargs["inter_broker_listener_name"] = args.inter_broker_listener_name
    if args.inter_broker_sasl_mechanism:
        kwargs["inter_broker_sasl_mechanism"] = args.inter_broker_sasl_mechanism
        kwargs["inter_broker_sasl_username"] = args.inter_broker_sasl_username
        password = args.inter_broker_sasl_password
        if args.inter_broker_sasl_password_file:
            try:
                with open(args.inter_broker_sasl_password_file, encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except OSError as e:
                raise UsageError(f"--inter-broker-sasl-password-file: {e.strerror or e}") from None
        kwargs["inter_broker_sasl_password"] = password
    if args.controller_listener_security_protocol != "PLAINTEXT":
        kwargs["controller_listener_security_protocol"] = args.controller_listener_security_protocol
    return kwargs


def _signal_module() -> Any:
    """``_signal`` (the C module ``signal`` wraps), else ``signal``."""
    try:
        return __import__("_signal")
    except ImportError:
        return __import__("signal")


def cmd_serve(ns: argparse.Namespace) -> int:
    return serve(ServeOptions.from_namespace(ns))


def serve(args: ServeOptions) -> int:
    """Run the broker until SIGINT or SIGTERM; 0 when stopped by either."""
    if args.num_partitions < 1:
        raise UsageError("--num-partitions must be at least 1")
    if args.max_request_bytes < 1024:
        raise UsageError("--max-request-bytes must be at least 1024")
    if args.retention_check_interval_ms < 1:
        raise UsageError("--retention-check-interval-ms must be at least 1")
    if 0 < args.queued_max_request_bytes < args.max_request_bytes:
        raise UsageError("--queued-max-request-bytes must be at least --max-request-bytes (or -1)")
    if not 0 <= args.fetch_max_bytes <= 2**31 - 1:
        raise UsageError("--fetch-max-bytes must be between 0 and 2147483647")
    for flag in ("max_connections", "max_connections_per_ip", "max_open_files"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.broker_rack is not None and not args.broker_rack.strip():
        raise UsageError("--broker-rack must name a rack")
    if not 0 <= args.group_initial_rebalance_delay_ms <= 2**31 - 1:
        raise UsageError("--group-initial-rebalance-delay-ms must be between 0 and 2147483647")
    if args.node_id is not None and (
        args.controller_listen is None or args.controller_quorum_voters is None
    ):
        raise UsageError("--node-id needs --controller-listen and --controller-quorum-voters")
    if args.node_id is None and (
        args.controller_listen is not None or args.controller_quorum_voters is not None
    ):
        raise UsageError("--controller-listen and --controller-quorum-voters need --node-id")
    if args.connections_max_reauth_ms < 0:
        raise UsageError("--connections-max-reauth-ms must be 0 or positive")
    if args.authorizer == "none" and (args.super_users or args.allow_everyone_if_no_acl_found):
        raise UsageError(
            "--super-users and --allow-everyone-if-no-acl-found need --authorizer standard"
        )
    broker_cls: Any = getattr(ottla, "Broker", None)
    if broker_cls is None:
        raise CliError(
            "this ottla build has no broker (ottla.Broker is missing); reinstall ottla with the broker"
        )
    host, port = args.listen
    path = data_dir(args)
    try:
        broker = broker_cls(
            path,
            host=host,
            port=port,
            auto_create_topics=not args.no_auto_create_topics,
            num_partitions=args.num_partitions,
            max_request_bytes=args.max_request_bytes,
            fsync=args.fsync,
            retention_check_interval_ms=args.retention_check_interval_ms,
            queued_max_request_bytes=args.queued_max_request_bytes,
            fetch_max_bytes=args.fetch_max_bytes,
            max_connections=args.max_connections,
            max_connections_per_ip=args.max_connections_per_ip,
            max_open_files=args.max_open_files,
            group_initial_rebalance_delay_ms=args.group_initial_rebalance_delay_ms,
            group_consumer_heartbeat_interval_ms=args.group_consumer_heartbeat_interval_ms,
            group_consumer_session_timeout_ms=args.group_consumer_session_timeout_ms,
            broker_rack=args.broker_rack,
            group_consumer_migration_policy=args.group_consumer_migration_policy,
            node_id=args.node_id,
            controller_listen=args.controller_listen,
            controller_quorum_voters=args.controller_quorum_voters,
            default_replication_factor=args.default_replication_factor,
            min_insync_replicas=args.min_insync_replicas,
            replica_lag_time_max_ms=args.replica_lag_time_max_ms,
            broker_heartbeat_interval_ms=args.broker_heartbeat_interval_ms,
            broker_session_timeout_ms=args.broker_session_timeout_ms,
            controller_quorum_election_timeout_ms=args.controller_quorum_election_timeout_ms,
            offsets_topic_replication_factor=args.offsets_topic_replication_factor,
            **security_kwargs(args),
        )
    except OSError as e:
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    except Exception as e:  # the broker's typed errors, or anything else it refuses
        raise CliError(f"cannot start the broker on {host}:{port} over {path}: {e}") from None

    # The C modules under `signal` and `threading`: their Python wrappers
    # (the Signals enums, Thread objects) cost milliseconds at start-up.
    import _thread

    sig = _signal_module()
    caught: list[int] = []
    ended: list[bool] = []
    failure: list[BaseException] = []
    finished = _thread.allocate_lock()
    finished.acquire()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {s: sig.signal(s, on_signal) for s in (sig.SIGINT, sig.SIGTERM)}

    def run() -> None:
        try:
            broker.serve_forever()
        except BaseException as e:  # handed to the main thread, which reports it
            failure.append(e)
        finally:
            ended.append(True)
            finished.release()

    # serve_forever blocks in a helper thread; the main thread stays free to
    # run signal handlers promptly (they run only in the main thread).
    started = False
    try:
        # The broker accepts connections once constructed (serve_forever only
        # waits for it to stop): say so before starting the thread, which
        # on a busy machine may wait milliseconds for a CPU.
        print(f"listening on {broker.bootstrap_servers}", flush=True)
        if args.listener:
            for name, addr in broker.listeners.items():
                print(f"listener {name} on {addr}", flush=True)
        _thread.start_new_thread(run, ())
        started = True
        print(f"serving {path}; Ctrl-C or SIGTERM to stop", file=sys.stderr, flush=True)
        while not caught and not ended:
            time.sleep(0.1)  # interrupted by signals; the handler records them
    finally:
        broker.close()
        if started:
            finished.acquire(timeout=10)
        for s, h in previous.items():
            sig.signal(s, h)
    if failure and not caught:
        raise CliError(f"broker stopped: {failure[0]}")
    print("stopped", file=sys.stderr, flush=True)
    return 0
