# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host agent against real ZooKeeper, with real agent processes and real demo services.

Every rollout here runs under the independent QuorumMonitor (tests/bed/monitor.py), which
samples the demo services' own /health endpoints, and every test asserts its verdict: no
service ever had fewer healthy instances than its quorum. Fault injection (killed, frozen or
absent agents, a ZooKeeper leader crash) is in test_agent_faults.py.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller import report
from ansible_collections.zkrollout.dc.tests.bed.artifacts import wrong_sha256
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import four_letter
from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import V1, V2, V3_BROKEN, V4, rollout_beds

pytestmark = [pytest.mark.zookeeper, pytest.mark.slow]


@pytest.mark.timeout(180)
def test_a_dependent_service_switches_only_after_its_dependency_is_on_target(bed, request):
    fleet = bed(hosts=5, services=("A", "B")).start()
    fleet.seed({"A": {"version": V2, "quorum": 3}, "B": {"version": V2, "quorum": 3, "depends_on": ["A"]}})
    took = fleet.wait_done(timeout=90)
    request.node.user_properties.append(("rollout_seconds", round(took, 1)))
    print("5 hosts, A then B, quorum 3: done in %.1fs" % took)

    fleet.assert_quorum({"A": 3, "B": 3}, request)
    for service in ("A", "B"):
        fleet.wait_all_on(service, V2)
    a_reached = fleet.history.reached("A", V2)
    b_started = fleet.history.switch_started("B", V2)
    assert len(a_reached) == len(b_started) == 5, (a_reached, b_started)
    last_a, first_b = max(a_reached.values()), min(b_started.values())
    print("last A instance on %s at t=%.2fs, first B instance began its switch at t=%.2fs" % (V2, last_a, first_b))
    assert first_b > last_a, "B began switching at t=%.2fs, before the last A instance reached %s at t=%.2fs" % (first_b, V2, last_a)


@pytest.mark.timeout(180)
def test_two_slots_roll_a_service_faster_than_one_when_the_quorum_allows_it(bed, request):
    fleet = bed(hosts=5, services=("A",)).start()
    fleet.seed({"A": {"version": V2, "quorum": 2, "max_parallel": 1}}, rollout_id="one-by-one")
    one_by_one = fleet.wait_done(timeout=60)
    fleet.wait_all_on("A", V2)
    second_seeded_at = fleet.monitor.elapsed()
    fleet.seed({"A": {"version": V4, "quorum": 2, "max_parallel": 2}}, rollout_id="two-at-a-time")
    two_at_a_time = fleet.wait_done(timeout=60)
    fleet.wait_all_on("A", V4)

    request.node.user_properties.append(("max_parallel_1_seconds", round(one_by_one, 1)))
    request.node.user_properties.append(("max_parallel_2_seconds", round(two_at_a_time, 1)))
    print("5 hosts, quorum 2: max_parallel 1 took %.1fs, max_parallel 2 took %.1fs" % (one_by_one, two_at_a_time))
    fleet.assert_quorum({"A": 2}, request)
    # The independent evidence of the budget: one instance down at a time, then two at a time.
    lowest = {phase: min(change.healthy for change in fleet.monitor.timeline if (change.t >= second_seeded_at) == phase) for phase in (False, True)}
    assert lowest == {False: 4, True: 3}, "lowest healthy count with max_parallel 1, then 2: %s" % lowest


@pytest.mark.timeout(180)
def test_a_version_that_never_gets_healthy_is_rolled_back_and_halts_the_rollout(bed, request):
    fleet = bed(hosts=5, services=("A",), health={"deadline": 3.0}).start()
    pids_before = fleet.instance_pids("A")
    fleet.seed({"A": {"version": V3_BROKEN, "quorum": 3}})

    def failed_and_back():
        state = fleet.snapshot().service("A")
        return state.failures and not state.slots and len(state.registrations) == 5

    fleet.wait_for(failed_and_back, 60, "a failure of A recorded, its slot released and every host registered")
    # Long enough for a second host to take a turn, were the halt not respected.
    time.sleep(3 * fleet.fleet.loop_wait + 1.0)
    snap = fleet.snapshot()
    state = snap.service("A")
    [(failed_host, failure)] = state.failures.items()
    assert failure.stage == "health"
    assert failure.version == V3_BROKEN
    assert failure.rolled_back_to == V1
    fleet.wait_all_on("A", V1)
    assert not state.slots
    word, reason = report.overall_state(snap)
    assert word == "failed", reason
    assert report.verdict(snap, "A")[0] == "halted"

    # Only the failed host's instance was ever restarted, and only it ever switched.
    pids_after = fleet.instance_pids("A")
    assert [host for host in fleet.hosts if pids_after[host] != pids_before[host]] == [failed_host]
    assert [host for host in fleet.hosts if fleet.fleet.local_state(host).get("A").previous is not None] == [failed_host]
    assert fleet.monitor.versions_seen["A"] == {V1}
    request.node.user_properties.append(("failed_host", failed_host))
    fleet.assert_quorum({"A": 3}, request)


@pytest.mark.timeout(180)
def test_an_artifact_with_a_wrong_checksum_is_never_switched_to(bed, request):
    fleet = bed(hosts=5, services=("A",)).start()
    pids_before = fleet.instance_pids("A")
    fleet.seed({"A": {"version": V2, "quorum": 3, "sha256": wrong_sha256(fleet.store.built["A"][V2])}})

    fleet.wait_for(lambda: len(fleet.snapshot().service("A").failures) == 5, 40, "a failure of A on every host")
    # Long enough for a host to take a slot, were a failed download not a halt.
    time.sleep(3 * fleet.fleet.loop_wait + 1.0)
    snap = fleet.snapshot()
    state = snap.service("A")
    assert sorted(state.failures) == fleet.hosts
    assert {failure.stage for failure in state.failures.values()} == {"verify"}
    assert all("sha256 mismatch" in failure.reason for failure in state.failures.values())
    assert report.overall_state(snap)[0] == "failed"
    assert not state.slots
    fleet.wait_all_on("A", V1)
    assert fleet.instance_pids("A") == pids_before
    assert fleet.monitor.versions_seen["A"] == {V1}
    for host in fleet.hosts:
        config = fleet.fleet.config(host)["services"]["A"]
        assert not os.path.exists(os.path.join(config["install_dir"], "versions", V2)), "%s unpacked an unverified %s" % (host, V2)
    fleet.assert_quorum({"A": 3}, request)


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # utime and stime, fields 14 and 15 of proc(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def _packets_received(zookeeper, session_id):
    """Requests the server received on the connection of ``session_id`` (``cons``)."""
    reply = four_letter(zookeeper.members[0].client_port, "cons")
    match = re.search(r"recved=(\d+),sent=\d+,sid=0x%x\b" % session_id, reply)
    assert match, "session 0x%x is not connected to the server: %s" % (session_id, reply)
    return int(match.group(1))


IDLE_WINDOW = 10.0
# Between two safety ticks an idle agent sends nothing but kazoo's heartbeats (one per third of
# the 4 s session timeout of the test bed): well under 2 packets a second, whatever loop_wait is.
IDLE_PACKETS_PER_SECOND_MAX = 2.0
# Generous ceilings (measured: about 2% of a core and 27 MiB): they catch a busy loop or a leak, not noise.
IDLE_CPU_SHARE_MAX = 0.15
IDLE_RSS_KIB_MAX = 100 * 1024


@pytest.mark.timeout(120)
def test_an_idle_agent_sends_only_heartbeats_between_safety_ticks_and_stays_small(store, zookeeper_factory, zk_connect, request):
    zookeeper = zookeeper_factory(size=1)
    loop_wait = 0.5
    with rollout_beds(store, zookeeper.hosts, "/dc", zk_connect(zookeeper.hosts)) as make:
        fleet = make(hosts=1, services=("A", "B"), loop_wait=loop_wait).start()
        [host] = fleet.hosts
        pid = fleet.fleet.processes[host].pid
        session_id = fleet.registration_owner("A", host)
        # Connected, with every healthy instance registered: the agent vouches for its host.
        observer = zk_connect(zookeeper.hosts)
        presence = fleet.wait_for(lambda: observer.exists("/dc/agents/%s" % host), 10, "the agent's presence node")
        assert presence.ephemeralOwner == session_id, presence
        time.sleep(2.0)
        cpu_before, packets_before, started = _cpu_seconds(pid), _packets_received(zookeeper, session_id), time.monotonic()
        time.sleep(IDLE_WINDOW)
        cpu_after, packets_after, window = _cpu_seconds(pid), _packets_received(zookeeper, session_id), time.monotonic() - started
        rss = _rss_kib(pid)
        fleet.assert_quorum({"A": 1, "B": 1}, request)

    cpu_share = (cpu_after - cpu_before) / window
    rate = (packets_after - packets_before) / window
    request.node.user_properties += [("idle_cpu_percent", round(100 * cpu_share, 2)), ("idle_rss_kib", rss),
                                     ("idle_zk_requests_per_second", round(rate, 1))]
    print("idle agent over %.1fs: CPU %.2f%% of one core, RSS %d KiB, %.1f ZooKeeper packets/s (bound %.1f, loop_wait %.1fs)"
          % (window, 100 * cpu_share, rss, rate, IDLE_PACKETS_PER_SECOND_MAX, loop_wait))
    assert rate <= IDLE_PACKETS_PER_SECOND_MAX, "an idle agent sent %.1f packets/s to ZooKeeper: it polls instead of waiting for watches" % rate
    assert rate > 0, "the idle agent's session sent nothing, not even heartbeats: is it connected?"
    assert cpu_share <= IDLE_CPU_SHARE_MAX, "an idle agent used %.1f%% of a core" % (100 * cpu_share)
    assert rss <= IDLE_RSS_KIB_MAX, "an idle agent holds %d KiB of memory" % rss


@pytest.mark.timeout(180)
def test_a_dead_instance_is_deregistered_while_another_service_blocks_the_loop(bed, request):
    # A's new version never gets healthy: its switch waits out a long health deadline in the loop.
    fleet = bed(hosts=3, services=("A", "B"), health={"deadline": 30.0}).start()
    fleet.seed({"A": {"version": V3_BROKEN, "quorum": 1}})
    fleet.wait_for(lambda: fleet.slot_holders("A"), 30, "a host to take a slot of A")
    [host] = fleet.slot_holders("A")
    time.sleep(1.0)
    assert fleet.fleet.local_state(host).get("A").step == "started", "A's switch on %s should be in its health wait" % host
    killed_at = time.monotonic()
    fleet.fleet.kill_service(host, "B")

    fleet.wait_for(lambda: host not in fleet.registrations("B"), 10, "%s's dead B to be deregistered" % host)
    took = time.monotonic() - killed_at
    # Still inside A's health wait: the loop was blocked all along, the health worker was not.
    assert fleet.fleet.local_state(host).get("A").step == "started"
    request.node.user_properties.append(("deregistered_after_s", round(took, 2)))
