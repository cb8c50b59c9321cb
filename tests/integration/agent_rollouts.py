# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared set-up of the real-agent tests: artifacts, a fleet of agents, the monitor, seeding, waiting.

``RolloutBed`` puts together what tests/integration/test_agent.py and test_agent_faults.py
need for one rollout on real parts: demo-service artifacts served over HTTP on 127.0.0.1, an
``AgentFleet`` of real agent processes (one per "host"), a kazoo client of the test's own, and
the independent ``QuorumMonitor`` started once every instance is healthy on its first version.
A release is seeded the way the ``rollout`` module does it (one transaction), and every wait
is bounded and says what it waited for when it gives up, with the rollout report and the
agents' last log lines.

``VersionHistory`` turns the monitor's samples into per-instance version changes, so a test
can tell when an instance began its switch and when it came back on its new version.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from ansible_collections.zkrollout.dc.plugins.module_utils.controller import writes
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import overall_state, rollout_report
from ansible_collections.zkrollout.dc.plugins.module_utils.core import model
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout, split_registration
from ansible_collections.zkrollout.dc.plugins.module_utils.store import reads
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing
from ansible_collections.zkrollout.dc.tests.bed.agents import AgentFleet
from ansible_collections.zkrollout.dc.tests.bed.artifacts import ArtifactServer, build_artifacts
from ansible_collections.zkrollout.dc.tests.bed.monitor import QuorumMonitor

from . import tree

V1, V2, V3_BROKEN, V4 = "1.0.0", "2.0.0", "3.0.0", "4.0.0"
# 3.0.0 never passes its health check; 4.0.0 is a second good release for back-to-back rollouts.
VERSIONS = {V1: {}, V2: {}, V3_BROKEN: {"broken": True}, V4: {}}
SERVICES = ("A", "B")
LOOPBACK = "127.0.0.1"
# Ten health URLs polled every 5 ms would keep half a core busy on this 2-core machine.
MONITOR_INTERVAL = 0.01


def free_port_block(count, low=20000, high=32000):
    """A first port P such that P..P+count-1 are free on 127.0.0.1 now (the fleet's layout)."""
    for base in range(low + (os.getpid() * 37) % 5000, high, count + 3):
        sockets = []
        try:
            for port in range(base, base + count):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(probe)
                probe.bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise RuntimeError("no block of %d free loopback ports between %d and %d" % (count, low, high))


class ArtifactStore(object):
    """Tarballs of every version of every demo service, served on 127.0.0.1; close() removes them."""

    def __init__(self, services=SERVICES, versions=None, startup_delay=0.3):
        self.directory = tempfile.mkdtemp(prefix="zkrollout-agent-artifacts-")
        self.built = {name: build_artifacts(self.directory, name, versions or VERSIONS, startup_delay=startup_delay) for name in services}
        self.server = ArtifactServer(self.directory, bind=LOOPBACK).start()

    def artifact(self, service, version, sha256=None):
        """The release's ``artifact`` mapping of ``service`` ``version`` (``sha256`` overrides the checksum)."""
        built = self.built[service][version]
        return {"url": self.server.url(built.filename), "sha256": sha256 or built.sha256}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stop serving and remove the tarballs."""
        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def rollout_beds(store, zk_hosts, zk_root, client):
    """Yield ``make(**RolloutBed options)``; every bed made is closed (agents, services, files) on exit."""
    beds = []

    def make(**options):
        made = RolloutBed(store, zk_hosts, zk_root, client, **options)
        beds.append(made)
        return made

    try:
        yield make
    finally:
        for made in beds:
            made.close()


class VersionHistory(object):
    """Per-instance version changes as the monitor sees them: ``changes`` = [(t, service, url, version)].

    ``version`` is None while the instance does not answer healthy. Samples ``monitor.versions_now()``
    every ``interval`` on a daemon thread between start() and stop(); ``t`` is the monitor's clock.
    """

    def __init__(self, monitor, interval=0.005):
        self.monitor = monitor
        self.interval = interval
        self.changes = []
        self._last = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="version history", daemon=True)

    def start(self):
        """Record the current versions and follow them."""
        self._sample()
        self._thread.start()
        return self

    def stop(self):
        """Stop following (bounded)."""
        self._stopping.set()
        self._thread.join(5)

    def _run(self):
        while not self._stopping.wait(self.interval):
            self._sample()

    def _sample(self):
        t = self.monitor.elapsed()
        for service, versions in self.monitor.versions_now().items():
            for url, version in versions.items():
                if self._last.get(url, "unseen") != version:
                    self._last[url] = version
                    self.changes.append((t, service, url, version))

    def of(self, service):
        """``{url: [(t, version)...]}`` of one service."""
        history = {}
        for t, name, url, version in self.changes:
            if name == service:
                history.setdefault(url, []).append((t, version))
        return history

    def switch_started(self, service, version):
        """{url: t} for instances that reached ``version``: when the down period before it began."""
        started = {}
        for url, changes in self.of(service).items():
            for index, (t, seen) in enumerate(changes):
                if seen == version:
                    downs = [when for when, v in changes[:index] if v is None]
                    started[url] = downs[-1] if downs else t
                    break
        return started

    def reached(self, service, version):
        """{url: t} of the first time each instance answered healthy on ``version``."""
        reached = {}
        for url, changes in self.of(service).items():
            for t, seen in changes:
                if seen == version:
                    reached[url] = t
                    break
        return reached


class RolloutBed(object):
    """One fleet of real agents for one test; see the module docstring. Use as a context manager."""

    def __init__(self, store, zk_hosts, zk_root, client, hosts=5, services=SERVICES, loop_wait=0.5, health=None,
                 session_timeout=4.0, zookeeper=None):
        self.store = store
        self.client = client
        self.layout = Layout(zk_root)
        self.services = tuple(services)
        self.workdir = tempfile.mkdtemp(prefix="zkrollout-agent-fleet-")
        hosts = ["h%d" % i for i in range(1, hosts + 1)] if isinstance(hosts, int) else list(hosts)
        fleet_services = {
            name: {"port": free_port_block(len(hosts), low=20000 + 6000 * index), "version": V1, "initial": store.artifact(name, V1)}
            for index, name in enumerate(self.services)
        }
        self.fleet = AgentFleet(self.workdir, zk_hosts, zk_root, hosts, fleet_services, loop_wait=loop_wait,
                                session_timeout=session_timeout, health=health, zookeeper=zookeeper)
        self.hosts = self.fleet.hosts
        self.monitor = None
        self.history = None
        self.seeded_at = None
        self.seeded_queue = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stop the monitor, every agent and every demo service; remove the fleet's files."""
        if self.history is not None:
            self.history.stop()
        if self.monitor is not None:
            self.monitor.stop()
        self.fleet.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # Set-up.
    def start(self, start_monitor=True, timeout=40.0):
        """Start every agent, wait until every instance is registered on V1, and start the monitor."""
        for host in self.hosts:
            self.fleet.start(host)
        self.wait_for(lambda: all(self.registrations(name).get(h) == V1 for name in self.services for h in self.hosts),
                      timeout, "every instance of %s registered on %s" % (", ".join(self.services), V1))
        return self.start_monitor() if start_monitor else self

    def start_monitor(self):
        """Start the independent monitor (and the version history that follows it)."""
        self.monitor = QuorumMonitor(self.fleet.health_targets(), interval=MONITOR_INTERVAL).start()
        self.history = VersionHistory(self.monitor).start()
        return self

    def url(self, host, service):
        """The health URL of ``service`` on ``host`` (the monitor's key)."""
        return self.fleet.health_url(host, service)

    # Seeding.
    def release(self, targets, rollout_id, parallel=False):
        """A ReleaseSpec from ``{service: {version, quorum, max_parallel?, depends_on?, on_failure?, sha256?}}``."""
        services = []
        for name, target in targets.items():
            entry = {"name": name, "version": target["version"], "quorum": target["quorum"],
                     "artifact": self.store.artifact(name, target["version"], target.get("sha256"))}
            entry.update({key: target[key] for key in ("max_parallel", "depends_on", "on_failure") if key in target})
            services.append(entry)
        return model.ReleaseSpec.from_dict({"id": rollout_id, "parallel": parallel, "services": services})

    def seed(self, targets, rollout_id="r1", parallel=False, sign=release_signing.sign):
        """Seed a release as the rollout module does (one transaction), signed with ``sign``; return the Change."""
        spec = self.release(targets, rollout_id, parallel)
        change = writes.read_plan_apply(self.client, self.layout, lambda snap, missing: writes.plan_seed(snap, self.layout, spec, missing, sign=sign))
        self.seeded_at = time.monotonic()
        self.seeded_queue = [member.node for member in self.snapshot().deploy_queue]
        return change

    # Reading the tree.
    def snapshot(self):
        """A fresh snapshot of the rollout tree."""
        return reads.read_snapshot(self.client, self.layout)

    def report(self):
        """``rollout_report`` of a fresh snapshot."""
        return rollout_report(self.snapshot())

    def registrations(self, service):
        """``{host: version}`` registered in ``current/<service>`` now: the listing itself, also under an ACL profile (where a
        snapshot counts only what the hosts' own parents confirm)."""
        try:
            names = self.client.get_children(self.layout.current_service(service))
        except NoNodeError:
            return {}
        return dict(parsed for parsed in map(split_registration, names) if parsed is not None)

    def slot_holders(self, service):
        """Hosts holding an upgrade slot of ``service`` right now."""
        return sorted(self.client.get_children(self.layout.slots(service)))

    def registration_owner(self, service, host):
        """The session id owning ``host``'s registration of ``service``, or None if it is not registered."""
        version = self.registrations(service).get(host)
        stat = self.client.exists(self.layout.registration(service, host, version)) if version is not None else None
        return stat.ephemeralOwner if stat is not None else None

    # Waiting.
    def wait_for(self, condition, timeout, what, interval=0.05):
        """Poll ``condition()`` until true (return its value) or fail after ``timeout`` seconds, saying why."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except (KazooException, KazooTimeoutError):
                # The test's own session rides out ZooKeeper faults like the agents' do.
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("waited %.0fs for %s; rollout report:\n%s\n%s" % (timeout, what, self.describe(), self.agent_logs()))
            time.sleep(interval)

    def wait_done(self, timeout=60.0):
        """Wait until the rollout is done (derived from the tree); return the seconds since seeding.

        Also checks that no agent wrote the deployer's nodes on the way: the deploy queue still
        holds every entry seeded, and the rollout node was never marked done.
        """
        def done():
            return overall_state(self.snapshot())[0] == "done"

        self.wait_for(done, timeout, "the rollout to be done")
        took = time.monotonic() - self.seeded_at
        snapshot = self.snapshot()
        assert [member.node for member in snapshot.deploy_queue] == self.seeded_queue, "an agent changed the deploy queue"
        assert snapshot.rollout.state != "done", "an agent wrote the rollout node"
        return took

    def wait_all_on(self, service, version, hosts=None, timeout=20.0):
        """Wait until ``hosts`` (default all) are registered on ``version`` and answer healthy on it, and nobody else is registered.

        Registrations are ephemeral: on a starved machine an agent's session may expire and be
        replaced just as the rollout ends, so the end state is awaited (bounded), not sampled once.
        """
        want = {host: version for host in hosts or self.hosts}

        def reached():
            reported = self.versions_by_host(service)
            return self.registrations(service) == want and {host: reported[host] for host in want} == want

        self.wait_for(reached, timeout, "%s on %s on %s, registered and healthy" % (service, version, ", ".join(sorted(want))))

    def describe(self):
        """The rollout report, trimmed to what explains a stuck rollout."""
        return tree.explain_rollout(self.report)

    def agent_logs(self, lines=15):
        """The last lines of every agent's log."""
        parts = []
        for host in self.hosts:
            with contextlib.suppress(OSError):
                parts.append("--- %s:\n%s" % (host, "\n".join(self.fleet.log(host).splitlines()[-lines:])))
        return "\n".join(parts)

    # Verdicts.
    def assert_quorum(self, quorums, request=None):
        """The independent monitor's verdict; also records min healthy per service on the test."""
        if request is not None:
            request.node.user_properties.append(("min_healthy", dict(self.monitor.min_healthy)))
        print("min healthy per service: %s (quorum %s)" % (self.monitor.min_healthy, quorums))
        self.monitor.assert_quorum(quorums)

    def instance_pids(self, service):
        """``{host: pid}`` of ``service``'s instances, from the agents' persisted state: a new pid is a restart."""
        return {host: self.fleet.local_state(host).get(service).pid for host in self.hosts}

    def versions_by_host(self, service):
        """``{host: version}`` the services themselves report now (None: not healthy)."""
        now = self.monitor.versions_now()[service]
        return {host: now[self.url(host, service)] for host in self.hosts}
