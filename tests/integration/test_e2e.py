# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""End to end: six test hosts get the agent from the role over SSH, a release A -> B -> C is
seeded with playbooks/rollout.yml, and the hosts finish on their own after the playbook exited.

The independent QuorumMonitor samples every instance's own /health endpoint through each run;
every test asserts that no service ever had fewer healthy instances than its quorum. The three
scenarios of ``TestOneFleet`` share one fleet and one agent install: each rolls the settled
fleet to the good version it does not run yet (1.0.0 <-> 2.0.0), and the broken 3.0.0 comes
last because it leaves its service halted. The ZooKeeper-ensemble scenario builds its own fleet.
Closing a fleet fails the test if a namespace of the fleet or any of its processes survives.
"""

from __future__ import annotations

import time

import pytest

from .e2e_support import V3_BROKEN, installed_fleet, other_good_version  # first: it makes the collection importable under pytest-ansible

# isort: split
from ansible_collections.zkrollout.dc.plugins.module_utils.core.plan import resolve_quorum

pytestmark = [pytest.mark.fleet, pytest.mark.slow, pytest.mark.timeout(600)]

ROLLOUT_TIMEOUT = 240
# A halted service must stay halted: this many seconds (a dozen agent loops) of nobody else switching.
HALT_SETTLE = 6.0


@pytest.fixture(scope="class")
def fleet():
    """Six hosts with the agent installed by the role, shared by the scenarios of one class."""
    started = time.monotonic()
    with installed_fleet() as installed:
        print("e2e: environment built and agents installed in %.1fs" % (time.monotonic() - started))
        yield installed


def a_b_c(versions, quorums):
    """A -> B -> C, each to the good version it does not run; ``quorums`` = {service: (quorum, max_parallel)}."""
    return [(name, other_good_version(versions[name]), quorums[name][0], quorums[name][1], depends_on)
            for name, depends_on in (("A", []), ("B", ["A"]), ("C", ["B"]))]


def assert_quorum_held(fleet, services, request, **numbers):
    """The monitor's verdict; min healthy per service, quorum and ``numbers`` go to the report and the log."""
    quorums = {name: resolve_quorum(quorum, len(fleet.hosts)) for name, _version, quorum, _parallel, _deps in services}
    minimum = dict(fleet.monitor.min_healthy)
    request.node.user_properties.extend([("min_healthy", minimum), ("quorum", quorums)] + sorted(numbers.items()))
    print("e2e %s: min healthy %s, quorum %s, %s" % (request.node.name, minimum, quorums, numbers))
    fleet.monitor.assert_quorum(quorums)


def assert_on_targets(fleet, services, hosts, timeout=30):
    """``hosts`` are registered on each service's target and the instances themselves report it.

    Waits (bounded): on a loaded machine a host may be re-registering just now, after one of its
    health checks or its ZooKeeper session timed out.
    """
    for name, version, _quorum, _parallel, _deps in services:
        def on_target(name=name, version=version):
            registered, reported = fleet.registrations(name), fleet.versions_seen_now(name)
            return all(registered.get(host) == reported[host] == version for host in hosts)

        fleet.wait_for(on_target, timeout, "%s on %s to be registered and to answer as %s" % (name, ", ".join(hosts), version))


class TestOneFleet:
    def test_a_seeded_release_rolls_out_on_its_own_in_dependency_order_within_every_quorum(self, fleet, request):
        services = a_b_c(fleet.settled_versions(), {"A": (4, 2), "B": ("50%", 2), "C": (5, 1)})
        fleet.start_monitor()

        run = fleet.seed(fleet.release("e2e-order", services))

        assert run.custom_stats["zkrollout_deploy_order"] == ["A", "B", "C"]
        # The playbook has exited; from here on the hosts work alone.
        assert fleet.rollout_state() == "running"
        took = fleet.wait_done(ROLLOUT_TIMEOUT)
        assert fleet.report()["deploy_queue"] == []
        assert_on_targets(fleet, services, fleet.hosts)
        fleet.stop_monitor()
        fleet.assert_dependency_order(services)
        assert_quorum_held(fleet, services, request, rollout_seconds=round(took, 1))

    def test_a_host_partitioned_mid_rollout_counts_as_down_and_converges_after_healing_without_a_second_seeding(self, fleet, request):
        # With one host cut off on top of max_parallel slots, every quorum still holds.
        services = a_b_c(fleet.settled_versions(), {"A": (3, 2), "B": ("50%", 1), "C": (4, 1)})
        fleet.start_monitor()
        fleet.seed(fleet.release("e2e-partition", services))
        seeded = fleet.snapshot().rollout
        fleet.wait_for(lambda: fleet.snapshot().service("A").slots, 90, "a host to take an upgrade slot of A", interval=0.02)
        victim = last_in_line(fleet.snapshot(), "A", fleet.hosts)
        others = [host for host in fleet.hosts if host != victim]

        fleet.environment.fleet.partition(victim)
        partitioned_at = time.monotonic()
        try:
            offline = {name: {"state": "offline", "version": None, "target": version} for name, version, _q, _p, _d in services}
            fleet.wait_for(lambda: fleet.report()["hosts"][victim] == offline, 30, "%s to be reported offline" % victim)
            assert not any(host == victim for _name, host, _slot in fleet.snapshot().slots_held)
            took = fleet.wait_done(ROLLOUT_TIMEOUT)
            assert_on_targets(fleet, services, others)
            assert fleet.report()["hosts"][victim] == offline
            assert all(version is None for version in (fleet.versions_seen_now(name)[victim] for name in fleet.services))
        finally:
            fleet.environment.fleet.heal(victim)
        partitioned_for = time.monotonic() - partitioned_at

        fleet.wait_for(lambda: all(fleet.registrations(name).get(victim) == version for name, version, _q, _p, _d in services),
                       120, "%s to run every target after healing" % victim, interval=0.2)

        # Still the one rollout seeded above: nobody seeded again.
        rollout = fleet.snapshot().rollout
        assert (rollout.id, rollout.created, fleet.rollout_state()) == (seeded.id, seeded.created, "done")
        assert_on_targets(fleet, services, fleet.hosts)
        fleet.stop_monitor()
        fleet.assert_dependency_order(services, hosts=others)
        fleet.assert_dependency_order(services, hosts=[victim])
        assert_quorum_held(fleet, services, request, rollout_seconds=round(took, 1), partitioned_seconds=round(partitioned_for, 1),
                           converged_seconds=round(time.monotonic() - partitioned_at - partitioned_for, 1))

    def test_a_broken_version_halts_after_one_host_rolled_back_and_status_names_that_host_and_why(self, fleet, request):
        before = fleet.settled_versions()
        pids_before = {name: fleet.instance_pids(name) for name in fleet.services}
        services = [("B", V3_BROKEN, "50%", 1, [])]
        fleet.start_monitor()
        fleet.seed(fleet.release("e2e-broken", services))

        fleet.wait_for(lambda: fleet.report()["state"] == "failed" and not fleet.snapshot().service("B").slots, 90,
                       "B to halt with its failure recorded and its slot released")
        time.sleep(HALT_SETTLE)

        view = fleet.snapshot()
        failures = view.service("B").failures
        assert len(failures) == 1, failures
        [(failed, failure)] = failures.items()
        assert (failure.version, failure.stage, failure.rolled_back_to) == (V3_BROKEN, "health", before["B"])
        assert not view.service("B").slots and view.rollout.state == "running"
        assert fleet.registrations("B") == dict.fromkeys(fleet.hosts, before["B"])
        assert fleet.versions_seen_now("B") == dict.fromkeys(fleet.hosts, before["B"])
        # Only the failed host's B was restarted (twice: into 3.0.0 and back); no other instance was touched.
        pids_after = {name: fleet.instance_pids(name) for name in fleet.services}
        restarted = sorted((name, host) for name in fleet.services for host in fleet.hosts if pids_after[name][host] != pids_before[name][host])
        assert restarted == [("B", failed)], (pids_before, pids_after)
        run = fleet.show_status()
        assert run.returncode == 0, run.output
        assert "B on %s: health failed for %s: %s" % (failed, V3_BROKEN, failure.reason) in run.stdout, run.output
        assert run.custom_stats["zkrollout_state"] == "failed"
        assert "B on %s: " % failed in run.custom_stats["zkrollout_reason"], run.custom_stats
        fleet.stop_monitor()
        assert_quorum_held(fleet, services, request)


def test_a_rollout_finishes_within_every_quorum_after_the_zookeeper_leader_is_killed_mid_rollout(request):
    with installed_fleet(ensemble=True) as fleet:
        services = a_b_c(fleet.settled_versions(), {"A": (4, 2), "B": ("50%", 2), "C": (5, 1)})
        fleet.start_monitor()
        fleet.seed(fleet.release("e2e-ensemble", services))
        fleet.wait_for(lambda: fleet.snapshot().slots_held, 90, "a host to take an upgrade slot", interval=0.02)
        leader = fleet.environment.zookeeper.leader()

        leader.stop()

        assert fleet.environment.zookeeper.leader(timeout=30) is not leader
        took = fleet.wait_done(ROLLOUT_TIMEOUT)
        assert not leader.running
        assert_on_targets(fleet, services, fleet.hosts)
        fleet.stop_monitor()
        fleet.assert_dependency_order(services)
        assert_quorum_held(fleet, services, request, rollout_seconds=round(took, 1), killed_leader=leader.myid)


def test_a_rollout_through_the_role_completes_under_the_acl_profile_over_mutual_tls_with_signed_releases(request):
    # README's secure set-up: every host and the deployer have their own certificate, every node
    # the least-privilege profile's ACL, every release the deployer's signature.
    with installed_fleet(hosts=3, secure=True) as fleet:
        services = a_b_c(fleet.settled_versions(), {"A": (2, 1), "B": ("50%", 1), "C": (2, 1)})
        fleet.start_monitor()
        fleet.seed(fleet.release("e2e-secure", services))
        took = fleet.wait_done(ROLLOUT_TIMEOUT)
        assert_on_targets(fleet, services, fleet.hosts)
        fleet.stop_monitor()
        fleet.assert_dependency_order(services)
        assert_quorum_held(fleet, services, request, rollout_seconds=round(took, 1))

        status = fleet.show_status()
        assert status.returncode == 0 and status.custom_stats["zkrollout_state"] == "done", status.output
        assert "NoAuth" not in fleet.agent_logs(lines=100000)
        layout, identity = fleet.layout, fleet.environment.x509_identity
        for host in fleet.hosts:
            # Each host's own parent: only its identity may add or remove what a decision counts for it.
            rights = {"x509:%s" % entry.id.id: entry.perms for entry in fleet.client.get_acls(layout.host(host))[0] if entry.id.scheme == "x509"}
            assert rights[identity(host)] == 13 and rights[identity("deployer")] == 31, rights
            assert not any(perms & ~1 for name, perms in rights.items() if name not in (identity(host), identity("deployer"))), rights
            assert sorted(fleet.client.get_children(layout.host(host))) == ["%s@%s" % (service[0], service[1]) for service in services]
        for name in fleet.services:
            # A release: the deployer's alone; everyone else reads (world:anyone), so no agent is listed.
            rights = {"%s:%s" % (entry.id.scheme, entry.id.id): entry.perms for entry in fleet.client.get_acls(layout.release(name))[0]}
            assert rights == {identity("deployer"): 31, "world:anyone": 1}, rights


def last_in_line(view, service, hosts):
    """The host furthest from an upgrade slot of ``service``: last in its ready queue, or not in it yet."""
    state = view.service(service)
    queue = state.ready_hosts
    waiting = [host for host in hosts if host not in state.slots]
    return max(waiting, key=lambda host: (queue.index(host) if host in queue else len(queue), host))
