# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store against a real ZooKeeper: bounded views, who is woken by one host's upgrade, fenced commits.

Each agent's view here is the real ``AgentView`` with the real watch plan (``agent.wakeups``);
the hosts' part of the tree is written by ``tree.FakeFleet`` as agents write it.
"""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent import runtime
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.artifacts import VERIFIED_MARKER
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import parse_config
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.runtime import Agent
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.wakeups import plan
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import MultiRead, RequestCounter
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import decision_snapshot, read_snapshot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import take_slot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.views import AgentView
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing
from ansible_collections.zkrollout.dc.tests.bed.instances import InMemoryInstance

from . import tree


def _fleet_of(fleet_size, client, layout, zk, max_parallel=1, quorum=None):
    """``(fake fleet, hosts)``: ``fleet_size`` hosts of A on 1.0, all in A's ready queue, A's rollout seeded (quorum half the fleet)."""
    fleet = tree.FakeFleet(zk.hosts, layout)
    hosts = ["h%03d" % i for i in range(1, fleet_size + 1)]
    for host in hosts:
        fleet.join(host, {"A": "1.0.0"})
    tree.seed(client, layout, tree.release(tree.service("A", quorum=fleet_size // 2 if quorum is None else quorum, max_parallel=max_parallel), id="r1"))
    for host in hosts:
        fleet.get_ready("A", host)
    return fleet, hosts


def _views(client, layout, hosts):
    """One real view per host, all on ``client`` (kazoo calls every view's callback of a fired watch)."""
    views = {}
    for host in hosts:
        view = AgentView(client, layout, ["A"], lambda: None)
        snapshot = view.refresh()
        view.plan(plan(layout, host, snapshot, ["A"], []))
        view.arm()
        views[host] = view
    return views


def _settle(client, layout):
    """Notifications for this session arrive before the answer to its next request; give the callbacks a moment."""
    client.get_children(layout.deploy)
    time.sleep(0.3)


def _woken_by_one_upgrade(client, layout, zk, fleet_size, max_parallel=1, quorum=None, down=0):
    """The hosts whose view was notified when h001 upgrades and leaves the ready queue; the last ``down`` hosts are not registered."""
    fleet, hosts = _fleet_of(fleet_size, client, layout, zk, max_parallel, quorum)
    try:
        for host in hosts[len(hosts) - down:]:
            fleet.deregister("A", host)
        views = _views(client, layout, hosts)
        first = hosts[0]
        fleet.upgrade("A", first, "2.0.0")
        ready = [node for node in client.get_children(layout.ready_queue("A")) if node.startswith(first + "-")]
        client.delete(layout.ready_member("A", ready[0]))
        _settle(client, layout)
        return sorted(host for host, view in views.items() if view.notifications), views
    finally:
        fleet.close()


@pytest.mark.parametrize("fleet_size", [10, 200])
def test_one_host_upgrade_wakes_only_the_next_in_line_whatever_the_fleet_size(client, layout, zk, fleet_size):
    woken, _views_unused = _woken_by_one_upgrade(client, layout, zk, fleet_size, max_parallel=1)
    # h001's turn was open on its view (it takes it, nothing else to wait for); h002 watched its place in line.
    assert woken == ["h002"]


@pytest.mark.parametrize("fleet_size", [10, 200])
def test_with_max_parallel_two_only_the_host_behind_both_open_turns_is_woken(client, layout, zk, fleet_size):
    woken, _views_unused = _woken_by_one_upgrade(client, layout, zk, fleet_size, max_parallel=2)
    # h001 and h002 both have an open turn; h003 watches the two members ahead of it.
    assert woken == ["h003"]


@pytest.mark.parametrize("fleet_size", [10, 200])
def test_a_candidate_held_back_by_the_quorum_is_woken_by_the_upgrade_and_nobody_else_is(client, layout, zk, fleet_size):
    # One host down and a quorum of all the others: h001 is first in line but may not stop, so it
    # waits for a change of the slots or the registrations.
    woken, _views_unused = _woken_by_one_upgrade(client, layout, zk, fleet_size, max_parallel=1, quorum=fleet_size - 1, down=1)
    assert woken == ["h001", "h002"]


def test_a_view_with_nothing_invalidated_sends_no_request(client, layout, zk, zk_connect):
    fleet, hosts = _fleet_of(5, client, layout, zk)
    try:
        counter = RequestCounter()
        view = AgentView(counter.attach(zk_connect(zk.hosts)), layout, ["A"], lambda: None)
        view.plan(plan(layout, hosts[2], view.refresh(), ["A"], []))
        view.arm()
        before = counter.requests
        for _unused in range(20):
            view.refresh()
            view.arm()
        assert counter.requests == before
        view.invalidate(["A"])
        view.refresh()
        # One service: roster, current, ready, upgrading, failed listings and the release entry.
        assert counter.requests - before == 6
    finally:
        fleet.close()


def test_a_change_between_a_read_and_its_watch_is_not_lost(client, layout, zk):
    fleet, hosts = _fleet_of(5, client, layout, zk)
    try:
        view = AgentView(client, layout, ["A"], lambda: None)
        snapshot = view.refresh()
        # h003 plans to watch h002's ready member, which leaves before the watch is armed.
        view.plan(plan(layout, "h003", snapshot, ["A"], []))
        member = [m for m in snapshot.service("A").ready_queue if m.name == "h002"][0]
        client.delete(layout.ready_member("A", member.node))
        view.arm()
        assert view.dirty
        assert "h002" not in view.refresh().service("A").ready_hosts
    finally:
        fleet.close()


def test_a_watch_left_from_an_older_plan_wakes_nobody_and_invalidates_nothing(client, layout, zk):
    fleet, hosts = _fleet_of(5, client, layout, zk)
    try:
        woken = []
        view = AgentView(client, layout, ["A"], lambda: woken.append(1))
        snapshot = view.refresh()
        # h003 watches h002's ready member; a later read moved it to the head, where it watches none.
        view.plan(plan(layout, "h003", snapshot, ["A"], []))
        view.arm()
        view.plan(plan(layout, "h001", snapshot, ["A"], []))
        member = [m for m in snapshot.service("A").ready_queue if m.name == "h002"][0]
        client.delete(layout.ready_member("A", member.node))
        _settle(client, layout)
        assert view.notifications == 1
        assert not view.dirty and not view.notified("A") and woken == []
    finally:
        fleet.close()


def test_an_agent_view_reads_its_own_services_and_not_the_others(client, layout, zk):
    fleet = tree.FakeFleet(zk.hosts, layout)
    try:
        for host in ("h1", "h2", "h3"):
            fleet.join(host, {"A": "1.0.0", "B": "1.0.0", "C": "1.0.0"})
        snapshot = AgentView(client, layout, ["B"], lambda: None).refresh()
        assert sorted(snapshot.services) == ["B"]
        assert snapshot.service("B").registrations == {"h1": "1.0.0", "h2": "1.0.0", "h3": "1.0.0"}
        assert snapshot.roster_of("B") == ["h1", "h2", "h3"]
    finally:
        fleet.close()


def _take_slot_while(client, layout, zk, meanwhile):
    """Take h001's slot of A on a 4-host fleet, with ``meanwhile()`` run between the decision and the commit."""
    fleet, _hosts = _fleet_of(4, client, layout, zk)
    try:
        def allow(_snapshot):
            meanwhile()
            return True, "slot allowed"

        slot = Slot(to_version="2.0.0", since=time.time(), from_version="1.0.0", owner="agent:h001")
        taken, reason, _snapshot = take_slot(client, layout, "A", "h001", slot, allow)
        return taken, reason, client.exists(layout.slot("A", "h001"))
    finally:
        fleet.close()


def _three_services_in_a_rollout(client, layout, zk):
    """A fleet of 4 hosts with A on 2.0.0 (done), B rolling (h1's slot, h2 failed, a malformed slot of h3), C waiting."""
    fleet = tree.FakeFleet(zk.hosts, layout)
    for host in ("h1", "h2", "h3", "h4"):
        fleet.join(host, {"A": "2.0.0", "B": "1.0.0", "C": "1.0.0"})
    tree.seed(client, layout, tree.release(tree.service("A", quorum=2), tree.service("B", quorum=2, depends_on=["A"]),
                                           tree.service("C", quorum=2, depends_on=["B"]), id="r1"))
    for host in ("h1", "h2", "h3", "h4"):
        fleet.get_ready("B", host)
        fleet.get_ready("C", host)
    fleet.take_slot("B", "h1", "2.0.0", from_version="1.0.0")
    fleet.record_failure("B", "h2", "2.0.0", "health check failed")
    client.create(layout.slot("B", "h3"), b"{not json")
    return fleet


def test_the_fresh_read_of_a_decision_is_one_request_per_level_and_reads_what_separate_reads_read(client, layout, zk, zk_connect):
    fleet = _three_services_in_a_rollout(client, layout, zk)
    try:
        own = zk_connect(zk.hosts)
        counter = RequestCounter()
        counter.attach(own)
        batched = decision_snapshot(own, layout, ["B", "A", "C"])
        # The listings and payloads of three services, then the slots and failure records there are.
        assert counter.by_type == {"MultiRead": 2}, counter.by_type
        one_by_one = read_snapshot(own, layout, services=["B", "A", "C"])
        assert counter.by_type["MultiRead"] == 2 and counter.requests > 20, counter.by_type
        assert batched == one_by_one
        assert sorted(batched.service("B").slots) == ["h1", "h3"] and batched.service("B").slots["h3"] is None
        assert list(batched.service("B").failures) == ["h2"] and any("h3" in problem for problem in batched.problems)
        assert decision_snapshot(own, layout, ["D"]).service("D").release is None
    finally:
        fleet.close()


def test_taking_a_slot_costs_four_requests_whatever_the_services_its_decision_reads(client, layout, zk, zk_connect):
    fleet = _three_services_in_a_rollout(client, layout, zk)
    try:
        # B is done: no slot or failure record is left to read node by node.
        fleet.release_slot("B", "h1")
        client.delete(layout.slot("B", "h3"))
        client.delete(layout.failure("B", "h2"))
        own = zk_connect(zk.hosts)
        own.ensure_path(layout.lock("C"))
        counter = RequestCounter()
        counter.attach(own)
        slot = Slot(to_version="2.0.0", since=time.time(), from_version="1.0.0", owner="agent:h4")
        taken, reason, snapshot = take_slot(own, layout, "C", "h4", slot, lambda _snapshot: (True, "allowed"), services=["C", "A", "B"])
        assert taken, reason
        assert sorted(snapshot.services) == ["A", "B", "C"]
        # The lock's create and listing, the read of three services, the fenced commit.
        assert counter.by_type == {"Create": 1, "GetChildren": 1, "MultiRead": 1, "Transaction": 1}, counter.by_type
    finally:
        fleet.close()


def test_a_slot_decided_under_a_lock_that_was_lost_is_not_created(client, layout, zk):
    def lose_the_lock():
        # What a session expiry does while the decider is frozen: its lock node goes.
        for node in client.get_children(layout.lock("A")):
            client.delete(layout.lock("A") + "/" + node)

    taken, reason, slot = _take_slot_while(client, layout, zk, lose_the_lock)
    assert (taken, slot) == (False, None)
    assert "lock of A was lost" in reason


def test_a_slot_decided_on_a_rollout_that_changed_meanwhile_is_not_created(client, layout, zk):
    def pause():
        data, stat = client.get(layout.rollout)
        client.set(layout.rollout, data.replace(b'"state":"running"', b'"state":"paused"'), version=stat.version)

    taken, reason, slot = _take_slot_while(client, layout, zk, pause)
    assert (taken, slot) == (False, None)
    assert "changed while deciding" in reason


def _agent_on(client, layout, zk, tmp_path, host, service="A", **options):
    """The real agent code for ``host`` (``service`` on 1.0.0, 2.0.0 already verified on disk) with an in-memory instance;
    ``options`` go in its config."""
    for version in ("1.0.0", "2.0.0"):
        directory = tmp_path / "install" / "versions" / version
        directory.mkdir(parents=True)
        (directory / VERIFIED_MARKER).touch()
    config = parse_config({"host": host, "state_dir": str(tmp_path / "state"), "zookeeper": {"hosts": zk.hosts, "root": layout.root},
                           "allowed_url_prefixes": ["https://artifacts.example/"],
                           "trusted_keys": [release_signing.public_pem()],
                           "services": {service: {"install_dir": str(tmp_path / "install"), "command": ["true", "{version_dir}"],
                                                  "health": {"command": ["true"]}}}, **options},
                          "test agent config")
    agent = Agent(config, client=client)
    instance = InMemoryInstance("1.0.0")
    agent.drivers[service] = agent.health[service] = instance
    agent.state.update(service, version="1.0.0")
    agent.connect()
    return agent, instance


def test_an_agent_never_stops_its_instance_once_its_fresh_slot_is_no_longer_its_own(client, layout, zk, tmp_path):
    fleet = tree.FakeFleet(zk.hosts, layout)
    try:
        for host in ("h2", "h3", "h4"):
            fleet.join(host, {"A": "1.0.0"})
        tree.seed(client, layout, tree.release(tree.service("A", quorum=2), id="r1"))
        agent, instance = _agent_on(client, layout, zk, tmp_path, "h1")
        writes = agent.state.update

        def update(name, **changes):
            # Between the fenced slot create and the stop, the loop freezes past its session
            # timeout and an operator frees the slot (no agent was connected to refuse it).
            if changes.get("step") == "slot_taken":
                client.delete(layout.slot("A", "h1"))
            return writes(name, **changes)

        agent.state.update = update
        for _unused in range(10):
            agent.iteration()
            if agent.decisions.get("A") and agent.decisions["A"][0].action == "take_slot":
                break
        assert agent.decisions["A"][0].action == "take_slot", agent.decisions
        assert instance.stops == [] and instance.version == "1.0.0"
        assert agent.state.get("A").phase == "idle"
    finally:
        fleet.close()


class _Recorder(object):
    """Every read and write one kazoo client sends, in order, as ``(kind, path)`` (a transaction's path is None).

    The reads of a multiRead request are recorded one by one, as they would be sent without it.
    """

    def __init__(self, client):
        self.requests = []
        send = client._call

        def recorded(request, async_object):
            if isinstance(request, MultiRead):
                self.requests.extend((type(operation).__name__, operation.path) for operation in request)
            else:
                self.requests.append((type(request).__name__, getattr(request, "path", None)))
            return send(request, async_object)

        client._call = recorded

    def since(self, mark):
        return self.requests[mark:]


def _agent_waiting_behind_h1(client, layout, zk, zk_connect, tmp_path, quorum, max_parallel, h1_in_turn=True):
    """h1 (fake) first in A's ready queue, in its turn; the real agent of h2 next, waiting; h3, h4 (fake) on 1.0.0."""
    fleet = tree.FakeFleet(zk.hosts, layout)
    for host in ("h1", "h3", "h4"):
        fleet.join(host, {"A": "1.0.0"})
    fleet.join("h2", {"A": None})  # in the roster; its agent registers itself
    tree.seed(client, layout, tree.release(tree.service("A", quorum=quorum, max_parallel=max_parallel), id="r1"))
    fleet.get_ready("A", "h1")
    if h1_in_turn:
        fleet.take_slot("A", "h1", "2.0.0", from_version="1.0.0")
        fleet.deregister("A", "h1")
    own = zk_connect(zk.hosts)
    recorder = _Recorder(own)
    agent, instance = _agent_on(own, layout, zk, tmp_path, "h2")
    for _unused in range(10):
        agent.woken.clear()
        agent.iteration()
        waiting = agent.decisions.get("A") and agent.decisions["A"][0].action == "wait"
        if waiting and not agent.woken.wait(0.3):
            break
    assert agent.decisions["A"][0].action == "wait" and "h2" in agent.snapshot.service("A").ready_hosts, agent.decisions
    return fleet, agent, instance, recorder


def _turn_taken_on_the_read_under_the_lock(agent, instance, recorder, layout, service):
    """One iteration of the woken ``agent``: it takes its turn of ``service`` deciding on the read under the lock alone.

    That read lists the service's ready queue once before the slot's commit; a refresh of the
    view first would list it again. Returns what was sent after the commit.
    """
    mark = len(recorder.requests)
    agent.iteration()
    assert agent.counters.get("take_slot") == 1, agent.decisions
    assert instance.version == "2.0.0" and len(instance.stops) == 1
    sent = recorder.since(mark)
    slot_commit = sent.index(("Transaction", None))
    assert sent[:slot_commit].count(("GetChildren", layout.ready_queue(service))) == 1, sent
    return sent[slot_commit:]


def test_a_woken_agent_next_in_line_takes_its_turn_on_the_fresh_read_alone(client, layout, zk, zk_connect, tmp_path):
    fleet, agent, instance, recorder = _agent_waiting_behind_h1(client, layout, zk, zk_connect, tmp_path, quorum=2, max_parallel=1)
    try:
        # h1's turn ends as an agent ends it: registered on the target, slot and ready-queue place gone.
        fleet.register("A", "h1", "2.0.0")
        member = [node for node in client.get_children(layout.ready_queue("A")) if node.startswith("h1-")][0]
        transaction = client.transaction()
        transaction.delete(layout.slot("A", "h1"))
        transaction.delete(layout.ready_member("A", member))
        assert not any(isinstance(result, Exception) for result in transaction.commit())
        assert agent.woken.wait(5), "h2 was not woken by the end of h1's turn"
        after = _turn_taken_on_the_read_under_the_lock(agent, instance, recorder, layout, "A")
        # The view is refreshed after, with the turn done.
        assert ("GetChildren", layout.ready_queue("A")) in after, after
    finally:
        agent.stop()
        fleet.close()


def test_a_host_whose_predecessor_leaves_the_line_takes_its_turn_at_once_though_its_view_of_the_service_ahead_is_old(
        client, layout, zk, zk_connect, tmp_path):
    # B waits for A. The real agent of h2 runs B alone, second in B's line behind h1: it watches
    # h1's place in the line, not A, so its view still shows A unfinished when h1 ends its turn of B.
    fleet = tree.FakeFleet(zk.hosts, layout)
    try:
        for host in ("h1", "h3"):
            fleet.join(host, {"A": "1.0.0", "B": "1.0.0"})
        fleet.join("h2", {"B": None})
        tree.seed(client, layout, tree.release(tree.service("A", quorum=1), tree.service("B", quorum=2, depends_on=["A"]), id="r1"))
        fleet.get_ready("B", "h1")
        own = zk_connect(zk.hosts)
        recorder = _Recorder(own)
        agent, instance = _agent_on(own, layout, zk, tmp_path, "h2", service="B")
        for _unused in range(10):
            agent.woken.clear()
            agent.iteration()
            waiting = agent.decisions.get("B") and agent.decisions["B"][0].action == "wait"
            if waiting and "h2" in agent.snapshot.service("B").ready_hosts and not agent.woken.wait(0.3):
                break
        assert agent.snapshot.service("B").ready_hosts == ["h1", "h2"], agent.decisions
        for host in ("h1", "h3"):
            fleet.upgrade("A", host, "2.0.0")
        fleet.upgrade("B", "h1", "2.0.0")
        member = [node for node in client.get_children(layout.ready_queue("B")) if node.startswith("h1-")][0]
        agent.woken.clear()
        client.delete(layout.ready_member("B", member))
        assert agent.woken.wait(5), "h2 was not woken when h1 left B's line"
        assert "behind A" in agent.decisions["B"][0].reason and agent.snapshot.service("A").registrations["h1"] == "1.0.0", agent.decisions
        _turn_taken_on_the_read_under_the_lock(agent, instance, recorder, layout, "B")
    finally:
        fleet.close()


def test_a_wake_up_that_gives_no_turn_costs_one_lock_take_and_changes_nothing(client, layout, zk, zk_connect, tmp_path):
    # Quorum 3 of h2, h3, h4 healthy (h1 in its turn): h2 is a candidate (max_parallel 2) but has no budget.
    fleet, agent, instance, recorder = _agent_waiting_behind_h1(client, layout, zk, zk_connect, tmp_path, quorum=3, max_parallel=2)
    try:
        client.ensure_path(layout.lock("A"))  # as after any earlier turn: one create per lock take
        agent.woken.clear()
        fleet.deregister("A", "h4")
        assert agent.woken.wait(5), "the candidate h2 was not woken by a change of A's registrations"
        mark = len(recorder.requests)
        agent.iteration()
        locks = [path for kind, path in recorder.since(mark) if kind == "Create" and path.startswith(layout.lock("A") + "/")]
        assert len(locks) == 1, recorder.since(mark)
        assert agent.decisions["A"][0].action == "wait", agent.decisions
        assert instance.stops == [] and client.exists(layout.slot("A", "h2")) is None
        assert client.get_children(layout.lock("A")) == []
        # No new change, no new take: the next loop decides on its view alone.
        mark = len(recorder.requests)
        agent.iteration()
        assert not [path for kind, path in recorder.since(mark) if kind == "Create"], recorder.since(mark)
    finally:
        agent.stop()
        fleet.close()


def test_a_candidate_behind_another_waiting_candidate_leaves_the_turn_to_it(client, layout, zk, zk_connect, tmp_path):
    # h1 waits first in line (no slot); quorum 3 of 4 healthy: one turn, h1's. Then h4 goes down: no turn at all.
    fleet, agent, instance, recorder = _agent_waiting_behind_h1(client, layout, zk, zk_connect, tmp_path, quorum=3, max_parallel=2,
                                                                h1_in_turn=False)
    try:
        client.ensure_path(layout.lock("A"))
        agent.woken.clear()
        fleet.deregister("A", "h4")
        assert agent.woken.wait(5), "the candidate h2 was not woken by a change of A's registrations"
        mark = len(recorder.requests)
        agent.iteration()
        # It decides on its view (behind h1, no budget): no lock taken, nothing stopped.
        assert not [path for kind, path in recorder.since(mark) if kind == "Create"], recorder.since(mark)
        assert agent.decisions["A"][0].action == "wait" and "number 2 in line" in agent.decisions["A"][0].reason, agent.decisions
        assert instance.stops == []
    finally:
        agent.stop()
        fleet.close()


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out after %gs waiting for %s" % (timeout, what)
        time.sleep(0.05)


def test_an_idle_agent_iterates_only_when_a_watch_or_a_health_verdict_wakes_it(client, layout, zk, tmp_path, monkeypatch):
    # Nothing but a wake-up may start an iteration here: no idle refresh, no safety tick within the test.
    monkeypatch.setattr(runtime, "IDLE_WAIT", 600.0)
    fleet = tree.FakeFleet(zk.hosts, layout)
    agent, instance = _agent_on(client, layout, zk, tmp_path, "h1", loop_wait=0.2, safety_tick=600.0)
    iterations = []
    iterate = agent.iteration

    def counted():
        iterations.append(time.monotonic())
        return iterate()

    agent.iteration = counted
    thread = threading.Thread(target=agent.run, daemon=True)
    try:
        fleet.join("h2", {"A": "1.0.0"})
        thread.start()
        _wait_for(lambda: agent.decisions.get("A") and agent.decisions["A"][0].reason == "idle: no rollout of A", 20, "the agent to register and idle")
        time.sleep(1.0)
        idle_from = len(iterations)
        time.sleep(2.0)
        # loop_wait 0.2 s would be ten iterations.
        assert len(iterations) - idle_from == 0, "an idle agent iterated %d times in 2 s" % (len(iterations) - idle_from)

        # A watch: the rollout of A is seeded, with 2.0.0 verified on disk the agent joins the ready queue.
        tree.seed(client, layout, tree.release(tree.service("A", quorum=1), id="r1"))
        _wait_for(lambda: agent.decisions["A"][0].action not in ("wait",) or "on target" in agent.decisions["A"][0].reason, 20,
                  "the seeding to wake the agent")
        _wait_for(lambda: agent.state.get("A").version == "2.0.0" and agent.decisions["A"][0].action == "wait", 30, "h1 to upgrade and idle")
        time.sleep(1.0)
        idle_from = len(iterations)
        time.sleep(2.0)
        assert len(iterations) - idle_from == 0, "an idle agent iterated %d times in 2 s" % (len(iterations) - idle_from)

        # A health verdict: the instance dies; its worker deregisters it and wakes the loop, which starts it again.
        instance.version = None
        _wait_for(lambda: instance.version == "2.0.0", 20, "the agent to start its dead instance again")
    finally:
        agent.stop()
        thread.join(10)
        fleet.close()
