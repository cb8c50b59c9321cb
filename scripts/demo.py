"""`make demo`: a real rollout on a fleet of test hosts, with a live view.

Builds six test hosts as Linux network namespaces (each with its own address and sshd), a real
ZooKeeper and an artifact server on their bridge, installs the agent on every host with the role
zkrollout.dc.agent over SSH (`playbooks/agents.yml`), seeds A -> B -> C through
`ansible-playbook playbooks/rollout.yml`, then shows the hosts upgrading themselves until the
rollout is done, the final `playbooks/status.yml` table, and what the independent monitor
measured: the minimum healthy instances per service against its quorum. Everything it starts is
stopped and removed, also on Ctrl-C or failure; `make demo-clean` removes what a killed run left.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR = os.path.join(REPO, "build", "demo")
LOGS = os.path.join(REPO, "build", "demo-logs")
# The demo's fleet has its own names and /24, apart from the test suite's.
PREFIX, SUBNET = "zkd", "10.231.79"
HOSTS = 6
# Service -> (quorum, max_parallel, depends_on): three tiers with different budgets.
SERVICES = {"A": (4, 2, []), "B": ("50%", 1, ["A"]), "C": (4, 2, ["B"])}
ROOT = "/dc"
TIMEOUT = 600
# Each agent serves /metrics on its host's address (docs/metrics.md); the fleet exporter's default address.
AGENT_METRICS_PORT = 9464
EXPORTER_LISTEN = "127.0.0.1:9465"

sys.path.insert(0, os.path.join(REPO, "build", "collections"))

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.render import host_lines, service_lines  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import TERMINAL_STATES, rollout_report  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.core import layout  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.core.plan import resolve_quorum  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.store import client as zkclient  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.store import reads  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.environment import FleetEnvironment  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.fleet import clean_leftovers as clean_fleet  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.monitor import QuorumMonitor  # noqa: E402


def say(message):
    print("==> %s" % message, flush=True)


def clean_leftovers():
    """Remove what an interrupted demo left: its namespaces (and every process in them) and its directory."""
    clean_fleet(PREFIX)
    shutil.rmtree(WORKDIR, ignore_errors=True)


def release_file(environment):
    """The release the demo seeds, written as an Ansible extra-vars file."""
    services = [{"name": name, "version": "2.0.0", "artifact": environment.artifact(name, "2.0.0"), "quorum": quorum,
                 "max_parallel": max_parallel, "depends_on": depends_on}
                for name, (quorum, max_parallel, depends_on) in SERVICES.items()]
    path = os.path.join(WORKDIR, "release.json")
    with open(path, "w") as out:
        json.dump({"zkrollout_release": {"id": "demo-%s" % time.strftime("%Y%m%d-%H%M%S"), "services": services}}, out, indent=1)
    return path


def playbook(name, *extra):
    """Run one of the collection's playbooks for real; its output goes to the terminal."""
    command = ["ansible-playbook", os.path.join(REPO, "playbooks", name)] + list(extra)
    say(" ".join(command))
    subprocess.run(command, check=True, cwd=REPO)


def keep_logs():
    """Copy the agents' logs out of the work directory before it is removed."""
    shutil.rmtree(LOGS, ignore_errors=True)
    for host in sorted(os.listdir(WORKDIR)):
        log = os.path.join(WORKDIR, host, "state", "agent.log")
        if os.path.exists(log):
            os.makedirs(LOGS, exist_ok=True)
            shutil.copy(log, os.path.join(LOGS, "%s.log" % host))


def wait_registered(client, tree, deadline):
    """Wait (bounded) until every host has registered every service."""
    while time.monotonic() < deadline:
        view = reads.read_snapshot(client, tree)
        if all(len(view.service(name).registrations) == HOSTS for name in SERVICES):
            return
        time.sleep(0.3)
    raise SystemExit("demo: the agents did not register in time; see %s/h*/state/agent.log" % WORKDIR)


def where_to_look(environment):
    """Lines saying where the metrics are while the demo runs: an agent's endpoint and the fleet exporter's command."""
    first = environment.fleet.hosts[0]
    return ["metrics: each agent at http://<host address>:%d/metrics (%s: http://%s:%d/metrics); the whole fleet, from another terminal:"
            % (AGENT_METRICS_PORT, first.name, first.address, AGENT_METRICS_PORT),
            "  PYTHONPATH=%s %s -m ansible_collections.zkrollout.dc.plugins.module_utils.controller.exporter --zk-hosts %s --zk-root %s "
            "--listen %s  (then http://%s/metrics; Grafana: docs/grafana/zkrollout-fleet.json)"
            % (os.path.join(REPO, "build", "collections"), sys.executable, environment.zk_hosts, ROOT, EXPORTER_LISTEN, EXPORTER_LISTEN)]


def live_view(client, tree, deadline, footer=()):
    """Show hosts x services and the deploy state until the rollout ends; redraw in place on a terminal, ``footer`` below."""
    interactive = sys.stdout.isatty()
    last = report = None
    while time.monotonic() < deadline:
        report = rollout_report(reads.read_snapshot(client, tree))
        lines = ["rollout %s: %s (%s)" % ((report["rollout"] or {}).get("id"), report["state"], report["reason"]),
                 "deploy queue: %s" % (" -> ".join(report["deploy_queue"]) or "empty"), ""] + host_lines(report) + [""] + service_lines(report)
        lines += [""] + list(footer)
        if interactive:
            sys.stdout.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
            sys.stdout.flush()
        else:
            progress = "%s: %d/%d instances on target, queue %s" % (
                report["state"], report["progress"]["instances_on_target"], report["progress"]["instances_total"], report["deploy_queue"])
            if progress != last:
                print("  " + progress, flush=True)
                last = progress
        if report["state"] in TERMINAL_STATES:
            return report
        time.sleep(0.25)
    print("demo: the rollout did not finish within %ds" % TIMEOUT, flush=True)
    return report


def run():
    clean_leftovers()
    deadline = time.monotonic() + TIMEOUT
    say("building %d test hosts (network namespaces %s-h1..h%d on %s.0/24, each with sshd), ZooKeeper and an artifact server"
        % (HOSTS, PREFIX, HOSTS, SUBNET))
    with FleetEnvironment(hosts=HOSTS, services={name: 8080 + i for i, name in enumerate(SERVICES, 1)}, workdir=WORKDIR,
                          prefix=PREFIX, subnet=SUBNET) as environment:
        say("ZooKeeper serves at %s; hosts %s" % (environment.zk_hosts, ", ".join(
            "%s=%s" % (host.name, host.address) for host in environment.fleet.hosts)))
        connection = ["-e", "zkrollout_zk_hosts=%s" % environment.zk_hosts, "-e", "zkrollout_zk_root=%s" % ROOT]
        say("the release is signed with the deployer key %s; every host's agent trusts only its public half"
            % release_signing.private_key_file())
        say("installing the agent on every host over SSH with the role zkrollout.dc.agent")
        playbook("agents.yml", "-i", environment.inventory_path, "-e", "zkrollout_agent_group=fleet",
                 "-e", "zkrollout_agent_metrics_port=%d" % AGENT_METRICS_PORT, "-e", "zkrollout_agent_metrics_bind=0.0.0.0")
        footer = where_to_look(environment)
        for line in footer:
            print(line, flush=True)
        tree = layout.Layout(ROOT)
        with zkclient.session(zkclient.ConnectionOptions(hosts=environment.zk_hosts, timeout=10)) as client:
            wait_registered(client, tree, deadline)
            say("every host runs A, B and C 1.0.0; the independent monitor samples every /health endpoint")
            with QuorumMonitor(environment.health_targets()) as monitor:
                playbook("rollout.yml", "-e", "@%s" % release_file(environment), "-e", "zkrollout_signing_key=%s" % release_signing.private_key_file(),
                         *connection)
                say("the playbook has exited; the hosts now upgrade themselves")
                started = time.monotonic()
                report = live_view(client, tree, deadline, footer)
                elapsed = time.monotonic() - started
            playbook("status.yml", *connection)
        say("rollout %s in %.1fs; minimum healthy instances seen by the monitor:" % (report["state"], elapsed))
        failed = False
        for name, (quorum, _max_parallel, _depends_on) in SERVICES.items():
            needed = resolve_quorum(quorum, HOSTS)
            low = monitor.min_healthy[name]
            failed |= low < needed
            print("    %s: min %d healthy of %d, quorum %s (= %d) %s" % (name, low, HOSTS, quorum, needed, "OK" if low >= needed else "VIOLATED"))
        if failed or report["state"] != "done":
            keep_logs()
            raise SystemExit("demo: the rollout did not finish cleanly (%s); agent logs kept in %s" % (report["reason"], LOGS))
        say("cleaning up: stopping every process in the test hosts, removing namespaces, bridge and files")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="only remove what an interrupted demo left behind")
    args = parser.parse_args()
    if args.clean:
        clean_leftovers()
        say("demo leftovers removed")
        return
    try:
        run()
    finally:
        clean_leftovers()


if __name__ == "__main__":
    main()
