"""`make demo`: a real rollout on this machine, with a live view.

Starts a real ZooKeeper, builds demo-service artifacts (v1, v2) and serves them, starts six
agent processes (each one a host with its own services A, B and C on loopback ports), seeds
A -> B -> C through `ansible-playbook playbooks/rollout.yml`, then shows the hosts upgrading
themselves until the rollout is done, the final `playbooks/status.yml` table, and what the
independent monitor measured: the minimum healthy instances per service against its quorum.
Everything it starts is stopped and its work directory removed, also on Ctrl-C or failure;
`make demo-clean` removes what an interrupted run (kill -9) left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR = os.path.join(REPO, "build", "demo")
HOSTS = ["h1", "h2", "h3", "h4", "h5", "h6"]
# Service -> (first port, quorum, max_parallel, depends_on): three tiers with different budgets.
SERVICES = {"A": (19100, 4, 2, []), "B": (19200, "50%", 1, ["A"]), "C": (19300, 4, 2, ["B"])}
ROOT = "/dc"
TIMEOUT = 300

sys.path.insert(0, os.path.join(REPO, "build", "collections"))

from ansible_collections.zkrollout.dc.plugins.module_utils import layout, snapshot, status, zkclient  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.plan import resolve_quorum  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.render import host_lines, service_lines  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.agents import AgentFleet  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.artifacts import ArtifactServer, build_artifacts  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.monitor import QuorumMonitor  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import ZooKeeper  # noqa: E402


def say(message):
    print("==> %s" % message, flush=True)


def clean_leftovers():
    """Stop what an interrupted demo left (pids recorded under build/demo) and remove the directory."""
    for state_file in _state_files():
        with open(state_file) as handle:
            for service in json.load(handle).get("services", {}).values():
                _kill_if_ours(service.get("pid"))
    pid_file = os.path.join(WORKDIR, "agents.pids")
    if os.path.exists(pid_file):
        with open(pid_file) as handle:
            for line in handle:
                _kill_if_ours(int(line))
    shutil.rmtree(WORKDIR, ignore_errors=True)


def _state_files():
    if not os.path.isdir(WORKDIR):
        return []
    return [os.path.join(WORKDIR, host, "state", "state.json") for host in os.listdir(WORKDIR)
            if os.path.exists(os.path.join(WORKDIR, host, "state", "state.json"))]


def _kill_if_ours(pid):
    """SIGKILL ``pid`` only if its command line points into the demo's work directory."""
    if not pid:
        return
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            if WORKDIR.encode() not in handle.read():
                return
        os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def release_file(server, artifacts):
    """The release the demo seeds, written as an Ansible extra-vars file."""
    services = []
    for name, (_, quorum, max_parallel, depends_on) in SERVICES.items():
        target = artifacts[name]["2.0.0"]
        services.append({"name": name, "version": "2.0.0", "artifact": {"url": server.url(target.filename), "sha256": target.sha256},
                         "quorum": quorum, "max_parallel": max_parallel, "depends_on": depends_on})
    path = os.path.join(WORKDIR, "release.json")
    with open(path, "w") as out:
        json.dump({"zkrollout_release": {"id": "demo-%s" % time.strftime("%Y%m%d-%H%M%S"), "services": services}}, out, indent=1)
    return path


def playbook(name, zk_hosts, *extra):
    """Run one of the collection's playbooks for real; its output goes to the terminal."""
    command = ["ansible-playbook", os.path.join(REPO, "playbooks", name), "-e", "zkrollout_zk_hosts=%s" % zk_hosts,
               "-e", "zkrollout_zk_root=%s" % ROOT] + list(extra)
    say(" ".join(command))
    subprocess.run(command, check=True, cwd=REPO)


def wait_registered(client, tree, deadline):
    """Wait (bounded) until every host has registered every service."""
    while time.monotonic() < deadline:
        view = snapshot.read_snapshot(client, tree)
        if all(len(view.service(name).registrations) == len(HOSTS) for name in SERVICES):
            return
        time.sleep(0.3)
    raise SystemExit("demo: the agents did not register within %ds; see %s/*/agent.log" % (TIMEOUT, WORKDIR))


def live_view(client, tree, deadline):
    """Show hosts x services and the deploy state until the rollout ends; redraw in place on a terminal."""
    interactive = sys.stdout.isatty()
    last = None
    while time.monotonic() < deadline:
        report = status.rollout_report(snapshot.read_snapshot(client, tree))
        lines = ["rollout %s: %s (%s)" % ((report["rollout"] or {}).get("id"), report["state"], report["reason"]),
                 "deploy queue: %s" % (" -> ".join(report["deploy_queue"]) or "empty"), ""] + host_lines(report) + [""] + service_lines(report)
        if interactive:
            sys.stdout.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
            sys.stdout.flush()
        else:
            progress = "%s: %d/%d instances on target, queue %s" % (
                report["state"], report["progress"]["instances_on_target"], report["progress"]["instances_total"], report["deploy_queue"])
            if progress != last:
                print("  " + progress, flush=True)
                last = progress
        if (report["rollout"] or {}).get("state") in status.TERMINAL_STATES:
            return report
        time.sleep(0.25)
    raise SystemExit("demo: the rollout did not finish within %ds" % TIMEOUT)


def run():
    clean_leftovers()
    os.makedirs(WORKDIR)
    deadline = time.monotonic() + TIMEOUT
    say("starting ZooKeeper 3.8 (Debian package) on a free loopback port")
    with ZooKeeper(size=1) as zk:
        say("ZooKeeper serves at %s" % zk.hosts)
        artifacts = {name: build_artifacts(os.path.join(WORKDIR, "artifacts"), name, {"1.0.0": {}, "2.0.0": {}}) for name in SERVICES}
        with ArtifactServer(os.path.join(WORKDIR, "artifacts")) as server:
            say("artifact server at %s (demo services A, B, C: 1.0.0 and 2.0.0, with sha256)" % server.url(""))
            services = {name: {"port": port, "version": "1.0.0",
                               "initial": {"url": server.url(artifacts[name]["1.0.0"].filename), "sha256": artifacts[name]["1.0.0"].sha256}}
                        for name, (port, _, _, _) in SERVICES.items()}
            with AgentFleet(WORKDIR, zk.hosts, ROOT, HOSTS, services) as fleet:
                fleet.start_all()
                with open(os.path.join(WORKDIR, "agents.pids"), "w") as out:
                    out.write("".join("%d\n" % process.pid for process in fleet.processes.values()))
                say("started %d agents (hosts %s), each running A, B and C 1.0.0" % (len(HOSTS), ", ".join(HOSTS)))
                tree = layout.Layout(ROOT)
                with zkclient.session(zkclient.ConnectionOptions(hosts=zk.hosts, timeout=10)) as client:
                    wait_registered(client, tree, deadline)
                    say("every host registered; the independent monitor samples every /health endpoint")
                    with QuorumMonitor(fleet.health_targets()) as monitor:
                        playbook("rollout.yml", zk.hosts, "-e", "@%s" % release_file(server, artifacts))
                        say("the playbook has exited; the hosts now upgrade themselves")
                        started = time.monotonic()
                        report = live_view(client, tree, deadline)
                        elapsed = time.monotonic() - started
                    playbook("status.yml", zk.hosts)
                say("rollout %s in %.1fs; minimum healthy instances seen by the monitor:" % (report["rollout"]["state"], elapsed))
                failed = False
                for name, (_, quorum, _, _) in SERVICES.items():
                    needed = resolve_quorum(quorum, len(HOSTS))
                    low = monitor.min_healthy[name]
                    failed |= low < needed
                    print("    %s: min %d healthy of %d, quorum %s (= %d) %s" % (name, low, len(HOSTS), quorum, needed, "OK" if low >= needed else "VIOLATED"))
                if failed or report["rollout"]["state"] != "done":
                    raise SystemExit("demo: the rollout did not finish cleanly; see the logs under %s" % WORKDIR)
    say("cleaning up")


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
