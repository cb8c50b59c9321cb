# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The strategy ``zkrollout.dc.quorum`` driving real ``ansible-playbook`` runs over SSH to a test fleet.

Five network-namespace hosts (fleet prefix ``zks``, 10.231.80.0/24) run service A, which their
agents only watch (``external`` driver): the plays upgrade it themselves, one host per upgrade
slot (tests/integration/playbooks/strategy_quorum.yml), or in plain ``serial`` batches for the
comparison (strategy_serial.yml). Each host's upgrade keeps its instance down for a random
"work" time. The independent QuorumMonitor samples every instance's own /health endpoint
throughout, and every test asserts the minimum it saw against the quorum; the serial run is the
one expected to break it. The scenarios share one fleet; each rolls A to the good version it
does not run yet, and a scenario that fails midway is repaired before the next one starts.
"""

from __future__ import annotations

import random
import signal
import sys
import time

import pytest

from .strategy_support import (  # first: it makes the collection importable under pytest-ansible
    QUORUM_PLAYBOOK,
    SERIAL_PLAYBOOK,
    SERVICE,
    StrategyFleet,
    other_version,
)

# isort: split
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import adopt_slot
from ansible_collections.zkrollout.dc.tests.integration import tree

QUORUM = 3
WINDOW = 2
# What the agent's command line contains (roles/agent: python -m zkrollout_core.agent ...).
AGENT_MATCH = "zkrollout_core.agent"
PLAY_TIMEOUT = 400


@pytest.fixture(scope="module")
def shared_fleet():
    """Five hosts running A 1.0.0 under the agents' external driver; torn down (and checked) at the end."""
    started = time.monotonic()
    built = StrategyFleet(hosts=5).start()
    print("strategy: environment built and agents installed in %.1fs" % (time.monotonic() - started))
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def fleet(shared_fleet):
    """The shared fleet; a scenario that failed midway leaves it repaired: one version everywhere, no slot."""
    yield shared_fleet
    shared_fleet.stop_monitor()
    if shared_fleet.settled_version() is None:
        shared_fleet.repair()


def work(seed, hosts, low=1.0, high=2.0):
    """Per-host seconds of downtime, random but the same for the same ``seed``."""
    draw = random.Random(seed)
    return {host: round(draw.uniform(low, high), 2) for host in hosts}


def report(request, **numbers):
    """Numbers of a scenario, for the log and the test report."""
    request.node.user_properties.extend(sorted(numbers.items()))
    print("strategy %s: %s" % (request.node.name, ", ".join("%s=%s" % item for item in sorted(numbers.items()))))


def assert_ran(run, *hosts):
    """The play succeeded, and on each of ``hosts``."""
    assert run.returncode == 0, run.output
    for host in hosts:
        recap = run.recap(host)
        assert recap["failed"] == 0 and recap["unreachable"] == 0, run.output


def quorum_vars(controller_id, **more):
    """The strategy's play variables of a scenario; ``more`` adds or overrides."""
    return dict(dict(zkrollout_quorum=QUORUM, zkrollout_max_parallel=WINDOW, zkrollout_controller_id=controller_id, zkrollout_health_wait=30,
                     zkrollout_wait_timeout=180), **more)


@pytest.mark.fleet
@pytest.mark.slow
@pytest.mark.timeout(900)
class TestOnTheFleet:

    def test_a_play_under_the_strategy_upgrades_every_host_within_the_quorum_and_says_why_a_host_waits(self, fleet, request):
        target = other_version(fleet.current_version())
        fleet.start_monitor()

        with fleet.slot_sampler() as sampler:
            # max_parallel 3, but with 5 hosts and quorum 3 only 2 may be down at a time: the quorum is what holds the third back.
            # A lease of 3 s, shorter than some plays: the strategy renews it every second while a host is in its play.
            run = fleet.run_upgrade(QUORUM_PLAYBOOK, target, work("all-healthy", fleet.hosts, low=2.0, high=4.0), timeout=PLAY_TIMEOUT,
                                    **quorum_vars("all-healthy", zkrollout_max_parallel=3, zkrollout_slot_timeout=3))

        assert_ran(run, *fleet.hosts)
        assert "zkrollout.dc.quorum: h3 waiting: A has 3 healthy, quorum 3" in run.stdout, run.output
        for host in fleet.hosts:
            assert "zkrollout.dc.quorum: %s takes a slot of A" % host in run.stdout, run.output
            assert "zkrollout.dc.quorum: %s is healthy again on %s: slot of A released" % (host, target) in run.stdout, run.output
        # ansible-core 2.19 says so for every strategy outside ansible.builtin (docs/strategy.md).
        assert "Use of strategy plugins not included in ansible.builtin are deprecated" in run.stdout
        fleet.wait_settled(target)
        fleet.stop_monitor()
        assert sampler.failure is None and sampler.max_held == WINDOW, (sampler.failure, sampler.max_held)
        assert sampler.renewed, "no slot was renewed while its host was in a play longer than the lease"
        report(request, min_healthy=fleet.monitor.min_healthy[SERVICE], quorum=QUORUM, max_slots_held=sampler.max_held,
               play_seconds=round(run.elapsed, 1))
        fleet.monitor.assert_quorum({SERVICE: QUORUM})

    def test_with_one_host_down_serial_breaks_the_quorum_and_the_strategy_does_not(self, fleet, request):
        down = "h5"
        target = other_version(fleet.current_version())
        fleet.kill_instance(down)
        fleet.start_monitor()

        serial = fleet.run_upgrade(SERIAL_PLAYBOOK, target, work("serial", fleet.hosts), timeout=PLAY_TIMEOUT, upgrade_batch=WINDOW)

        assert_ran(serial, *fleet.hosts)
        fleet.wait_settled(target)
        fleet.stop_monitor()
        serial_min = fleet.monitor.min_healthy[SERVICE]
        # Why the strategy exists: serial counts hosts, not healthy instances. Its first batch stops h1
        # and h2 together while h5 is already down, so only h3 and h4 serve: 2 < quorum 3.
        assert serial_min <= QUORUM - 1, "serial: %d with %s down kept %d healthy; expected it to drop below quorum %d" % (
            WINDOW, down, serial_min, QUORUM)
        with pytest.raises(AssertionError, match="dropped to %d healthy instances .quorum %d." % (serial_min, QUORUM)):
            fleet.monitor.assert_quorum({SERVICE: QUORUM})

        # The same situation under the strategy: h5 down again, the same window, the other version.
        target = other_version(target)
        fleet.kill_instance(down)
        fleet.start_monitor()

        run = fleet.run_upgrade(QUORUM_PLAYBOOK, target, work("strategy", fleet.hosts), timeout=PLAY_TIMEOUT, **quorum_vars("one-down"))

        assert_ran(run, *fleet.hosts)
        assert ("%s takes a slot of A (slot allowed: %s is down (its agent is connected and has not registered it), so stopping it costs A "
                "no quorum)" % (down, down)) in run.stdout, run.output
        fleet.wait_settled(target)
        fleet.stop_monitor()
        report(request, serial_min_healthy=serial_min, strategy_min_healthy=fleet.monitor.min_healthy[SERVICE], quorum=QUORUM,
               window=WINDOW, down_before_the_play=down, serial_seconds=round(serial.elapsed, 1), strategy_seconds=round(run.elapsed, 1))
        fleet.monitor.assert_quorum({SERVICE: QUORUM})

    def test_hosts_whose_agents_lost_their_sessions_are_unknown_not_down_and_the_play_stops_none_of_them(self, fleet, request):
        # Three agents freeze past their session timeout: their registrations go, their instances keep serving.
        frozen = fleet.hosts[:3]
        target = other_version(fleet.current_version())
        fleet.start_monitor()
        for host in frozen:
            assert fleet.environment.fleet.signal_processes(host, signal.SIGSTOP, AGENT_MATCH), "no agent process on %s" % host
        try:
            fleet.wait_for(lambda: not set(frozen) & set(fleet.registrations(SERVICE)), 30, "the frozen agents' sessions to expire")
            # Quorum 4 of 5 with max_parallel 2: counting the unknown hosts as down would stop two serving instances (3 < 4).
            run = fleet.run_upgrade(QUORUM_PLAYBOOK, target, work("unknown", fleet.hosts), timeout=PLAY_TIMEOUT,
                                    **quorum_vars("unknown", zkrollout_quorum=4, zkrollout_wait_timeout=15))
        finally:
            for host in frozen:
                fleet.environment.fleet.signal_processes(host, signal.SIGCONT, AGENT_MATCH)
        assert run.returncode != 0, run.output
        assert "no host of A started or finished for 15s" in run.output, run.output
        assert "is not registered and its agent is not connected, so its instance may be serving" in run.output, run.output
        assert "takes a slot of A" not in run.stdout, run.output
        fleet.wait_for(lambda: set(frozen) <= set(fleet.registrations(SERVICE)), 60, "the thawed agents to register again")
        fleet.stop_monitor()
        report(request, min_healthy=fleet.monitor.min_healthy[SERVICE], quorum=4, frozen_agents=len(frozen))
        fleet.monitor.assert_quorum({SERVICE: 4})

    def test_two_plays_at_the_same_time_share_one_budget(self, fleet, request):
        target = other_version(fleet.current_version())
        fleet.start_monitor()

        with fleet.slot_sampler() as sampler:
            # Overlapping host sets: h3 is in both plays, and each play alone would allow 2 slots.
            first = fleet.start_upgrade(QUORUM_PLAYBOOK, target, work("first", fleet.hosts), upgrade_hosts="h1:h2:h3", **quorum_vars("play-one"))
            second = fleet.start_upgrade(QUORUM_PLAYBOOK, target, work("second", fleet.hosts), upgrade_hosts="h3:h4:h5", **quorum_vars("play-two"))
            runs = [first.wait(PLAY_TIMEOUT), second.wait(PLAY_TIMEOUT)]

        assert_ran(runs[0], "h1", "h2", "h3")
        assert_ran(runs[1], "h3", "h4", "h5")
        fleet.wait_settled(target)
        fleet.stop_monitor()
        assert sampler.failure is None, sampler.failure
        together = {"controller:play-one", "controller:play-two"}
        # The two controllers competed for the same slots at the same time; together they never held more than the budget.
        assert any(owners == together for owners in sampler.owners_together), (sampler.owners_together, runs[0].output, runs[1].output)
        assert sampler.max_held <= WINDOW, sampler.max_held
        report(request, min_healthy=fleet.monitor.min_healthy[SERVICE], quorum=QUORUM, max_slots_held=sampler.max_held,
               slot_samples=sampler.samples, play_seconds=[round(run.elapsed, 1) for run in runs])
        fleet.monitor.assert_quorum({SERVICE: QUORUM})

    def test_a_controller_killed_mid_play_leaves_recoverable_slots_and_a_rerun_with_its_id_finishes(self, fleet, request):
        controller = "killed-controller"
        owner = "controller:" + controller
        target = other_version(fleet.current_version())
        fleet.start_monitor()
        variables = quorum_vars(controller, zkrollout_slot_timeout=600)
        doomed = fleet.start_upgrade(QUORUM_PLAYBOOK, target, work("killed", fleet.hosts, 4.0, 5.0), **variables)

        def a_slot_holder_is_down():
            answering = fleet.versions_seen_now(SERVICE)
            return [host for host, slot in fleet.slots().items() if slot and slot.owner == owner and answering[host] is None]

        fleet.wait_for(a_slot_holder_is_down, 240, "a host of the doomed play to hold a slot with its instance down", interval=0.05)
        doomed.kill()
        # The hosts' side of the killed play (its switch scripts) runs to its end regardless; a
        # re-run racing it on the same host would start a second instance.
        fleet.wait_switches_ended()

        held = fleet.slots()
        assert held and all(slot.owner == owner and slot.deadline > time.time() + 60 for slot in held.values()), held
        victim = sorted(held)[0]
        # Once the killed play's session is gone, the status names its slots and how to free each;
        # nothing frees them on its own (not the agents, not the lease: 600 s).
        fleet.wait_for(lambda: not fleet.client.exists(fleet.layout.session(held[victim].session)), 60, "the killed play's session to expire")
        abandoned = fleet.report()["services"][SERVICE]["abandoned_slots"]
        assert sorted(abandoned) == sorted(held), abandoned
        assert "zkrollout_host=%s" % victim in abandoned[victim]["free_with"]
        assert fleet.slots() == held

        rerun = fleet.run_upgrade(QUORUM_PLAYBOOK, target, work("rerun", fleet.hosts), timeout=PLAY_TIMEOUT, **variables)

        assert_ran(rerun, *fleet.hosts)
        for host in held:
            assert "zkrollout.dc.quorum: %s resumes with the slot of A it already holds" % host in rerun.stdout, rerun.output
        fleet.wait_settled(target)
        fleet.stop_monitor()
        report(request, min_healthy=fleet.monitor.min_healthy[SERVICE], quorum=QUORUM, slots_left_by_the_killed_play=sorted(held),
               rerun_seconds=round(rerun.elapsed, 1))
        fleet.monitor.assert_quorum({SERVICE: QUORUM})

    def test_a_failed_host_keeps_its_slot_no_further_host_starts_and_a_rerun_recovers(self, fleet, request):
        controller = "fails-on-h2"
        before = fleet.current_version()
        target = other_version(before)
        fleet.start_monitor()
        # h2 fails quickly (its instance stays down); h1, admitted with it, works longer and still finishes.
        durations = dict(work("failing", fleet.hosts), h1=3.0, h2=0.2)

        failed = fleet.run_upgrade(QUORUM_PLAYBOOK, target, durations, timeout=PLAY_TIMEOUT, upgrade_fail_hosts=["h2"], **quorum_vars(controller))

        assert failed.returncode != 0, failed.output
        assert failed.recap("h2")["failed"] == 1, failed.output
        assert "zkrollout.dc.quorum: h2 failed; it keeps its slot of A" in failed.stdout, failed.output
        assert "1 host(s) failed (max_fail_percentage allows 0): h3, h4, h5 will not start" in failed.stdout, failed.output
        fleet.wait_for(lambda: fleet.registrations(SERVICE) == {"h1": target, "h3": before, "h4": before, "h5": before}, 30,
                       "h1 on %s, h3-h5 untouched on %s, h2 down" % (target, before))
        held = fleet.slots()
        assert list(held) == ["h2"] and held["h2"].owner == "controller:" + controller, held

        rerun = fleet.run_upgrade(QUORUM_PLAYBOOK, target, work("recovery", fleet.hosts), timeout=PLAY_TIMEOUT, **quorum_vars(controller))

        assert_ran(rerun, *fleet.hosts)
        assert "zkrollout.dc.quorum: h2 resumes with the slot of A it already holds" in rerun.stdout, rerun.output
        fleet.wait_settled(target)
        fleet.stop_monitor()
        report(request, min_healthy=fleet.monitor.min_healthy[SERVICE], quorum=QUORUM, failed_play_seconds=round(failed.elapsed, 1))
        fleet.monitor.assert_quorum({SERVICE: QUORUM})


def test_the_example_playbook_passes_a_syntax_check():
    run = tree.run_playbook("upgrade_with_quorum.yml", ["zkrollout_service=A"], ["--syntax-check"], timeout=120)
    assert run.returncode == 0, run.output


@pytest.mark.zookeeper
def test_only_the_owner_adopts_a_slot_and_the_adopted_slot_gets_the_new_session_and_deadline(zk, zk_connect, zk_root):
    client = zk_connect(zk.hosts)
    layout = Layout(zk_root)
    client.ensure_path(layout.slots(SERVICE))
    left = Slot(to_version="2.0.0", since=time.time() - 30, from_version="1.0.0", owner="controller:one", session="a1", deadline=time.time() + 60)
    client.create(layout.slot(SERVICE, "h1"), left.to_bytes())
    deadline = time.time() + 600

    assert adopt_slot(client, layout, SERVICE, "h1", "controller:two", "b2", deadline) is None
    assert adopt_slot(client, layout, SERVICE, "h2", "controller:one", "b2", deadline) is None
    adopted = adopt_slot(client, layout, SERVICE, "h1", "controller:one", "b2", deadline)

    stored = Slot.from_bytes(client.get(layout.slot(SERVICE, "h1"))[0])
    assert stored == adopted
    assert (stored.owner, stored.session, stored.deadline) == ("controller:one", "b2", deadline)
    assert (stored.since, stored.from_version, stored.to_version) == (left.since, "1.0.0", "2.0.0")


@pytest.mark.zookeeper
def test_a_quorum_under_which_no_host_could_ever_stop_is_refused_before_anything_is_written(zk, zk_root, tmp_path):
    layout = Layout(zk_root)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[fleet]\n" + "".join("%s ansible_connection=local ansible_python_interpreter=%s\n" % (host, sys.executable)
                                               for host in ("h1", "h2")))
    with tree.FakeFleet(zk.hosts, layout) as hosts:
        for host in ("h1", "h2"):
            hosts.join(host, {SERVICE: "1.0.0"})

        extra_vars = ["zkrollout_zk_hosts=%s" % zk.hosts, "zkrollout_zk_root=%s" % zk_root, "zkrollout_quorum=2", "zkrollout_wait_timeout=5"]
        run = tree.run_playbook(str(QUORUM_PLAYBOOK), extra_vars, ["-i", str(inventory)])

        assert run.returncode != 0, run.output
        assert "service A: quorum 2 needs 2 healthy of 2 hosts, so no host may ever stop" in run.output, run.output
        assert hosts.session("h1").exists(layout.release(SERVICE)) is None
