# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Faults during a rollout of real agents: killed and frozen agents, a ZooKeeper leader crash, a host
that was down. The independent QuorumMonitor watches every run; no fault may cost the quorum."""

from __future__ import annotations

import signal
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller import report
from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import V2, rollout_beds

pytestmark = [pytest.mark.zookeeper, pytest.mark.slow]

HOSTS = 5
QUORUM = 3
RELEASE = {"A": {"version": V2, "quorum": QUORUM}}


@pytest.fixture
def ensemble_bed(store, zk_ensemble, zk_connect, zk_root):
    """``ensemble_bed(**RolloutBed options)``: agents on the module's 3-member ensemble."""
    with rollout_beds(store, zk_ensemble.hosts, zk_root, zk_connect(zk_ensemble.hosts)) as make:
        yield make


def _first_slot_holder(fleet):
    return fleet.wait_for(lambda: fleet.slot_holders("A"), 30, "a host to take an upgrade slot of A", interval=0.01)[0]


def _finish(fleet, request, timeout=90):
    took = fleet.wait_done(timeout)
    request.node.user_properties.append(("rollout_seconds", round(took, 1)))
    print("rollout done %.1fs after seeding" % took)
    fleet.assert_quorum({"A": QUORUM}, request)
    return took


@pytest.mark.timeout(180)
def test_an_agent_killed_mid_switch_finishes_the_switch_after_a_restart(bed, request):
    fleet = bed(hosts=HOSTS, services=("A",)).start()
    pids_before = fleet.instance_pids("A")
    fleet.seed(RELEASE)
    victim = _first_slot_holder(fleet)
    # Kill it once its instance is down: the switch is between stop and health check.
    fleet.wait_for(lambda: fleet.versions_by_host("A")[victim] is None, 10, "%s's instance of A to stop" % victim, interval=0.005)
    fleet.fleet.kill(victim)
    step = fleet.fleet.local_state(victim).get("A")
    request.node.user_properties.append(("killed_at_step", "%s/%s" % (step.phase, step.step)))
    print("killed the agent of %s at %s/%s" % (victim, step.phase, step.step))
    # While its agent is dead, its slot stays held: nobody else takes a turn.
    time.sleep(2.0)
    assert fleet.slot_holders("A") == [victim]
    pids_now = fleet.instance_pids("A")
    assert [host for host in fleet.hosts if pids_now[host] != pids_before[host]] in ([], [victim])
    fleet.fleet.start(victim)

    _finish(fleet, request)
    fleet.wait_all_on("A", V2)
    assert fleet.fleet.local_state(victim).get("A").phase == "idle"
    assert fleet.fleet.processes_running_from(victim) == [fleet.instance_pids("A")[victim]], "one instance of A, the recorded one"


@pytest.mark.timeout(180)
def test_an_agent_stopped_mid_switch_resumes_it_after_a_restart_without_recording_a_failure(bed, request):
    fleet = bed(hosts=HOSTS, services=("A",)).start()
    fleet.seed(RELEASE)
    victim = _first_slot_holder(fleet)
    fleet.wait_for(lambda: fleet.versions_by_host("A")[victim] is None, 10, "%s's instance of A to stop" % victim, interval=0.005)
    fleet.fleet.signal(victim, signal.SIGTERM)
    fleet.fleet.processes[victim].wait(15)
    step = fleet.fleet.local_state(victim).get("A")
    request.node.user_properties.append(("stopped_at_step", "%s/%s" % (step.phase, step.step)))
    print("stopped the agent of %s with SIGTERM; it left A at %s/%s" % (victim, step.phase, step.step))
    assert not fleet.snapshot().service("A").failures, "stopping an agent is not a failure of the release"
    fleet.fleet.start(victim)

    _finish(fleet, request)
    assert not fleet.snapshot().service("A").failures
    fleet.wait_all_on("A", V2)


@pytest.mark.timeout(180)
def test_an_agent_frozen_past_its_session_comes_back_and_registers_again(bed, request):
    fleet = bed(hosts=HOSTS, services=("A",)).start()
    fleet.seed(RELEASE)
    holder = _first_slot_holder(fleet)
    frozen = [host for host in fleet.hosts if host != holder][-1]
    old_session = fleet.registration_owner("A", frozen)
    assert old_session is not None
    fleet.fleet.signal(frozen, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        fleet.wait_for(lambda: fleet.registration_owner("A", frozen) is None, 3 * fleet.fleet.session_timeout,
                       "the registration of the frozen %s to expire with its session" % frozen)
        time.sleep(max(0.0, 9.0 - (time.monotonic() - frozen_at)))
    finally:
        fleet.fleet.signal(frozen, signal.SIGCONT)

    new_session = fleet.wait_for(lambda: fleet.registration_owner("A", frozen), 20, "%s to register again after SIGCONT" % frozen)
    assert new_session != old_session
    print("%s registered again: session 0x%x replaced 0x%x" % (frozen, new_session, old_session))
    _finish(fleet, request)
    fleet.wait_for(lambda: len(fleet.registrations("A")) == HOSTS, 20, "every host registered")
    final = fleet.registrations("A")
    request.node.user_properties.append(("frozen_host_final_version", final.get(frozen)))
    print("the frozen %s ends on %s" % (frozen, final.get(frozen)))
    assert sorted(final) == fleet.hosts
    assert all(final[host] == V2 for host in fleet.hosts if host != frozen), final
    assert fleet.versions_by_host("A") == final


@pytest.mark.timeout(180)
def test_a_rollout_finishes_when_the_zookeeper_leader_crashes_mid_rollout(ensemble_bed, zk_ensemble, request):
    fleet = ensemble_bed(hosts=HOSTS, services=("A",)).start()
    fleet.seed(RELEASE)
    _first_slot_holder(fleet)
    leader = zk_ensemble.leader()
    leader.stop()
    print("killed ZooKeeper leader, member %d" % leader.myid)
    assert zk_ensemble.leader().myid != leader.myid

    _finish(fleet, request)
    fleet.wait_all_on("A", V2)


@pytest.mark.timeout(180)
def test_a_host_that_was_down_during_the_rollout_starts_the_target_when_it_comes_back(bed, request):
    fleet = bed(hosts=HOSTS, services=("A",))
    fleet.start(start_monitor=False)
    absent = fleet.hosts[-1]
    fleet.fleet.kill(absent)
    fleet.fleet.kill_services(absent)
    # Its registration goes with its session; until then the others would count it healthy.
    fleet.wait_for(lambda: fleet.registration_owner("A", absent) is None, 3 * fleet.fleet.session_timeout,
                   "the registration of the dead %s to expire" % absent)
    fleet.start_monitor()
    fleet.seed(RELEASE)
    took = fleet.wait_done(90)
    request.node.user_properties.append(("rollout_seconds", round(took, 1)))
    print("rollout done %.1fs after seeding, without %s" % (took, absent))
    online = [host for host in fleet.hosts if host != absent]
    fleet.wait_all_on("A", V2, online)

    fleet.fleet.start(absent)
    restarted = time.monotonic()
    fleet.wait_for(lambda: fleet.registrations("A").get(absent) == V2, 30, "%s to come back on %s" % (absent, V2))
    request.node.user_properties.append(("comeback_seconds", round(time.monotonic() - restarted, 1)))
    fleet.wait_all_on("A", V2)
    assert [version for _unused, version in fleet.history.of("A")[fleet.url(absent, "A")]] == [None, V2]
    assert report.overall_state(fleet.snapshot())[0] == "done"
    fleet.assert_quorum({"A": QUORUM}, request)


@pytest.mark.timeout(120)
def test_an_agent_restarted_before_its_old_session_expired_registers_again_when_that_session_goes(bed, request):
    # rise 1: the new process finds its instance healthy on its very first look.
    fleet = bed(hosts=2, services=("A",), health={"rise": 1}).start()
    host = fleet.hosts[0]
    old_session = fleet.registration_owner("A", host)
    # Restart at once: the new process finds the old process's registration, still alive for up
    # to the session timeout (4 s), and must not take it for its own.
    fleet.fleet.kill(host)
    fleet.fleet.start(host)
    fleet.wait_for(lambda: fleet.registration_owner("A", host) not in (None, old_session), 15,
                   "%s's A to be registered by the new agent's own session (the old one's node is gone with it)" % host)
    fleet.assert_quorum({"A": 1}, request)
