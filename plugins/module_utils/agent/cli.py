# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``zkrollout-agent --config FILE [run|once|status [--json]]``."""

# A command-line program, not a module: it prints to its terminal and exits with a status.
# pylint: disable=ansible-bad-function

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from .config import ConfigError, load_config
from .runtime import Agent

DEFAULT_CONFIG = "/etc/zkrollout/agent.json"


def _status(config, as_json):
    path = os.path.join(config.state_dir, "status.json")
    try:
        with open(path) as handle:
            status = json.load(handle)
    except (OSError, ValueError) as exc:
        print("no status yet at %s (%s): is the agent running?" % (path, exc), file=sys.stderr)
        return 1
    age = time.time() - status.get("updated", 0)
    status["age_seconds"] = round(age, 1)
    status["warnings"] = list(config.warnings)
    if as_json:
        print(json.dumps(status, indent=1, sort_keys=True))
        return 0
    print("host %s, ZooKeeper %s, updated %.1fs ago%s" % (
        status["host"], status["connection"], age, " (STALE: is the agent running?)" if age > 10 * config.loop_wait + 5 else ""))
    for name, service in sorted(status["services"].items()):
        decision = service["decision"] or {}
        progress = service["progress"] or {}
        print("  %-12s running %-10s %-9s phase %-12s prepared %s" % (
            name, service["running"] or "-", "healthy" if service["healthy"] else "unhealthy",
            progress.get("phase", "idle") + ("/" + progress["step"] if progress.get("step") else ""), ",".join(service["prepared"]) or "-"))
        print("  %-12s last decision: %s: %s" % ("", decision.get("action", "-"), decision.get("reason", "-")))
    print("  release signatures: %s" % status.get("release_signatures", "-"))
    zookeeper = status.get("zookeeper") or {}
    print("  ZooKeeper: %d requests sent, %d watch notifications received" % (zookeeper.get("requests", 0), zookeeper.get("notifications", 0)))
    for problem in status.get("problems") or ():
        print("  PROBLEM: %s" % problem)
    for warning in config.warnings:
        print("  WARNING: %s" % warning)
    return 0


def _metrics_unavailable(config, path):
    """Why the configured metrics endpoint cannot be served; None if it can or none is configured."""
    if config.metrics_port is None:
        return None
    # The metrics modules are imported only here and where the endpoint starts, so an agent
    # without an endpoint never loads prometheus_client.
    from ..exposition import MetricsUnavailable, require_prometheus_client  # pylint: disable=import-outside-toplevel

    try:
        require_prometheus_client("metrics.port in %s" % path)
    except MetricsUnavailable as exc:
        return str(exc)
    return None


def main(argv=None):
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="zkrollout-agent", description="Host agent of zkrollout.dc rolling upgrades.")
    parser.add_argument("--config", default=os.environ.get("ZKROLLOUT_AGENT_CONFIG", DEFAULT_CONFIG), help="agent config (JSON)")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "once", "status", "check"],
                        help="run the loop (default), do one iteration and exit, show the last status, or only check the config")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("zkrollout-agent: %s" % exc, file=sys.stderr)
        return 2
    unavailable = _metrics_unavailable(config, args.config) if args.command in ("check", "run") else None
    if unavailable:
        print("zkrollout-agent: %s" % unavailable, file=sys.stderr)
        return 2
    if args.command == "check":
        print("%s: valid config for host %s, services %s" % (args.config, config.host, ", ".join(config.service_names)))
        for warning in config.warnings:
            print("WARNING: %s" % warning)
        if config.trusted_keys is None:
            print("WARNING: release signatures are NOT checked (allow_unsigned_releases: true)")
        return 0
    if args.command == "status":
        return _status(config, args.json)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s " + config.host + " %(levelname)s %(name)s: %(message)s")
    logging.getLogger("zkrollout.agent.kazoo").setLevel(logging.WARNING)
    for warning in config.warnings:
        logging.getLogger("zkrollout.agent").warning(warning)
    agent = Agent(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_unused: agent.stop())
    metrics = None
    if config.metrics_port is not None and args.command == "run":
        from .metrics import serve_metrics  # pylint: disable=import-outside-toplevel

        metrics = serve_metrics(lambda: agent.status, config.metrics_bind, config.metrics_port)
        logging.getLogger("zkrollout.agent").info("metrics on %s", metrics.url)
    try:
        agent.run(once=args.command == "once")
    finally:
        if metrics is not None:
            metrics.stop()
    if args.command == "once":
        for name, (decision, _unused) in sorted(agent.decisions.items()):
            print("%s: %s: %s" % (name, decision.action, decision.reason))
    return 0
