# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set-up of the end-to-end tests: a fleet of test hosts driven by real ``ansible-playbook`` runs.

``EndToEndFleet`` wraps one ``FleetEnvironment`` (six network-namespace hosts with sshd, a
ZooKeeper node or ensemble on the fleet's bridge, the artifact server) and drives it the way an
operator does: the role ``zkrollout.dc.agent`` applied over SSH (playbooks/fleet_agents.yml
beside this file), releases seeded with ``playbooks/rollout.yml`` and read back with
``playbooks/status.yml``. In between the test reads the rollout tree with the core
(``read_snapshot`` + ``rollout_report``) on a session of its own, and watches the services
themselves with the independent ``QuorumMonitor``.

Every wait is bounded and, when it gives up, says what it waited for, with the rollout report
and the tail of every agent's log. ``close()`` tears everything down and then proves it: no
namespace with the fleet's prefix and none of the processes the fleet ran may be left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from . import tree  # first: it makes the collection's plugins loadable in this process

# isort: split
from ansible_collections.zkrollout.dc.plugins.module_utils.controller import report
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.store import client as zkclient
from ansible_collections.zkrollout.dc.plugins.module_utils.store import reads
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing
from ansible_collections.zkrollout.dc.tests.bed.environment import FleetEnvironment
from ansible_collections.zkrollout.dc.tests.bed.fleet import our_namespaces
from ansible_collections.zkrollout.dc.tests.bed.monitor import QuorumMonitor
from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import VersionHistory

V1, V2, V3_BROKEN = "1.0.0", "2.0.0", "3.0.0"
GOOD_VERSIONS = (V1, V2)
ROOT = "/dc"
AGENTS_PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "fleet_agents.yml"
# Eighteen health URLs on a loaded 2-core machine: every 20 ms is far finer than a switch (the
# demo service answers 503 for 0.3 s after a start), and a 2 s timeout keeps a slow answer from
# counting as an outage.
MONITOR_INTERVAL = 0.02
MONITOR_TIMEOUT = 2.0
ZK_ERRORS = (KazooException, KazooTimeoutError, zkclient.ZkConnectionError)


def other_good_version(version):
    """The good demo version that ``version`` is not: each scenario rolls the fleet to it."""
    return V2 if version == V1 else V1


class EndToEndFleet(object):
    """One FleetEnvironment driven through ansible-playbook; see the module docstring."""

    def __init__(self, hosts=6, ensemble=False, secure=False):
        self.environment = FleetEnvironment(hosts=hosts, ensemble=ensemble, secure=secure)
        self.layout = Layout(ROOT)
        self.client = None
        self.monitor = None
        self.history = None
        self.seeded_at = None
        self._control_dir = None

    # Life cycle.
    def start(self):
        """Build the environment and open the test's own ZooKeeper session (it rides out faults)."""
        try:
            self.environment.start()
            self._control_dir = os.path.join(self.environment.fleet.workdir, "ssh-control")
            os.makedirs(self._control_dir, mode=0o700)
            options = zkclient.ConnectionOptions(hosts=self.environment.plain_zk_hosts, root=ROOT, timeout=10.0, session_timeout=10.0,
                                                 connection_retries=-1)
            self.client = zkclient.connect(options)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def hosts(self):
        """Host names, h1..hN."""
        return self.environment.hosts

    @property
    def services(self):
        """Service names, A, B, C."""
        return sorted(self.environment.services)

    def close(self):
        """Stop the monitor, close SSH and ZooKeeper sessions, stop the environment, then prove nothing is left.

        Every process of the fleet names a file under the fleet's work directory or ZooKeeper's
        directory on its command line (sshd and agent configs, service versions, zoo.cfg, SSH
        control sockets), so after the stop none may. Raises AssertionError naming each namespace
        or process that survived (those processes are then killed, by pid, so the next
        environment starts clean).
        """
        self.stop_monitor()
        if self.client is not None:
            zkclient.disconnect(self.client)
            self.client = None
        if self.environment.fleet is None:
            return
        self._close_ssh_masters()
        markers = [self.environment.fleet.workdir + os.sep]
        if self.environment.zookeeper is not None:
            markers.append(self.environment.zookeeper.directory + os.sep)
        self.environment.stop()
        left = {pid: command for pid, command in ((pid, _command_line(pid)) for pid in _all_pids())
                if command and any(marker in command for marker in markers)}
        namespaces = our_namespaces(self.environment.prefix)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if left or namespaces:
            raise AssertionError("the fleet left namespaces %s and processes %s behind" % (namespaces, left))

    def _close_ssh_masters(self):
        # ansible's ControlPersist masters would outlive the playbook by a minute.
        for name in os.listdir(self._control_dir):
            subprocess.run(["ssh", "-o", "ControlPath=%s" % os.path.join(self._control_dir, name), "-O", "exit", "fleet"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False)

    # Ansible.
    def playbook(self, playbook, extra_vars=(), options=(), timeout=300):
        """Run ``ansible-playbook`` (a playbook of the collection, or a path) the way an operator would; a PlaybookRun."""
        env = tree.playbook_environment()
        # The role packs the agent code into $TMPDIR; other fleets' runs must not share that file.
        tmpdir = os.path.join(self.environment.fleet.workdir, "tmp")
        os.makedirs(tmpdir, exist_ok=True)
        env.update(TMPDIR=tmpdir, ANSIBLE_SSH_CONTROL_PATH_DIR=self._control_dir)
        started = time.monotonic()
        completed = subprocess.run(tree.playbook_command(playbook, extra_vars, options), env=env, stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=timeout, cwd=str(tree.COLLECTION_ROOT), check=False)
        return tree.PlaybookRun(completed.returncode, completed.stdout, completed.stderr, time.monotonic() - started)

    def install_agents(self, timeout=180.0):
        """Apply the role to every host over SSH; wait until every host has registered every service on 1.0.0."""
        run = self.playbook(str(AGENTS_PLAYBOOK), options=["-i", self.environment.inventory_path, "--forks", str(len(self.hosts))], timeout=540)
        assert run.returncode == 0, run.output
        for host in self.hosts:
            recap = run.recap(host)
            assert recap["failed"] == 0 and recap["unreachable"] == 0, run.output
        self.wait_for(lambda: all(self.registrations(name) == dict.fromkeys(self.hosts, V1) for name in self.services),
                      timeout, "every host registered on %s for %s" % (V1, ", ".join(self.services)))
        return run

    def connection_vars(self):
        """The playbooks' ZooKeeper connection (the deployer's identity and the ACL profile when secure), as extra vars."""
        path = os.path.join(self.environment.fleet.workdir, "connection.json")
        with open(path, "w") as out:
            json.dump(dict(self.environment.controller_vars(), zkrollout_zk_root=ROOT), out, indent=1)
        return ["@%s" % path]

    def release(self, rollout_id, services):
        """The ``zkrollout_release`` for ``services`` = [(name, version, quorum, max_parallel, depends_on)]."""
        return {"id": rollout_id, "services": [
            {"name": name, "version": version, "artifact": self.environment.artifact(name, version), "quorum": quorum,
             "max_parallel": max_parallel, "depends_on": list(depends_on)}
            for name, version, quorum, max_parallel, depends_on in services]}

    def seed(self, release):
        """Seed ``release`` with playbooks/rollout.yml (``-e @release.json``), signed with the test bed's key; assert it ran and return the run."""
        path = os.path.join(self.environment.fleet.workdir, "release-%s.json" % release["id"])
        with open(path, "w") as out:
            json.dump({"zkrollout_release": release}, out, indent=1)
        signing_key = "zkrollout_signing_key=%s" % release_signing.private_key_file()
        run = self.playbook("rollout.yml", self.connection_vars() + ["@%s" % path, signing_key], timeout=120)
        self.seeded_at = time.monotonic()
        assert run.returncode == 0, run.output
        recap = run.recap()
        assert recap["changed"] == 1 and recap["failed"] == 0, run.output
        assert run.custom_stats["zkrollout_rollout_id"] == release["id"], run.output
        return run

    def show_status(self):
        """Run playbooks/status.yml; return the run."""
        return self.playbook("status.yml", self.connection_vars(), timeout=120)

    # Reading the tree with the core.
    def snapshot(self):
        """A fresh snapshot of the rollout tree."""
        return reads.read_snapshot(self.client, self.layout)

    def report(self):
        """``rollout_report`` of a fresh snapshot: what rollout_info returns."""
        return report.rollout_report(self.snapshot())

    def registrations(self, service):
        """``{host: version}`` of the registered (healthy) instances of ``service``."""
        return dict(self.snapshot().service(service).registrations)

    def settled_versions(self):
        """``{service: version}`` the whole fleet runs, with no slot held; AssertionError if it is not settled."""
        view = self.snapshot()
        versions = {}
        for name in self.services:
            state = view.service(name)
            running = dict(state.registrations)
            assert sorted(running) == self.hosts and len(set(running.values())) == 1 and not state.slots, (
                "the fleet is not settled on one version of %s: %s, slots %s\n%s" % (name, running, sorted(state.slots), self.describe()))
            versions[name] = running[self.hosts[0]]
        return versions

    def rollout_state(self):
        """The rollout's state as a waiter sees it (running, done...: completion is derived from the tree), or None."""
        state = report.overall_state(self.snapshot())[0]
        return None if state == "none" else state

    # Waiting.
    def wait_for(self, condition, timeout, what, interval=0.1):
        """Poll ``condition()`` until it is true (return its value); after ``timeout`` s fail, saying why."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except ZK_ERRORS:
                # The test's session rides out ZooKeeper faults like the agents' sessions do.
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("waited %.0fs for %s; rollout report:\n%s\n%s" % (timeout, what, self.describe(), self.agent_logs()))
            time.sleep(interval)

    def wait_done(self, timeout):
        """Wait until the rollout is done; return the seconds since seeding."""
        self.wait_for(lambda: self.rollout_state() == "done", timeout, "the rollout to be done")
        return time.monotonic() - self.seeded_at

    def describe(self):
        """The rollout report, trimmed to what explains a stuck rollout."""
        return tree.explain_rollout(self.report)

    def agent_logs(self, lines=12):
        """The last lines of every agent's log (state_dir/agent.log on each host)."""
        parts = []
        for host in self.environment.fleet.hosts if self.environment.fleet else ():
            with contextlib.suppress(OSError), open(os.path.join(host.directory, "state", "agent.log"), errors="replace") as log:
                parts.append("--- %s:\n%s" % (host.name, "\n".join(log.read().splitlines()[-lines:])))
        return "\n".join(parts)

    # The independent monitor.
    def start_monitor(self):
        """Start sampling every instance's own /health, and following each instance's version."""
        self.stop_monitor()
        self.monitor = QuorumMonitor(self.environment.health_targets(), interval=MONITOR_INTERVAL, timeout=MONITOR_TIMEOUT).start()
        self.history = VersionHistory(self.monitor).start()
        return self.monitor

    def stop_monitor(self):
        """Stop the monitor and its version history (results stay readable)."""
        if self.history is not None:
            self.history.stop()
        if self.monitor is not None:
            self.monitor.stop()

    def url(self, host, service):
        """The health URL of ``service`` on ``host``: the monitor's key for that instance."""
        return self.environment.health_url(host, service)

    def instance_pids(self, service):
        """``{host: pid}`` the instances of ``service`` report on /health (None: not healthy); a new pid is a restart."""
        pids = {}
        for host in self.hosts:
            try:
                with urllib.request.urlopen(self.url(host, service), timeout=5) as response:
                    pids[host] = json.loads(response.read().decode("utf-8"))["pid"]
            except (OSError, ValueError, KeyError):
                pids[host] = None
        return pids

    def versions_seen_now(self, service):
        """``{host: version}`` the instances of ``service`` report themselves now (None: not healthy)."""
        now = self.monitor.versions_now()[service]
        return {host: now[self.url(host, service)] for host in self.hosts}

    def assert_dependency_order(self, services, hosts=None):
        """No instance of a service began its switch before every instance of its dependencies ran their targets.

        ``services`` = [(name, version, quorum, max_parallel, depends_on)] as in ``release()``;
        ``hosts`` limits the instances considered (default: all). Times are the monitor's.
        """
        hosts = hosts or self.hosts
        targets = {name: version for name, version, _quorum, _parallel, _deps in services}
        for name, version, _quorum, _parallel, depends_on in services:
            started = self._by_host(self.history.switch_started(name, version), name, hosts)
            assert sorted(started) == sorted(hosts), "instances of %s on %s never reached %s" % (name, sorted(set(hosts) - set(started)), version)
            for dependency in depends_on:
                reached = self._by_host(self.history.reached(dependency, targets[dependency]), dependency, hosts)
                assert sorted(reached) == sorted(hosts), "%s on %s never reached %s" % (dependency, sorted(set(hosts) - set(reached)), targets[dependency])
                first_switch = min(started.items(), key=lambda item: item[1])
                last_ready = max(reached.items(), key=lambda item: item[1])
                assert first_switch[1] > last_ready[1], (
                    "%s began switching on %s at t=%.2fs, before %s ran %s on %s (t=%.2fs)"
                    % (name, first_switch[0], first_switch[1], dependency, targets[dependency], last_ready[0], last_ready[1]))

    def _by_host(self, by_url, service, hosts):
        """``{host: t}`` from the history's ``{url: t}`` of ``service``, for ``hosts`` only."""
        return {host: by_url[self.url(host, service)] for host in hosts if self.url(host, service) in by_url}


def _all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _command_line(pid):
    """The command line of a live (not zombie) process, or None."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode("utf-8", "replace").strip() or None
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def installed_fleet(ensemble=False, hosts=6, secure=False):
    """``with installed_fleet() as fleet:`` an EndToEndFleet with the agent installed on every host; closed (and checked) on exit.

    ``secure``: mutual TLS and the ACL profile (``FleetEnvironment``); the deployer prepares the
    tree with ``playbooks/control.yml -e zkrollout_action=prepare`` before the role runs, as
    README's secure set-up says.
    """
    fleet = EndToEndFleet(hosts=hosts, ensemble=ensemble, secure=secure).start()
    try:
        if secure:
            run = fleet.playbook("control.yml", fleet.connection_vars() + ["zkrollout_action=prepare"], timeout=120)
            assert run.returncode == 0 and run.recap()["changed"] == 1, run.output
        fleet.install_agents()
        yield fleet
    finally:
        fleet.close()
