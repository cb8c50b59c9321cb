#!/usr/bin/env python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one agent and one host upgrade cost ZooKeeper as the fleet grows: 10, 100, 1000 agents x 3 and 10 services.

A real single-node ZooKeeper (tests/bed/zookeeper.py). For each size, N in-process agents run
the real agent code (``agent.runtime.Agent``: the view, the watch plan, decide, the fenced
commits) for S services each; only the local side is simulated (an instance "runs" a version
in memory and is healthy at once), so the numbers are the coordination's alone. The agents
share a pool of real ZooKeeper sessions (at most ``--sessions``, default 20), round robin;
kazoo hands each watch event to every agent that asked for it, and every agent sends its own
requests, so requests and notifications are counted per agent as if each had its own session.

Per size it reports:

- idle: ZooKeeper requests per agent per second with nothing to do (a previous release of the
  rolled service is done), over one safety tick;
- per host upgrade, fleet wide: requests and watch notifications in the steady state of a
  rollout of one service with k = 2 (max_parallel 2, quorum N - 2) while the other services
  idle, counted from the 3rd finished host upgrade on for W = 60 upgrades, never the last three
  of a rollout (the end of the ready queue and the service's completion wake others): at N = 10
  that is the 4th to the 7th upgrade of each of several rollouts back and forth; the fleet's idle
  load (the agents' safety ticks, measured before) is subtracted, and also shown included;
- the seeding wave: requests and notifications per agent when the release appears;
- one agent's refresh of its whole view (what its safety tick costs): requests and milliseconds;
- and the ratios N=1000 / N=10.

Then, on the 1000 x 10 tree: ``rollout_info``'s read and report in-process, the wall time of
``ansible-playbook playbooks/status.yml`` beyond that of an empty playbook, and the CPU and RSS
of one real agent process (``python -m zkrollout_core.agent`` from the role's zip) idling in it.
Run as root or not, after ``make setup``::

    source scripts/env.sh && python benchmarks/scale.py [--sizes 10,100,1000] [--services 3,10] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from kazoo.exceptions import ConnectionLoss, NodeExistsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "build", "collections"))

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.artifacts import VERIFIED_MARKER  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import parse_config  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.runtime import Agent  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import overall_state, rollout_report  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Slot  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.store import client as zkclient  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot  # noqa: E402
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import take_slot  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.instances import InMemoryInstance  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import ZooKeeper  # noqa: E402
from ansible_collections.zkrollout.dc.tests.integration import tree  # noqa: E402

OLD, NEW = "1.0.0", "2.0.0"
SAFETY_TICK = 60.0
LOOP_WAIT = 5.0
WINDOW = 60
MAX_ROLLOUTS = 15


def agent_config(host, services, workdir, zk_hosts, root):
    """A real, validated agent config for a simulated host (install dirs shared per service)."""
    raw = {
        "host": host,
        "state_dir": os.path.join(workdir, "hosts", host),
        "zookeeper": {"hosts": zk_hosts, "root": root, "session_timeout": 20.0},
        "loop_wait": LOOP_WAIT,
        "safety_tick": SAFETY_TICK,
        "allowed_url_prefixes": ["https://artifacts.example/"],
        "trusted_keys": [release_signing.public_pem()],
        # The simulated instances never fail: a slow health worker keeps 3 x N threads from crowding the process.
        "services": {name: {"install_dir": os.path.join(workdir, "install", name), "command": ["true", "{version_dir}"],
                            "health": {"command": ["true"], "interval": 10.0}} for name in services},
    }
    os.makedirs(raw["state_dir"], exist_ok=True)
    return parse_config(raw, "%s agent config" % host)


def prepare_install_dirs(workdir, services):
    for name in services:
        for version in (OLD, NEW):
            directory = os.path.join(workdir, "install", name, "versions", version)
            os.makedirs(directory, exist_ok=True)
            open(os.path.join(directory, VERIFIED_MARKER), "w").close()


class SimulatedFleet(object):
    """``hosts`` hosts in the tree: the first ``real`` run the real agent code, the rest are passive members.

    Real agents share a pool of sessions, each agent in its own thread. Passive members are what
    a host's agent leaves in the tree (roster members, registrations, ready-queue members, on one
    session of their own) without running anything: they make every listing as long as a fleet
    of ``hosts`` would, and stand behind the real agents in the ready queue.
    """

    def __init__(self, zk, root, hosts, services, workdir, sessions, real):
        self.layout = Layout(root)
        self.hosts = ["h%04d" % (index + 1) for index in range(hosts)]
        self.services = services
        self.counters = [zkclient.RequestCounter() for _unused in range(min(sessions, real))]
        options = zkclient.ConnectionOptions(hosts=zk.hosts, timeout=10.0, session_timeout=30.0)
        self.clients = [counter.attach(zkclient.connect(options)) for counter in self.counters]
        self.passive = zkclient.connect(options)
        prepare_install_dirs(workdir, services)
        self.agents = []
        quiet = logging.getLogger("zkrollout.benchmark.agent")
        quiet.setLevel(logging.ERROR)
        for index, host in enumerate(self.hosts[:real]):
            agent = Agent(agent_config(host, services, workdir, zk.hosts, root), logger=quiet, client=self.clients[index % len(self.clients)])
            for name in services:
                instance = InMemoryInstance(OLD, rise_seconds=0.02)
                agent.drivers[name] = instance
                agent.health[name] = instance
                agent.state.update(name, version=OLD)
            self.agents.append(agent)
        self.threads = [threading.Thread(target=agent.run, daemon=True) for agent in self.agents]

    def start(self):
        """Write the passive members, then start the real agents (2 ms apart: a fleet does not start in one millisecond)."""
        for name in self.services:
            self.passive.ensure_path(self.layout.current_service(name))
            for host in self.hosts[len(self.agents):]:
                self.passive.create_async(self.layout.roster_member(name, host), b"", makepath=True)
                self.passive.create_async(self.layout.registration(name, host, OLD), b"", ephemeral=True)
        self.passive.sync(self.layout.root)
        for thread in self.threads:
            thread.start()
            time.sleep(0.002)

    def passive_join(self, service):
        """The passive members join ``service``'s ready queue, behind the real agents."""
        results = [self.passive.create_async(self.layout.ready_prefix(service, host), b"", ephemeral=True, sequence=True)
                   for host in self.hosts[len(self.agents):]]
        for result in results:
            result.get()

    def stop(self):
        for agent in self.agents:
            agent.stop()
        for thread in self.threads:
            thread.join(10)
        for client in self.clients + [self.passive]:
            zkclient.disconnect(client)

    def requests(self):
        return sum(counter.requests for counter in self.counters)

    def notifications(self):
        return sum(agent.view.notifications for agent in self.agents if agent.view is not None)

    def upgraded(self, service, version=NEW):
        return sum(1 for agent in self.agents if agent.drivers[service].version == version and not agent.state.get(service).in_switch)

    def registered(self, client, services):
        snapshot = read_snapshot(client, self.layout, services=services)
        return min(len(snapshot.service(name).registrations) for name in services)

    def ready(self, client, service):
        return len(read_snapshot(client, self.layout, services=[service]).service(service).ready_queue)


def wait_until(condition, timeout, what, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise SystemExit("scale: gave up after %.0fs waiting for %s" % (timeout, what))


def measure(zk, hosts, service_count, sessions, real, workdir):
    services = ["S%02d" % i for i in range(1, service_count + 1)]
    rolled = services[0]
    root = "/scale-%d-%d" % (hosts, service_count)
    controller = zkclient.connect(zkclient.ConnectionOptions(hosts=zk.hosts, timeout=10.0))
    real = min(real, hosts)
    fleet = SimulatedFleet(zk, root, hosts, services, os.path.join(workdir, root.strip("/")), sessions, real)
    try:
        started = time.monotonic()
        fleet.start()
        wait_until(lambda: fleet.registered(controller, services) == hosts, 120 + hosts * 0.2, "every agent to register")
        startup = time.monotonic() - started
        # A fleet always has a previous release: one of the rolled service at the version it runs, done at once.
        tree.seed(controller, fleet.layout, tree.release(tree.service(rolled, version=OLD, quorum=hosts - 2, max_parallel=2), id="previous"))
        wait_until(lambda: overall_state(read_snapshot(controller, fleet.layout))[0] == "done", 120, "the previous release to be done")
        # Idle: one safety tick of every agent (they tick at jittered times), with nothing to do.
        time.sleep(2.0)
        requests, notifications = fleet.requests(), fleet.notifications()
        time.sleep(SAFETY_TICK)
        idle_rate = (fleet.requests() - requests) / float(real) / SAFETY_TICK
        idle_notifications = fleet.notifications() - notifications

        # One agent's full refresh (what its safety tick reads), timed and counted on its own.
        probe = fleet.agents[-1]
        probe_counter = zkclient.RequestCounter()
        probe_client = probe_counter.attach(zkclient.connect(zkclient.ConnectionOptions(hosts=zk.hosts, timeout=10.0)))
        try:
            from ansible_collections.zkrollout.dc.plugins.module_utils.store.views import AgentView
            view = AgentView(probe_client, probe.layout, probe.config.service_names, lambda: None)
            view.refresh()
            view.invalidate()
            before = probe_counter.requests
            timings = []
            for _unused in range(5):
                view.invalidate()
                began = time.perf_counter()
                view.refresh()
                timings.append((time.perf_counter() - began) * 1000.0)
            refresh_requests = (probe_counter.requests - before) / 5.0
        finally:
            zkclient.disconnect(probe_client)

        # Rollouts of one service, k = 2. Only upgrades with hosts still waiting behind the
        # candidates count, never the last three of a rollout (the end of the ready queue and the
        # service's completion wake others): where every host runs the real agent (N = 10) that
        # is the 4th to the 7th of each rollout, so several rollouts (back and forth between the
        # two versions) add up to WINDOW upgrades.
        requests, notifications = fleet.requests(), fleet.notifications()
        counted = {"requests": 0, "notifications": 0, "upgrades": 0, "elapsed": 0.0}
        seeding, target = None, NEW
        for rollout in range(1, MAX_ROLLOUTS + 1):
            release = tree.service(rolled, version=target, quorum=hosts - 2, max_parallel=2)
            tree.seed(controller, fleet.layout, tree.release(release, id="scale-%d" % rollout))
            behind = rollout == 1 and real < hosts
            if behind:
                # The passive members join behind the real agents before the turns go on (900
                # creates take a while): paused, agents still download and join the ready queue.
                tree.control(controller, fleet.layout, "pause")
            wait_until(lambda version=target: fleet.ready(controller, rolled) + fleet.upgraded(rolled, version) >= real, 120,
                       "every real agent to join the ready queue")
            if behind:
                fleet.passive_join(rolled)
                tree.control(controller, fleet.layout, "resume")
            wait_until(lambda version=target: fleet.upgraded(rolled, version) >= 3, 120, "the first three upgrades", poll=0.005)
            mark_requests, mark_notifications, mark_upgrades = fleet.requests(), fleet.notifications(), fleet.upgraded(rolled, target)
            if seeding is None:
                seeding = ((mark_requests - requests) / float(real), (mark_notifications - notifications) / float(real))
            last = real - 3 if real == hosts else real
            stop_at = min(mark_upgrades + WINDOW - counted["upgrades"], last)
            began = time.monotonic()
            wait_until(lambda version=target, count=stop_at: fleet.upgraded(rolled, version) >= count, 60 + WINDOW * 5.0,
                       "%d more upgrades" % (stop_at - mark_upgrades), poll=0.005)
            counted["elapsed"] += time.monotonic() - began
            counted["upgrades"] += fleet.upgraded(rolled, target) - mark_upgrades
            counted["requests"] += fleet.requests() - mark_requests
            counted["notifications"] += fleet.notifications() - mark_notifications
            if counted["upgrades"] >= WINDOW or real < hosts:
                break
            wait_until(lambda: overall_state(read_snapshot(controller, fleet.layout))[0] == "done", 120, "rollout %d to be done" % rollout)
            target = OLD if target == NEW else NEW
        upgrades, elapsed, window_requests = counted["upgrades"], counted["elapsed"], counted["requests"]
        # The idle load (safety ticks) runs on during the window; what the upgrades cost is the rest.
        background = idle_rate * real * elapsed
        per_upgrade = ((window_requests - background) / float(upgrades), counted["notifications"] / float(upgrades))
        return {
            "hosts": hosts, "services": service_count, "real_agents": real, "sessions": len(fleet.clients), "startup_s": round(startup, 1),
            "idle_requests_per_agent_s": round(idle_rate, 4), "idle_notifications": idle_notifications,
            "requests_per_upgrade": round(per_upgrade[0], 1), "notifications_per_upgrade": round(per_upgrade[1], 1),
            "requests_per_upgrade_with_idle_load": round(window_requests / float(upgrades), 1),
            "upgrades_counted": upgrades, "rollouts": rollout, "upgrade_s": round(elapsed / upgrades, 3),
            "seeding_requests_per_agent": round(seeding[0], 1), "seeding_notifications_per_agent": round(seeding[1], 1),
            "refresh_requests": refresh_requests, "refresh_ms_p50": round(statistics.median(timings), 1),
        }, root
    finally:
        fleet.stop()
        zkclient.disconnect(controller)


def rollout_info_time(zk, root):
    """In-process read + report of the whole tree, best of 5, and its request count."""
    counter = zkclient.RequestCounter()
    client = counter.attach(zkclient.connect(zkclient.ConnectionOptions(hosts=zk.hosts, timeout=10.0)))
    try:
        timings = []
        for _unused in range(5):
            before = counter.requests
            began = time.perf_counter()
            report = rollout_report(read_snapshot(client, Layout(root)))
            timings.append(time.perf_counter() - began)
        return min(timings), counter.requests - before, len(report["hosts"])
    finally:
        zkclient.disconnect(client)


def confirmed_decision_cost(zk, hosts, world_reads):
    """What the ACL profile adds to the decision that stops an instance, on one service of ``hosts`` hosts.

    The deployer (digest identity, with the profile) seeds a release, which creates every host's
    own parent; a fleet session registers every host in the index and its copy. One agent of the
    profile then asks ``take_slot`` (refused, so nothing changes) twice: the first decision also
    reads each host parent's ACL once, the second finds them known. ``world_reads`` puts
    ``world:anyone`` among the readers, so no ACL lists every agent. Returns requests and
    milliseconds of both decisions, and of the same decision without a profile; and of a
    report of the whole tree (``rollout_info``'s read, a new client) with and without it.
    """
    root = "/confirm-%d-%s" % (hosts, "world" if world_reads else "listed")
    layout = Layout(root)
    names = ["h%d" % i for i in range(1, hosts + 1)]
    profile = {"deployer": ["digest:deployer:d"], "agents": ["digest:%s:p" % name for name in names],
               "readers": ["world:anyone"] if world_reads else []}

    def connect(counter=None, **options):
        client = zkclient.connect(zkclient.ConnectionOptions(hosts=zk.hosts, root=root, timeout=20.0, **options))
        return counter.attach(client) if counter is not None else client

    deployer = connect(digest="deployer:d", acl_profile=profile)
    plain_counter, counter = zkclient.RequestCounter(), zkclient.RequestCounter()
    plain = connect(plain_counter, digest="deployer:d")
    agent = connect(counter, digest="h1:p", acl_profile=profile)
    try:
        tree.seed(deployer, layout, tree.release(tree.service("A", version=NEW, quorum=1)))
        deployer.ensure_path(layout.service_roster("A"))
        deployer.ensure_path(layout.current_service("A"))
        # Every create carries an ACL listing every agent (about 50 kB at 1000 hosts); on a slow
        # machine the connection dropped while they were answered, so a lost create is sent again.
        for start in range(0, hosts, 20):
            nodes = []
            for name in names[start:start + 20]:
                nodes.append((layout.roster_member("A", name), False))
                nodes += [(path, True) for path in layout.registration_nodes("A", name, OLD)]
            pending = [(path, ephemeral, deployer.create_async(path, b"", ephemeral=ephemeral)) for path, ephemeral in nodes]
            for path, ephemeral, answer in pending:
                try:
                    answer.get(timeout=30)
                except ConnectionLoss:
                    # The session lives on (a dropped connection, not an expiry): send it again.
                    try:
                        deployer.retry(deployer.create, path, b"", ephemeral=ephemeral)
                    except NodeExistsError:
                        pass
        slot = Slot(to_version=NEW, from_version=OLD, since=time.time(), owner="agent:h1")
        rows = {}
        for label, client, requests in (("first", agent, counter), ("again", agent, counter), ("plain", plain, plain_counter)):
            before, began = requests.requests, time.perf_counter()
            taken, _reason, snapshot = take_slot(client, layout, "A", "h1", slot, allow=lambda _snapshot: (False, "measuring"))
            assert not taken and len(snapshot.service("A").registrations) == hosts, snapshot.service("A").problems[:3]
            rows[label] = (requests.requests - before, (time.perf_counter() - began) * 1000.0)
        # rollout_info: a new process, so a new client that knows no host parent yet.
        for label, options in (("report_plain", {"digest": "deployer:d"}), ("report", {"digest": "deployer:d", "acl_profile": profile})):
            report_counter = zkclient.RequestCounter()
            reporter = connect(report_counter, **options)
            try:
                began = time.perf_counter()
                report = rollout_report(read_snapshot(reporter, layout))
                rows[label] = (report_counter.requests, (time.perf_counter() - began) * 1000.0)
                assert len(report["hosts"]) == hosts, len(report["hosts"])
            finally:
                zkclient.disconnect(reporter)
        return rows
    finally:
        for client in (agent, plain, deployer):
            zkclient.disconnect(client)


def playbook_seconds(argv, env):
    began = time.monotonic()
    run = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=300)
    if run.returncode != 0:
        raise SystemExit("scale: %s failed (exit %d):\n%s" % (" ".join(argv), run.returncode, (run.stdout + run.stderr)[-3000:]))
    return time.monotonic() - began


def status_playbook_overhead(zk, root, workdir):
    """Wall time of status.yml on the tree, minus that of an empty playbook (Ansible's own start-up); best of 3."""
    empty = os.path.join(workdir, "empty.yml")
    with open(empty, "w") as handle:
        handle.write("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    # The implicit localhost runs modules with this Python (the venv with kazoo), as the tests do.
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "tests", "ansible.cfg"), ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    status = [playbook, os.path.join(REPO, "playbooks", "status.yml"), "-e", "zkrollout_zk_hosts=%s" % zk.hosts, "-e", "zkrollout_zk_root=%s" % root]
    baseline = min(playbook_seconds([playbook, empty], env) for _unused in range(3))
    measured = min(playbook_seconds(status, env) for _unused in range(3))
    return measured - baseline, baseline


def real_agent_process(zk, root, services, workdir, seconds=60.0, health_interval=1.0):
    """CPU share and RSS of one real agent process idling in the tree (external driver, HTTP health on loopback).

    ``health_interval`` is the probe interval of every service: the default 1 s, or one so long
    that no probe falls in the window, which leaves what the agent itself costs.
    """
    package = os.path.join(workdir, "zkrollout_core.zip")
    subprocess.run([sys.executable, os.path.join(REPO, "roles", "agent", "files", "pack_core.py"), os.path.join(REPO, "plugins", "module_utils"),
                    package], check=True)
    version_file = os.path.join(workdir, "version")
    with open(version_file, "w") as handle:
        handle.write(OLD + "\n")
    health = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = int(health.stdout.readline().split("port ")[1].split()[0])
        config = {
            "host": "probe", "state_dir": os.path.join(workdir, "probe"),
            "zookeeper": {"hosts": zk.hosts, "root": root},
            "allowed_url_prefixes": ["https://artifacts.example/"],
            "trusted_keys": [release_signing.public_pem()],
            "services": {name: {"install_dir": os.path.join(workdir, "probe-install", name), "driver": "external", "version_file": version_file,
                                "health": {"http": "http://127.0.0.1:%d/" % port, "interval": health_interval}} for name in services},
        }
        shutil.rmtree(config["state_dir"], ignore_errors=True)
        os.makedirs(config["state_dir"])
        path = os.path.join(workdir, "probe.json")
        with open(path, "w") as handle:
            json.dump(config, handle)
        env = dict(os.environ, PYTHONPATH=package)
        agent = subprocess.Popen([sys.executable, "-m", "zkrollout_core.agent", "--config", path, "run"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(10.0)
            ticks = os.sysconf("SC_CLK_TCK")

            def cpu():
                with open("/proc/%d/stat" % agent.pid) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / float(ticks)

            began, used = time.monotonic(), cpu()
            time.sleep(seconds)
            share = (cpu() - used) / (time.monotonic() - began)
            with open("/proc/%d/status" % agent.pid) as handle:
                rss = [int(line.split()[1]) for line in handle if line.startswith("VmRSS:")][0] / 1024.0
            return share, rss
        finally:
            agent.terminate()
            agent.wait(10)
    finally:
        health.terminate()
        health.wait(10)


def table(results):
    lines = ["| N x S | real agents / sessions | idle req/s per agent | upgrades counted (rollouts) | req per upgrade (with idle load) "
             "| notif per upgrade | seeding req / notif per agent | full refresh req / ms | s per upgrade |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        lines.append("| %d x %d | %d / %d | %.3f | %d (%d) | %.1f (%.1f) | %.1f | %.1f / %.1f | %.0f / %.1f | %.2f |" % (
            row["hosts"], row["services"], row["real_agents"], row["sessions"], row["idle_requests_per_agent_s"], row["upgrades_counted"],
            row["rollouts"], row["requests_per_upgrade"], row["requests_per_upgrade_with_idle_load"],
            row["notifications_per_upgrade"], row["seeding_requests_per_agent"], row["seeding_notifications_per_agent"],
            row["refresh_requests"], row["refresh_ms_p50"], row["upgrade_s"]))
    return "\n".join(lines)


def confirmed_table(rows):
    """The decision that stops an instance, with and without the ACL profile, per fleet size."""
    lines = ["| hosts | readers | no profile: requests, ms | profile, first decision: requests, ms "
             "| profile, later decisions: requests, ms | rollout_info, no profile: requests, ms | rollout_info, profile: requests, ms |",
             "|---|---|---|---|---|---|---|"]
    for (hosts, world), row in sorted(rows.items()):
        lines.append("| %d | %s | %d, %.1f | %d, %.1f | %d, %.1f | %d, %.1f | %d, %.1f |" % (
            (hosts, "world:anyone" if world else "agents listed") + row["plain"] + row["first"] + row["again"] + row["report_plain"]
            + row["report"]))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--services", default="3,10")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--real", type=int, default=100, help="hosts that run the real agent code; the rest are passive tree members")
    parser.add_argument("--json", action="store_true")
    acl_part = parser.add_mutually_exclusive_group()
    acl_part.add_argument("--only-acl-profile", action="store_true", help="measure only the decision under the ACL profile")
    acl_part.add_argument("--skip-acl-profile", action="store_true", help="leave out the decision under the ACL profile")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    service_counts = [int(s) for s in args.services.split(",")]
    workdir = tempfile.mkdtemp(prefix="zkrollout-scale-")
    results, extra = [], {}
    try:
        # A production-like heap: 1000 sessions reading 1000-entry listings outgrow the test beds' 128 MiB.
        with ZooKeeper(heap_mb=1024) as zk:
            if not args.skip_acl_profile:
                extra["confirmed_decision"] = {(hosts, world): confirmed_decision_cost(zk, hosts, world)
                                               for world in (False, True) for hosts in sizes}
            if args.only_acl_profile:
                print(confirmed_table(extra["confirmed_decision"]))
                return
            for service_count in service_counts:
                for hosts in sizes:
                    row, root = measure(zk, hosts, service_count, args.sessions, args.real, workdir)
                    results.append(row)
                    print("measured %d x %d: %s" % (hosts, service_count, json.dumps(row)), file=sys.stderr, flush=True)
            biggest = "/scale-%d-%d" % (max(sizes), max(service_counts))
            seconds, requests, host_count = rollout_info_time(zk, biggest)
            extra["rollout_info_s"], extra["rollout_info_requests"], extra["rollout_info_hosts"] = round(seconds, 3), requests, host_count
            extra["status_yml_beyond_ansible_s"], extra["ansible_startup_s"] = (round(v, 2) for v in status_playbook_overhead(zk, biggest, workdir))
            agent_services = ["S%02d" % i for i in range(1, max(service_counts) + 1)]
            share, rss = real_agent_process(zk, biggest, agent_services, workdir)
            extra["agent_cpu_percent"], extra["agent_rss_mb"] = round(share * 100.0, 2), round(rss, 1)
            share, _rss = real_agent_process(zk, biggest, agent_services, workdir, health_interval=3600.0)
            extra["agent_cpu_percent_without_probes"] = round(share * 100.0, 2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"results": results, "at_largest": extra}, indent=1))
        return
    print(table(results))
    print()
    for service_count in service_counts:
        rows = {row["hosts"]: row for row in results if row["services"] == service_count}
        if min(sizes) in rows and max(sizes) in rows:
            low, high = rows[min(sizes)], rows[max(sizes)]
            print("S=%d, N=%d / N=%d: requests per upgrade %.2fx, notifications per upgrade %.2fx (targets <= 1.2x); "
                  "idle requests per agent %.3f and %.3f per second (target <= 1)" % (
                      service_count, max(sizes), min(sizes), high["requests_per_upgrade"] / low["requests_per_upgrade"],
                      high["notifications_per_upgrade"] / max(low["notifications_per_upgrade"], 0.1),
                      low["idle_requests_per_agent_s"], high["idle_requests_per_agent_s"]))
    print()
    print("at %d x %d: rollout_info read + report %.3f s in-process (%d requests, %d hosts; target <= 1 s); status.yml %.2f s beyond "
          "ansible-playbook's own %.2f s (target <= 2 s); one real agent process idle: %.2f %% of a core (%.2f %% of it "
          "without its %d health probes a second), RSS %.1f MB (targets < 0.5 %%, <= 40 MB)" % (
              max(sizes), max(service_counts), extra["rollout_info_s"], extra["rollout_info_requests"], extra["rollout_info_hosts"],
              extra["status_yml_beyond_ansible_s"], extra["ansible_startup_s"], extra["agent_cpu_percent"],
              extra["agent_cpu_percent_without_probes"], max(service_counts), extra["agent_rss_mb"]))
    if "confirmed_decision" in extra:
        print()
        print(confirmed_table(extra["confirmed_decision"]))
    print("idle requests are counted over one safety_tick (%gs, the default); kazoo's heartbeats are not requests and are not counted"
          % SAFETY_TICK)


if __name__ == "__main__":
    main()
