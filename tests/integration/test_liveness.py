# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who vouches for a host and for a slot, against a real ZooKeeper: presence nodes, fenced "down", leases on ZooKeeper's clock."""

from __future__ import annotations

import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import rollout_report
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.core.plan import slot_verdict
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import announce_session, lease_expired, renew_slot, take_slot, zookeeper_now

from . import tree
from .tree import release, service


@pytest.fixture
def fleet(client, layout, zk):
    """h1-h3 registered on A 1.0.0; h4's agent connected, its A not registered (down). Seeded: A 2.0.0, quorum 3."""
    fake = tree.FakeFleet(zk.hosts, layout)
    try:
        for host in ("h1", "h2", "h3"):
            fake.join(host, {"A": "1.0.0"})
        fake.join("h4", {"A": None})
        fake.agent_connected("h4")
        tree.seed(client, layout, release(service("A", quorum=3), id="r1"))
        yield fake
    finally:
        fake.close()


def _controller_take(client, layout, meanwhile):
    """Take h4's slot as the strategy does for a down host (fenced on its presence node); ``meanwhile`` runs before the commit."""
    presence = client.exists(layout.agent("h4"))
    slot = Slot(to_version="2.0.0", since=time.time(), owner="controller:test", session="%x" % client.client_id[0], lease=60)

    def allow(fresh):
        meanwhile()
        state = fresh.service("A")
        return slot_verdict("A", "h4", state.registrations, state.slots, 3, 1, confirmed_down=True)

    return take_slot(client, layout, "A", "h4", slot, allow, identifier="controller:test", checks=[(layout.agent("h4"), presence.version)])


def test_a_down_host_that_registers_while_a_controller_decides_keeps_serving(client, layout, fleet):
    h4 = fleet.session("h4")

    def h4_registers():
        # What the agent does when its instance turns healthy: the registration bumps its presence node.
        transaction = h4.transaction()
        transaction.create(layout.registration("A", "h4", "1.0.0"), b"", ephemeral=True)
        transaction.set_data(layout.agent("h4"), b"")
        assert not any(isinstance(result, Exception) for result in transaction.commit())

    taken, reason, _snapshot = _controller_take(client, layout, h4_registers)
    assert taken is False, reason
    assert "/agents/h4 changed while deciding" in reason
    assert client.exists(layout.slot("A", "h4")) is None


@pytest.mark.usefixtures("fleet")
def test_a_down_host_whose_agent_is_connected_takes_a_slot_that_costs_no_quorum(client, layout):
    taken, reason, _snapshot = _controller_take(client, layout, lambda: None)
    assert taken is True and "h4 is down" in reason, reason


@pytest.mark.usefixtures("fleet")
def test_a_whole_tree_read_knows_which_agents_and_controller_sessions_are_connected(client, layout, zk, zk_connect):
    controller = zk_connect(zk.hosts)
    announce_session(controller, layout, "controller:test")
    snapshot = read_snapshot(client, layout)
    assert snapshot.live_agents == {"h4"}
    assert snapshot.live_sessions == {"%x" % controller.client_id[0]}
    assert read_snapshot(client, layout, services=["A"]).live_agents is None, "an agent's own view does not list the fleet"


def test_a_slot_whose_owner_is_gone_is_listed_with_the_command_that_frees_it(client, layout, fleet):
    fleet.take_slot("A", "h2", "2.0.0", from_version="1.0.0", owner="agent:h2")
    fleet.take_slot("A", "h4", "2.0.0", from_version="1.0.0", owner="agent:h4")
    report = rollout_report(read_snapshot(client, layout))["services"]["A"]
    # h4's agent is connected: its slot is a turn in progress. h2's agent never announced itself.
    assert sorted(report["abandoned_slots"]) == ["h2"]
    entry = report["abandoned_slots"]["h2"]
    assert entry["owner"] == "agent:h2" and entry["instance"] == "registered on 1.0.0"
    assert "zkrollout_action=release_slot -e zkrollout_service=A -e zkrollout_host=h2" in entry["free_with"]
    assert report["verdict"] == "blocked" and "no longer connected: h2 (agent:h2)" in report["reason"], report["reason"]


@pytest.mark.usefixtures("fleet")
def test_a_lease_runs_on_zookeepers_clock_and_a_renewal_starts_it_again(client, layout, zk, zk_connect):
    controller = zk_connect(zk.hosts)
    session_node = announce_session(controller, layout, "controller:test")
    slot = Slot(to_version="2.0.0", since=time.time(), owner="controller:test", session="%x" % controller.client_id[0], lease=1.0,
                deadline=0.0)
    controller.create(layout.slot("A", "h3"), slot.to_bytes())

    def expired():
        state = read_snapshot(client, layout).service("A")
        return lease_expired(state.slots["h3"], state.slot_mtimes["h3"], zookeeper_now(controller, session_node))

    # Its own-clock deadline (the epoch) says long past; the lease on the server's clock says not yet.
    assert expired() is False
    time.sleep(1.5)
    assert expired() is True
    assert renew_slot(controller, layout, "A", "h3", "controller:test", time.time() + 1)
    assert expired() is False
    assert renew_slot(controller, layout, "A", "h3", "controller:other", time.time() + 1) is False
