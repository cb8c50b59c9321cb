# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting for a rollout: the core's watch-driven waiter and the rollout_wait module (through
pytest-ansible), while a fake fleet in a background thread drives the rollout to completion or
to a failure by writing what agents write (slots, /current registrations, failure records)."""

from __future__ import annotations

import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.waiter import wait_for_rollout

from . import tree
from .tree import FakeFleet, release, service

pytestmark = [
    pytest.mark.zookeeper,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:Host management is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:AnsibleCollectionFinder has already been configured:UserWarning"),
]

# The module's fallback tick is 30 s: a wait that ends well before it was woken by a watch.
WATCH_BOUND = 10.0


@pytest.fixture
def fleet(zk, layout, client):
    """Hosts h1..h3 run A and B at 1.0.0; rollout r1 upgrades A, then B (B depends on A)."""
    with FakeFleet(zk.hosts, layout) as fake:
        for host in ("h1", "h2", "h3"):
            fake.join(host, {"A": "1.0.0", "B": "1.0.0"})
        tree.seed(client, layout, release(service("A"), service("B", depends_on=["A"]), id="r1"))
        yield fake


@pytest.fixture
def once_waiting(zk, layout):
    """``once_waiting(action)``: a context manager that runs ``action`` as soon as a waiter watches the rollout."""
    return lambda action: tree.in_background(lambda: tree.wait_for_watch(zk, layout.rollout), action)


def test_the_waiter_is_woken_by_watches_as_the_fleet_completes_the_rollout(fleet, client, layout, once_waiting):
    # A tick of 60 s means only a watch can end the wait within seconds.
    with once_waiting(lambda: fleet.roll_out(pause=0.05)) as driven:
        waited = wait_for_rollout(client, layout, timeout=60, tick=60)
        returned_at = time.monotonic()

    report, events = waited.report, waited.events
    assert (report["state"], waited.timed_out, waited.finished) == ("done", False, True), events
    assert returned_at - driven["finished_at"] < 3.0, "the wait ended %.1fs after the last registration" % (returned_at - driven["finished_at"])
    assert report["progress"] == {"services_total": 2, "services_complete": 2, "instances_total": 6, "instances_on_target": 6}
    assert "rollout running: " in events[0], events
    assert any("B: done (all 3 online hosts run 2.0.0)" in event for event in events), events


def test_rollout_wait_returns_done_with_a_progress_summary_when_the_fleet_finishes(zkrollout, fleet, once_waiting):
    with once_waiting(lambda: fleet.roll_out(pause=0.1)):
        result = zkrollout("rollout_wait", timeout=60)

    assert result.get("failed") is not True, result
    assert (result["state"], result["timed_out"], result["changed"]) == ("done", False, False)
    assert result["elapsed"] < WATCH_BOUND, "waited %.1fs: the module polled instead of using watches" % result["elapsed"]
    assert result["progress"]["instances_on_target"] == 6
    assert any(" A on h1: " in event and "2.0.0" in event for event in result["events"]), result["events"]
    assert any("A: done" in event for event in result["events"]), result["events"]
    assert result["report"]["services"]["B"]["complete"] is True


def test_rollout_wait_fails_naming_the_failed_host_and_its_reason(zkrollout, fleet, once_waiting):
    def fail_on_h2():
        fleet.upgrade("A", "h1", "2.0.0")
        fleet.fail_upgrade("A", "h2", "2.0.0", "health check failed: HTTP 500 on /healthz")

    with once_waiting(fail_on_h2):
        result = zkrollout("rollout_wait", timeout=60)

    assert result.get("failed") is True, result
    assert result["msg"] == "rollout failed: A on h2: health check failed: HTTP 500 on /healthz (health)"
    assert (result["state"], result["timed_out"]) == ("failed", False)
    assert result["elapsed"] < WATCH_BOUND, result["elapsed"]


def test_rollout_wait_fails_when_the_rollout_is_aborted_meanwhile(zkrollout, fleet, client, layout, once_waiting):
    def abort():
        tree.control(client, layout, "abort", reason="change freeze")

    with once_waiting(abort):
        result = zkrollout("rollout_wait", timeout=60)

    assert result.get("failed") is True, result
    assert result["msg"] == "rollout aborted: change freeze"
    assert result["elapsed"] < WATCH_BOUND, result["elapsed"]


def test_rollout_wait_fails_at_its_timeout_saying_the_hosts_go_on(zkrollout, fleet):
    result = zkrollout("rollout_wait", timeout=2)

    assert result.get("failed") is True, result
    assert result["timed_out"] is True and result["state"] == "running"
    assert result["msg"] == "timed out after 2s with the rollout running (0 of 2 services complete); the hosts go on upgrading"
    assert 2 <= result["elapsed"] < 2 + WATCH_BOUND


def test_rollout_wait_can_end_at_its_timeout_without_failing(zkrollout, fleet):
    result = zkrollout("rollout_wait", timeout=1, fail_on_timeout=False)

    assert result.get("failed") is not True, result
    assert (result["timed_out"], result["state"], result["progress"]["services_complete"]) == (True, "running", 0)


def test_rollout_wait_without_a_rollout_fails_saying_how_to_seed_one(zkrollout):
    result = zkrollout("rollout_wait", timeout=5)

    assert result.get("failed") is True, result
    assert "there is no rollout to wait for" in result["msg"]


# Rounds and stall detection.
def test_a_round_returns_at_the_first_change_and_the_next_round_reports_only_what_came_after(fleet, client, layout):
    first = wait_for_rollout(client, layout, timeout=60, round_timeout=30)

    assert first.finished is False and len(first.events) == 1 and "rollout running: " in first.events[0], first.events
    fleet.upgrade("A", "h1", "2.0.0")
    started = time.monotonic()
    second = wait_for_rollout(client, layout, timeout=60, round_timeout=30, since=first.cursor)

    assert time.monotonic() - started < 3.0, "a round with changes behind its cursor waited"
    assert second.finished is False
    assert [event.split(None, 1)[1] for event in second.events] == ["A on h1: online 1.0.0 -> online 2.0.0"], second.events
    assert second.cursor.started == first.cursor.started


def test_a_quiet_round_ends_after_its_round_timeout_with_no_events(fleet, client, layout):
    first = wait_for_rollout(client, layout, timeout=60, round_timeout=30)
    started = time.monotonic()

    quiet = wait_for_rollout(client, layout, timeout=60, round_timeout=1.0, since=first.cursor)

    assert 1.0 <= time.monotonic() - started < 1.0 + WATCH_BOUND
    assert (quiet.finished, quiet.events, quiet.timed_out) == (False, [], False)


def test_a_host_switching_within_the_progress_deadline_keeps_the_wait_going_to_the_end(fleet, client, layout, once_waiting):
    # Six switches 0.8 s apart take longer than the deadline of 2.5 s, but none is 2.5 s after the last.
    with once_waiting(lambda: fleet.roll_out(pause=0.8)):
        waited = wait_for_rollout(client, layout, timeout=60, progress_deadline=2.5)

    assert (waited.report["state"], waited.stalled) == ("done", None), waited.events


def test_rollout_wait_fails_when_no_host_switched_within_the_progress_deadline_naming_what_each_service_waits_on(zkrollout, fleet):
    result = zkrollout("rollout_wait", timeout=60, progress_deadline=2)

    assert result.get("failed") is True, result
    assert (result["stalled"], result["timed_out"], result["state"]) == (True, False, "running")
    assert 2 <= result["elapsed"] < 2 + WATCH_BOUND, result["elapsed"]
    assert result["msg"].startswith("rollout stalled: no host switched for 2s (progress_deadline 2s) with the rollout running; "), result["msg"]
    assert "; A waiting: no host is ready yet (h1, h2, h3 still downloading or verifying 2.0.0)" in result["msg"], result["msg"]
    assert "; B waiting: behind A in the deploy queue" in result["msg"], result["msg"]


def test_rollout_wait_runs_a_round_given_the_cursor_of_the_previous_one(zkrollout, fleet):
    first = zkrollout("rollout_wait", timeout=60, round_timeout=10)
    assert first.get("failed") is not True and first["finished"] is False, first
    fleet.upgrade("A", "h2", "2.0.0")

    second = zkrollout("rollout_wait", timeout=60, round_timeout=10, since=first["cursor"])

    assert second.get("failed") is not True and second["finished"] is False, second
    assert [event.split(None, 1)[1] for event in second["events"]] == ["A on h2: online 1.0.0 -> online 2.0.0"], second["events"]


def test_rollout_wait_refuses_a_cursor_it_did_not_return(zkrollout, fleet):
    result = zkrollout("rollout_wait", timeout=5, round_timeout=1, since={"rollout": "r1"})

    assert result.get("failed") is True, result
    assert result["msg"].startswith("since must be the 'cursor' a previous round of rollout_wait returned"), result["msg"]


def test_rollout_wait_refuses_a_progress_deadline_that_is_not_positive(zkrollout, fleet):
    result = zkrollout("rollout_wait", progress_deadline=0)

    assert result.get("failed") is True, result
    assert result["msg"] == "progress_deadline must be a positive number of seconds, got 0.0"
