# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting for a rollout: the core's watch-driven waiter and the rollout_wait module (through
pytest-ansible), while a fake fleet in a background thread drives the rollout to completion or
to a failure by writing what agents write (slots, /current registrations, failure records)."""

from __future__ import annotations

import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.waiter import wait_for_rollout
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import plan_control, read_plan_apply

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
        report, events, timed_out = wait_for_rollout(client, layout, timeout=60, tick=60)
        returned_at = time.monotonic()

    assert (report["state"], timed_out) == ("done", False), events
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
        read_plan_apply(client, layout, lambda snapshot, missing: plan_control(snapshot, layout, "abort", reason="change freeze"))

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
