# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python -m <collection>.plugins.module_utils.controller.exporter [--listen ADDR:PORT] [--zk-* ...] [--once]``."""

# A command-line program, not a module: it prints to its terminal and exits with a status.
# pylint: disable=ansible-bad-function

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading

from ...core.layout import Layout, LayoutError
from ...exposition import MetricsServer, MetricsUnavailable, registry_of, render
from ...store.client import ConnectionOptions, ZkConnectionError, build_client, disconnect
from .collector import FleetCollector, TreeReader

DEFAULT_LISTEN = "127.0.0.1:9465"
_LISTEN_RE = re.compile(r"\A(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]*)):(?P<port>[0-9]{1,5})\Z")


def parse_listen(value):
    """``(address, port)`` of ``host:port`` or ``[v6]:port``; an empty host means every address."""
    match = _LISTEN_RE.match(value or "")
    if not match or int(match.group("port")) > 65535:
        raise ValueError("--listen %r: expected address:port, for example %s or [::1]:9465" % (value, DEFAULT_LISTEN))
    address = match.group("v6") if match.group("v6") is not None else (match.group("name") or "0.0.0.0")
    return address, int(match.group("port"))


def _parser():
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="zkrollout-fleet-exporter",
        description="Prometheus exporter of a zkrollout.dc rollout tree: per service healthy, quorum, budget, slots and state; "
                    "per host the version of each service; the rollout's state. Reads the whole tree at most once per "
                    "--min-interval, when scraped.")
    parser.add_argument("--listen", default=env("ZKROLLOUT_EXPORTER_LISTEN", DEFAULT_LISTEN),
                        help="address:port to serve /metrics on (default %(default)s; env ZKROLLOUT_EXPORTER_LISTEN)")
    parser.add_argument("--min-interval", type=float, default=1.0,
                        help="seconds during which scrapes reuse the last read of the tree (default %(default)s)")
    parser.add_argument("--once", action="store_true", help="read the tree once, print the metrics and exit (1 if the read failed)")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    zookeeper = parser.add_argument_group("ZooKeeper (the modules' zk_* options)")
    zookeeper.add_argument("--zk-hosts", default=env("ZKROLLOUT_ZK_HOSTS", "127.0.0.1:2181"),
                           help="host:port list, optionally with a chroot (env ZKROLLOUT_ZK_HOSTS; default %(default)s)")
    zookeeper.add_argument("--zk-root", default=env("ZKROLLOUT_ZK_ROOT", "/dc"), help="root znode of the tree (env ZKROLLOUT_ZK_ROOT; default %(default)s)")
    zookeeper.add_argument("--zk-timeout", type=float, default=10.0, help="seconds to wait for the first session (default %(default)s)")
    zookeeper.add_argument("--zk-session-timeout", type=float, default=10.0, help="session timeout in seconds (default %(default)s)")
    zookeeper.add_argument("--zk-tls", action="store_true", help="connect with TLS")
    zookeeper.add_argument("--zk-ca", help="CA bundle of the server certificates")
    zookeeper.add_argument("--zk-certfile", help="client certificate (mutual TLS); needs --zk-keyfile")
    zookeeper.add_argument("--zk-keyfile", help="key of --zk-certfile")
    zookeeper.add_argument("--zk-keyfile-password", default=env("ZKROLLOUT_ZK_KEYFILE_PASSWORD"),
                           help="password of --zk-keyfile (prefer env ZKROLLOUT_ZK_KEYFILE_PASSWORD: a command line is visible to every user)")
    zookeeper.add_argument("--zk-no-verify-certs", dest="zk_verify_certs", action="store_false", help="do not verify the server certificate")
    zookeeper.add_argument("--zk-check-hostname", action="store_true", help="check the server certificate's host name")
    zookeeper.add_argument("--zk-digest", default=env("ZKROLLOUT_ZK_DIGEST"),
                           help="digest credentials user:password, a reader of the ACL profile (prefer env ZKROLLOUT_ZK_DIGEST)")
    zookeeper.add_argument("--zk-acl-profile", type=_profile_file, metavar="FILE",
                           help="the tree's ACL profile (JSON: deployer, agents, readers): the metrics then count what the hosts' own "
                                "parents confirm, as the modules do (docs/security.md); the exporter never writes")
    return parser


def _profile_file(path):
    """The ACL profile in the JSON file ``path`` (argparse reports the error)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError("cannot read the ACL profile %s: %s" % (path, exc)) from None


def connection_options(args):
    """ConnectionOptions from the parsed arguments: the modules' option names, reconnecting forever."""
    values = {key: value for key, value in vars(args).items() if key.startswith("zk_")}
    values["zk_connection_retries"] = -1
    return ConnectionOptions.from_mapping(values)


def main(argv=None):
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("zkrollout.exporter")
    logging.getLogger("zkrollout.exporter.kazoo").setLevel(logging.WARNING)
    try:
        listen = parse_listen(args.listen)
        if args.min_interval < 0:
            raise ValueError("--min-interval must be 0 or more seconds, got %r" % args.min_interval)
        options = connection_options(args)
        layout = Layout(options.root)
        client = build_client(options, logger=logging.getLogger("zkrollout.exporter.kazoo"))
    except (ValueError, ZkConnectionError, LayoutError) as exc:
        print("zkrollout-fleet-exporter: %s" % exc, file=sys.stderr)
        return 2
    try:
        if not client.start_async().wait(options.timeout):
            log.warning("no ZooKeeper session with %s within %.1fs; serving zkrollout_fleet_up 0 and reconnecting", options.describe(), options.timeout)
        reader = TreeReader(client, layout, min_interval=args.min_interval, logger=log)
        try:
            if args.once:
                read = reader.read()
                print(render(registry_of(FleetCollector(lambda: read), "the fleet exporter")), end="")
                return 0 if read.report is not None else 1
            registry = registry_of(FleetCollector(reader.read), "the fleet exporter")
            server = MetricsServer(registry, listen[0], listen[1], name="zkrollout-fleet-exporter").start()
        except (MetricsUnavailable, OSError) as exc:
            print("zkrollout-fleet-exporter: cannot serve on %s: %s" % (args.listen, exc), file=sys.stderr)
            return 2
        log.info("serving the tree under %s on %s as %s", layout.root, options.describe(), server.url)
        stopping = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_unused: stopping.set())
        stopping.wait()
        server.stop()
        return 0
    finally:
        disconnect(client)
