# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet exporter as a real process against a real ZooKeeper, scraped over HTTP as Prometheus would.

The tree is seeded through the core (``tree.seed``) and the hosts' part is written by
``tree.FakeFleet`` as agents write it; every value is read back by scraping ``/metrics`` and
parsing it with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import take_slot

from . import tree

ACL_DEPLOYER, ACL_AGENT, ACL_READER = "deployer:deployer-secret", "agent-h1:h1-secret", "reader:reader-secret"
ACL_PROFILE = {"deployer": ["digest:" + ACL_DEPLOYER], "agents": ["digest:" + ACL_AGENT], "readers": ["digest:" + ACL_READER]}
EXPORTER_MODULE = "ansible_collections.zkrollout.dc.plugins.module_utils.controller.exporter"
SERVING = re.compile(r"serving the tree under \S+ on .* as (?P<url>http://\S+/metrics)")


class Exporter(object):
    """One exporter process; ``scrape()`` returns ``{(name, sorted label items): value}``; its log lines are in ``log``."""

    def __init__(self, *options, env=None):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **(env or {}))
        self.process = subprocess.Popen([sys.executable, "-m", EXPORTER_MODULE, "--listen", "127.0.0.1:0", *options],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.log = []
        self._lines = queue.Queue()
        threading.Thread(target=self._read_output, daemon=True).start()
        self.url = self._wait_for_url()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _read_output(self):
        for line in self.process.stdout:
            self.log.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _wait_for_url(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("the exporter exited with %s before serving:\n%s" % (self.process.wait(5), "".join(self.log)))
            found = SERVING.search(line)
            if found:
                return found.group("url")
        raise AssertionError("the exporter did not serve within %.0fs:\n%s" % (timeout, "".join(self.log)))

    def scrape(self):
        with self._opener.open(self.url, timeout=10) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}

    def wait_for(self, condition, timeout=20.0):
        """Scrape until ``condition(values)`` holds; returns those values."""
        deadline = time.monotonic() + timeout
        while True:
            values = self.scrape()
            if condition(values):
                return values
            if time.monotonic() > deadline:
                raise AssertionError("no scrape satisfied the condition within %.0fs; the last one: %r" % (timeout, values))
            time.sleep(0.2)

    def stop(self):
        """SIGTERM, as systemd stops it; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


@pytest.fixture
def exporter():
    """``exporter(*options)``: a started exporter process, stopped (and its clean exit checked) after the test."""
    started = []

    def start(*options, env=None):
        started.append(Exporter(*options, env=env))
        return started[-1]

    yield start
    for process in started:
        assert process.stop() == 0, "".join(process.log)


def service(name):
    return (("service", name),)


def host_cell(host, name):
    return (("host", host), ("service", name))


def test_a_seeded_rollout_is_exported_and_every_step_of_it_shows_in_the_next_scrape(exporter, zk, client, layout):
    with tree.FakeFleet(zk.hosts, layout) as fleet:
        for host in ("h1", "h2", "h3"):
            fleet.join(host, {"A": "1.0.0"})
            fleet.agent_connected(host)
        tree.seed(client, layout, tree.release(tree.service("A", quorum=2), id="r1"))
        running = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root, "--min-interval", "0")
        values = running.scrape()
        assert values[("zkrollout_fleet_up", ())] == 1
        assert values[("zkrollout_fleet_service_healthy", service("A"))] == 3
        assert values[("zkrollout_fleet_service_quorum", service("A"))] == 2
        assert values[("zkrollout_fleet_service_budget", service("A"))] == 1
        assert values[("zkrollout_fleet_service_slots_held", service("A"))] == 0
        assert values[("zkrollout_fleet_service_target_info", (("service", "A"), ("version", "2.0.0")))] == 1
        assert values[("zkrollout_fleet_host_version_info", (("host", "h1"), ("service", "A"), ("version", "1.0.0")))] == 1
        assert values[("zkrollout_fleet_rollout_state", (("state", "running"),))] == 1
        assert values[("zkrollout_fleet_agent_connected", (("host", "h2"),))] == 1

        fleet.take_slot("A", "h1", "2.0.0", from_version="1.0.0", owner="agent:h1")
        fleet.deregister("A", "h1")
        values = running.scrape()
        assert values[("zkrollout_fleet_service_slots_held", service("A"))] == 1
        assert values[("zkrollout_fleet_service_healthy", service("A"))] == 2
        assert values[("zkrollout_fleet_service_budget", service("A"))] == 0
        assert values[("zkrollout_fleet_host_upgrading", host_cell("h1", "A"))] == 1
        assert values[("zkrollout_fleet_host_online", host_cell("h1", "A"))] == 0
        assert values[("zkrollout_fleet_service_state", (("service", "A"), ("state", "rolling")))] == 1

        fleet.register("A", "h1", "2.0.0")
        fleet.release_slot("A", "h1")
        values = running.scrape()
        assert values[("zkrollout_fleet_host_version_info", (("host", "h1"), ("service", "A"), ("version", "2.0.0")))] == 1
        assert ("zkrollout_fleet_host_version_info", (("host", "h1"), ("service", "A"), ("version", "1.0.0"))) not in values
        assert values[("zkrollout_fleet_host_on_target", host_cell("h1", "A"))] == 1
        assert values[("zkrollout_fleet_service_on_target", service("A"))] == 1

        fleet.roll_out()
        values = running.scrape()
        assert values[("zkrollout_fleet_service_complete", service("A"))] == 1
        assert values[("zkrollout_fleet_rollout_state", (("state", "done"),))] == 1
        assert values[("zkrollout_fleet_rollout_instances_on_target", ())] == 3

        fleet.go_offline("h3")
        values = running.scrape()
        assert values[("zkrollout_fleet_host_online", host_cell("h3", "A"))] == 0
        assert values[("zkrollout_fleet_agent_connected", (("host", "h3"),))] == 0


def test_scrapes_within_the_min_interval_share_one_read(exporter, zk, client, layout):
    with tree.FakeFleet(zk.hosts, layout) as fleet:
        fleet.join("h1", {"A": "1.0.0"})
        running = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root, "--min-interval", "3")
        assert running.scrape()[("zkrollout_fleet_service_online", service("A"))] == 1
        fleet.join("h2", {"A": "1.0.0"})
        assert running.scrape()[("zkrollout_fleet_service_online", service("A"))] == 1
        running.wait_for(lambda values: values[("zkrollout_fleet_service_online", service("A"))] == 2, timeout=10)


def test_malformed_znodes_are_counted_and_logged_and_the_rest_is_still_exported(exporter, zk, client, layout):
    with tree.FakeFleet(zk.hosts, layout) as fleet:
        for host in ("h1", "h2"):
            fleet.join(host, {"A": "1.0.0"})
        tree.seed(client, layout, tree.release(tree.service("A"), id="r1"))
        client.set(layout.rollout, b"{not json")
        client.create(layout.slot("A", "h2"), b"\xff\xfe garbage")
        client.create(layout.current_service("A") + "/no-version-here", b"")
        client.create(layout.service_roster("A") + "/bad host", b"")
        running = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root, "--min-interval", "0")
        values = running.scrape()
        assert values[("zkrollout_fleet_up", ())] == 1
        assert values[("zkrollout_fleet_problems", ())] >= 4
        # A slot whose payload does not parse still counts as held, as it does for the agents.
        assert values[("zkrollout_fleet_service_slots_held", service("A"))] == 1
        assert values[("zkrollout_fleet_host_version_info", (("host", "h1"), ("service", "A"), ("version", "1.0.0")))] == 1
        assert running.process.poll() is None
    log = "".join(running.log)
    for path in (layout.rollout, layout.slot("A", "h2"), "no-version-here", "bad host"):
        assert "problem in the tree: " in log and path in log, (path, log)


def test_a_tree_that_does_not_exist_yet_is_exported_as_such(exporter, zk, layout):
    values = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root).scrape()
    assert values[("zkrollout_fleet_up", ())] == 1
    assert values[("zkrollout_fleet_tree_exists", ())] == 0
    assert values[("zkrollout_fleet_rollout_state", (("state", "none"),))] == 1


def test_under_the_acl_profile_a_reader_identity_from_the_environment_reads_and_no_identity_reads_nothing(exporter, zk, zk_connect, layout):
    deployer = zk_connect(zk.hosts, root=layout.root, digest=ACL_DEPLOYER, acl_profile=ACL_PROFILE)
    agent = zk_connect(zk.hosts, root=layout.root, digest=ACL_AGENT, acl_profile=ACL_PROFILE)
    tree.seed(deployer, layout, tree.release(tree.service("A", quorum=1), id="r1"))
    agent.create(layout.slot("A", "h1"), Slot(to_version="2.0.0", since=time.time(), from_version="1.0.0", owner="agent:h1").to_bytes())
    reader = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root, env={"ZKROLLOUT_ZK_DIGEST": ACL_READER})
    values = reader.scrape()
    assert values[("zkrollout_fleet_up", ())] == 1
    assert values[("zkrollout_fleet_service_slots_held", service("A"))] == 1
    anonymous = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root)
    values = anonymous.scrape()
    assert values[("zkrollout_fleet_up", ())] == 0
    assert values[("zkrollout_fleet_read_errors_total", ())] == 1
    assert "failed: NoAuthError" in "".join(anonymous.log)


def test_with_the_acl_profile_the_exporter_counts_a_slot_another_host_deleted_from_the_listing(exporter, zk, zk_connect, layout, tmp_path):
    deployer = zk_connect(zk.hosts, root=layout.root, digest=ACL_DEPLOYER, acl_profile=ACL_PROFILE)
    agent = zk_connect(zk.hosts, root=layout.root, digest=ACL_AGENT, acl_profile=ACL_PROFILE)
    tree.seed(deployer, layout, tree.release(tree.service("A", quorum=1), id="r1"))
    agent.create(layout.roster_member("A", "agent-h1"), b"", makepath=True)
    slot = Slot(to_version="2.0.0", since=time.time(), from_version="1.0.0", owner="agent:agent-h1")
    assert take_slot(agent, layout, "A", "agent-h1", slot, allow=lambda _snapshot: (True, "test"))[0]
    zk_connect(zk.hosts, root=layout.root, digest=ACL_AGENT).delete(layout.slot("A", "agent-h1"))
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(ACL_PROFILE))
    env = {"ZKROLLOUT_ZK_DIGEST": ACL_READER}

    listed = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root, env=env).scrape()
    confirmed = exporter("--zk-hosts", zk.hosts, "--zk-root", layout.root, "--zk-acl-profile", str(profile), env=env).scrape()

    assert listed[("zkrollout_fleet_service_slots_held", service("A"))] == 0
    assert confirmed[("zkrollout_fleet_service_slots_held", service("A"))] == 1


@pytest.mark.timeout(180)
def test_a_zookeeper_outage_reads_up_0_and_the_exporter_recovers_by_itself(exporter, zookeeper_factory, zk_connect, zk_root):
    private = zookeeper_factory(size=1)
    layout = Layout(zk_root)
    with tree.FakeFleet(private.hosts, layout) as fleet:
        fleet.join("h1", {"A": "1.0.0"})
    running = exporter("--zk-hosts", private.hosts, "--zk-root", zk_root, "--zk-session-timeout", "4", "--min-interval", "0")
    assert running.scrape()[("zkrollout_fleet_up", ())] == 1
    private.member(1).stop()
    down = running.wait_for(lambda values: values[("zkrollout_fleet_up", ())] == 0)
    assert down[("zkrollout_fleet_read_errors_total", ())] >= 1
    assert not [key for key in down if key[0].startswith("zkrollout_fleet_service_")]
    private.member(1).start()
    up = running.wait_for(lambda values: values[("zkrollout_fleet_up", ())] == 1, timeout=60)
    assert up[("zkrollout_fleet_zookeeper_connected", ())] == 1
    assert up[("zkrollout_fleet_service_hosts", service("A"))] == 1


@pytest.mark.parametrize("options, message", [
    (("--zk-hosts", "no-port-here"), "invalid ZooKeeper address 'no-port-here'"),
    (("--zk-root", "relative"), "relative"),
    (("--zk-certfile", "/tmp/client.pem"), "zk_certfile and zk_keyfile go together"),
])
def test_bad_options_are_refused_before_connecting(options, message):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run([sys.executable, "-m", EXPORTER_MODULE, *options, "--once"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 2, result
    assert message in result.stderr


def test_once_prints_the_metrics_and_exits(zk, client, layout):
    with tree.FakeFleet(zk.hosts, layout) as fleet:
        fleet.join("h1", {"A": "1.0.0"})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), ZKROLLOUT_ZK_HOSTS=zk.hosts, ZKROLLOUT_ZK_ROOT=layout.root)
    result = subprocess.run([sys.executable, "-m", EXPORTER_MODULE, "--once"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(result.stdout) for s in f.samples}
    assert values[("zkrollout_fleet_service_hosts", service("A"))] == 1
