# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures shared by the controller-side integration tests (modules, playbooks, seeding, wait)."""

from __future__ import annotations

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout

from . import tree
from .agent_rollouts import ArtifactStore, rollout_beds


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """An inventory with localhost only, for pytest-ansible's ``ansible_adhoc``."""
    return tree.write_localhost_inventory(tmp_path_factory.mktemp("inventory"))


@pytest.fixture
def zkrollout(ansible_adhoc, inventory, zk, zk_root):
    """``zkrollout("rollout", release=...)``: run a zkrollout.dc module against this test's root."""
    return tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0)


@pytest.fixture
def layout(zk_root):
    """The znode layout under this test's root."""
    return Layout(zk_root)


@pytest.fixture
def client(zk, zk_connect):
    """A kazoo client on the shared single-node ZooKeeper."""
    return zk_connect(zk.hosts)


@pytest.fixture
def tree_view(client, zk_root):
    """``tree_view()``: this test's whole tree and the server's top level, for before/after comparisons."""
    return lambda: tree.server_view(client, zk_root)


# The real-agent tests (test_agent, test_agent_faults, test_signing).
@pytest.fixture(scope="module")
def store():
    """Every demo-service version, built once per module and served on 127.0.0.1."""
    with ArtifactStore() as artifacts:
        yield artifacts


@pytest.fixture
def bed(store, zk, zk_connect, zk_root):
    """``bed(**RolloutBed options)``: a fleet of real agents on the module's single ZooKeeper node, stopped after the test."""
    with rollout_beds(store, zk.hosts, zk_root, zk_connect(zk.hosts)) as make:
        yield make


@pytest.fixture
def fleet(zk, layout):
    """A ``tree.FakeFleet`` playing the agents' part of the tree (a test module may define its own)."""
    with tree.FakeFleet(zk.hosts, layout) as fake:
        yield fake


@pytest.fixture
def rolling_a(fleet, client, layout):
    """h1..h3 run A and B at 1.0.0 with connected agents; rollout r1 (B depends on A) is rolling A:
    h1 is on 2.0.0, h2 holds its slot and is down."""
    for host in ("h1", "h2", "h3"):
        fleet.join(host, {"A": "1.0.0", "B": "1.0.0"})
        fleet.agent_connected(host)
    tree.seed(client, layout, tree.release(tree.service("A"), tree.service("B", depends_on=["A"]), id="r1"))
    fleet.upgrade("A", "h1", "2.0.0")
    fleet.take_slot("A", "h2", "2.0.0", from_version="1.0.0", owner="agent:h2")
    fleet.deregister("A", "h2")
    return fleet
